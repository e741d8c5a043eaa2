//! The supervisor: a small background process that runs the servers as its children, keeps their
//! logs, restarts a server that dies (like compose's `restart: unless-stopped`, with backoff), and
//! stops them gracefully on `nanika down`.
//!
//! It is told what to run by a plan file (`.nanika/run/plan.json`, written by `nanika up`), re-reads
//! it on SIGHUP, and stops everything on SIGTERM or SIGINT. It reports in `.nanika/run/status.json`.
//! While it lives it holds an exclusive lock on `.nanika/run/supervisor.lock`: that lock, not a pid
//! file, is how other nanika processes know a supervisor runs. The status file holds its own
//! record and each server's (pid, start time, command line): what other nanika processes prove
//! before they signal one.

use super::layout::StateLayout;
use super::logs::{RotatingLog, SharedLog};
use super::procfs::{Mismatch, ProcessRecord, Reach, SignalError};
use super::safe_fs::Dir;
use super::shutdown::{self, Ladder};
use crate::Service;
use crate::error::{Result, RuntimeError};
use fs_err as fs;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How one service is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// The program.
    pub program: PathBuf,
    /// Its arguments (no secrets: they are visible in `ps`).
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// The user and group to run as, when nanika runs as root.
    pub run_as: Option<(u32, u32)>,
    /// Its log file.
    pub log: PathBuf,
    /// Bumped by `nanika restart` to ask for a restart with an unchanged command line.
    pub generation: u64,
    /// The server's version, as found when the plan was made (so `ps` need not run the binary).
    #[serde(default)]
    pub version: Option<String>,
    /// The port it listens on: remembered so that a command run with another port in its
    /// environment is told where the server really is (0 in plans written before it was kept).
    #[serde(default)]
    pub port: u16,
    /// How long a crashed server is left down before its first restart, in milliseconds: a
    /// Sentinel or Cluster data node is left to be failed over first, as a dead host would be.
    #[serde(default)]
    pub restart_hold_ms: u64,
    /// Variables set in its environment (names of files, never secrets: the plan is a file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Whether it starts with an empty environment (plus a plain `PATH` and [`Self::env`])
    /// rather than `nanika up`'s, less what client libraries read: for programs that take
    /// settings from any variable (the exporters read `DATA_SOURCE_*`, `REDIS_*`, …).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_env: bool,
}

/// What the supervisor runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The services and how to run each.
    pub services: BTreeMap<Service, ServicePlan>,
    /// Scheduled backups, when `nanika.toml` asks for them.
    #[serde(default)]
    pub backups: Option<super::backup_schedule::BackupPlan>,
    /// The loopback port the supervisor serves the backup schedule's metrics on, when
    /// `[monitoring]` and scheduled `[backups]` are both on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_metrics_port: Option<u16>,
}

/// One service as the supervisor last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// Its pid while running.
    pub pid: Option<u32>,
    /// When it last started (seconds since the epoch).
    pub started_at: Option<u64>,
    /// Restarts after crashes.
    pub restarts: u32,
    /// How it last ended, e.g. `killed by SIGKILL`.
    pub last_exit: Option<String>,
    /// When the supervisor starts it again after a crash (milliseconds since the epoch).
    #[serde(default)]
    pub next_start_at_ms: Option<u64>,
    /// The running process as the supervisor started it: what proves it is nanika's to a
    /// nanika process that outlives this supervisor.
    #[serde(default)]
    pub process: Option<ProcessRecord>,
    /// How its last stop went, when it took more than the graceful signal (for `down` to say).
    #[serde(default)]
    pub stop_note: Option<String>,
}

/// What the supervisor reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// The supervisor as it started: what proves it is nanika's before it is signalled.
    #[serde(default)]
    pub supervisor: Option<ProcessRecord>,
    /// Each service it runs.
    pub services: BTreeMap<Service, ServiceReport>,
}

/// Files of the supervisor.
pub fn plan_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("plan.json")
}

const STATUS_FILE: &str = "status.json";
const PID_FILE: &str = "supervisor.pid";

