//! Recovery and signals: lost state (`.nanika/run` deleted under running servers), hung
//! servers, and pid files that name processes nanika did not start. Real PostgreSQL 15 and
//! Redis 7, each test in its own project; the figures are printed (`-- --nocapture`) and
//! recorded in docs/RELIABILITY.md.

mod common;

use common::{Stack, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest `down` may take for one hung server: 10 s for the graceful signal, 5 s for the
/// forced one, 2 s after SIGKILL (`shutdown::POSTGRES.bound()`).
const SERVER_STOP_BOUND: Duration = Duration::from_secs(17);

fn pid_of(stack: &Stack, service: &str) -> u32 {
    let status = stack.service(service);
    status["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{service} has no pid: {status}")) as u32
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !matches!(stat.rsplit_once(") ").map(|(_, r)| &r[..1]), Some("Z")))
}

/// `/proc/PID/stat` field 22, the start time.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// This project's postmasters and redis-servers, counted from /proc.
fn servers(stack: &Stack) -> (usize, usize) {
    let data = format!("{}", stack.root.join(".nanika/postgres/data").display());
    let redis_dir = stack.root.join(".nanika/redis");
    let (mut postmasters, mut redis) = (0, 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("/postgres"))
            && args.windows(2).any(|w| w[0] == "-D" && w[1] == data)
        {
            postmasters += 1;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with("redis-server")
            && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == redis_dir)
        {
            redis += 1;
        }
    }
    (postmasters, redis)
}

fn remove_run(stack: &Stack) {
    std::fs::remove_dir_all(stack.root.join(".nanika/run")).unwrap();
}

fn assert_nothing_left(stack: &Stack) {
    assert_eq!(
        stack.own_processes(),
        Vec::<String>::new(),
        "a process of the project outlived down"
    );
}

