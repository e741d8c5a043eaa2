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

/// A project's compose file run under a project name of its own, with every profile service on a
/// free port. The committed file fixes the base containers' names and the subnet, which another
/// test or checkout on this engine may hold, so a file laid over it renames them and lets Docker
/// pick the subnet, as the docker runtime does for `COMPOSE_PROJECT_NAME`.
struct ProfileProject<'a> {
    stack: &'a Stack,
    name: String,
    override_file: PathBuf,
    /// Variables set for every compose command: the profile's ports, and what a test adds.
    env: Vec<(&'static str, String)>,
}

impl<'a> ProfileProject<'a> {
    /// The project for testing `profile`, whose published ports `port_vars` name.
    fn new(stack: &'a Stack, profile: &str, port_vars: &[&'static str]) -> Self {
        let name = format!("nanika-{profile}-test-{}", std::process::id());
        let override_file = stack.root.join(format!("compose.{profile}-test.yaml"));
        std::fs::write(
            &override_file,
            format!(
                "services:\n  postgres:\n    container_name: {name}-db\n  redis:\n    container_name: {name}-redis\n\
                 networks:\n  nanika-network:\n    ipam: !reset {{}}\n"
            ),
        )
        .unwrap();
        let env = port_vars
            .iter()
            .map(|var| (*var, nanika_testkit::free_port().to_string()))
            .collect();
        ProfileProject {
            stack,
            name,
            override_file,
            env,
        }
    }

    fn port(&self, var: &str) -> u16 {
        self.env
            .iter()
            .find(|(v, _)| *v == var)
            .unwrap()
            .1
            .parse()
            .unwrap()
    }

    /// `docker compose --profile PROFILE ARGS` for this project (its `.env` gives the spec's
    /// ports).
    fn compose(&self, profile: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new("docker");
        command
            .args([
                "compose",
                "--project-name",
                &self.name,
                "--project-directory",
            ])
            .arg(&self.stack.root)
            .arg("-f")
            .arg(self.stack.root.join("compose.yaml"))
            .arg("-f")
            .arg(&self.override_file);
        if let Some(profile) = profile {
            command.args(["--profile", profile]);
        }
        for var in common::foreign_env() {
            command.env_remove(var);
        }
        for (var, value) in &self.env {
            command.env(var, value);
        }
        command.args(args).stdin(std::process::Stdio::null());
        command.output().unwrap()
    }

    /// Objects of `kind` (`ps -a`, `volume ls`) that carry this compose project's label.
    fn leftovers(&self, kind: &[&str]) -> String {
        let output = std::process::Command::new("docker")
            .args(kind)
            .args(["-q", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

/// Takes every profile's containers and the volumes down however the test ends.
struct ProfileDown<'a>(&'a ProfileProject<'a>);

impl Drop for ProfileDown<'_> {
    fn drop(&mut self) {
        let down = self
            .0
            .compose(Some("*"), &["down", "--volumes", "--remove-orphans"]);
        if !down.status.success() {
            eprintln!("docker compose down failed: {}", text(&down));
        }
    }
}

/// A command's trimmed stdout, once it succeeded.
fn stdout_of(mut command: std::process::Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", text(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut command = std::process::Command::new("redis-cli");
    command.args(["-p", &port.to_string()]).args(args);
    stdout_of(command)
}

fn psql_on(port: u16, sql: &str) -> String {
    let mut command = std::process::Command::new(format!("{}/psql", common::PG_BIN));
    command
        .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "nanika_user", "-d", "nanika_game", "-Atc", sql])
        .env("PGPASSWORD", common::PASSWORD);
    stdout_of(command)
}

