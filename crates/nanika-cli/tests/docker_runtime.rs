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
