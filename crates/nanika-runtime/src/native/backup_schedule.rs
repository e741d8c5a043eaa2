//! Backups on a schedule, taken by the supervisor when `nanika.toml` turns `[backups]` on: a
//! thread of the supervisor's that, once a second, reads the plan and the schedule's record and
//! takes the backup that is due (full, else differential, else incremental), then verifies the
//! repository. Due is measured from the last backup of each kind, so a laptop that slept through
//! ten incremental slots takes one backup when it wakes, not ten.

use super::backups;
use super::layout::StateLayout;
use super::supervisor::{self, Plan};
use crate::Service;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the supervisor takes scheduled backups (part of its plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPlan {
    /// `pgbackrest`.
    pub program: PathBuf,
    /// Its config and stanza arguments.
    pub args: Vec<String>,
    /// The server user, when nanika runs as root.
    pub run_as: Option<(u32, u32)>,
    /// Seconds between full backups.
    pub full_every: u64,
    /// Seconds between differential backups.
    pub diff_every: u64,
    /// Seconds between incremental backups.
    pub incr_every: u64,
}

/// The schedule's record (`.nanika/run/backups.json`), for `backup list`, `ps` and `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// Whether the last backups of each kind were read from the repository once.
    pub initialized: bool,
    /// When the last full backup ended (seconds since the epoch).
    pub last_full: Option<u64>,
    /// When the last differential backup ended.
    pub last_diff: Option<u64>,
    /// When the last incremental backup ended.
    pub last_incr: Option<u64>,
    /// The last scheduled backup that worked.
    pub last_label: Option<String>,
    /// When the last scheduled attempt started.
    pub last_attempt: Option<u64>,
    /// Why the last scheduled attempt failed, when it did (cleared by the next that works).
    pub last_error: Option<String>,
    /// The kind being taken now.
    pub running: Option<String>,
}

/// Where the record is.
pub fn status_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("backups.json")
}

/// The superuser's password for pgBackRest's connections, owner-only beside the supervisor's
/// other records (written by `up` when backups are on).
pub fn password_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("pgbackrest.password")
}

/// The record, when there is one.
pub fn read_status(layout: &StateLayout) -> Option<ScheduleStatus> {
    supervisor::read_json(&status_file(layout))
}

/// The kind of backup due at `now`, if any. A failed attempt is retried after the incremental
/// interval (at most 5 minutes), not at once.
pub fn due(status: &ScheduleStatus, plan: &BackupPlan, now: u64) -> Option<&'static str> {
    let retry = plan.incr_every.min(300);
    if status.last_error.is_some()
        && status
            .last_attempt
            .is_some_and(|at| now.saturating_sub(at) < retry)
    {
        return None;
    }
    let since = |at: Option<u64>| at.map_or(u64::MAX, |at| now.saturating_sub(at));
    let Some(full) = status.last_full else {
        return Some("full");
    };
    if since(Some(full)) >= plan.full_every {
        return Some("full");
    }
    let diff_base = status.last_diff.max(Some(full));
    if since(diff_base) >= plan.diff_every {
        return Some("diff");
    }
    let any = diff_base.max(status.last_incr);
    (since(any) >= plan.incr_every).then_some("incr")
}

