//! Stopping one process nanika started within a known time, whatever it does: the graceful
//! signal, then after a bounded wait the forced one, then SIGKILL.
//!
//! A stopped process (state `T`, e.g. after SIGSTOP) acts on no signal but SIGKILL: a signal sent
//! to it waits until it is continued. So at every step a stopped process — and, for a server,
//! each of its stopped children — is sent SIGCONT right after the signal, and can act on it at
//! once: a SIGSTOPped PostgreSQL still gets its clean fast shutdown, in a fraction of a second,
//! instead of waiting out the bound and needing crash recovery on the next start.
//!
//! SIGKILL of a server is SIGKILL of its children too: PostgreSQL's backends outlive a killed
//! postmaster (each in its own session) and would keep the data directory in use. They are
//! proven the server's by their parent pid while the server, stopped first, can neither fork
//! more nor reap them.

use super::procfs::{self, Reach, SignalError};
use crate::Service;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// A process nanika can prove it started, which it may therefore signal.
pub trait Owned {
    /// Its pid.
    fn pid(&self) -> u32;
    /// Sends `signal`, once nanika has proven again that it is the process it started.
    fn signal(&mut self, signal: Signal) -> Result<(), SignalError>;
    /// Sends `signal` to `child`, one of its children (proven by its parent pid).
    fn signal_child(&mut self, child: u32, signal: Signal) -> Result<(), SignalError>;
    /// Whether it has ended.
    fn ended(&mut self) -> bool;
}

impl Owned for procfs::ProcessRecord {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn signal(&mut self, signal: Signal) -> Result<(), SignalError> {
        procfs::ProcessRecord::signal(self, signal)
    }

    fn signal_child(&mut self, child: u32, signal: Signal) -> Result<(), SignalError> {
        procfs::ProcessRecord::signal_child(self, child, signal, Reach::Group)
    }

    fn ended(&mut self) -> bool {
        procfs::ProcessRecord::ended(self)
    }
}

/// Whether a stop reaches the process's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Only the process (the supervisor: its servers are stopped through their own ladders).
    Alone,
    /// The process and its children: resumed with it, killed with it.
    WithChildren,
}

/// How a process is stopped, and how long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Ladder {
    /// The graceful signal.
    pub graceful: Signal,
    /// How long the graceful stop may take.
    pub grace: Duration,
    /// The forced signal (PostgreSQL's immediate shutdown) and how long it may take.
    pub forced: Option<(Signal, Duration)>,
    /// How long to wait for the process to go after SIGKILL.
    pub kill_wait: Duration,
    /// Whether children are resumed and killed with it.
    pub tree: Tree,
}

/// How long PostgreSQL's fast shutdown (SIGINT: roll back, checkpoint) or Redis's SIGTERM (flush
/// the AOF) may take. A development cluster's shutdown checkpoint takes well under a second here.
pub const GRACE: Duration = Duration::from_secs(10);
/// How long PostgreSQL's immediate shutdown (SIGQUIT) may take. It kills its own children with
/// SIGKILL after 5 s, so this is the same time.
pub const FORCED_GRACE: Duration = Duration::from_secs(5);
/// How long a process may take to go after SIGKILL (it only has to be scheduled).
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// PostgreSQL: fast shutdown, then immediate shutdown, then SIGKILL.
pub const POSTGRES: Ladder = Ladder {
    graceful: Signal::SIGINT,
    grace: GRACE,
    forced: Some((Signal::SIGQUIT, FORCED_GRACE)),
    kill_wait: KILL_WAIT,
    tree: Tree::WithChildren,
};

/// Redis: SIGTERM (flushes the AOF), then SIGKILL.
pub const REDIS: Ladder = Ladder {
    graceful: Signal::SIGTERM,
    grace: GRACE,
    forced: None,
    kill_wait: KILL_WAIT,
    tree: Tree::WithChildren,
};

/// The supervisor: SIGTERM, on which it stops its servers on their ladders (in parallel), so it
/// gets their longest bound and a little more; then SIGKILL, after which its servers, orphaned,
/// are stopped directly.
pub const SUPERVISOR: Ladder = Ladder {
    graceful: Signal::SIGTERM,
    grace: Duration::from_secs(POSTGRES.bound().as_secs() + 3),
    forced: None,
    kill_wait: KILL_WAIT,
    tree: Tree::Alone,
};

impl Ladder {
    /// The ladder of `service`.
    pub fn of(service: Service) -> Ladder {
        match service.kind() {
            Service::Postgres => POSTGRES,
            _ => REDIS,
        }
    }

