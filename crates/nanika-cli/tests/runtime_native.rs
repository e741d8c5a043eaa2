//! The native runtime as a user runs it: real PostgreSQL 15 and Redis 7 on free loopback ports,
//! each test in its own project, every server stopped when the test ends (even when it fails).

mod common;

use common::{PASSWORD, PG_BIN, Stack, eventually, is_root, text};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

#[test]
fn cold_up_brings_both_servers_up_configured_as_the_spec_says() {
    let stack = Stack::new();
    let output = stack.up();
    assert!(
        text(&output).contains(&format!("postgres started on 127.0.0.1:{}", stack.pg_port)),
        "{}",
        text(&output)
    );

    for service in ["postgres", "redis"] {
        let status = stack.service(service);
        assert_eq!(status["state"], "healthy", "{status}");
        assert!(
            status["pid"].as_u64().is_some() && status["restarts"] == 0,
            "{status}"
        );
    }
    for (setting, value) in [
        ("shared_buffers", "256MB"),
        ("effective_cache_size", "1GB"),
        ("work_mem", "4MB"),
        ("maintenance_work_mem", "64MB"),
        ("max_connections", "100"),
        ("random_page_cost", "1.1"),
        ("effective_io_concurrency", "200"),
        ("wal_compression", "pglz"),
        ("checkpoint_completion_target", "0.9"),
        ("log_min_duration_statement", "1s"),
        ("log_connections", "on"),
        ("log_disconnections", "on"),
        ("log_lock_waits", "on"),
        ("log_statement", "mod"),
        ("listen_addresses", "127.0.0.1"),
        ("password_encryption", "scram-sha-256"),
        ("server_encoding", "UTF8"),
    ] {
        assert_eq!(
            stack.psql(&format!("SHOW {setting}")),
            value,
            "SHOW {setting}"
        );
    }
    assert_eq!(
        stack.psql("SELECT current_user || '@' || current_database()"),
        "nanika_user@nanika_game"
    );
    // The app's role is an ordinary one: the slots PostgreSQL reserves for superusers stay
    // free for nanika's own connections.
    assert_eq!(
        stack.psql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"),
        "f"
    );
    assert_eq!(
        stack.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "nanika_user"
    );

    for (key, value) in [
        ("maxmemory", "536870912"),
        ("maxmemory-policy", "allkeys-lru"),
        ("maxmemory-samples", "5"),
        ("appendonly", "yes"),
        ("appendfilename", "appendonly.aof"),
        ("appendfsync", "everysec"),
        ("auto-aof-rewrite-percentage", "100"),
        ("auto-aof-rewrite-min-size", "67108864"),
        ("timeout", "300"),
        ("tcp-keepalive", "300"),
        ("maxclients", "1000"),
        ("bind", "127.0.0.1"),
    ] {
        assert_eq!(
            stack.redis(&["CONFIG", "GET", key]),
            format!("{key}\n{value}"),
            "CONFIG GET {key}"
        );
    }
    if is_root() {
        let data = std::fs::metadata(stack.root.join(".nanika/postgres/data")).unwrap();
        let postgres_uid = nix::unistd::User::from_name("postgres")
            .unwrap()
            .map_or(65534, |u| u.uid.as_raw());
        assert_eq!(
            data.uid(),
            postgres_uid,
            "as root, PostgreSQL runs as an unprivileged user"
        );
    }
}

#[test]
fn data_written_before_down_is_there_after_up_and_down_leaves_no_process() {
    let stack = Stack::new();
    stack.up();
    stack.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before down')");
    stack.redis(&["SET", "kept", "before down"]);
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(
        stack.own_processes(),
        Vec::<String>::new(),
        "down left processes behind"
    );
    for service in ["postgres", "redis"] {
        assert_eq!(stack.service(service)["state"], "stopped");
    }
    stack.up();
    assert_eq!(stack.psql("SELECT v FROM kept"), "before down");
    assert_eq!(stack.redis(&["GET", "kept"]), "before down");
}

