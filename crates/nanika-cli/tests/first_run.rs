//! Small things a new user trips over: each said plainly instead of silently.

mod common;

use common::{Stack, text};

#[test]
fn redis_keys_says_when_the_list_is_cut_and_info_refuses_an_unknown_section() {
    let stack = Stack::new();
    stack.up();
    for key in ["a", "b", "c"] {
        stack.redis(&["SET", key, "1"]);
    }
    let cut = stack.run(&["redis", "keys", "--limit", "2"]);
    assert!(cut.status.success(), "{}", text(&cut));
    assert_eq!(String::from_utf8_lossy(&cut.stdout).lines().count(), 2);
    assert!(
        String::from_utf8_lossy(&cut.stderr).contains("there are more"),
        "{}",
        text(&cut)
    );
    let whole = stack.run(&["redis", "keys", "--limit", "3"]);
    assert!(!text(&whole).contains("there are more"), "{}", text(&whole));

    let bogus = stack.run(&["redis", "info", "bogus"]);
    assert_eq!(bogus.status.code(), Some(1), "{}", text(&bogus));
    assert!(
        text(&bogus).contains("no INFO section `bogus`"),
        "{}",
        text(&bogus)
    );
    assert!(stack.run(&["redis", "info", "memory"]).status.success());
}

#[test]
fn completions_piped_into_head_end_quietly() {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} completions bash | head -3",
            assert_cmd::cargo::cargo_bin!("nanika").display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);
    assert!(!text(&output).contains("panicked"), "{}", text(&output));
}

#[test]
fn restart_with_nothing_running_starts_nothing() {
    let stack = Stack::new();
    let output = stack.run(&["restart"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("nothing was restarted"),
        "{}",
        text(&output)
    );
    let named = stack.run(&["restart", "redis"]);
    assert_eq!(named.status.code(), Some(1), "{}", text(&named));
    assert!(text(&named).contains("nanika up redis"), "{}", text(&named));
    assert_eq!(stack.own_processes(), Vec::<String>::new());
}