#[test]
fn a_deleted_run_directory_is_found_from_the_processes_and_up_recovers() {
    let stack = Stack::new();
    stack.up();
    stack.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')");
    stack.redis(&["SET", "kept", "before"]);
    let (pg, redis) = (pid_of(&stack, "postgres"), pid_of(&stack, "redis"));
    let supervisor: u32 = std::fs::read_to_string(stack.root.join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    remove_run(&stack);

    for (service, pid) in [("postgres", pg), ("redis", redis)] {
        let status = stack.service(service);
        assert_eq!(status["state"], "unsupervised", "{status}");
        assert_eq!(status["pid"], pid, "{status}");
        let note = status["note"].as_str().unwrap_or_default();
        assert!(
            note.contains(".nanika/run is gone")
                && note.contains(&format!("its supervisor, pid {supervisor}, still runs")),
            "{status}"
        );
    }
    let table = text(&stack.run(&["ps"]));
    assert!(table.contains("note: redis: running, but"), "{table}");

    let started = Instant::now();
    let up = stack.up();
    println!(
        "lost .nanika/run: up recovered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let said = text(&up);
    assert!(
        said.contains(&format!(
            "this project's supervisor (pid {supervisor}) was still running although"
        )) && said.contains(&format!("postgres (pid {pg}) and redis (pid {redis})"))
            && said.contains("they start again under a new supervisor"),
        "{said}"
    );
    assert!(!alive(supervisor) && !alive(pg) && !alive(redis));
    for service in ["postgres", "redis"] {
        assert_eq!(stack.service(service)["state"], "healthy");
    }
    assert_eq!(
        servers(&stack),
        (1, 1),
        "one postmaster and one redis-server"
    );
    assert_eq!(stack.psql("SELECT v FROM kept"), "before");
    assert_eq!(stack.redis(&["GET", "kept"]), "before");

    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_nothing_left(&stack);
}

#[test]
fn servers_without_supervisor_or_records_are_proven_from_the_processes_and_stopped() {
    let stack = Stack::new();
    stack.up();
    let (pg, redis) = (pid_of(&stack, "postgres"), pid_of(&stack, "redis"));
    let supervisor: u32 = std::fs::read_to_string(stack.root.join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(supervisor, Signal::SIGKILL);
    remove_run(&stack);
    assert!(common::eventually(Duration::from_secs(10), || !alive(
        supervisor
    )));
    assert_eq!(stack.service("postgres")["pid"], pg);
    assert_eq!(stack.service("redis")["state"], "unsupervised");

    let down = stack.run(&["down"]);
    let said = text(&down);
    assert!(down.status.success(), "{said}");
    assert!(
        said.contains(&format!("postgres (pid {pg}) was running although"))
            && said.contains("proved it is this project's from the process itself (`postgres -D ")
            && said.contains(&format!("redis (pid {redis}) was running although")),
        "{said}"
    );
    assert_nothing_left(&stack);
    for service in ["postgres", "redis"] {
        assert_eq!(stack.service(service)["state"], "stopped");
    }
}

#[test]
fn down_volumes_after_a_deleted_run_directory_never_deletes_under_a_live_server() {
    let stack = Stack::new();
    stack.up();
    remove_run(&stack);
    let started = Instant::now();
    let output = stack.run(&["down", "--volumes", "--yes"]);
    let said = text(&output);
    println!(
        "down --volumes --yes after .nanika/run was removed ({:.1} s): {said}",
        started.elapsed().as_secs_f64()
    );
    if output.status.success() {
        assert!(said.contains("deleted "), "{said}");
        assert_nothing_left(&stack);
        assert!(!stack.root.join(".nanika").exists(), "{said}");
    } else {
        // The other allowed answer: a refusal that names what still runs, and nothing deleted.
        assert!(
            said.contains("refusing to delete") && said.contains("(pid "),
            "{said}"
        );
        assert!(!said.contains("deleted "), "{said}");
        assert!(stack.root.join(".nanika/postgres/data/PG_VERSION").exists());
    }
}

#[test]
fn a_process_using_the_state_that_nanika_cannot_prove_is_named_and_nothing_deleted() {
    let stack = Stack::new();
    stack.up();
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    // Named like a backend and working in the data directory, but started by someone else.
    let bin = tempfile::tempdir().unwrap();
    let impostor = bin.path().join("postgres");
    std::fs::copy("/bin/sleep", &impostor).unwrap();
    let mut stray = std::process::Command::new(&impostor)
        .arg("300")
        .current_dir(stack.root.join(".nanika/postgres/data"))
        .spawn()
        .unwrap();
    let pid = stray.id();
    assert!(common::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    }));

    let output = stack.run(&["down", "--volumes", "--yes"]);
    let said = text(&output);
    println!("down --volumes --yes with a stray in the data directory: {said}");
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "refusing to delete this project's state, which is still in use by: postgres (pid"
        ) && said.contains(&format!("(pid {pid})"))
            && said.contains("nothing was deleted"),
        "{said}"
    );
    assert!(!said.contains("deleted /"), "{said}");
    assert!(stray.try_wait().unwrap().is_none(), "it was signalled");
    assert!(stack.root.join(".nanika/postgres/data/PG_VERSION").exists());

    stray.kill().unwrap();
    stray.wait().unwrap();
    let output = stack.run(&["down", "--volumes", "--yes"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!stack.root.join(".nanika").exists());
}

#[test]
fn a_stopped_postmaster_or_supervisor_does_not_hang_down() {
    let stack = Stack::new();
    stack.up();
    let postmaster = pid_of(&stack, "postgres");
    signal(postmaster, Signal::SIGSTOP);
    assert!(common::eventually(Duration::from_secs(5), || state_of(
        postmaster
    ) == Some(
        'T'
    )));
    let started = Instant::now();
    let down = stack.run(&["down"]);
    let took = started.elapsed();
    println!(
        "SIGSTOPped postmaster: down took {:.2} s (bound {} s)",
        took.as_secs_f64(),
        SERVER_STOP_BOUND.as_secs()
    );
    let said = text(&down);
    assert!(down.status.success(), "{said}");
    assert!(took < SERVER_STOP_BOUND * 3, "{took:?}: {said}");
    assert!(
        said.contains(&format!(
            "postgres (pid {postmaster}) was stopped (state T): sent SIGCONT after SIGINT"
        )),
        "{said}"
    );
    assert_nothing_left(&stack);

    // The supervisor itself, and Redis, stopped.
    stack.up();
    let redis = pid_of(&stack, "redis");
    let supervisor: u32 = std::fs::read_to_string(stack.root.join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(redis, Signal::SIGSTOP);
    signal(supervisor, Signal::SIGSTOP);
    assert!(common::eventually(Duration::from_secs(5), || {
        state_of(supervisor) == Some('T') && state_of(redis) == Some('T')
    }));
    let started = Instant::now();
    let down = stack.run(&["down"]);
    let took = started.elapsed();
    println!(
        "SIGSTOPped supervisor and redis-server: down took {:.2} s",
        took.as_secs_f64()
    );
    let said = text(&down);
    assert!(down.status.success(), "{said}");
    assert!(took < SERVER_STOP_BOUND * 3, "{took:?}: {said}");
    assert!(
        said.contains(&format!(
            "the supervisor (pid {supervisor}) was stopped (state T)"
        )) && said.contains(&format!("redis (pid {redis}) was stopped (state T)")),
        "{said}"
    );
    assert_nothing_left(&stack);
}

/// The children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(&pid.to_string())
            })
        })
        .collect()
}