/// The supervisor's status file.
pub fn status_file(layout: &StateLayout) -> PathBuf {
    layout.run.join(STATUS_FILE)
}

/// The supervisor's lock file.
pub fn lock_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("supervisor.lock")
}

/// The supervisor's pid file (informational: the lock is what counts).
pub fn pid_file(layout: &StateLayout) -> PathBuf {
    layout.run.join(PID_FILE)
}

/// Writes `value` as JSON through a temporary file and a rename: readers never see half of it.
/// `path` is a file in `.nanika/run`, which [`StateLayout::verify`] has checked holds no link;
/// the file itself is replaced, never written through a link.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(RuntimeError::Other(format!(
            "{} is not a file in a directory",
            path.display()
        )));
    };
    write_json_in(&Dir::open(dir)?, name, value)
}

/// [`write_json`] into the open directory `dir`.
pub fn write_json_in(dir: &Dir, name: &str, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("plain data serializes");
    dir.replace_file(name, &text, 0o600)
}

/// Reads a JSON file written by [`write_json`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The PostgreSQL installation the running server was started from, as its plan records it:
/// the tools to use against it (pg_dump, psql) without running `postgres --version` again.
pub fn running_postgres(layout: &StateLayout) -> Option<super::binaries::PostgresBinaries> {
    if !is_running(layout) {
        return None;
    }
    let plan: Plan = read_json(&plan_file(layout))?;
    let postgres = plan.services.get(&Service::Postgres)?;
    Some(super::binaries::PostgresBinaries {
        bin_dir: postgres.program.parent()?.to_path_buf(),
        version: postgres.version.clone()?,
    })
}

/// Whether a supervisor holds this project's lock now.
pub fn is_running(layout: &StateLayout) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_file(layout))
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first restart waits this long; each further one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A server that keeps crashing is still retried this often: a development server down for
/// half a minute after a few crashes costs more than the retries do.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// A server that ran this long before dying starts again from the first backoff (as Docker's
/// restart policy resets its delay after 10 s).
const STABLE_AFTER: Duration = Duration::from_secs(10);

struct Running {
    plan: ServicePlan,
    pid: Option<Pid>,
    started: Option<Instant>,
    backoff: Duration,
    restart_at: Option<Instant>,
    report: ServiceReport,
    /// The service's log, opened once and shared by its output streams and the supervisor.
    log: Option<SharedLog>,
}

impl Running {
    fn log(&mut self) -> Option<SharedLog> {
        if self.log.is_none() {
            self.log = RotatingLog::open(&self.plan.log)
                .ok()
                .map(|log| std::sync::Arc::new(std::sync::Mutex::new(log)));
        }
        self.log.clone()
    }

    /// Writes a remark of the supervisor's into the service's log.
    fn note(&mut self, text: &str) {
        if let Some(log) = self.log()
            && let Ok(mut log) = log.lock()
        {
            let _ = log.write_line(format!("nanika: {text}").as_bytes());
        }
    }
}

/// How often the supervisor prunes PostgreSQL's jsonlog files.
const JSONLOG_PRUNE_EVERY: Duration = Duration::from_secs(2);