/// The scheduler's loop, until `stop` is raised. It parks between ticks: whoever raises `stop`
/// unparks it, so a stopping supervisor does not wait out a sleep.
pub fn run(layout: StateLayout, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        tick(&layout, &stop);
        let next = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let left = next.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // Wakes early when unparked (or spuriously): the flag is checked again.
            std::thread::park_timeout(left);
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn tick(layout: &StateLayout, stop: &AtomicBool) {
    let Some(plan) = supervisor::read_json::<Plan>(&supervisor::plan_file(layout)) else {
        return;
    };
    let Some(backup) = plan.backups else { return };
    if !plan.services.contains_key(&Service::Postgres)
        || backups::unfinished_restore(layout).is_some()
    {
        return;
    }
    let mut status = read_status(layout).unwrap_or_default();
    if !status.initialized {
        match run_tool(layout, &backup, &["--output=json", "info"], stop) {
            Ok(text) => {
                for (kind, stopped) in last_backups(&text) {
                    record(&mut status, &kind, stopped);
                }
                status.initialized = true;
            }
            Err(why) => {
                status.last_error = Some(format!("pgbackrest info: {why}"));
                status.last_attempt = Some(now());
                write(layout, &status);
                return;
            }
        }
    }
    let Some(kind) = due(&status, &backup, now()) else {
        if !read_status(layout).is_some_and(|on_disk| on_disk == status) {
            write(layout, &status);
        }
        return;
    };
    status.running = Some(kind.into());
    status.last_attempt = Some(now());
    write(layout, &status);
    let outcome = run_tool(layout, &backup, &["stanza-create"], stop)
        .and_then(|_| {
            run_tool(
                layout,
                &backup,
                &[&format!("--type={kind}"), "backup"],
                stop,
            )
        })
        .and_then(|_| run_tool(layout, &backup, &["--output=json", "info"], stop))
        .and_then(|info| {
            let verified = run_tool(layout, &backup, &["--output=text", "verify"], stop)?;
            if verified.lines().any(|l| l.trim() == "status: error") {
                return Err(format!(
                    "pgbackrest verify found damage: {}",
                    verified.trim().replace('\n', "; ")
                ));
            }
            Ok(info)
        });
    status.running = None;
    if outcome
        .as_ref()
        .is_err_and(|why| why.starts_with(LOCK_BUSY_PREFIX) || why == STOPPED)
    {
        // A `nanika backup` command holds the lock, or the supervisor is stopping: not a
        // failure; due again next time.
        status.last_attempt = None;
        write(layout, &status);
        return;
    }
    match outcome {
        Ok(info) => {
            let backups = last_backups(&info);
            if let Some((made, stopped)) = backups.iter().max_by_key(|(_, at)| *at) {
                record(&mut status, made, *stopped);
            }
            status.last_label = newest_label(&info);
            status.last_error = None;
            note(
                layout,
                &format!(
                    "scheduled {kind} backup {} taken and verified",
                    status.last_label.as_deref().unwrap_or("?")
                ),
            );
        }
        Err(why) => {
            note(layout, &format!("scheduled {kind} backup failed: {why}"));
            status.last_error = Some(why);
        }
    }
    write(layout, &status);
}

fn record(status: &mut ScheduleStatus, kind: &str, stopped: u64) {
    let slot = match kind {
        "full" => &mut status.last_full,
        "diff" => &mut status.last_diff,
        _ => &mut status.last_incr,
    };
    *slot = (*slot).max(Some(stopped));
}

fn write(layout: &StateLayout, status: &ScheduleStatus) {
    let _ = layout
        .open_run()
        .and_then(|run| supervisor::write_json_in(&run, "backups.json", status));
}

/// A line in the supervisor's remarks, in PostgreSQL's log (where `nanika logs` shows them).
fn note(layout: &StateLayout, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // An existing log only, never through a link: the supervisor writes it as root.
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(layout.log(Service::Postgres.as_str()))
    {
        let _ = writeln!(log, "nanika: {text}");
    }
}

/// Each backup's kind and stop time in `info --output=json`.
fn last_backups(info: &str) -> Vec<(String, u64)> {
    #[derive(Deserialize)]
    struct Stanza {
        #[serde(default)]
        backup: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "type")]
        kind: String,
        timestamp: Times,
    }
    #[derive(Deserialize)]
    struct Times {
        stop: u64,
    }
    serde_json::from_str::<Vec<Stanza>>(info)
        .map(|stanzas| {
            stanzas
                .into_iter()
                .flat_map(|s| s.backup)
                .map(|b| (b.kind, b.timestamp.stop))
                .collect()
        })
        .unwrap_or_default()
}

