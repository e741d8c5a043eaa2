//! The supervisor: a small background process that runs the servers as its children, keeps their
//! logs, restarts a server that dies (like compose's `restart: unless-stopped`, with backoff), and
//! stops them gracefully on `nanika down`.
//!
//! It is told what to run by a plan file (`.nanika/run/plan.json`, written by `nanika up`), re-reads
//! it on SIGHUP, and stops everything on SIGTERM or SIGINT. It reports in `.nanika/run/status.json`.
//! While it lives it holds an exclusive lock on `.nanika/run/supervisor.lock`: that lock, not a pid
//! file, is how other nanika processes know a supervisor runs.

use super::layout::StateLayout;
use super::logs::{RotatingLog, SharedLog};
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
}

/// What the supervisor runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The services and how to run each.
    pub services: BTreeMap<Service, ServicePlan>,
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
}

/// What the supervisor reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// Each service it runs.
    pub services: BTreeMap<Service, ServiceReport>,
}

/// Files of the supervisor.
pub fn plan_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("plan.json")
}

/// The supervisor's status file.
pub fn status_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("status.json")
}

/// The supervisor's lock file.
pub fn lock_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("supervisor.lock")
}

/// The supervisor's pid file (informational: the lock is what counts).
pub fn pid_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("supervisor.pid")
}

/// Writes `value` as JSON through a temporary file and a rename: readers never see half of it.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let temp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).expect("plain data serializes");
    fs::write(&temp, text)
        .and_then(|()| fs::rename(&temp, path))
        .map_err(RuntimeError::io(format!("cannot write {}", path.display())))
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
/// How long a graceful stop may take before the supervisor insists.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The signal that stops a service gracefully: PostgreSQL's fast shutdown (SIGINT) rolls back
/// open transactions and checkpoints; Redis's SIGTERM flushes the AOF and exits.
fn stop_signal(service: Service) -> Signal {
    match service {
        Service::Postgres => Signal::SIGINT,
        Service::Redis => Signal::SIGTERM,
    }
}

/// The signal that ends a service that ignored the graceful one: PostgreSQL's immediate
/// shutdown (crash recovery on the next start), and SIGKILL for Redis.
fn insist_signal(service: Service) -> Signal {
    match service {
        Service::Postgres => Signal::SIGQUIT,
        Service::Redis => Signal::SIGKILL,
    }
}

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
    fs::write(pid_file(layout), std::process::id().to_string())
        .map_err(RuntimeError::io("cannot write the supervisor pid file"))?;

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

    let mut running: BTreeMap<Service, Running> = BTreeMap::new();
    reconcile(layout, &mut running);
    loop {
        write_status(layout, &running);
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
            stop_all(&mut running);
            write_status(layout, &running);
            let _ = fs::remove_file(pid_file(layout));
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
    if let Some((uid, gid)) = plan.run_as {
        command.uid(uid).gid(gid);
    }
    match command.spawn() {
        Ok(mut child) => {
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
    entry.restart_at = Some(Instant::now() + entry.backoff);
    entry.report.next_start_at_ms = Some(now_millis() + entry.backoff.as_millis() as u64);
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
                schedule_restart(entry);
            }
            Err(_) => {
                entry.pid = None;
                entry.report.pid = None;
                schedule_restart(entry);
            }
        }
    }
}

/// Waits for `pid` to end, up to `limit`.
fn wait_for_exit(pid: Pid, limit: Duration) -> Option<WaitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(500);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

fn stop_one(service: Service, entry: &mut Running) {
    send_stop(service, entry);
    await_stop(service, entry);
}

/// Sends the graceful stop signal, once.
fn send_stop(service: Service, entry: &mut Running) {
    entry.restart_at = None;
    if let Some(pid) = entry.pid {
        let _ = kill(pid, stop_signal(service));
    }
}

/// Waits for a service that was sent its stop signal; insists after the grace period.
fn await_stop(service: Service, entry: &mut Running) {
    let Some(pid) = entry.pid.take() else { return };
    let status = wait_for_exit(pid, STOP_GRACE).or_else(|| {
        let _ = kill(pid, insist_signal(service));
        wait_for_exit(pid, STOP_GRACE)
    });
    entry.report.pid = None;
    entry.report.last_exit = status
        .and_then(describe_exit)
        .map(|how| format!("stopped ({how})"));
}

/// Stops every service at once (all signals first, then the waits), so Redis and PostgreSQL
/// shut down in parallel.
fn stop_all(running: &mut BTreeMap<Service, Running>) {
    for (service, entry) in running.iter_mut() {
        send_stop(*service, entry);
    }
    for (service, entry) in running.iter_mut() {
        await_stop(*service, entry);
    }
}

fn write_status(layout: &StateLayout, running: &BTreeMap<Service, Running>) {
    let status = Status {
        supervisor_pid: std::process::id(),
        services: running
            .iter()
            .map(|(service, entry)| (*service, entry.report.clone()))
            .collect(),
    };
    if read_json::<Status>(&status_file(layout)).as_ref() != Some(&status) {
        let _ = write_json(&status_file(layout), &status);
    }
}