#[test]
fn a_killed_server_is_restarted_with_its_committed_data() {
    let stack = Stack::new();
    stack.up();
    stack.psql(
        "CREATE TABLE committed (id int); INSERT INTO committed SELECT generate_series(1, 1000)",
    );
    stack.redis(&["SET", "session:1", "alive"]);
    // Make the key durable now (everysec would allow losing the last second).
    stack.redis(&["BGREWRITEAOF"]);
    assert!(eventually(Duration::from_secs(20), || stack
        .redis(&["INFO", "persistence"])
        .contains("aof_rewrite_in_progress:0\r")
        && stack
            .redis(&["INFO", "persistence"])
            .contains("aof_rewrite_scheduled:0")));

    for service in ["postgres", "redis"] {
        let before = stack.service(service);
        let pid = before["pid"].as_u64().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let restarted = eventually(Duration::from_secs(60), || {
            let now = stack.service(service);
            now["state"] == "healthy" && now["pid"] != before["pid"]
        });
        assert!(
            restarted,
            "{service} was not restarted: {}",
            stack.service(service)
        );
        assert_eq!(stack.service(service)["restarts"], 1);
    }
    assert_eq!(stack.psql("SELECT count(*) FROM committed"), "1000");
    assert_eq!(stack.redis(&["GET", "session:1"]), "alive");
    let log = stack.run(&["logs", "--tail", "400"]);
    assert!(
        text(&log).contains("killed by SIGKILL; restarting"),
        "{}",
        text(&log)
    );
}

#[test]
fn a_busy_port_fails_before_anything_starts_and_names_the_holder() {
    let stack = Stack::new();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", stack.redis_port)).unwrap();
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains(&format!(
            "port {} for redis is already in use by",
            stack.redis_port
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "the holder is named: {message}"
    );
    assert!(message.contains("REDIS_PORT"), "{message}");
    assert_eq!(
        stack.own_processes(),
        Vec::<String>::new(),
        "nothing may run after a refused up"
    );
}

#[test]
fn stale_pid_files_are_handled_without_touching_other_processes() {
    let stack = Stack::new();
    stack.up();
    stack.run(&["down"]);
    let mut bystander = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = bystander.id();
    std::fs::write(
        stack.root.join(".nanika/postgres/data/postmaster.pid"),
        format!("{pid}\n/elsewhere\n"),
    )
    .unwrap();
    std::fs::write(
        stack.root.join(".nanika/run/supervisor.pid"),
        format!("{pid}\n"),
    )
    .unwrap();
    std::fs::write(stack.root.join(".nanika/run/redis.pid"), format!("{pid}\n")).unwrap();
    let output = stack.up();
    assert!(
        text(&output).contains(&format!(
            "removed a stale postmaster.pid that named sleep (pid {pid})"
        )),
        "{}",
        text(&output)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the unrelated process must live on"
    );
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "down must not signal an unrelated process"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn a_killed_supervisor_is_replaced_and_its_servers_restarted_cleanly() {
    let stack = Stack::new();
    stack.up();
    stack.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (7)");
    let supervisor: i32 = std::fs::read_to_string(stack.root.join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || stack
        .service("postgres")["state"]
        == "unsupervised"));
    let output = stack.up();
    assert!(
        text(&output).contains("was running without its supervisor"),
        "{}",
        text(&output)
    );
    assert_eq!(stack.service("postgres")["state"], "healthy");
    assert_eq!(stack.psql("SELECT v FROM t"), "7");
    stack.run(&["down"]);
    assert_eq!(stack.own_processes(), Vec::<String>::new());
}

#[test]
fn a_missing_binary_is_named_with_the_command_that_installs_it() {
    let stack = Stack::new();
    let output = stack
        .nanika()
        .arg("up")
        .env("NANIKA_REDIS_BIN", "/nonexistent/redis-server")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains("Redis 7 (redis-server) was not found")
            && message.contains("/nonexistent/redis-server"),
        "{message}"
    );
    assert!(
        message.contains("apt-get install -y redis-server"),
        "{message}"
    );
    assert_eq!(stack.own_processes(), Vec::<String>::new());
}

#[test]
fn a_data_directory_of_another_major_version_is_refused_untouched() {
    let stack = Stack::new();
    stack.up();
    stack.run(&["down"]);
    let version = stack.root.join(".nanika/postgres/data/PG_VERSION");
    std::fs::write(&version, "14\n").unwrap();
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("holds a PostgreSQL 14 cluster, but this is PostgreSQL 15"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("never re-initialises"),
        "{}",
        text(&output)
    );
    assert_eq!(std::fs::read_to_string(&version).unwrap(), "14\n");
    assert_eq!(stack.own_processes(), Vec::<String>::new());
}

