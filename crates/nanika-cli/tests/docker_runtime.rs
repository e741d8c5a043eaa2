//! The docker runtime against a real Docker engine (`scripts/docker-testbed up` makes one here,
//! with stand-in images). Without an engine these tests say why and pass, except under CI, where
//! they fail: CI runs the test bed first.

mod common;

use common::{Stack, text};
use std::path::PathBuf;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The spec fixes the compose project's and the containers' names: one test at a time uses them.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether the test bed's engine and images are ready; under CI their absence is a failure.
fn engine_ready() -> bool {
    let ready = std::process::Command::new(workspace().join("scripts/docker-testbed"))
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Docker engine with the test images: run `scripts/docker-testbed up` first"
        );
        eprintln!("skipped: no Docker engine with the test images (`scripts/docker-testbed up`)");
    }
    ready
}

/// Takes the project's containers and volumes down however the test ends.
struct ComposeDown<'a>(&'a Stack);

impl Drop for ComposeDown<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .nanika()
            .env("NANIKA_RUNTIME", "docker")
            .args(["down", "--volumes", "--yes"])
            .output();
    }
}

#[test]
fn a_redis_password_from_env_reaches_the_container_and_no_command_line() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !engine_ready() {
        return;
    }
    let stack = Stack::new();
    let password = "dock3r \"pass\" \\word";
    stack.project.replace(
        ".env",
        "# REDIS_PASSWORD=",
        &format!("REDIS_PASSWORD='{password}'"),
    );
    stack.project.replace(
        ".env",
        "redis://localhost",
        "redis://:dock3r%20%22pass%22%20%5Cword@localhost",
    );
    let _down = ComposeDown(&stack);
    let docker = || {
        let mut command = stack.nanika();
        command.env("NANIKA_RUNTIME", "docker");
        command
    };
    let up = docker().arg("up").output().unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let port = stack.redis_port.to_string();
    let anonymous = std::process::Command::new("redis-cli")
        .args(["-p", &port, "CONFIG", "GET", "maxmemory"])
        .output()
        .unwrap();
    assert!(text(&anonymous).contains("NOAUTH"), "{}", text(&anonymous));
    let keys = docker().args(["redis", "keys"]).output().unwrap();
    assert!(keys.status.success(), "{}", text(&keys));
    // doctor knows the project's own containers as its servers.
    let doctor = text(&docker().arg("doctor").output().unwrap());
    assert!(!doctor.contains(".identity"), "{doctor}");
    assert_eq!(
        doctor.matches("and it is this project's").count(),
        2,
        "{doctor}"
    );
    // No command line on the host holds it: every user can read those.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("dock3r"),
            "a command line holds the password: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    for file in ["compose.yaml", "docker/redis/redis.conf"] {
        assert!(!stack.project.read(file).contains("dock3r"), "{file}");
    }
}

