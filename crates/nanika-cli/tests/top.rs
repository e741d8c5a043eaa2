//! `nanika top`: the view read from real servers, `--once --json`, and the live view in a
//! terminal (tmux), which quits on `q`.

mod common;

use common::{PASSWORD, PG_BIN, Stack, eventually, text};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn view(stack: &Stack, interval_ms: u64) -> Value {
    let output = stack.run(&[
        "top",
        "--once",
        "--json",
        "--interval-ms",
        &interval_ms.to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
}

/// A child killed when the test ends, however it ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pgbench(stack: &Stack, script: &std::path::Path, seconds: u32) -> Background {
    Background(
        Command::new(format!("{PG_BIN}/pgbench"))
            .args(["-n", "-c", "2", "-T", &seconds.to_string(), "-f"])
            .arg(script)
            .args(["-h", "127.0.0.1", "-p", &stack.pg_port.to_string()])
            .args(["-U", "nanika_user", "nanika_game"])
            .env("PGPASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn the_view_reads_the_spec_limits_the_load_the_longest_query_and_the_keys() {
    let stack = Stack::new();
    stack.up();

    // At rest: the spec's limits, and the probe's own work left out of the rates.
    let rest = view(&stack, 500);
    let pg = &rest["postgres"];
    assert_eq!(pg["state"], "up", "{rest}");
    assert_eq!(pg["max_connections"], 100, "{rest}");
    // The probe runs 3 transactions and sends Redis 3 commands a reading: 6/s at 500 ms.
    assert!(
        pg["transactions_per_second"].as_f64().unwrap() < 2.0,
        "{rest}"
    );
    assert_eq!(pg["longest_query"], Value::Null, "{rest}");
    let redis = &rest["redis"];
    assert_eq!(redis["state"], "up", "{rest}");
    assert_eq!(redis["role"], "master", "{rest}");
    assert_eq!(redis["maxmemory"], 512u64 * 1024 * 1024, "{rest}");
    assert!(redis["ops_per_second"].as_f64().unwrap() < 2.0, "{rest}");

    // Keys by prefix, all of them counted.
    for n in 0..30 {
        stack.redis(&["SET", &format!("session:{n}"), "{}"]);
    }
    for n in 0..4 {
        stack.redis(&["SET", &format!("user:{n}"), "x"]);
    }
    stack.redis(&["SET", "plain", "x"]);
    let keyed = view(&stack, 200);
    let redis = &keyed["redis"];
    assert_eq!(redis["keys"], 35, "{keyed}");
    assert_eq!(redis["prefixes_sampled"], 35, "{keyed}");
    assert_eq!(
        redis["keys_by_prefix"],
        serde_json::json!({"session:": 30, "user:": 4, "plain": 1}),
        "{keyed}"
    );

    // Under load: transactions per second.
    let script = stack.root.join("select.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    let _load = pgbench(&stack, &script, 20);
    assert!(
        eventually(LIMIT, || {
            view(&stack, 1500)["postgres"]["transactions_per_second"]
                .as_f64()
                .is_some_and(|tps| tps > 50.0)
        }),
        "pgbench's transactions never showed"
    );

    // The longest query, from another role's session: top reads as the cluster's superuser.
    let _sleeper = Background(
        Command::new(format!("{PG_BIN}/psql"))
            .args(["-X", "-h", "127.0.0.1", "-p", &stack.pg_port.to_string()])
            .args(["-U", "nanika_user", "-d", "nanika_game", "-c"])
            .arg("SELECT pg_sleep(60) /* the long one */")
            .env("PGPASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Value::Null;
    assert!(
        eventually(LIMIT, || {
            seen = view(&stack, 100);
            seen["postgres"]["longest_query"]["query"]
                .as_str()
                .is_some_and(|q| q.contains("the long one"))
        }),
        "the sleeping query never showed: {seen}"
    );
    assert!(
        seen["postgres"]["longest_query"]["seconds"]
            .as_f64()
            .unwrap()
            >= 0.0,
        "{seen}"
    );
}

#[test]
fn a_stopped_server_is_shown_down_with_the_reason_and_a_foreign_one_is_not_read() {
    let stack = Stack::new();
    stack.up();
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));

    // Something else answers on the Redis port: top says so and never talks to it.
    let stranger = std::net::TcpListener::bind(("127.0.0.1", stack.redis_port)).unwrap();
    stranger.set_nonblocking(true).unwrap();
    let seen = view(&stack, 100);
    assert_eq!(seen["postgres"]["state"], "down", "{seen}");
    assert_eq!(seen["redis"]["state"], "down", "{seen}");
    let reason = seen["redis"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&stack.redis_port.to_string()),
        "the reason names the port: {reason}"
    );
    assert!(
        stranger.accept().is_err(),
        "top connected to a server that is not this project's"
    );

    let plain = stack.run(&["top", "--once", "--interval-ms", "100"]);
    assert!(plain.status.success(), "{}", text(&plain));
    let said = String::from_utf8_lossy(&plain.stdout);
    assert!(said.contains("postgres  DOWN"), "{said}");
    assert!(said.contains("redis     DOWN"), "{said}");
}

#[test]
fn the_live_view_needs_a_terminal_and_json_needs_once() {
    let stack = Stack::new();
    let live = stack.nanika().arg("top").write_stdin("").output().unwrap();
    assert_eq!(live.status.code(), Some(2), "{}", text(&live));
    assert!(text(&live).contains("needs a terminal"), "{}", text(&live));
    let json = stack.run(&["top", "--json"]);
    assert_eq!(json.status.code(), Some(2), "{}", text(&json));
    assert!(text(&json).contains("--once"), "{}", text(&json));
}

#[test]
fn the_live_view_refreshes_in_a_terminal_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is missing: scripts/install-deps --tests installs it"
        );
        eprintln!("tmux is missing: skipped");
        return;
    }
    let stack = Stack::new();
    stack.up();
    // A tmux server of the test's own, on its own socket.
    let socket = stack.root.join("tmux.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    struct KillServer<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for KillServer<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let _server = KillServer(&tmux);
    let nanika = assert_cmd::cargo::cargo_bin("nanika");
    let command = format!(
        "cd '{}' && NANIKA_RUNTIME=native NANIKA_CACHE_DIR='{}' '{}' top --interval-ms 200; echo exited $? > '{}'",
        stack.root.display(),
        stack.cache_dir.display(),
        nanika.display(),
        stack.root.join("top.exit").display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "40",
        "-s",
        "top",
        &command,
    ]);
    assert!(started.status.success(), "{}", text(&started));
    // Keep the pane after the command ends, to read what it left.
    tmux(&["set-option", "-t", "top", "remain-on-exit", "on"]);
    let screen =
        || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).to_string();
    let mut shown = String::new();
    assert!(
        eventually(LIMIT, || {
            shown = screen();
            shown.contains("postgres  up") && shown.contains("redis     up (master)")
        }),
        "the view never showed both servers up:\n{shown}"
    );
    assert!(shown.contains("q quits"), "{shown}");
    // It refreshes: a key written now shows up in the next view.
    stack.redis(&["SET", "session:live", "{}"]);
    assert!(
        eventually(LIMIT, || {
            shown = screen();
            shown.contains("session: 1")
        }),
        "a new key never showed:\n{shown}"
    );
    tmux(&["send-keys", "-t", "top", "q"]);
    let exit = stack.root.join("top.exit");
    // The shell makes the file before echo writes into it: wait for the whole line.
    assert!(
        eventually(LIMIT, || std::fs::read_to_string(&exit)
            .is_ok_and(|text| text.ends_with('\n'))),
        "top did not quit on q:\n{}",
        screen()
    );
    assert_eq!(std::fs::read_to_string(&exit).unwrap().trim(), "exited 0");
}
