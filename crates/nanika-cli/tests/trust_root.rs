//! Safe as root, the process part: secrets never reach a log even when their statement fails,
//! concurrent migrations serialise, and a crashing server is retried at a bounded interval.

mod common;

use common::{Stack, eventually, text};
use std::time::Duration;

#[test]
fn a_failed_role_creation_never_logs_the_password() {
    let stack = Stack::new();
    let password = "role-secret-password-4711";
    // `public` passes nanika's checks but PostgreSQL refuses it as a role name, so the
    // statement that carries the password fails on the server.
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
    assert_eq!(stack.psql("SELECT count(*) FROM _sqlx_migrations"), "3");
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