#[test]
fn the_ha_profile_adds_replicas_and_sentinels_that_follow_the_primaries() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !engine_ready() {
        return;
    }
    let stack = Stack::new();
    let ha = ProfileProject::new(
        &stack,
        "ha",
        &[
            "POSTGRES_REPLICA_PORT",
            "REDIS_REPLICA_PORT",
            "SENTINEL_PORT_1",
            "SENTINEL_PORT_2",
            "SENTINEL_PORT_3",
        ],
    );
    let _down = ProfileDown(&ha);

    // Without the profile, the spec's two services only.
    let services = |profile| {
        let output = ha.compose(profile, &["config", "--services"]);
        assert!(output.status.success(), "{}", text(&output));
        let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };
    assert_eq!(services(None), ["postgres", "redis"]);
    assert_eq!(
        services(Some("ha")),
        [
            "postgres",
            "postgres-replica-1",
            "redis",
            "redis-replica-1",
            "sentinel-1",
            "sentinel-2",
            "sentinel-3"
        ]
    );

    let started = std::time::Instant::now();
    let up = ha.compose(Some("ha"), &["up", "-d", "--wait"]);
    assert!(up.status.success(), "{}", text(&up));
    eprintln!("ha profile up and healthy in {:?}", started.elapsed());

    // PostgreSQL: a row written on the primary is read on the hot standby.
    let replica = ha.port("POSTGRES_REPLICA_PORT");
    assert_eq!(psql_on(replica, "SELECT pg_is_in_recovery()"), "t");
    stack.psql("CREATE TABLE ha_marker (note text); INSERT INTO ha_marker VALUES ('streamed')");
    let streamed = common::eventually(std::time::Duration::from_secs(20), || {
        psql_on(replica, "SELECT to_regclass('ha_marker') IS NOT NULL") == "t"
            && psql_on(replica, "SELECT note FROM ha_marker") == "streamed"
    });
    assert!(streamed, "the replica never saw the primary's row");

    // Redis: a key set on the master is read on its replica.
    let redis_replica = ha.port("REDIS_REPLICA_PORT");
    assert!(redis_cli(redis_replica, &["INFO", "replication"]).contains("role:slave"));
    redis_cli(stack.redis_port, &["SET", "ha:marker", "replicated"]);
    let replicated = common::eventually(std::time::Duration::from_secs(20), || {
        redis_cli(redis_replica, &["GET", "ha:marker"]) == "replicated"
    });
    assert!(replicated, "the Redis replica never saw the master's key");

    // The three sentinels agree on the master and know each other (so quorum 2 can be reached).
    let sentinels: Vec<u16> = (1..=3)
        .map(|n| ha.port(&format!("SENTINEL_PORT_{n}")))
        .collect();
    for port in &sentinels {
        assert_eq!(
            redis_cli(*port, &["SENTINEL", "get-master-addr-by-name", "nanika"]),
            "redis\n6379",
            "sentinel on {port}"
        );
    }
    let acquainted = common::eventually(std::time::Duration::from_secs(30), || {
        sentinels.iter().all(|port| {
            let master = redis_cli(*port, &["SENTINEL", "master", "nanika"]);
            let fields: Vec<&str> = master.lines().collect();
            let value = |key: &str| {
                fields
                    .iter()
                    .position(|f| *f == key)
                    .and_then(|i| fields.get(i + 1).copied())
            };
            value("num-other-sentinels") == Some("2")
                && value("num-slaves") == Some("1")
                && value("quorum") == Some("2")
        })
    });
    assert!(
        acquainted,
        "the sentinels never found each other and the replica"
    );

    // A failover: with the master stopped, the sentinels promote the replica, by its name.
    let stop = ha.compose(Some("ha"), &["stop", "redis"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let promoted = common::eventually(std::time::Duration::from_secs(30), || {
        sentinels.iter().all(|port| {
            redis_cli(*port, &["SENTINEL", "get-master-addr-by-name", "nanika"])
                == "redis-replica-1\n6379"
        })
    });
    assert!(promoted, "the sentinels never promoted redis-replica-1");
    assert!(redis_cli(redis_replica, &["INFO", "replication"]).contains("role:master"));

    let down = ha.compose(Some("ha"), &["down", "--volumes", "--remove-orphans"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(ha.leftovers(&["ps", "-a"]), "", "containers left behind");
    assert_eq!(ha.leftovers(&["volume", "ls"]), "", "volumes left behind");
}

/// GET `path` from Prometheus's HTTP API on `port`: its JSON body, or why there is none yet.
fn prometheus_api(port: u16, path: &str) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{path}: no HTTP answer: {answer}"))?;
    if !head.starts_with("HTTP/1.0 200") {
        return Err(format!("{path}: {head}\n{body}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{path}: {e}: {body}"))
}

/// The value of an instant query whose result is one sample (`pg_up`, `redis_up`).
fn prometheus_value(port: u16, metric: &str) -> Option<String> {
    let answer = prometheus_api(port, &format!("/api/v1/query?query={metric}")).ok()?;
    let result = answer["data"]["result"].as_array()?;
    match result.as_slice() {
        [sample] => sample["value"][1].as_str().map(str::to_string),
        _ => None,
    }
}

#[test]
fn the_monitoring_profile_scrapes_both_servers_through_their_exporters() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !engine_ready() {
        return;
    }
    let stack = Stack::new();
    // The committed files the profile mounts; `nanika init` writes neither.
    let prometheus_dir = stack.root.join("monitoring/prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    for file in ["prometheus.compose.yml", "alerts.yml"] {
        std::fs::copy(
            workspace().join("monitoring/prometheus").join(file),
            prometheus_dir.join(file),
        )
        .unwrap();
    }
    let mut monitoring = ProfileProject::new(&stack, "monitoring", &["PROMETHEUS_PORT"]);
    // A Redis password, which redis_exporter must use (from its environment) to report redis_up 1.
    const REDIS_PASSWORD: &str = "monitoring-Redis-4711";
    monitoring
        .env
        .push(("REDIS_PASSWORD", REDIS_PASSWORD.into()));
    let monitoring = monitoring;
    let _down = ProfileDown(&monitoring);

    let output = monitoring.compose(Some("monitoring"), &["config", "--services"]);
    assert!(output.status.success(), "{}", text(&output));
    let mut services: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "postgres",
            "postgres-exporter",
            "prometheus",
            "redis",
            "redis-exporter"
        ]
    );

    let started = std::time::Instant::now();
    let up = monitoring.compose(Some("monitoring"), &["up", "-d", "--wait"]);
    assert!(up.status.success(), "{}", text(&up));
    eprintln!(
        "monitoring profile up and healthy in {:?}",
        started.elapsed()
    );

    // Only Prometheus is published, on loopback; the exporters are reachable on the network only.
    let published = |service: &str, container_port: &str| {
        let output = monitoring.compose(Some("monitoring"), &["port", service, container_port]);
        // `port` fails, or prints nothing, for a port that is not published.
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
            .filter(|address| !address.is_empty() && !address.ends_with(":0"))
    };
    assert_eq!(
        published("prometheus", "9090"),
        Some(format!("127.0.0.1:{}", monitoring.port("PROMETHEUS_PORT")))
    );
    assert_eq!(published("postgres-exporter", "9187"), None);
    assert_eq!(published("redis-exporter", "9121"), None);

    // Prometheus reaches both exporters by service name (scrape_interval 15s: allow a few).
    let port = monitoring.port("PROMETHEUS_PORT");
    let mut last = String::new();
    let scraped = common::eventually(std::time::Duration::from_secs(60), || {
        let targets = match prometheus_api(port, "/api/v1/targets") {
            Ok(answer) => answer,
            Err(e) => {
                last = e;
                return false;
            }
        };
        let active = targets["data"]["activeTargets"].as_array().cloned();
        last = targets.to_string();
        let up = |job: &str| {
            active.iter().flatten().any(|t| {
                t["labels"]["job"] == job
                    && t["health"] == "up"
                    && t["scrapeUrl"]
                        .as_str()
                        .is_some_and(|url| url.contains(&format!("{job}-exporter:")))
            })
        };
        up("postgres") && up("redis")
    });
    assert!(scraped, "the postgres and redis jobs never came up: {last}");
    let values = common::eventually(std::time::Duration::from_secs(60), || {
        prometheus_value(port, "pg_up").as_deref() == Some("1")
            && prometheus_value(port, "redis_up").as_deref() == Some("1")
    });
    assert!(
        values,
        "pg_up {:?}, redis_up {:?}",
        prometheus_value(port, "pg_up"),
        prometheus_value(port, "redis_up")
    );

    // The committed rules are loaded.
    let rules = prometheus_api(port, "/api/v1/rules").unwrap();
    assert!(
        rules.to_string().contains("\"PostgresDown\""),
        "alerts.yml not loaded: {rules}"
    );

    // The Redis password on no command line of the host (every user can read those).
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !cmdline.contains(REDIS_PASSWORD),
                "a password on a command line: {cmdline}"
            );
        }
    }

    // `nanika down --volumes` (docker runtime, this compose project) takes the profile's
    // services and Prometheus's volume with it, as it does the `ha` profile's.
    let down = stack
        .nanika()
        .env("NANIKA_RUNTIME", "docker")
        .env("COMPOSE_PROJECT_NAME", &monitoring.name)
        .args(["down", "--volumes", "--yes"])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(
        monitoring.leftovers(&["ps", "-a"]),
        "",
        "containers left behind"
    );
    assert_eq!(
        monitoring.leftovers(&["volume", "ls"]),
        "",
        "volumes left behind"
    );
}
