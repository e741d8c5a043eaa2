//! Proof under faults: crashes under load with counted losses, interrupted and concurrent starts,
//! full disks, and the security defaults. Each case prints its figure (`cargo test -- --nocapture`
//! shows them); docs/RELIABILITY.md records them.

mod common;

use common::{PASSWORD, Stack, eventually, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn sigkill(pid: u64) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

fn restarted(stack: &Stack, service: &str, old_pid: &serde_json::Value) -> bool {
    eventually(Duration::from_secs(60), || {
        let now = stack.service(service);
        now["state"] == "healthy" && &now["pid"] != old_pid
    })
}

fn pg_options(stack: &Stack) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(stack.pg_port)
        .username("nanika_user")
        .password(PASSWORD)
        .database("nanika_game")
}

#[test]
fn postgres_killed_under_load_loses_no_committed_row() {
    let stack = Stack::new();
    stack.up();
    stack.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, state text NOT NULL)");
    let options = pg_options(&stack);
    let committed = Arc::new(Mutex::new(Vec::<i64>::new()));
    let next = Arc::new(AtomicU64::new(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (options, committed, next) = (options.clone(), committed.clone(), next.clone());
        writers.push(runtime.spawn(async move {
            let Ok(mut conn) = PgConnection::connect_with(&options).await else {
                return;
            };
            loop {
                let id = next.fetch_add(1, Ordering::SeqCst) as i64;
                // Only an id whose COMMIT returned counts as committed.
                match sqlx::query("INSERT INTO ledger VALUES ($1, 'committed')")
                    .bind(id)
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => committed.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    // A transaction that is open, never committed, when the server dies.
    let uncommitted = runtime.spawn({
        let options = options.clone();
        async move {
            let mut conn = PgConnection::connect_with(&options).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO ledger SELECT -g, 'uncommitted' FROM generate_series(1, 100) g",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            std::future::pending::<()>().await;
        }
    });
    assert!(
        eventually(Duration::from_secs(60), || committed.lock().unwrap().len()
            >= 3000),
        "the writers do not progress"
    );
    let before = stack.service("postgres");
    sigkill(before["pid"].as_u64().unwrap());
    runtime.block_on(async {
        for writer in writers {
            let _ = writer.await;
        }
    });
    uncommitted.abort();
    assert!(
        restarted(&stack, "postgres", &before["pid"]),
        "postgres was not restarted"
    );
    let recorded = committed.lock().unwrap().clone();
    let present: i64 = stack
        .psql(&format!(
            "SELECT count(*) FROM ledger WHERE id = ANY('{{{}}}'::bigint[])",
            recorded
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
        .parse()
        .unwrap();
    let lost = recorded.len() as i64 - present;
    let visible_uncommitted = stack.psql("SELECT count(*) FROM ledger WHERE state = 'uncommitted'");
    println!(
        "postgres SIGKILL under load: {} commits acknowledged, {lost} lost, {visible_uncommitted} uncommitted rows visible",
        recorded.len()
    );
    assert_eq!(lost, 0, "committed rows were lost");
    assert_eq!(visible_uncommitted, "0");
}

/// One INCR client on a raw connection: (value, when acknowledged) for every reply.
fn incr_until_killed(
    port: u16,
    stop_after: u64,
    on_threshold: impl FnOnce(),
) -> Vec<(u64, Instant)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut acked = Vec::new();
    let mut on_threshold = Some(on_threshold);
    loop {
        if writer
            .write_all(b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n")
            .is_err()
        {
            return acked;
        }
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(n) if n > 0 && reply.starts_with(':') => {
                acked.push((reply[1..].trim().parse().unwrap(), Instant::now()))
            }
            _ => return acked,
        }
        if acked.len() as u64 == stop_after
            && let Some(kill_now) = on_threshold.take()
        {
            kill_now();
        }
    }
}

#[test]
fn redis_killed_with_everysec_loses_at_most_what_its_promise_allows() {
    let mut worst_writes = 0;
    let mut worst_ms = 0.0f64;
    const RUNS: usize = 10;
    let stack = Stack::new();
    assert!(stack.run(&["up", "redis"]).status.success());
    for run in 0..RUNS {
        stack.redis(&["SET", "counter", "0"]);
        let before = stack.service("redis");
        let pid = before["pid"].as_u64().unwrap();
        let acked = incr_until_killed(stack.redis_port, 5000 + 1000 * run as u64, || sigkill(pid));
        let last = acked.last().copied().unwrap();
        assert!(
            restarted(&stack, "redis", &before["pid"]),
            "redis was not restarted (run {run})"
        );
        let survived: u64 = stack.redis(&["GET", "counter"]).parse().unwrap();
        let lost = last.0.saturating_sub(survived);
        let lost_ms = acked
            .iter()
            .find(|(v, _)| *v == survived)
            .map_or(0.0, |(_, at)| {
                last.1.duration_since(*at).as_secs_f64() * 1000.0
            });
        worst_writes = worst_writes.max(lost);
        worst_ms = worst_ms.max(lost_ms);
        assert!(survived <= last.0 + 1, "more than was written survived?");
        // Redis's promise with appendfsync everysec: at most about two seconds of writes.
        assert!(
            lost_ms <= 2000.0,
            "run {run}: lost {lost} writes spanning {lost_ms:.1} ms"
        );
        // Let the next crash count as a fresh one (the supervisor's backoff resets after 10 s
        // of running would slow the runs down otherwise): restart through nanika.
        assert!(stack.run(&["restart", "redis"]).status.success());
    }
    println!(
        "redis SIGKILL with everysec, {RUNS} runs: worst loss {worst_writes} acknowledged writes, {worst_ms:.1} ms"
    );
}

#[test]
fn nanika_killed_during_initdb_recovers_on_the_next_up() {
    let stack = Stack::new();
    let scratch = stack.root.join(".nanika/postgres/data.initdb-incomplete");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("nanika"));
    cmd.arg("up")
        .current_dir(&stack.root)
        .env("NANIKA_RUNTIME", "native")
        // The project's own initdb: a copy from the cache is over too quickly to be caught.
        .env("NANIKA_CACHE_DIR", "off")
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || scratch.exists()),
        "initdb never started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !stack.root.join(".nanika/postgres/data").exists(),
        "no half cluster may stand in for the real one"
    );
    let output = stack.up();
    assert_eq!(stack.psql("SELECT 1"), "1", "{}", text(&output));
    assert!(!scratch.exists());
}

#[test]
fn ten_concurrent_ups_start_exactly_one_of_each_server() {
    let stack = Stack::new();
    let children: Vec<_> = (0..10)
        .map(|_| {
            let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("nanika"));
            cmd.arg("up")
                .current_dir(&stack.root)
                .env("NANIKA_RUNTIME", "native");
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut waited = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        waited += usize::from(text(&output).contains("waiting for it to finish"));
    }
    let processes = stack.own_processes();
    let postmasters = processes
        .iter()
        .filter(|p| p.contains("postgres -D"))
        .count();
    let redises = processes
        .iter()
        .filter(|p| p.contains("redis-server"))
        .count();
    println!(
        "ten concurrent ups: {postmasters} postmaster, {redises} redis-server, {waited} calls waited for another"
    );
    assert_eq!((postmasters, redises), (1, 1), "{processes:#?}");
}

#[test]
fn servers_listen_on_loopback_only_and_require_passwords() {
    let stack = Stack::new();
    stack.up();
    let listening = |pid: u64| -> Vec<String> {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|l| {
                l.to_string_lossy()
                    .strip_prefix("socket:[")
                    .map(|s| s.trim_end_matches(']').to_string())
            })
            .collect();
        let mut addresses = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                    addresses.push(f[1].to_string());
                }
            }
        }
        addresses
    };
    for service in ["postgres", "redis"] {
        let pid = stack.service(service)["pid"].as_u64().unwrap();
        let addresses = listening(pid);
        assert!(!addresses.is_empty(), "{service} listens nowhere?");
        // 0100007F is 127.0.0.1 in /proc's little-endian hex.
        assert!(
            addresses.iter().all(|a| a.starts_with("0100007F:")),
            "{service} listens beyond loopback: {addresses:?}"
        );
    }
    let wrong = stack.psql_with("not-the-password", "nanika_game", "SELECT 1");
    assert!(
        !wrong.status.success() && text(&wrong).contains("password authentication failed"),
        "{}",
        text(&wrong)
    );
    let hba =
        std::fs::read_to_string(stack.root.join(".nanika/postgres/data/pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .all(|l| !l.contains("trust")),
        "{hba}"
    );
}

