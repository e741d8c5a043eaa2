//! `[logging] postgres = "jsonlog"` with a real server: PostgreSQL's own jsonlog files are what
//! `nanika logs` reads (records with the source's fields, a slow query with its duration,
//! passwords masked, the text view in the default prefix), the early stderr lines stay in the
//! captured log, the supervisor keeps at most three files, a changed setting takes effect with
//! `up`, and a wrong value or the docker runtime is refused naming the key.

mod common;

use common::{PASSWORD, Stack, eventually, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const JSONLOG: &str = "[logging]\npostgres = \"jsonlog\"\n";

/// The records `nanika ARGS` prints, failing on any line that is not a JSON object.
fn records(stack: &Stack, args: &[&str]) -> Vec<Value> {
    let output = stack.run(args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert!(value.is_object(), "not an object: {line}");
            value
        })
        .collect()
}

/// `2026-11-29T20:00:00.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_utc(text: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    text.len() == shape.len()
        && text.chars().zip(shape.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            s => c == s,
        })
}

/// The collector's directory (through `.nanika/postgres`, a link when the cluster lives
/// outside the project).
fn log_dir(stack: &Stack) -> PathBuf {
    stack.root.join(".nanika/postgres/jsonlog")
}

/// The names in `dir` ending with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn jsonlog_is_what_logs_reads_and_a_change_takes_effect_with_up() {
    let stack = Stack::new();
    stack.project.write("nanika.toml", JSONLOG);
    stack.up();
    assert_eq!(stack.psql("SELECT pg_sleep(1.1)"), "");
    // Logged by `log_statement = 'mod'` as DDL, and again as the error's STATEMENT (no such
    // role): the password reaches the server's log either way.
    let _ = stack.psql_with(
        PASSWORD,
        "nanika_game",
        "ALTER ROLE jsonlog_nobody PASSWORD 'jsonlog-secret-4711'",
    );

    // The files are PostgreSQL's jsonlog: one object a line, with its own fields.
    let dir = log_dir(&stack);
    let mut seen_slow = false;
    assert!(
        eventually(Duration::from_secs(10), || {
            let json = files(&dir, ".json");
            seen_slow = json.iter().any(|name| {
                std::fs::read_to_string(dir.join(name))
                    .unwrap_or_default()
                    .contains("pg_sleep(1.1)")
            });
            seen_slow
        }),
        "no .json file with the slow query in {}: {:?}",
        dir.display(),
        files(&dir, "")
    );
    for name in files(&dir, ".json") {
        for line in std::fs::read_to_string(dir.join(&name)).unwrap().lines() {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line:?}"));
            assert!(value["error_severity"].is_string(), "{name}: {line}");
        }
    }
    // What PostgreSQL wrote before its collector ran is still in the captured log.
    let captured = std::fs::read_to_string(stack.root.join(".nanika/logs/postgres.log")).unwrap();
    assert!(
        captured.contains("redirecting log output to logging collector process"),
        "{captured}"
    );
    assert!(
        !captured.contains("pg_sleep(1.1)"),
        "the slow query went to stderr: {captured}"
    );

    let postgres = records(&stack, &["logs", "--json", "-n", "1000", "postgres"]);
    let slow = postgres
        .iter()
        .find(|r| r["statement"].as_str() == Some("SELECT pg_sleep(1.1)"))
        .unwrap_or_else(|| panic!("no slow-query record: {postgres:#?}"));
    assert!(
        slow["duration_ms"].as_f64().is_some_and(|ms| ms >= 1000.0),
        "{slow}"
    );
    assert_eq!(slow["service"], "postgres", "{slow}");
    assert_eq!(slow["level"], "info", "{slow}");
    assert!(slow["pid"].is_u64(), "{slow}");
    assert!(
        is_rfc3339_utc(slow["timestamp"].as_str().unwrap_or_default()),
        "{slow}"
    );
    assert!(slow["message"].as_str().unwrap().starts_with("duration: "));
    // The source's own fields, which only jsonlog has.
    assert_eq!(slow["backend_type"], "client backend", "{slow}");
    assert_eq!(slow["dbname"], "nanika_game", "{slow}");
    assert!(slow.get("error_severity").is_none(), "{slow}");
    // The early stderr lines are records too.
    assert!(
        postgres.iter().any(|r| r["message"]
            .as_str()
            .is_some_and(|m| m.contains("redirecting log output"))),
        "{postgres:#?}"
    );
    let probe = postgres
        .iter()
        .find(|r| {
            r["statement"]
                .as_str()
                .is_some_and(|s| s.contains("jsonlog_nobody"))
        })
        .unwrap_or_else(|| panic!("the ALTER ROLE was not logged: {postgres:#?}"));
    assert!(
        probe["statement"]
            .as_str()
            .unwrap()
            .contains("PASSWORD '****'"),
        "{probe}"
    );
    let raw = text(&stack.run(&["logs", "--json", "-n", "1000"]));
    assert!(
        !raw.contains("jsonlog-secret-4711"),
        "a password was printed"
    );

    // The text view reads as the default prefix would, masked.
    let plain = text(&stack.run(&["logs", "-n", "1000", "postgres"]));
    assert!(
        plain
            .lines()
            .any(|l| l.contains("] LOG:  duration: ") && l.contains("SELECT pg_sleep(1.1)")),
        "{plain}"
    );
    assert!(plain.contains("jsonlog_nobody"), "{plain}");
    assert!(!plain.contains("jsonlog-secret-4711"), "{plain}");
    assert!(!plain.contains("\"error_severity\""), "{plain}");
    // `--tail` counts the lines of the captured log and the jsonlog files (a jsonlog record
    // is one line there, however many lines its text view has).
    let two = records(&stack, &["logs", "--json", "-n", "2", "postgres"]);
    assert_eq!(two.len(), 2, "{two:#?}");

    // The supervisor keeps the newest three files of each kind; the one being written stays.
    let current = files(&dir, ".json").pop().unwrap();
    for day in 1..=5 {
        std::fs::write(
            dir.join(format!("postgresql-2000-01-0{day}_000000.json")),
            "{}\n",
        )
        .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(15), || files(&dir, ".json").len() <= 3),
        "{:?}",
        files(&dir, ".json")
    );
    let left = files(&dir, ".json");
    assert!(left.contains(&current), "{left:?}");
    assert!(
        !left.contains(&"postgresql-2000-01-01_000000.json".to_string()),
        "{left:?}"
    );

    // Back to stderr: `up` restarts the server with it, and says so.
    let pid = stack.service("postgres")["pid"].clone();
    stack
        .project
        .write("nanika.toml", "[logging]\npostgres = \"stderr\"\n");
    let output = stack.up();
    assert!(
        text(&output).contains("[logging] postgres"),
        "{}",
        text(&output)
    );
    assert_ne!(
        stack.service("postgres")["pid"],
        pid,
        "postgres was not restarted"
    );
    stack.psql("SELECT pg_sleep(1.02)");
    assert!(
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(stack.root.join(".nanika/logs/postgres.log"))
                .unwrap_or_default()
                .contains("pg_sleep(1.02)")
        }),
        "the slow query did not reach the captured log after the switch"
    );
    let newest = files(&dir, ".json");
    assert!(
        newest
            .iter()
            .all(|name| !std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .contains("pg_sleep(1.02)")),
        "jsonlog still written after the switch"
    );
}