fn newest_label(info: &str) -> Option<String> {
    let stanzas: serde_json::Value = serde_json::from_str(info).ok()?;
    stanzas[0]["backup"]
        .as_array()?
        .last()?
        .get("label")?
        .as_str()
        .map(str::to_string)
}

/// Runs `pgbackrest ARGS` as the server user with the superuser's password; stops it when the
/// supervisor stops.
fn run_tool(
    layout: &StateLayout,
    plan: &BackupPlan,
    args: &[&str],
    stop: &AtomicBool,
) -> Result<String, String> {
    let password = std::fs::read_to_string(password_file(layout))
        .map_err(|e| format!("cannot read {}: {e}", password_file(layout).display()))?;
    let mut command = Command::new(&plan.program);
    command
        .args(&plan.args)
        .args(args)
        .env("PGPASSWORD", password.trim())
        // Its own settings come from the config file alone, as for `nanika backup`.
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGSERVICE")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = plan.run_as {
        std::os::unix::process::CommandExt::uid(&mut command, uid);
        std::os::unix::process::CommandExt::gid(&mut command, gid);
    }
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    // Read both pipes beside the wait, so a chatty tool never blocks on a full pipe.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if stop.load(Ordering::SeqCst) => {
                // SIGTERM first: pgBackRest then removes its lock and partial files.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(STOPPED.into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{status}: {}", (err + &out).trim()))
    }
}

/// [`run_tool`]'s error when the supervisor stopped: not a failure of the backup's.
const STOPPED: &str = "stopped with the supervisor";

/// How [`run_tool`] begins the error of a pgBackRest that found its lock taken (exit 50).
const LOCK_BUSY_PREFIX: &str = "exit status: 50:";

/// Reads `pipe` to its end on a thread of its own.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// The plan for `settings`, when they ask for a schedule.
pub fn plan(
    layout: &StateLayout,
    program: PathBuf,
    settings: &nanika_config::settings::BackupSettings,
) -> Option<BackupPlan> {
    if !settings.enabled || !settings.schedule {
        return None;
    }
    let (full_every, diff_every, incr_every) = settings.intervals()?;
    Some(BackupPlan {
        program,
        args: backups::base_args(layout),
        run_as: layout.server_user.as_ref().map(|u| (u.uid, u.gid)),
        full_every,
        diff_every,
        incr_every,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BackupPlan {
        BackupPlan {
            program: "pgbackrest".into(),
            args: vec![],
            run_as: None,
            full_every: 7 * 86_400,
            diff_every: 86_400,
            incr_every: 3600,
        }
    }

    #[test]
    fn the_first_backup_is_full_and_then_the_largest_kind_due_is_taken_once() {
        let plan = plan();
        let mut status = ScheduleStatus::default();
        assert_eq!(due(&status, &plan, 1_000_000), Some("full"));
        status.last_full = Some(1_000_000);
        assert_eq!(due(&status, &plan, 1_000_000 + 10), None);
        assert_eq!(due(&status, &plan, 1_000_000 + 3600), Some("incr"));
        status.last_incr = Some(1_000_000 + 3600);
        assert_eq!(due(&status, &plan, 1_000_000 + 86_400), Some("diff"));
        // Asleep for three weeks: one full backup, not twenty-one diffs.
        assert_eq!(due(&status, &plan, 1_000_000 + 21 * 86_400), Some("full"));
    }

    #[test]
    fn a_failed_attempt_is_retried_after_a_while_not_at_once() {
        let plan = plan();
        let status = ScheduleStatus {
            last_attempt: Some(1000),
            last_error: Some("PostgreSQL is down".into()),
            ..ScheduleStatus::default()
        };
        assert_eq!(due(&status, &plan, 1100), None);
        assert_eq!(due(&status, &plan, 1300), Some("full"));
    }
}
