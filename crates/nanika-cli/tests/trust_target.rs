//! One validated target: nanika never acts on a server that is not this project's, and never
//! runs on a configuration it rejected. Two projects side by side; the second one's ports or URLs
//! are wrong in every way measured, and none of its commands may touch the first one's data.

mod common;

use common::{Stack, text};
use std::process::Output;
use std::time::Instant;

const MARKER_SQL: &str = "CREATE TABLE first_project_marker (note text); INSERT INTO first_project_marker VALUES ('mine')";

/// The first project, up, with a marker row and a marker key.
fn first_project() -> Stack {
    let first = Stack::new();
    first.up();
    first.psql(MARKER_SQL);
    first.redis(&["SET", "first:marker", "mine"]);
    first
}

/// The first project's data is as it was.
fn assert_untouched(first: &Stack, after: &str) {
    assert_eq!(
        first.psql("SELECT note FROM first_project_marker"),
        "mine",
        "after {after}"
    );
    assert_eq!(
        first.redis(&["GET", "first:marker"]),
        "mine",
        "after {after}"
    );
}

/// The commands that read or change data, each run in `second` with `env`; none may succeed.
fn every_data_command_refused(first: &Stack, second: &Stack, env: &[(&str, String)], expect: &str) {
    let commands: &[&[&str]] = &[
        &["db", "psql", "--", "-Atc", "select inet_server_port()"],
        &["db", "migrate", "status"],
        &["db", "migrate"],
        &["db", "seed"],
        &["db", "reset", "--yes"],
        &["db", "maintain"],
        &["redis", "keys"],
        &["redis", "flush", "--yes"],
        &["sessions", "backup"],
        &["sessions", "restore"],
    ];
    for args in commands {
        let mut command = second.nanika();
        for (key, value) in env {
            command.env(key, value);
        }
        let output: Output = command.args(*args).output().unwrap();
        let all = text(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "`{args:?}` was not refused:\n{all}"
        );
        assert!(
            all.contains(expect),
            "`{args:?}` did not say `{expect}`:\n{all}"
        );
        assert!(
            !all.contains("--volumes"),
            "`{args:?}` suggested deleting data:\n{all}"
        );
        assert_untouched(first, &args.join(" "));
    }
    // doctor reports rather than refuses, and fails.
    let mut command = second.nanika();
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.arg("doctor").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "doctor: {}", text(&output));
    let foreign = [first.pg_port, first.redis_port].map(|p| p.to_string());
    for line in text(&output).lines().filter(|l| l.starts_with("ok")) {
        assert!(
            !foreign.iter().any(|p| line.contains(p.as_str())),
            "doctor vouches for the first project's server: {line}\n{}",
            text(&output)
        );
    }
}