#[test]
fn an_unknown_log_destination_is_refused_naming_the_key() {
    let stack = Stack::new();
    stack
        .project
        .write("nanika.toml", "[logging]\npostgres = \"json\"\n");
    let output = stack.run(&["config", "check"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("nanika.toml"), "{all}");
    assert!(all.contains("logging.postgres"), "{all}");
    assert!(all.contains("jsonlog"), "the hint names the values: {all}");
    // `up` refuses too, starting nothing.
    let output = stack.run(&["up"]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(!stack.root.join(".nanika/postgres").exists());
}

#[test]
fn the_docker_runtime_refuses_jsonlog_naming_the_key() {
    let stack = Stack::new();
    stack.project.write("nanika.toml", JSONLOG);
    let output = stack
        .nanika()
        .args(["--runtime", "docker", "up"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(
        all.contains("nanika.toml") && all.contains("[logging] postgres"),
        "{all}"
    );
    assert!(all.contains("--runtime native"), "{all}");
}

#[test]
fn turned_on_for_a_running_server_jsonlog_is_followed_with_f() {
    let stack = Stack::new();
    stack.up();
    let pid = stack.service("postgres")["pid"].clone();
    stack.project.write("nanika.toml", JSONLOG);
    let output = stack.up();
    assert!(
        text(&output).contains("[logging] postgres in nanika.toml is now \"jsonlog\""),
        "{}",
        text(&output)
    );
    assert_ne!(
        stack.service("postgres")["pid"],
        pid,
        "postgres was not restarted"
    );
    assert!(!files(&log_dir(&stack), ".json").is_empty());

    let record = common::follow_slow_query(&stack);
    assert!(
        record["duration_ms"].as_f64().unwrap() >= 1000.0,
        "{record}"
    );
    assert_eq!(record["backend_type"], "client backend", "{record}");
    assert!(
        is_rfc3339_utc(record["timestamp"].as_str().unwrap()),
        "{record}"
    );
}