/// The supervisor's main loop. Returns when told to stop, after every server has stopped.
pub fn run(layout: &StateLayout) -> Result<()> {
    // It writes logs and pid files as root: never through a link planted since `up` checked.
    layout.verify()?;
    // A session of its own: the terminal nanika was started from can close, or get Ctrl-C,
    // without reaching the servers.
    let _ = nix::unistd::setsid();
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_file(layout))
        .map_err(RuntimeError::io("cannot open the supervisor lock"))?;
    if lock.file().try_lock().is_err() {
        return Err(RuntimeError::Other(
            "another supervisor already runs this project".into(),
        ));
    }
    // Held open for good: if `.nanika/run` is deleted under the supervisor, its records go
    // nowhere instead of into a directory another supervisor has made since.
    let run_dir = layout.open_run()?;
    run_dir.replace_file(PID_FILE, std::process::id().to_string().as_bytes(), 0o600)?;
    // Its own command line, as nanika gave it: what `down` proves before it signals.
    let me = ProcessRecord::capture(
        std::process::id(),
        std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    );
    let mut written = None;

    // Signals are caught by handlers that set flags and wake the loop through a socket pair.
    // (Blocking them instead, for a signalfd, would leave them blocked in every server the
    // supervisor starts: a child inherits the signal mask, and Redis would ignore SIGTERM.)
    let (mut wake_read, wake_write) =
        UnixStream::pair().map_err(RuntimeError::io("cannot create the signal pipe"))?;
    wake_read
        .set_nonblocking(true)
        .map_err(RuntimeError::io("cannot set up the signal pipe"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let hook = |e: std::io::Error| RuntimeError::io("cannot install signal handlers")(e);
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(hook)?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload)).map_err(hook)?;
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGCHLD,
    ] {
        let writer = wake_write.try_clone().map_err(hook)?;
        signal_hook::low_level::pipe::register(signal, writer).map_err(hook)?;
    }

    // The backup schedule runs beside the loop, reading the plan itself; it stops with it.
    let scheduler = {
        let layout = layout.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || super::backup_schedule::run(layout, stop))
    };
    let metrics = {
        let layout = layout.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || super::backup_metrics::serve(layout, stop))
    };
    // PostgreSQL's collector rotates its jsonlog files but never deletes one: the oldest go
    // here, whether or not anyone reads the logs. Every few seconds, since a file grows to
    // 10 MB before the next one starts; a project without the directory costs one failed open.
    let pruner = {
        let layout = layout.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(dir) = super::jsonlog::open(&layout) {
                    let _ = super::jsonlog::prune(&dir, super::jsonlog::KEPT_FILES);
                }
                std::thread::park_timeout(JSONLOG_PRUNE_EVERY);
            }
        })
    };
    let mut running: BTreeMap<Service, Running> = BTreeMap::new();
    // Recorded before any server starts: from here on, `down` can prove who to signal.
    write_status(&run_dir, me.as_ref(), &running, &mut written);
    reconcile(layout, &mut running);
    loop {
        write_status(&run_dir, me.as_ref(), &running, &mut written);
        let next = running.values().filter_map(|r| r.restart_at).min();
        let timeout = next.map_or(PollTimeout::NONE, |at| {
            PollTimeout::try_from(
                at.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as i32,
            )
            .unwrap_or(PollTimeout::ZERO)
        });
        if !stop.load(Ordering::SeqCst) && !reload.load(Ordering::SeqCst) {
            let mut fds = [PollFd::new(wake_read.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, timeout);
        }
        let mut drain = [0u8; 64];
        while matches!(wake_read.read(&mut drain), Ok(n) if n > 0) {}
        reap(&mut running);
        if stop.load(Ordering::SeqCst) {
            // A backup in progress is stopped first: it needs the server. The scheduler is
            // woken from its pause between ticks rather than waited for.
            scheduler.thread().unpark();
            metrics.thread().unpark();
            pruner.thread().unpark();
            let _ = scheduler.join();
            let _ = metrics.join();
            let _ = pruner.join();
            stop_all(&mut running);
            write_status(&run_dir, me.as_ref(), &running, &mut written);
            let _ = run_dir.remove_file(PID_FILE);
            return Ok(());
        }
        if reload.swap(false, Ordering::SeqCst) {
            reconcile(layout, &mut running);
        }
        let now = Instant::now();
        for (service, entry) in running.iter_mut() {
            if entry.restart_at.is_some_and(|at| at <= now) {
                entry.restart_at = None;
                entry.report.restarts += 1;
                start(*service, entry);
            }
        }
    }
}

