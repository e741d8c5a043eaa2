//! Running PostgreSQL's client tools (`pg_dump`, `pg_restore`, `psql`) so that an interrupt stops
//! them whole. Each runs in a process group of its own: a terminal's Ctrl-C reaches only nanika,
//! which decides when the tool stops, and stopping the group stops the workers of `-j` too.
//! The connection goes through the environment (never the command line), and `PGAPPNAME` marks
//! the tool's server sessions so a cleanup can find and end them.

use crate::error::{OpsError, Result};
use crate::interrupt::{CLEANUP_LIMIT, Interrupt, POLL};
use nanika_config::urls::DatabaseUrl;
use nanika_runtime::native::procfs;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a tool's run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// It exited successfully.
    Finished,
    /// The interrupt was raised first: the tool's whole process group was stopped (or, when it
    /// outlived even SIGKILL for [`CLEANUP_LIMIT`], given up on).
    Stopped {
        /// Whether no process of the group is left.
        gone: bool,
    },
}

/// The `application_name` the tool's sessions carry: unique to this nanika process.
pub(crate) fn app_name(tool: &str) -> String {
    format!("nanika-{tool}-{}", std::process::id())
}

/// Runs `command` (a libpq tool named `tool`) against `url` until it exits or `interrupt` is
/// raised; `shown` is its command line for messages (no secrets). A tool that fails is an
/// [`OpsError::Tool`] with its stderr.
pub(crate) fn run(
    mut command: Command,
    tool: &str,
    url: &DatabaseUrl,
    shown: String,
    interrupt: &Interrupt,
) -> Result<Ran> {
    for key in DatabaseUrl::REDIRECTING_ENV {
        command.env_remove(key);
    }
    for (key, value) in url.pg_env() {
        command.env(key, value);
    }
    command
        .env("PGAPPNAME", app_name(tool))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(OpsError::io(format!("cannot run {shown}")))?;
    // Read on a thread: a tool that says much would otherwise fill the pipe and block.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    });
    let mut running = Running { child, stderr };
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = running
            .child
            .try_wait()
            .map_err(OpsError::io(format!("cannot wait for {shown}")))?
        {
            return running.finished(status, shown);
        }
        if interrupt.is_raised() {
            return Ok(Ran::Stopped {
                gone: running.stop(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL);
    }
}

/// [`run`] for async callers: the waiting happens on tokio's blocking pool.
pub(crate) async fn run_async(
    command: Command,
    tool: &'static str,
    url: &DatabaseUrl,
    shown: String,
    interrupt: &Interrupt,
) -> Result<Ran> {
    let url = url.clone();
    let interrupt = interrupt.clone();
    tokio::task::spawn_blocking(move || run(command, tool, &url, shown, &interrupt))
        .await
        .map_err(|e| OpsError::Io {
            context: format!("the wait for {tool} failed"),
            source: std::io::Error::other(e),
        })?
}

struct Running {
    child: Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    fn finished(&mut self, status: ExitStatus, shown: String) -> Result<Ran> {
        if status.success() {
            return Ok(Ran::Finished);
        }
        // The tool has exited; its pipe closes once its workers have too.
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        Err(OpsError::Tool {
            command: shown,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Stops the tool's process group: SIGTERM first (pg_dump and pg_restore then cancel their
    /// queries on the server), SIGKILL for what is left after a grace period. Whether the group
    /// is gone.
    fn stop(&mut self) -> bool {
        let Ok(leader) = i32::try_from(self.child.id()) else {
            return false;
        };
        let group = Pid::from_raw(leader);
        let _ = killpg(group, Signal::SIGTERM);
        if self.wait_for_group(Duration::from_secs(5)) {
            return true;
        }
        let _ = killpg(group, Signal::SIGKILL);
        self.wait_for_group(CLEANUP_LIMIT)
    }

    /// Waits until no process of the group is alive (reaping the leader, nanika's child), for at
    /// most `limit`.
    fn wait_for_group(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let _ = self.child.try_wait();
            if procfs::group_members(self.child.id()).is_empty() {
                // The leader is dead (at most a zombie): reaping it cannot block.
                let _ = self.child.wait();
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> DatabaseUrl {
        DatabaseUrl::parse("postgresql://u:p@127.0.0.1:1/d").unwrap()
    }

    #[test]
    fn an_interrupt_stops_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let worker = dir.path().join("worker.pid");
        let mut command = Command::new("sh");
        // A leader with a worker, as pg_dump -j has.
        command
            .arg("-c")
            .arg(format!("sleep 600 & echo $! > {}; wait", worker.display()));
        let interrupt = Interrupt::new();
        let raiser = interrupt.clone();
        let watched = worker.clone();
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut pid = None;
            while pid.is_none() && Instant::now() < deadline {
                pid = std::fs::read_to_string(&watched)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                std::thread::sleep(Duration::from_millis(5));
            }
            raiser.raise(nix::libc::SIGINT);
            pid.expect("the worker started")
        });
        let ran = run(command, "sh", &url(), "sh".into(), &interrupt).unwrap();
        let worker = watcher.join().unwrap();
        assert_eq!(ran, Ran::Stopped { gone: true });
        assert!(
            !procfs::is_alive(worker),
            "the worker {worker} was left running"
        );
    }

    #[test]
    fn a_failing_tool_reports_its_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo broken >&2; exit 3"]);
        let error = run(command, "sh", &url(), "sh -c …".into(), &Interrupt::new()).unwrap_err();
        assert!(error.to_string().contains("broken"), "{error}");
        assert!(error.to_string().contains("exit status: 3"), "{error}");
    }
}