#[test]
fn redis_with_a_password_refuses_clients_without_it() {
    let stack = Stack::new();
    stack
        .project
        .append("docker/redis/redis.conf", "requirepass redis-Secret-991\n");
    stack.project.replace(
        ".env",
        &format!("redis://localhost:{}", stack.redis_port),
        &format!("redis://:redis-Secret-991@localhost:{}", stack.redis_port),
    );
    let output = stack.up();
    assert!(
        !text(&output).contains("redis-Secret-991"),
        "{}",
        text(&output)
    );
    let anonymous = stack.redis(&["PING"]);
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
    assert_eq!(
        stack.service("redis")["state"],
        "healthy",
        "nanika authenticates with REDIS_URL's password"
    );
    let keys = stack.run(&["redis", "keys"]);
    assert!(keys.status.success(), "{}", text(&keys));
}

#[test]
fn no_secret_reaches_any_output_or_log() {
    let secret = "Recognisable-Pw-7731";
    let stack = Stack::new();
    stack.project.replace(
        ".env",
        "POSTGRES_PASSWORD=nanika_password",
        &format!("POSTGRES_PASSWORD={secret}"),
    );
    stack.project.replace(
        ".env",
        "nanika_user:nanika_password@",
        &format!("nanika_user:{secret}@"),
    );
    stack.project.replace(
        ".env",
        "SESSION_SECRET=your-secret-key-change-in-production",
        &format!("SESSION_SECRET={secret}-session"),
    );
    let mut seen = String::new();
    for args in [
        &["up"][..],
        &["ps"],
        &["ps", "--json"],
        &["env"],
        &["env", "--json"],
        &["config", "show"],
        &["config", "show", "--json"],
        &["config", "check"],
        &["config", "lint", "--production"],
        &["db", "migrate"],
        &["db", "seed"],
        &["db", "backup"],
        &["db", "migrate", "status"],
        &["doctor"],
        &["doctor", "--json"],
        &["sessions", "backup"],
        &["redis", "keys"],
        &["logs", "--tail", "1000"],
        &["restart"],
        &["down"],
    ] {
        let output = stack.run(args);
        seen += &text(&output);
    }
    // A failing connection must not echo the password either.
    stack.project.replace(
        ".env",
        &format!("nanika_user:{secret}@"),
        &format!("nanika_user:{secret}@nowhere.invalid:1/x?schema=public&"),
    );
    seen += &text(&stack.run(&["doctor"]));
    assert!(!seen.contains(secret), "a secret was printed");
    for log in std::fs::read_dir(stack.root.join(".nanika/logs"))
        .unwrap()
        .flatten()
    {
        let content = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(
            !content.contains(secret),
            "{} holds the secret",
            log.path().display()
        );
    }
    for file in std::fs::read_dir(stack.root.join(".nanika/run"))
        .unwrap()
        .flatten()
    {
        let content = std::fs::read_to_string(file.path()).unwrap_or_default();
        assert!(
            !content.contains(secret),
            "{} holds the secret",
            file.path().display()
        );
    }
}