#[test]
fn down_volumes_asks_first_and_without_a_terminal_needs_yes() {
    let stack = Stack::new();
    stack.up();
    let refused = stack.run(&["down", "--volumes"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("--yes"));
    assert!(
        stack.root.join(".nanika/postgres/data/PG_VERSION").exists(),
        "nothing deleted without confirmation"
    );
    let done = stack.run(&["down", "--volumes", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert!(!stack.root.join(".nanika").exists());
    assert!(
        stack.root.join("docker/postgres/postgresql.conf").exists(),
        "only the state is removed"
    );
}

#[test]
fn a_project_in_a_closed_home_works_as_root() {
    if !is_root() {
        eprintln!("not root: the server runs as the current user, nothing to traverse");
        return;
    }
    let stack = Stack::in_closed_home();
    stack.up();
    assert_eq!(stack.psql("SELECT 1"), "1");
    let link = stack.root.join(".nanika/postgres");
    let external =
        std::fs::read_link(&link).expect("state moved where the server user can reach it");
    assert!(
        external.starts_with("/var/lib/nanika"),
        "{}",
        external.display()
    );
    let done = stack.run(&["down", "--volumes", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert!(!external.exists() && !stack.root.join(".nanika").exists());
}

#[test]
fn exec_and_env_give_the_app_its_environment() {
    let stack = Stack::new();
    stack.up();
    let env = stack.run(&["env"]);
    let shown = text(&env);
    assert!(
        shown.contains(&format!(
            "DATABASE_URL=postgresql://nanika_user:****@localhost:{}/nanika_game?schema=public",
            stack.pg_port
        )),
        "{shown}"
    );
    assert!(
        shown.contains("PGPASSWORD=****") && !shown.contains(PASSWORD),
        "{shown}"
    );
    assert!(
        text(&stack.run(&["env", "--show-secrets"])).contains(&format!("PGPASSWORD={PASSWORD}"))
    );

    // The spec's ?schema=public URL works with libpq tools through exec.
    let psql = format!("{PG_BIN}/psql");
    let output = stack.run(&["exec", "--", &psql, "-Atc", "SHOW search_path"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "public");
    let output = stack.run(&["exec", "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        output.status.code(),
        Some(7),
        "exec passes on the exit code"
    );
}

#[test]
fn a_password_that_no_longer_matches_is_explained() {
    let stack = Stack::new();
    stack.up();
    stack.run(&["down"]);
    stack.project.replace(
        ".env",
        "POSTGRES_PASSWORD=nanika_password",
        "POSTGRES_PASSWORD=changed-later-1234",
    );
    stack.project.replace(
        ".env",
        "nanika_user:nanika_password@",
        "nanika_user:changed-later-1234@",
    );
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("refused the password"),
        "{}",
        text(&output)
    );
    // The data is not the problem: nothing suggests deleting it.
    assert!(!text(&output).contains("--volumes"), "{}", text(&output));
    assert_eq!(
        stack.own_processes(),
        Vec::<String>::new(),
        "a failed up leaves nothing running"
    );
}

#[test]
fn restart_and_logs() {
    let stack = Stack::new();
    stack.up();
    let before = stack.service("redis")["pid"].clone();
    let output = stack.run(&["restart", "redis"]);
    assert!(output.status.success(), "{}", text(&output));
    let after = stack.service("redis");
    assert_eq!(after["state"], "healthy");
    assert_ne!(after["pid"], before);
    let logs = text(&stack.run(&["logs", "--tail", "50"]));
    assert!(
        logs.contains("postgres| ") && logs.contains("redis   | "),
        "{logs}"
    );
    assert!(
        logs.contains("database system is ready to accept connections"),
        "{logs}"
    );
}

#[test]
fn the_first_up_writes_a_private_env_from_the_example() {
    let stack = Stack::new();
    std::fs::remove_file(stack.root.join(".env")).unwrap();
    let output = stack
        .nanika()
        .arg("up")
        .env("POSTGRES_PORT", stack.pg_port.to_string())
        .env("REDIS_PORT", stack.redis_port.to_string())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("wrote .env from .env.example"));
    let mode = std::fs::metadata(stack.root.join(".env"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn the_docker_runtime_says_clearly_when_no_engine_answers() {
    let stack = Stack::new();
    // A PATH without docker, whether or not this machine has an engine.
    let empty = tempfile::tempdir().unwrap();
    let output = stack
        .nanika()
        .env("PATH", empty.path())
        .args(["up", "--runtime", "docker"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains("docker compose is not available"),
        "{message}"
    );
    assert!(message.contains("--runtime native"), "{message}");
    assert!(
        !stack.root.join(".nanika/runtime").exists(),
        "a failed docker up records nothing"
    );
}

#[test]
fn ps_only_looks_and_up_recreates_a_dropped_app_database() {
    let stack = Stack::new();
    stack.up();
    stack.psql_in("postgres", "DROP DATABASE nanika_game");
    let status = stack.service("postgres");
    assert_ne!(status["state"], "crashed", "{status}");
    let exists = stack.psql_in(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'nanika_game'",
    );
    assert_eq!(exists, "0", "ps must not create anything");
    stack.up();
    assert_eq!(stack.psql("SELECT current_database()"), "nanika_game");
}