#[test]
fn a_postgres_that_never_gets_to_run_is_killed_within_the_bound() {
    let stack = Stack::new();
    stack.up();
    let postmaster = pid_of(&stack, "postgres");
    // A hung server: every time nanika resumes it, it is stopped again at once, so it never
    // acts on SIGINT or SIGQUIT.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let freezer = std::thread::spawn({
        let done = done.clone();
        move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) && alive(postmaster) {
                for pid in std::iter::once(postmaster).chain(children(postmaster)) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    assert!(common::eventually(Duration::from_secs(5), || state_of(
        postmaster
    ) == Some(
        'T'
    )));
    let started = Instant::now();
    let down = stack.run(&["down"]);
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    freezer.join().unwrap();
    let said = text(&down);
    println!(
        "postgres kept stopped: down took {:.1} s (bound {} s): {said}",
        took.as_secs_f64(),
        SERVER_STOP_BOUND.as_secs()
    );
    assert!(down.status.success(), "{said}");
    assert!(took < SERVER_STOP_BOUND * 3, "{took:?}: {said}");
    assert!(
        said.contains(&format!(
            "postgres (pid {postmaster}) was stopped (state T)"
        )),
        "{said}"
    );
    assert_nothing_left(&stack);
    // Whatever it took, the data survives: the next up recovers and answers.
    stack.up();
    assert_eq!(stack.psql("SELECT 1"), "1");
}

/// A `sleep` nanika did not start, and the record a forger would write for it: its real pid,
/// start time and command line.
fn bystander() -> (std::process::Child, serde_json::Value) {
    let child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(common::eventually(Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
    }));
    let record = serde_json::json!({
        "pid": pid,
        "start_time": start_time(pid),
        "cmdline": ["sleep", "300"],
    });
    (child, record)
}

fn write_pid_files(root: &Path, pid: u32) {
    for name in ["supervisor.pid", "redis.pid"] {
        std::fs::write(root.join(".nanika/run").join(name), format!("{pid}\n")).unwrap();
    }
}

#[test]
fn pid_files_and_records_naming_another_process_never_get_it_signalled() {
    let stack = Stack::new();
    stack.up();
    let (mut sleep, record) = bystander();
    let pid = sleep.id();

    // While running: the pid files are not what nanika trusts.
    write_pid_files(&stack.root, pid);
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(sleep.try_wait().unwrap().is_none(), "down signalled it");
    assert_nothing_left(&stack);

    // Stopped: pid files and a status file whose records match the sleep exactly.
    write_pid_files(&stack.root, pid);
    let forged = serde_json::json!({
        "supervisor_pid": pid,
        "supervisor": record,
        "services": {
            "postgres": {"pid": pid, "started_at": null, "restarts": 0, "last_exit": null, "process": record},
            "redis": {"pid": pid, "started_at": null, "restarts": 0, "last_exit": null, "process": record},
        },
    });
    std::fs::write(
        stack.root.join(".nanika/run/status.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let up = stack.up();
    assert!(
        text(&up).contains(&format!(
            "records pid {pid} for postgres, but that process (`sleep 300`) is not this project's postgres; nanika left it alone"
        )),
        "{}",
        text(&up)
    );
    assert!(sleep.try_wait().unwrap().is_none(), "up signalled it");
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(sleep.try_wait().unwrap().is_none(), "down signalled it");
    assert_nothing_left(&stack);
    sleep.kill().unwrap();
    sleep.wait().unwrap();
}