/// Brings the running set in line with the plan: starts new services, stops removed ones, and
/// restarts those whose command line or generation changed.
fn reconcile(layout: &StateLayout, running: &mut BTreeMap<Service, Running>) {
    let plan: Plan = read_json(&plan_file(layout)).unwrap_or_default();
    let removed: Vec<Service> = running
        .keys()
        .filter(|s| !plan.services.contains_key(s))
        .copied()
        .collect();
    for service in removed {
        if let Some(mut entry) = running.remove(&service) {
            stop_one(service, &mut entry);
        }
    }
    for (service, service_plan) in plan.services {
        match running.get_mut(&service) {
            Some(entry) if entry.plan == service_plan => {}
            Some(entry) => {
                stop_one(service, entry);
                entry.plan = service_plan;
                entry.restart_at = None;
                // A restart that was asked for is not a crash: it starts the backoff afresh.
                entry.backoff = FIRST_BACKOFF;
                start(service, entry);
            }
            None => {
                let mut entry = Running {
                    plan: service_plan,
                    pid: None,
                    started: None,
                    backoff: FIRST_BACKOFF,
                    restart_at: None,
                    report: ServiceReport {
                        pid: None,
                        started_at: None,
                        restarts: 0,
                        last_exit: None,
                        next_start_at_ms: None,
                        process: None,
                        stop_note: None,
                    },
                    log: None,
                };
                start(service, &mut entry);
                running.insert(service, entry);
            }
        }
    }
}

fn start(service: Service, entry: &mut Running) {
    let plan = &entry.plan;
    let mut command = Command::new(&plan.program);
    command
        .args(&plan.args)
        .current_dir(&plan.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The servers get nothing of the environment `nanika up` ran in that a client library
    // reads: a replica's libpq would take an exported PGPASSWORD over its passfile, the
    // exporters an exported REDIS_USER or DATA_SOURCE_NAME over what nanika gives them.
    for (name, _) in std::env::vars_os() {
        let bytes = name.as_encoded_bytes();
        if [&b"PG"[..], b"REDISCLI", b"REDIS_", b"DATA_SOURCE_"]
            .iter()
            .any(|prefix| bytes.starts_with(prefix))
        {
            command.env_remove(&name);
        }
    }
    if plan.clear_env {
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    command.envs(&plan.env);
    if let Some((uid, gid)) = plan.run_as {
        command.uid(uid).gid(gid);
    }
    // The command line as nanika gives it: the record of the server started with it.
    let given: Vec<String> = std::iter::once(plan.program.display().to_string())
        .chain(plan.args.iter().cloned())
        .collect();
    match command.spawn() {
        Ok(mut child) => {
            if let Some(pipe) = &child.stdout {
                super::logs::enlarge_pipe(pipe);
            }
            if let Some(pipe) = &child.stderr {
                super::logs::enlarge_pipe(pipe);
            }
            let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
                child.stdout.take().map(|s| Box::new(s) as _),
                child.stderr.take().map(|s| Box::new(s) as _),
            ];
            if let Some(log) = entry.log() {
                for stream in streams.into_iter().flatten() {
                    let log = log.clone();
                    std::thread::spawn(move || super::logs::pump(&log, stream));
                }
            }
            entry.pid = Some(Pid::from_raw(child.id() as i32));
            entry.started = Some(Instant::now());
            entry.report.pid = Some(child.id());
            entry.report.started_at = Some(now_secs());
            entry.report.next_start_at_ms = None;
            entry.report.stop_note = None;
            // `spawn` returns once the program is exec'd: the record is of the server itself.
            entry.report.process = ProcessRecord::capture(child.id(), given);
            // The supervisor reaps its children itself (waitpid), not through `Child`.
            drop(child);
        }
        Err(error) => {
            let program = entry.plan.program.display().to_string();
            entry.note(&format!("cannot start {service} ({program}): {error}"));
            entry.report.last_exit = Some(format!("could not start: {error}"));
            schedule_restart(entry);
        }
    }
}

fn schedule_restart(entry: &mut Running) {
    if entry.started.is_some_and(|at| at.elapsed() >= STABLE_AFTER) {
        entry.backoff = FIRST_BACKOFF;
    }
    let wait = entry
        .backoff
        .max(Duration::from_millis(entry.plan.restart_hold_ms));
    entry.restart_at = Some(Instant::now() + wait);
    entry.report.next_start_at_ms = Some(now_millis() + wait.as_millis() as u64);
    entry.backoff = (entry.backoff * 2).min(MAX_BACKOFF);
}

fn describe_exit(status: WaitStatus) -> Option<String> {
    match status {
        WaitStatus::Exited(_, code) => Some(format!("exited with code {code}")),
        WaitStatus::Signaled(_, signal, _) => Some(format!("killed by {}", signal.as_str())),
        _ => None,
    }
}

/// Collects every child that ended, and schedules its restart.
fn reap(running: &mut BTreeMap<Service, Running>) {
    for (service, entry) in running.iter_mut() {
        let Some(pid) = entry.pid else { continue };
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                let Some(how) = describe_exit(status) else {
                    continue;
                };
                entry.note(&format!("{service} {how}; restarting"));
                entry.report.last_exit = Some(how);
                entry.pid = None;
                entry.report.pid = None;
                entry.report.process = None;
                schedule_restart(entry);
            }
            Err(_) => {
                entry.pid = None;
                entry.report.pid = None;
                entry.report.process = None;
                schedule_restart(entry);
            }
        }
    }
}

