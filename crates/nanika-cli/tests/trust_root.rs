//! Safe as root, the process part: secrets never reach a log even when their statement fails,
//! concurrent migrations serialise, and a crashing server is retried at a bounded interval.

mod common;

use common::{Stack, eventually, text};
use std::time::Duration;

#[test]
fn a_failed_role_creation_never_logs_the_password() {
    // With the cluster cache the role is made by the single-user session that completes the
    // copy; without it, through the started server: both must keep the password out.
    for cache_off in [false, true] {
        let mut stack = Stack::new();
        if cache_off {
            stack.cache_dir = "off".into();
        }
        role_creation_fails_without_the_password(&stack);
    }
}

fn role_creation_fails_without_the_password(stack: &Stack) {
    let password = "role-secret-password-4711";
    // `public` passes nanika's checks but PostgreSQL refuses it as a role name, so the
    // statement that carries the password fails.
    for (from, to) in [
        (
            "POSTGRES_USER=nanika_user",
            "POSTGRES_USER=public".to_string(),
        ),
        (
            "POSTGRES_PASSWORD=nanika_password",
            format!("POSTGRES_PASSWORD={password}"),
        ),
        (
            "nanika_user:nanika_password@",
            format!("public:{password}@"),
        ),
    ] {
        stack.project.replace(".env", from, &to);
    }
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(!text(&output).contains(password), "{}", text(&output));
    let logs = stack.root.join(".nanika/logs");
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !log.contains(password),
            "{} holds the password",
            entry.path().display()
        );
    }
}

#[test]
fn five_concurrent_migrations_of_a_new_database_all_succeed() {
    let stack = Stack::new();
    stack.up();
    let children: Vec<_> = (0..5)
        .map(|_| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin!("nanika"))
                .current_dir(&stack.root)
                .env("NANIKA_RUNTIME", "native")
                .args(["db", "migrate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    let files = std::fs::read_dir(stack.root.join("migrations"))
        .unwrap()
        .count();
    assert_eq!(
        stack.psql("SELECT count(*) FROM _sqlx_migrations"),
        files.to_string()
    );
}

#[test]
fn a_server_that_keeps_crashing_is_retried_at_least_every_four_seconds() {
    let stack = Stack::new();
    stack.up();
    let mut longest_wait = 0;
    let mut seen_waiting = false;
    for _ in 0..7 {
        let pid = stack.service("redis")["pid"].as_u64().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let restarted = eventually(Duration::from_secs(20), || {
            let redis = stack.service("redis");
            if let Some(wait) = redis["next_start_in_ms"].as_u64() {
                seen_waiting = true;
                longest_wait = longest_wait.max(wait);
            }
            redis["state"] == "healthy" && redis["pid"].as_u64() != Some(pid)
        });
        assert!(
            restarted,
            "redis was not restarted: {}",
            stack.service("redis")
        );
    }
    assert!(seen_waiting, "ps never showed when the next start is");
    assert!(
        longest_wait <= 4000,
        "a restart was scheduled {longest_wait} ms ahead"
    );
}

/// The uid a process runs as.
fn uid_of(pid: u64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `program args` as the unprivileged `nobody`, the other local user.
fn as_nobody(program: &str, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(program)
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

#[test]
fn redis_runs_unprivileged_and_config_rewrite_never_touches_a_committed_file() {
    if !common::as_root("redis_runs_unprivileged") {
        return;
    }
    let stack = Stack::new();
    stack.up();
    let pid = stack.service("redis")["pid"].as_u64().unwrap();
    assert_ne!(uid_of(pid), 0, "redis-server runs as root");
    let committed = stack.project.read("docker/redis/redis.conf");
    let spec_maxmemory = stack.redis(&["CONFIG", "GET", "maxmemory"]);
    // What any local user can do to a Redis without a password.
    let port = stack.redis_port.to_string();
    let cli = |args: &[&str]| as_nobody("redis-cli", &[&["-p", port.as_str()], args].concat());
    assert!(text(&cli(&["CONFIG", "SET", "maxmemory", "1mb"])).contains("OK"));
    let rewrite = cli(&["CONFIG", "REWRITE"]);
    assert!(text(&rewrite).contains("OK"), "{}", text(&rewrite));
    assert_eq!(
        stack.project.read("docker/redis/redis.conf"),
        committed,
        "CONFIG REWRITE changed the committed redis.conf"
    );
    // It rewrote Redis's own copy, which the next start replaces with the committed file.
    let own = stack.root.join(".nanika/redis/redis.conf");
    assert!(
        std::fs::read_to_string(&own)
            .unwrap()
            .contains("maxmemory 1mb")
    );
    assert!(stack.run(&["restart", "redis"]).status.success());
    assert_eq!(stack.redis(&["CONFIG", "GET", "maxmemory"]), spec_maxmemory);
    // And lint says what a local user could do.
    let lint = stack.run(&["config", "lint"]);
    assert!(
        text(&lint).contains("warning[redis-no-password]"),
        "{}",
        text(&lint)
    );
}

#[test]
fn a_redis_password_from_env_is_required_and_no_other_user_can_read_it() {
    if !common::as_root("a_redis_password_from_env") {
        return;
    }
    let stack = Stack::new();
    let password = "r3dis pass+word%";
    stack.project.replace(
        ".env",
        "# REDIS_PASSWORD=",
        &format!("REDIS_PASSWORD='{password}'"),
    );
    stack.project.replace(
        ".env",
        "redis://localhost",
        "redis://:r3dis%20pass%2Bword%25@localhost",
    );
    stack.up();
    let port = stack.redis_port.to_string();
    let refused = as_nobody(
        "redis-cli",
        &["-p", &port, "CONFIG", "SET", "maxmemory", "1mb"],
    );
    assert!(text(&refused).contains("NOAUTH"), "{}", text(&refused));
    // nanika itself authenticates with the URL's password.
    let keys = stack.run(&["redis", "keys"]);
    assert!(keys.status.success(), "{}", text(&keys));
    let flush = stack.run(&["redis", "flush", "--yes"]);
    assert!(flush.status.success(), "{}", text(&flush));
    // The password is in no committed file, and nobody else can read where it is.
    for file in ["docker/redis/redis.conf", "compose.yaml", ".env.example"] {
        assert!(!stack.project.read(file).contains(password), "{file}");
    }
    let mut private: Vec<String> = vec![
        stack.root.join(".env").display().to_string(),
        stack
            .root
            .join(".nanika/redis/redis.conf")
            .display()
            .to_string(),
    ];
    for entry in std::fs::read_dir(stack.root.join("backups"))
        .unwrap()
        .flatten()
    {
        private.push(entry.path().display().to_string());
    }
    assert!(private.len() > 2, "the flush left a snapshot");
    for path in &private {
        let read = as_nobody("cat", &[path]);
        assert!(!read.status.success(), "nobody could read {path}");
    }
    let own = std::fs::read_to_string(stack.root.join(".nanika/redis/redis.conf")).unwrap();
    assert!(own.contains("requirepass"), "{own}");
}