    /// The longest a stop on this ladder takes, all steps included.
    pub const fn bound(&self) -> Duration {
        let forced = match self.forced {
            Some((_, wait)) => wait.as_millis() as u64,
            None => 0,
        };
        Duration::from_millis(
            self.grace.as_millis() as u64 + forced + self.kill_wait.as_millis() as u64,
        )
    }
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process ended.
    Ended,
    /// It is still there after SIGKILL (e.g. in uninterruptible disk wait).
    StillRunning,
    /// It was not signalled: it is not provably the process nanika started (the reason).
    NotProven(String),
}

/// The result of [`stop`].
#[derive(Debug, Clone)]
pub struct Stopped {
    /// How it went.
    pub outcome: Outcome,
    /// What happened beyond a plain graceful stop, in words for the user: `None` when it simply
    /// stopped on the graceful signal.
    pub account: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether it took SIGKILL: a supervisor that did cannot have stopped its servers.
    pub killed: bool,
}

/// Polls `process` until it ends or `limit` passes.
fn wait(process: &mut dyn Owned, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if process.ended() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// `1 child process`, `2 child processes`.
fn processes(count: usize, what: &str) -> String {
    let plural = if count == 1 { "" } else { "es" };
    format!("{count} {what} process{plural}")
}

fn secs(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// Resumes whatever of `process` (and, with [`Tree::WithChildren`], its children) is stopped,
/// right after a signal was sent to it, so it acts on that signal. Returns how many it resumed.
fn resume(process: &mut dyn Owned, tree: Tree) -> usize {
    let mut resumed = 0;
    if procfs::state(process.pid()) == Some('T') && process.signal(Signal::SIGCONT).is_ok() {
        resumed += 1;
    }
    if tree == Tree::WithChildren {
        for child in procfs::children(process.pid()) {
            if procfs::state(child) == Some('T')
                && process.signal_child(child, Signal::SIGCONT).is_ok()
            {
                resumed += 1;
            }
        }
    }
    resumed
}

/// Stops `process` on `ladder`, within [`Ladder::bound`]. `name` names it in the account
/// (e.g. `postgres`). Every signal goes through [`Owned::signal`], which proves it first.
pub fn stop(name: &str, process: &mut dyn Owned, ladder: &Ladder) -> Stopped {
    let started = Instant::now();
    let pid = process.pid();
    let who = format!("{name} (pid {pid})");
    let mut story: Vec<String> = Vec::new();
    let finish = |outcome: Outcome, story: Vec<String>, killed: bool| Stopped {
        account: (!story.is_empty()).then(|| {
            let ended = match &outcome {
                Outcome::Ended => format!(
                    "it ended {} after the first signal",
                    secs(started.elapsed())
                ),
                Outcome::StillRunning => format!(
                    "it is still there {} after the first signal ({})",
                    secs(started.elapsed()),
                    procfs::describe_state(procfs::state(pid))
                ),
                Outcome::NotProven(_) => String::new(),
            };
            let mut parts = story;
            if !ended.is_empty() {
                parts.push(ended);
            }
            format!("{who} {}", parts.join("; "))
        }),
        outcome,
        elapsed: started.elapsed(),
        killed,
    };

    let graceful = ladder.graceful.as_str();
    let was = procfs::state(pid);
    if let Err(error) = process.signal(ladder.graceful) {
        return match error {
            SignalError::NotProven(procfs::Mismatch::Gone { .. }) => {
                finish(Outcome::Ended, story, false)
            }
            error => {
                let reason = error.to_string();
                finish(
                    Outcome::NotProven(reason.clone()),
                    vec![format!("was not stopped: {reason}")],
                    false,
                )
            }
        };
    }
    let resumed = resume(process, ladder.tree);
    if resumed > 0 {
        story.push(if was == Some('T') {
            format!("was stopped (state T): sent SIGCONT after {graceful} so it could act on it")
        } else {
            format!(
                "had {} (state T): sent them SIGCONT after {graceful} so they could act on it",
                processes(resumed, "stopped")
            )
        });
    }
    if wait(process, ladder.grace) {
        return finish(Outcome::Ended, story, false);
    }

    story.push(format!(
        "did not stop within {} of {graceful} ({})",
        secs(ladder.grace),
        procfs::describe_state(procfs::state(pid))
    ));
    if let Some((forced, limit)) = ladder.forced {
        let _ = process.signal(forced);
        let resumed = resume(process, ladder.tree);
        story.push(format!(
            "sent {}{}",
            forced.as_str(),
            if resumed > 0 { " and SIGCONT" } else { "" }
        ));
        if wait(process, limit) {
            return finish(Outcome::Ended, story, false);
        }
        story.push(format!(
            "did not stop within {} of {} ({})",
            secs(limit),
            forced.as_str(),
            procfs::describe_state(procfs::state(pid))
        ));
    }

    // SIGKILL: stopped first, so it can neither fork nor reap while its children are killed.
    let mut killed_children = 0;
    if ladder.tree == Tree::WithChildren {
        let _ = process.signal(Signal::SIGSTOP);
        for child in procfs::children(pid) {
            if process.signal_child(child, Signal::SIGKILL).is_ok() {
                killed_children += 1;
            }
        }
    }
    let _ = process.signal(Signal::SIGKILL);
    story.push(if killed_children > 0 {
        format!(
            "sent SIGKILL to it and its {}",
            processes(killed_children, "child")
        )
    } else {
        "sent SIGKILL".to_string()
    });
    if wait(process, ladder.kill_wait) {
        finish(Outcome::Ended, story, true)
    } else {
        finish(Outcome::StillRunning, story, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::ProcessRecord;

    /// A shell that ignores every graceful signal, and a child of it that does too (an ignored
    /// signal stays ignored across exec): only SIGKILL ends them.
    fn deaf_tree() -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", "trap '' INT TERM QUIT; sleep 300 & wait; wait"])
            .spawn()
            .unwrap()
    }

    fn quick() -> Ladder {
        Ladder {
            graceful: Signal::SIGINT,
            grace: Duration::from_millis(300),
            forced: Some((Signal::SIGQUIT, Duration::from_millis(300))),
            kill_wait: Duration::from_secs(2),
            tree: Tree::WithChildren,
        }
    }

    fn record(child: &std::process::Child) -> ProcessRecord {
        procfs::tests::exec_done(child.id());
        ProcessRecord::observe(child.id()).unwrap()
    }

    /// Reaps `child` in the background (a test's child stays a zombie otherwise, which counts as
    /// ended anyway).
    fn reap(mut child: std::process::Child) {
        std::thread::spawn(move || child.wait());
    }

    #[test]
    fn a_process_deaf_to_every_signal_is_killed_with_its_children_within_the_bound() {
        let child = deaf_tree();
        let mut process = record(&child);
        // Wait for the shell's own child.
        let mut grandchild = None;
        for _ in 0..500 {
            grandchild = procfs::children(child.id()).first().copied();
            if grandchild.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let grandchild = grandchild.expect("the shell started sleep");
        let ladder = quick();
        reap(child);
        let stopped = stop("deaf", &mut process, &ladder);
        assert_eq!(stopped.outcome, Outcome::Ended, "{stopped:?}");
        assert!(stopped.elapsed <= ladder.bound(), "{stopped:?}");
        let account = stopped.account.unwrap();
        assert!(
            account.contains("did not stop within 0.3 s of SIGINT")
                && account.contains("sent SIGQUIT")
                && account.contains("sent SIGKILL to it and its 1 child process;"),
            "{account}"
        );
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            !procfs::is_alive(grandchild)
        });
        assert!(gone, "the child was killed with its parent");
    }

    #[test]
    fn a_stopped_process_is_resumed_and_acts_on_the_graceful_signal() {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut process = record(&child);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        let stopped_state = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            procfs::state(pid) == Some('T')
        });
        assert!(stopped_state);
        reap(child);
        let ladder = Ladder {
            graceful: Signal::SIGTERM,
            grace: Duration::from_secs(10),
            ..quick()
        };
        let stopped = stop("sleep", &mut process, &ladder);
        assert_eq!(stopped.outcome, Outcome::Ended);
        assert!(
            stopped.elapsed < Duration::from_secs(2),
            "it did not wait out the grace: {stopped:?}"
        );
        let account = stopped.account.unwrap();
        assert!(
            account.contains("sleep (pid")
                && account.contains(") was stopped (state T): sent SIGCONT after SIGTERM"),
            "{account}"
        );
    }

    #[test]
    fn a_process_that_is_not_the_recorded_one_is_never_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let mut forged = ProcessRecord {
            start_time: record(&child).start_time + 7,
            ..record(&child)
        };
        let stopped = stop("sleep", &mut forged, &quick());
        assert!(
            matches!(&stopped.outcome, Outcome::NotProven(why) if why.contains("reused")),
            "{stopped:?}"
        );
        assert!(child.try_wait().unwrap().is_none(), "it lives on");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_bounds_add_up() {
        assert_eq!(POSTGRES.bound(), Duration::from_secs(17));
        assert_eq!(REDIS.bound(), Duration::from_secs(12));
        assert_eq!(SUPERVISOR.bound(), Duration::from_secs(22));
    }
}