#[test]
fn a_stopped_project_never_reaches_what_listens_on_its_ports() {
    let first = first_project();
    // The second project names the first one's ports consistently, but was never started.
    let second = Stack::new();
    let env = vec![
        ("POSTGRES_PORT", first.pg_port.to_string()),
        ("REDIS_PORT", first.redis_port.to_string()),
        (
            "DATABASE_URL",
            format!(
                "postgresql://nanika_user:nanika_password@localhost:{}/nanika_game?schema=public",
                first.pg_port
            ),
        ),
        (
            "REDIS_URL",
            format!("redis://localhost:{}", first.redis_port),
        ),
    ];
    every_data_command_refused(&first, &second, &env, "is not running");
    let output = {
        let mut command = second.nanika();
        for (key, value) in &env {
            command.env(key, value);
        }
        command.args(["redis", "keys"]).output().unwrap()
    };
    assert!(
        text(&output).contains("but that is not this project's"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_stopped_project_whose_env_file_names_another_projects_ports_reaches_nothing() {
    let first = first_project();
    let second = Stack::new();
    let env = second.project.read(".env");
    second.project.write(
        ".env",
        &env.replace(&second.pg_port.to_string(), &first.pg_port.to_string())
            .replace(
                &second.redis_port.to_string(),
                &first.redis_port.to_string(),
            ),
    );
    every_data_command_refused(&first, &second, &[], "is not running");
}

#[test]
fn doctor_compares_the_running_servers_with_the_spec_not_only_with_the_files() {
    let stack = Stack::new();
    stack.project.replace(
        "docker/redis/redis.conf",
        "maxmemory-policy allkeys-lru",
        "maxmemory-policy noeviction",
    );
    stack.up();
    let output = stack.run(&["doctor"]);
    let all = text(&output);
    let line = all
        .lines()
        .find(|l| l.contains("redis.spec"))
        .unwrap_or_else(|| panic!("no redis.spec check:\n{all}"));
    assert!(line.starts_with("warn"), "{line}");
    assert!(
        line.contains("maxmemory-policy is noeviction, the spec says allkeys-lru"),
        "{line}"
    );
    assert!(
        all.contains("ok   redis.drift"),
        "the file and the server agree:\n{all}"
    );
}

#[test]
fn a_running_project_with_exported_ports_of_another_is_told_where_its_servers_are() {
    let first = first_project();
    let second = Stack::new();
    second.up();
    // Exported for the first project in this shell, then used in the second one.
    let env = vec![
        ("POSTGRES_PORT", first.pg_port.to_string()),
        ("REDIS_PORT", first.redis_port.to_string()),
        (
            "DATABASE_URL",
            format!(
                "postgresql://nanika_user:nanika_password@localhost:{}/nanika_game?schema=public",
                first.pg_port
            ),
        ),
        (
            "REDIS_URL",
            format!("redis://localhost:{}", first.redis_port),
        ),
    ];
    every_data_command_refused(&first, &second, &env, "runs on port");
    // `up` says the same instead of recommending to delete data.
    let mut command = second.nanika();
    for (key, value) in &env {
        command.env(key, value);
    }
    let output = command.arg("up").output().unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("runs on port {}", second.pg_port)),
        "{all}"
    );
    assert!(!all.contains("--volumes"), "{all}");
    assert_untouched(&first, "up");
}

#[test]
fn a_port_exported_without_its_url_is_refused_everywhere() {
    let first = first_project();
    let second = Stack::new();
    second.up();
    // Only the port variables: the URLs in .env still say the second project's ports.
    let env = vec![
        ("POSTGRES_PORT", first.pg_port.to_string()),
        ("REDIS_PORT", first.redis_port.to_string()),
    ];
    every_data_command_refused(&first, &second, &env, "error[port-mismatch]");
    for args in [&["up"][..], &["env"], &["exec", "--", "true"], &["ps"]] {
        let mut command = second.nanika();
        for (key, value) in &env {
            command.env(key, value);
        }
        let output = command.args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        assert!(
            text(&output).contains("nothing was done"),
            "{}",
            text(&output)
        );
    }
}

#[test]
fn up_writes_the_exported_ports_into_a_new_env_and_its_urls() {
    let stack = Stack::new();
    std::fs::remove_file(stack.root.join(".env")).unwrap();
    let output = stack
        .nanika()
        .env("POSTGRES_PORT", stack.pg_port.to_string())
        .env("REDIS_PORT", stack.redis_port.to_string())
        .arg("up")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let env = stack.project.read(".env");
    assert!(
        env.contains(&format!("@localhost:{}/nanika_game", stack.pg_port)),
        "{env}"
    );
    assert!(
        env.contains(&format!("redis://localhost:{}", stack.redis_port)),
        "{env}"
    );
    // Without the variables exported any more, every command finds the same servers.
    let output = stack
        .nanika()
        .args(["db", "psql", "--", "-Atc", "select inet_server_port()"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        stack.pg_port.to_string()
    );
    let output = stack.run(&["doctor"]);
    assert!(
        text(&output).contains("and it is this project's"),
        "{}",
        text(&output)
    );
}

/// Each configuration nanika measured going wrong after a 90 s wait, or silently, is refused by
/// `config check` with file, line and hint, and by `up` before anything starts.
#[test]
fn bad_configurations_are_refused_before_anything_starts() {
    let long = "n".repeat(100);
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            ".env",
            "POSTGRES_USER=nanika_user",
            "POSTGRES_USER=pg_app".into(),
            "reserved-name",
        ),
        (
            ".env",
            "POSTGRES_DB=nanika_game",
            format!("POSTGRES_DB={long}"),
            "name-too-long",
        ),
        (
            ".env",
            "POSTGRES_PASSWORD=nanika_password",
            "POSTGRES_PASSWORD=".into(),
            "empty-password",
        ),
        (
            "docker/redis/redis.conf",
            "",
            String::new(),
            "missing-setting",
        ),
        (
            "docker/postgres/postgresql.conf",
            "",
            String::new(),
            "missing-setting",
        ),
        (".env", "REDIS_PORT=", "REDIS_PORT=".into(), "port-conflict"),
    ];
    for (file, from, to, code) in cases {
        let stack = Stack::new();
        if from.is_empty() {
            stack.project.write(file, "");
        } else if code == "port-conflict" {
            // Both services on the PostgreSQL port, URLs included.
            let env = stack.project.read(".env");
            let env = env
                .replace(
                    &format!("REDIS_PORT={}", stack.redis_port),
                    &format!("REDIS_PORT={}", stack.pg_port),
                )
                .replace(
                    &format!("redis://localhost:{}", stack.redis_port),
                    &format!("redis://localhost:{}", stack.pg_port),
                );
            stack.project.write(".env", &env);
        } else {
            stack.project.replace(file, from, &to);
        }
        let check = stack.run(&["config", "check"]);
        let shown = text(&check);
        assert_eq!(check.status.code(), Some(1), "{code}: {shown}");
        let line = shown
            .lines()
            .find(|l| l.contains(&format!("error[{code}]")))
            .unwrap_or_else(|| panic!("{code} not reported:\n{shown}"));
        assert!(line.contains(file.rsplit('/').next().unwrap()), "{line}");
        assert!(shown.contains("hint:"), "{shown}");

        let started = Instant::now();
        let up = stack.run(&["up"]);
        let took = started.elapsed();
        assert_eq!(up.status.code(), Some(1), "{code}: {}", text(&up));
        assert!(text(&up).contains(code), "{code}: {}", text(&up));
        assert!(
            !stack.root.join(".nanika/postgres/data").exists()
                && !stack.root.join(".nanika/run/plan.json").exists(),
            "{code}: up created state before refusing"
        );
        eprintln!("{code}: refused by up in {took:?}");
    }
}

#[test]
fn an_inherited_libpq_service_never_redirects_a_tool() {
    let first = first_project();
    let second = Stack::new();
    second.up();
    // A shell that exported a libpq service for another server: its settings come before
    // PGHOST and PGPORT, so psql would connect there.
    let services = second.root.join("pg_service.conf");
    std::fs::write(
        &services,
        format!("[elsewhere]\nhost=127.0.0.1\nport={}\n", first.pg_port),
    )
    .unwrap();
    for args in [
        &["db", "psql", "--", "-Atc", "select inet_server_port()"][..],
        &[
            "exec",
            "--",
            "/usr/lib/postgresql/15/bin/psql",
            "-Atc",
            "select inet_server_port()",
        ],
    ] {
        let output = second
            .nanika()
            .env("PGSERVICEFILE", &services)
            .env("PGSERVICE", "elsewhere")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            second.pg_port.to_string(),
            "{args:?}"
        );
    }
    assert_untouched(&first, "PGSERVICE");
}
