//! `nanika logs --json` against real servers: every line a JSON record, times in RFC 3339 UTC,
//! a slow query with its duration, Redis records, the supervisor's remarks, passwords masked,
//! and `-f` printing a record as it happens.

mod common;

use common::{PASSWORD, Stack, eventually, text};
use serde_json::Value;
use std::time::Duration;

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

/// What holds for every record, whatever wrote it.
fn check_common_fields(records: &[Value]) {
    for record in records {
        assert!(
            ["postgres", "redis", "supervisor"].contains(&record["service"].as_str().unwrap()),
            "{record}"
        );
        assert!(
            record["level"].is_string() && record["message"].is_string(),
            "{record}"
        );
        match record.get("timestamp") {
            Some(time) => assert!(is_rfc3339_utc(time.as_str().unwrap()), "{record}"),
            // No time invented: an unparsed line, a supervisor remark, or a zone kept as written.
            None => assert!(
                record["level"] == "unknown"
                    || record["service"] == "supervisor"
                    || record["source_timestamp"].is_string(),
                "{record}"
            ),
        }
    }
}

#[test]
fn logs_json_prints_records_of_both_servers_and_the_supervisor() {
    let stack = Stack::new();
    stack.up();
    assert_eq!(stack.psql("SELECT pg_sleep(1.1)"), "");
    // Whether the app user may create roles or not, the statement reaches the log (as a
    // logged DDL statement or as the STATEMENT of the error), password and all.
    let _ = stack.psql_with(
        PASSWORD,
        "nanika_game",
        "CREATE ROLE json_probe LOGIN PASSWORD 'probe-secret-4711'",
    );
    // A restart, for a remark of the supervisor's.
    let before = stack.service("redis");
    let pid = before["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || {
            let now = stack.service("redis");
            now["state"] == "healthy" && now["pid"] != before["pid"]
        }),
        "redis was not restarted"
    );

    let postgres = records(&stack, &["logs", "--json", "-n", "1000", "postgres"]);
    check_common_fields(&postgres);
    assert!(
        postgres.iter().all(|r| r["service"] != "redis"),
        "only the postgres log was asked for"
    );
    assert!(
        postgres.iter().any(|r| r["service"] == "postgres"
            && r["duration_ms"].as_f64().is_some_and(|ms| ms >= 1000.0)
            && r["statement"].as_str() == Some("SELECT pg_sleep(1.1)")
            && r["pid"].is_u64()),
        "no slow-query record: {postgres:#?}"
    );
    let probe = postgres
        .iter()
        .find(|r| {
            r["statement"]
                .as_str()
                .is_some_and(|s| s.contains("json_probe"))
        })
        .unwrap_or_else(|| panic!("the CREATE ROLE statement was not logged: {postgres:#?}"));
    assert!(
        probe["statement"]
            .as_str()
            .unwrap()
            .contains("PASSWORD '****'"),
        "{probe}"
    );
    let raw = text(&stack.run(&["logs", "--json", "-n", "1000"]));
    assert!(!raw.contains("probe-secret-4711"), "a password was printed");
    // The text view masks it too.
    let plain = text(&stack.run(&["logs", "-n", "1000", "postgres"]));
    assert!(plain.contains("json_probe"), "{plain}");
    assert!(
        !plain.contains("probe-secret-4711"),
        "a password was printed: {plain}"
    );

    let all = records(&stack, &["logs", "--json", "-n", "1000"]);
    check_common_fields(&all);
    assert!(all.iter().any(|r| r["service"] == "postgres"));
    let redis: Vec<&Value> = all.iter().filter(|r| r["service"] == "redis").collect();
    assert!(
        redis.iter().any(|r| r["level"] == "notice"
            && r["role"] == "master"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("Ready to accept connections"))),
        "no Redis record: {all:#?}"
    );
    assert!(
        all.iter().any(|r| r["service"] == "supervisor"
            && r["about"] == "redis"
            && r["level"] == "warning"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("killed by SIGKILL; restarting"))),
        "no supervisor remark: {all:#?}"
    );
}

#[test]
fn logs_json_follow_prints_a_record_as_it_happens() {
    let stack = Stack::new();
    stack.up();
    let record = common::follow_slow_query(&stack);
    assert!(
        record["duration_ms"].as_f64().unwrap() >= 1000.0,
        "{record}"
    );
    assert!(
        is_rfc3339_utc(record["timestamp"].as_str().unwrap()),
        "{record}"
    );
}