/// A server the supervisor started: its own child, unreaped until it ends, so its pid cannot
/// be given to another process meanwhile. The kernel proves it; no record is needed.
struct OwnChild<'a> {
    pid: Pid,
    status: &'a mut Option<WaitStatus>,
}

impl shutdown::Owned for OwnChild<'_> {
    fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    fn signal(&mut self, signal: Signal) -> std::result::Result<(), SignalError> {
        if self.status.is_some() {
            // Reaped: the pid is free, and may already be someone else's.
            return Err(Mismatch::Gone { pid: self.pid() }.into());
        }
        kill(self.pid, signal).map_err(|errno| SignalError::Failed {
            pid: self.pid(),
            signal: signal.as_str(),
            source: errno.into(),
        })
    }

    fn signal_child(&mut self, child: u32, signal: Signal) -> std::result::Result<(), SignalError> {
        let parent =
            ProcessRecord::observe(self.pid()).ok_or(Mismatch::Gone { pid: self.pid() })?;
        parent.signal_child(child, signal, Reach::Group)
    }

    fn ended(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(status) => {
                *self.status = Some(status);
                true
            }
            Err(_) => true,
        }
    }
}

/// Stops one service on its ladder (graceful, forced, SIGKILL; see [`shutdown`]) and records
/// how it went.
fn stop_one(service: Service, entry: &mut Running) {
    entry.restart_at = None;
    let Some(pid) = entry.pid.take() else { return };
    let mut status = None;
    let stopped = shutdown::stop(
        service.as_str(),
        &mut OwnChild {
            pid,
            status: &mut status,
        },
        &Ladder::of(service),
    );
    entry.report.pid = None;
    entry.report.process = None;
    entry.report.last_exit = status
        .and_then(describe_exit)
        .map(|how| format!("stopped ({how})"));
    if let Some(account) = &stopped.account {
        entry.note(account);
    }
    entry.report.stop_note = stopped.account;
}

/// Stops every service at once, each on its own thread, so Redis and PostgreSQL shut down in
/// parallel and the whole stop takes the longest ladder's bound, not their sum.
fn stop_all(running: &mut BTreeMap<Service, Running>) {
    std::thread::scope(|scope| {
        for (service, entry) in running.iter_mut() {
            scope.spawn(move || stop_one(*service, entry));
        }
    });
}

/// Writes the status when it changed since the last write (`written`).
fn write_status(
    run_dir: &Dir,
    me: Option<&ProcessRecord>,
    running: &BTreeMap<Service, Running>,
    written: &mut Option<Status>,
) {
    let status = Status {
        supervisor_pid: std::process::id(),
        supervisor: me.cloned(),
        services: running
            .iter()
            .map(|(service, entry)| (*service, entry.report.clone()))
            .collect(),
    };
    if written.as_ref() != Some(&status) && write_json_in(run_dir, STATUS_FILE, &status).is_ok() {
        *written = Some(status);
    }
}