#[test]
fn secrets_backups_and_state_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new();
    stack.up();
    assert!(
        stack
            .run(&["db", "backup", "-o", "backups/b.dump"])
            .status
            .success()
    );
    let mode = |p: &str| {
        std::fs::metadata(stack.root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(".env"), 0o600);
    assert_eq!(mode("backups/b.dump"), 0o600);
    assert_eq!(mode("backups"), 0o700);
    for dir in [
        ".nanika/logs",
        ".nanika/run",
        ".nanika/redis",
        ".nanika/postgres",
        ".nanika/postgres/data",
    ] {
        assert_eq!(mode(dir), 0o700, "{dir}");
    }
    // .nanika itself is 0711 when the server user must pass through it: nobody else can list it.
    assert!(
        matches!(mode(".nanika"), 0o700 | 0o711),
        "{:o}",
        mode(".nanika")
    );
    for log in ["postgres", "redis"] {
        assert_eq!(mode(&format!(".nanika/logs/{log}.log")), 0o600);
    }
}

#[test]
fn a_full_disk_fails_a_backup_cleanly_and_doctor_reports_refused_redis_writes() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("mounting a small tmpfs needs root");
        return;
    }
    let stack = Stack::new();
    let backups = stack.root.join("backups");
    let redis_dir = stack.root.join(".nanika/redis");
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::create_dir_all(&redis_dir).unwrap();
    let mount = |dir: &std::path::Path, size: &str| {
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
    };
    struct Unmount(Vec<std::path::PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for dir in &self.0 {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(dir)
                    .status();
            }
        }
    }
    mount(&backups, "64k");
    mount(&redis_dir, "2m");
    let _unmount = Unmount(vec![backups.clone(), redis_dir.clone()]);
    stack.up();
    assert!(stack.run(&["db", "migrate"]).status.success());
    assert!(
        stack
            .run(&["db", "seed", "--messages", "20000"])
            .status
            .success()
    );
    let backup = stack.run(&["db", "backup", "-o", "backups/full.dump"]);
    assert_eq!(backup.status.code(), Some(1));
    assert!(
        text(&backup).contains("No space left on device"),
        "{}",
        text(&backup)
    );
    assert_eq!(
        std::fs::read_dir(&backups).unwrap().count(),
        0,
        "no partial file is left"
    );

    // Fill Redis's disk until its AOF writes fail.
    let value = "x".repeat(64 * 1024);
    let mut refused = false;
    for i in 0..200 {
        let reply = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &stack.redis_port.to_string(),
                "SET",
                &format!("fill:{i}"),
                &value,
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&reply.stdout).contains("MISCONF")
            || !String::from_utf8_lossy(&reply.stdout).contains("OK")
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "Redis never refused a write on a full disk");
    let doctor = stack.run(&["doctor"]);
    assert_eq!(doctor.status.code(), Some(1));
    assert!(
        text(&doctor).contains("FAIL redis.aof"),
        "{}",
        text(&doctor)
    );
    stack.run(&["down"]);
}