/// The id of a container, or `None` when there is none of that name.
fn container_id(name: &str) -> Option<String> {
    let output = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", name])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn a_second_checkout_never_takes_over_or_deletes_the_first_ones_containers() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !engine_ready() {
        return;
    }
    let first = Stack::new();
    let _down = ComposeDown(&first);
    let docker = |stack: &Stack, args: &[&str]| {
        stack
            .nanika()
            .env("NANIKA_RUNTIME", "docker")
            .args(args)
            .output()
            .unwrap()
    };
    let up = docker(&first, &["up"]);
    assert!(up.status.success(), "{}", text(&up));
    first.psql("CREATE TABLE first_marker (note text); INSERT INTO first_marker VALUES ('mine')");
    let ids = [
        container_id("nanika-game-db"),
        container_id("nanika-game-redis"),
    ];
    assert!(ids.iter().all(Option::is_some), "{ids:?}");

    let second = Stack::new();
    for args in [
        &["up"][..],
        &["down", "--volumes", "--yes"],
        &["redis", "keys"],
    ] {
        let output = docker(&second, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        assert!(
            text(&output).contains("belongs to another checkout"),
            "{args:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(&first.root.display().to_string()),
            "{}",
            text(&output)
        );
    }
    let refused = text(&docker(&second, &["up"]));
    assert!(refused.contains("COMPOSE_PROJECT_NAME"), "{refused}");

    // With a name of its own, the second checkout runs beside the first.
    second.project.replace(
        ".env",
        "# COMPOSE_PROJECT_NAME=",
        "COMPOSE_PROJECT_NAME=nanika-second",
    );
    let _second_down = ComposeDown(&second);
    let up = docker(&second, &["up"]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(container_id("nanika-second-db").is_some());
    second.psql(
        "CREATE TABLE second_marker (note text); INSERT INTO second_marker VALUES ('theirs')",
    );
    let ps: serde_json::Value =
        serde_json::from_slice(&docker(&second, &["ps", "--json"]).stdout).unwrap();
    assert_eq!(ps[0]["state"], "healthy", "{ps}");
    let removed = docker(&second, &["down", "--volumes", "--yes"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(
        text(&removed).contains("nanika-second_postgres_data"),
        "{}",
        text(&removed)
    );
    assert_eq!(
        existing_volumes(&["nanika-second_postgres_data", "nanika-second_redis_data"]),
        Vec::<String>::new()
    );
    assert_eq!(
        existing_volumes(&["nanika-game_postgres_data", "nanika-game_redis_data"]).len(),
        2,
        "the second checkout deleted the first one's volumes"
    );

    assert_eq!(
        [
            container_id("nanika-game-db"),
            container_id("nanika-game-redis")
        ],
        ids,
        "the first checkout's containers were recreated"
    );
    assert_eq!(first.psql("SELECT note FROM first_marker"), "mine");
}

/// The names of a docker volume that exist, among `names`.
fn existing_volumes(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            std::process::Command::new("docker")
                .args(["volume", "inspect", name])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|name| name.to_string())
        .collect()
}

/// The keys of each element of a `ps --json` array, without the optional `note`.
fn shape(ps: &serde_json::Value) -> Vec<Vec<String>> {
    ps.as_array()
        .expect("ps --json prints an array")
        .iter()
        .map(|service| {
            let mut keys: Vec<String> = service
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "note")
                .cloned()
                .collect();
            keys.sort();
            keys
        })
        .collect()
}

#[test]
fn every_command_works_on_the_containers_as_it_does_natively() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !engine_ready() {
        return;
    }
    let stack = Stack::new();
    let _down = ComposeDown(&stack);
    let docker = |args: &[&str]| {
        stack
            .nanika()
            .env("NANIKA_RUNTIME", "docker")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let output = docker(args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        text(&output)
    };
    // A volume of nobody's project, which `down --volumes` must leave alone.
    let unrelated = "nanika-test-unrelated-volume";
    let made = std::process::Command::new("docker")
        .args(["volume", "create", unrelated])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));

    // A taken port stops `up` before compose makes anything.
    {
        let _taken = std::net::TcpListener::bind(("127.0.0.1", stack.pg_port)).unwrap();
        let refused = docker(&["up"]);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(
            text(&refused).contains(&format!(
                "port {} for postgres is already in use",
                stack.pg_port
            )),
            "{}",
            text(&refused)
        );
        assert_eq!(
            container_id("nanika-game-redis"),
            None,
            "half an environment was made"
        );
    }

    // Cold: the containers are created, and up returns only once the app can log in.
    let cold = ok(&["up"]);
    assert!(cold.contains("postgres started on 127.0.0.1"), "{cold}");
    assert_eq!(stack.psql("SELECT 1"), "1");
    // The spec's values, read from the running servers.
    assert_eq!(stack.psql("SHOW max_connections"), "100");
    assert_eq!(stack.psql("SHOW shared_buffers"), "256MB");
    assert_eq!(stack.psql("SHOW log_statement"), "mod");
    assert_eq!(
        stack.redis(&["CONFIG", "GET", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru"
    );
    assert_eq!(
        stack.redis(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nyes"
    );
    // Warm: nothing to start.
    let warm = ok(&["up"]);
    assert!(warm.contains("postgres already up"), "{warm}");

    // ps --json: the native shape, saying which runtime runs it.
    let ps: serde_json::Value = serde_json::from_str(&ok(&["ps", "--json"])).unwrap();
    let native: serde_json::Value =
        serde_json::from_slice(&stack.run(&["ps", "--json"]).stdout).unwrap();
    assert_eq!(shape(&ps), shape(&native), "{ps}\n{native}");
    for service in ps.as_array().unwrap() {
        assert_eq!(service["runtime"], "docker", "{ps}");
        assert_eq!(service["state"], "healthy", "{ps}");
        assert!(service["pid"].as_u64().is_some(), "{ps}");
    }
    assert_eq!(native[0]["runtime"], "native", "{native}");
    assert!(
        ps[0]["version"].as_str().unwrap().starts_with("15."),
        "{ps}"
    );

    // The database commands.
    ok(&["db", "migrate"]);
    ok(&["db", "seed"]);
    stack.psql("CREATE TABLE docker_marker (note text); INSERT INTO docker_marker VALUES ('kept')");
    let dump = stack.root.join("backups/docker.dump");
    let backup = docker(&["db", "backup", "-o", dump.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", text(&backup));
    stack.psql("UPDATE docker_marker SET note = 'changed'");
    ok(&["db", "restore", "--clean", "--yes", dump.to_str().unwrap()]);
    assert_eq!(stack.psql("SELECT note FROM docker_marker"), "kept");
    let psql = ok(&["db", "psql", "-c", "SELECT note FROM docker_marker"]);
    assert!(psql.contains("kept"), "{psql}");

    // Redis and sessions.
    stack.redis(&[
        "SET",
        "sess:d",
        r#"{"cookie":{"path":"/"},"userId":7}"#,
        "EX",
        "600",
    ]);
    assert!(ok(&["redis", "keys"]).contains("sess:d"));
    assert!(ok(&["sessions", "backup"]).contains("backed up 1 sessions"));
    ok(&["redis", "flush", "--yes"]);
    assert_eq!(stack.redis(&["EXISTS", "sess:d"]), "0");
    assert!(ok(&["sessions", "restore"]).contains("restored 1 sessions"));
    assert_eq!(stack.redis(&["EXISTS", "sess:d"]), "1");

    // Logs, from the containers, in the native format.
    let logs = ok(&["logs", "--tail", "5", "postgres"]);
    assert!(logs.lines().count() >= 1, "{logs}");
    assert!(logs.lines().all(|l| l.starts_with("postgres| ")), "{logs}");
    assert!(!logs.contains('\x1b'), "{logs:?}");
    // --json reads the containers' lines with the native runtime's parsers.
    let json = docker(&["logs", "--json", "--tail", "20"]);
    assert!(json.status.success(), "{}", text(&json));
    let records: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    for service in ["postgres", "redis"] {
        assert!(
            records
                .iter()
                .any(|r| r["service"] == service && r["level"] != "unknown"),
            "no parsed {service} record: {records:#?}"
        );
    }

    // logs -f follows the container's log as it grows (log_statement = 'mod' logs the DDL).
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_nanika"));
    follow
        .args(["logs", "-f", "--tail", "0", "postgres"])
        .current_dir(&stack.root)
        .env("NANIKA_RUNTIME", "docker")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for var in common::foreign_env() {
        follow.env_remove(var);
    }
    let mut follower = follow.spawn().unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The follower may attach after a first statement: repeat until one is seen.
    let mut found = None;
    'statements: for attempt in 0..30 {
        stack.psql(&format!("CREATE TABLE followed_{attempt} ()"));
        while let Ok(line) = seen.recv_timeout(std::time::Duration::from_secs(1)) {
            assert!(line.starts_with("postgres| "), "{line}");
            if line.contains("followed_") {
                found = Some(line);
                break 'statements;
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(found.is_some(), "logs -f never printed the statements");

    // restart: the server comes back, answering the app, before restart returns.
    let before: serde_json::Value = serde_json::from_str(&ok(&["ps", "--json"])).unwrap();
    ok(&["restart", "redis"]);
    assert_eq!(stack.redis(&["PING"]), "PONG");
    let after: serde_json::Value = serde_json::from_str(&ok(&["ps", "--json"])).unwrap();
    assert_ne!(before[1]["pid"], after[1]["pid"], "{before}\n{after}");

    // doctor: the engine, compose and both containers, all fine.
    let doctor = ok(&["doctor"]);
    for check in [
        "docker.engine",
        "docker.compose",
        "docker.postgres",
        "docker.redis",
    ] {
        assert!(
            doctor
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check}: {doctor}"
        );
    }

    // down keeps the data; up brings it back.
    ok(&["down"]);
    assert_eq!(container_id("nanika-game-db"), None);
    let volumes = ["nanika-game_postgres_data", "nanika-game_redis_data"];
    assert_eq!(existing_volumes(&volumes), volumes.to_vec());
    let stopped: serde_json::Value = serde_json::from_str(&ok(&["ps", "--json"])).unwrap();
    assert_eq!(stopped[0]["state"], "stopped", "{stopped}");
    ok(&["up"]);
    assert_eq!(stack.psql("SELECT note FROM docker_marker"), "kept");

    // down --volumes deletes the project's volumes, and only those.
    let removed = ok(&["down", "--volumes", "--yes"]);
    assert!(removed.contains("nanika-game_postgres_data"), "{removed}");
    assert_eq!(existing_volumes(&volumes), Vec::<String>::new());
    assert_eq!(existing_volumes(&[unrelated]), vec![unrelated.to_string()]);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", unrelated])
        .output();
}

#[test]
fn a_second_checkout_never_starts_on_the_volumes_the_first_one_left() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !engine_ready() {
        return;
    }
    let first = Stack::new();
    let docker = |stack: &Stack, args: &[&str]| {
        stack
            .nanika()
            .env("NANIKA_RUNTIME", "docker")
            .args(args)
            .output()
            .unwrap()
    };
    let _down = ComposeDown(&first);
    let up = docker(&first, &["up"]);
    assert!(up.status.success(), "{}", text(&up));
    first.psql("CREATE TABLE first_marker (note text); INSERT INTO first_marker VALUES ('mine')");
    // The first checkout stops; its data stays in the volumes, which carry no checkout's label.
    let down = docker(&first, &["down"]);
    assert!(down.status.success(), "{}", text(&down));

    let second = Stack::new();
    for args in [&["up"][..], &["down", "--volumes", "--yes"]] {
        let output = docker(&second, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        assert!(
            text(&output).contains(&format!(
                "holds the data of another checkout, {}",
                first.root.display()
            )),
            "{args:?}: {}",
            text(&output)
        );
    }
    assert_eq!(
        container_id("nanika-game-db"),
        None,
        "the second checkout started"
    );
    // The first checkout comes back on its own data.
    let up = docker(&first, &["up"]);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(first.psql("SELECT note FROM first_marker"), "mine");
}
