//! The docker runtime against a real Docker engine (`scripts/docker-testbed up` makes one here,
//! with stand-in images). Without an engine these tests say why and pass, except under CI, where
//! they fail: CI runs the test bed first.

mod common;

use common::{Stack, text};
use std::path::PathBuf;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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