#[test]
fn a_data_directory_with_wrong_permissions_or_owner_is_refused_untouched() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let stack = Stack::new();
    stack.up();
    assert!(stack.run(&["down"]).status.success());
    let data = stack.root.join(".nanika/postgres/data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains(&format!("{}: has permissions 0777", data.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!("chmod 700 {}", data.display())),
        "{message}"
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o777,
        "nanika reports, it does not repair"
    );
    assert_eq!(stack.own_processes(), Vec::<String>::new());

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let owner = std::fs::metadata(&data).unwrap().uid();
        nix::unistd::chown(&data, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        let output = stack.run(&["up"]);
        assert_eq!(output.status.code(), Some(1));
        assert!(
            text(&output).contains("is owned by uid 0, but PostgreSQL runs as"),
            "{}",
            text(&output)
        );
        assert!(
            text(&output).contains(&format!("chown -R {owner} {}", data.display())),
            "{}",
            text(&output)
        );
        nix::unistd::chown(&data, Some(nix::unistd::Uid::from_raw(owner)), None).unwrap();
    }
    stack.up();
}

#[test]
fn a_backup_to_a_read_only_place_fails_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new();
    stack.up();
    let target = stack.root.join("readonly");
    std::fs::create_dir(&target).unwrap();
    let root = nix::unistd::Uid::effective().is_root();
    struct Unmount(Option<std::path::PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if let Some(dir) = &self.0 {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(dir)
                    .status();
            }
        }
    }
    let _unmount = if root {
        // Root ignores permission bits: a read-only mount is what refuses it.
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success());
        Unmount(Some(target.clone()))
    } else {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o500)).unwrap();
        Unmount(None)
    };
    let output = stack
        .nanika()
        .args(["db", "backup", "-o"])
        .arg(target.join("b.dump"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains(&target.join("b.dump.partial").display().to_string()),
        "the path is named: {message}"
    );
    assert!(
        message.contains("Read-only file system") || message.contains("Permission denied"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn exhausted_connections_leave_nanika_working_and_doctor_says_so() {
    let stack = Stack::new();
    stack.up();
    let options = pg_options(&stack);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut held = Vec::new();
    let mut refused = Vec::new();
    runtime.block_on(async {
        for _ in 0..120 {
            match PgConnection::connect_with(&options).await {
                Ok(conn) => held.push(conn),
                Err(error) => refused.push(error.to_string()),
            }
        }
    });
    println!(
        "120 clients against max_connections = 100: {} connected, {} refused by the server",
        held.len(),
        refused.len()
    );
    assert_eq!(
        held.len(),
        97,
        "100 slots less the 3 reserved for superusers"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.contains("too many clients") || e.contains("connection slots are reserved")),
        "{refused:?}"
    );

    let status = stack.service("postgres");
    assert_eq!(
        status["state"], "healthy",
        "ps still sees the server through a reserved slot: {status}"
    );
    let doctor = stack.run(&["doctor"]);
    assert_eq!(doctor.status.code(), Some(1));
    let report = text(&doctor);
    assert!(
        report.contains("FAIL postgres.connections")
            && report.contains("of 100 connections in use"),
        "{report}"
    );
    assert!(
        report.contains("nanika_user"),
        "doctor names who holds them: {report}"
    );

    runtime.block_on(async {
        for conn in held {
            let _ = conn.close().await;
        }
    });
    assert!(common::eventually(Duration::from_secs(10), || stack
        .run(&["doctor"])
        .status
        .success()));
}
