//! What `/proc` says about processes and ports: enough to tell nanika's own servers from
//! unrelated programs, so nanika never signals a process it did not start.
//!
//! A pid alone proves nothing: it is reused once its process is gone. A [`ProcessRecord`] keeps
//! what nanika knew when it started a process — its pid, its start time and the command line
//! nanika gave it — and every signal nanika sends outside its own unreaped children goes through
//! [`ProcessRecord::signal`], which checks all three again and then signals through a pidfd, so
//! that not even a pid reused between the check and the signal can be hit.

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fields of `/proc/PID/stat` after the command name (which is in parentheses and may itself
/// hold spaces): index 0 is the state (field 3 of proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// When `pid` started, in clock ticks since boot: with the pid, it names one process for good
/// (a pid is reused, a pid and a start time are not).
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The process group of `pid`.
pub fn process_group(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The parent of `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The state letter of `pid` (`R`, `S`, `D`, `T` for stopped, `Z`...; proc(5) field 3).
pub fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// A state letter in words, for messages: `T` is "stopped, state T".
pub fn describe_state(state: Option<char>) -> String {
    let words = match state {
        Some('R') => "running",
        Some('S') => "sleeping",
        Some('D') => "in uninterruptible (disk) wait",
        Some('T') => "stopped",
        Some('t') => "stopped by a debugger",
        Some('Z') => "a zombie",
        Some('I') => "idle",
        Some(_) => "in an unusual state",
        None => return "gone".into(),
    };
    format!("{words}, state {}", state.unwrap_or('?'))
}

/// The live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|child| parent(*child) == Some(pid) && is_alive(*child))
        .collect()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live processes of process group `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| process_group(*pid) == Some(group) && is_alive(*pid))
        .collect()
}

/// The processes (never this one) using `dir`: their working or root directory is in it, they
/// have a file in it open, or their command line names it. `dir` must be the path the kernel
/// shows (canonical). Only looked at, never signalled: holding a file proves nothing about who
/// started a process.
pub fn users_of(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = dir.display().to_string();
    pids()
        .into_iter()
        .filter(|pid| *pid != me && is_alive(*pid))
        .filter(|pid| {
            let base = PathBuf::from(format!("/proc/{pid}"));
            let inside = |link: &Path| std::fs::read_link(link).is_ok_and(|p| p.starts_with(dir));
            inside(&base.join("cwd"))
                || inside(&base.join("root"))
                || std::fs::read_dir(base.join("fd"))
                    .is_ok_and(|fds| fds.flatten().any(|fd| inside(&fd.path())))
                || cmdline(*pid).is_some_and(|c| c.iter().any(|a| a.contains(&needle)))
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as gone: it only awaits its parent).
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// The arguments of `pid` exactly as the kernel keeps them, empty ones included (`cmdline`
/// drops those): what a [`ProcessRecord`] is compared with.
pub fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        // A kernel thread, or a process that is exiting.
        return Some(Vec::new());
    }
    Some(
        raw.split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// A process as nanika started it: its pid, when it started and the command line nanika gave
/// it. Together they name one process for as long as it lives: a reused pid has another start
/// time, and a process that exec'd another program has another command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: u32,
    /// When it started, in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// Its command line, program first, as nanika gave it.
    pub cmdline: Vec<String>,
}

/// Why a [`ProcessRecord`] does not (or no longer) name the process nanika started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// No process has the pid.
    #[error("pid {pid} is not running")]
    Gone {
        /// The recorded pid.
        pid: u32,
    },
    /// The pid belongs to a process that started later.
    #[error(
        "pid {pid} now belongs to another process (started at tick {now} since boot, not {recorded}): the pid was reused"
    )]
    Reused {
        /// The recorded pid.
        pid: u32,
        /// The recorded start time.
        recorded: u64,
        /// The start time of the process that has the pid now.
        now: u64,
    },
    /// Same pid and start time, but another command line (it exec'd something else).
    #[error("pid {pid} runs `{now}`, not the command line nanika gave it (`{recorded}`)")]
    OtherCommand {
        /// The recorded pid.
        pid: u32,
        /// The recorded command line, joined.
        recorded: String,
        /// Its command line now, joined.
        now: String,
    },
}

/// Why a signal was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The process is not (or no longer) the one nanika started: it was left alone.
    #[error("not signalled: {0}")]
    NotProven(#[from] Mismatch),
    /// The kernel refused the signal.
    #[error("cannot send {signal} to pid {pid}")]
    Failed {
        /// The pid.
        pid: u32,
        /// The signal.
        signal: &'static str,
        /// The kernel's reason.
        #[source]
        source: std::io::Error,
    },
}

impl ProcessRecord {
    /// Records `pid`, which nanika has just started with `cmdline`; `None` when it already ended.
    pub fn capture(pid: u32, cmdline: Vec<String>) -> Option<Self> {
        Some(ProcessRecord {
            pid,
            start_time: start_time(pid)?,
            cmdline,
        })
    }

    /// Records `pid` as it runs now, its command line read from `/proc`: for a process whose
    /// identity the caller has just proven from the process itself (its command line and
    /// working directory), so that nothing that later takes its pid can be signalled.
    pub fn observe(pid: u32) -> Option<Self> {
        let record = ProcessRecord {
            pid,
            start_time: start_time(pid)?,
            cmdline: argv(pid)?,
        };
        is_alive(pid).then_some(record)
    }

    /// Whether the pid still names the process recorded: alive, with the recorded start time and
    /// the recorded command line.
    pub fn check(&self) -> Result<(), Mismatch> {
        let pid = self.pid;
        let (Some(now), true) = (start_time(pid), is_alive(pid)) else {
            return Err(Mismatch::Gone { pid });
        };
        if now != self.start_time {
            return Err(Mismatch::Reused {
                pid,
                recorded: self.start_time,
                now,
            });
        }
        match argv(pid) {
            Some(args) if args == self.cmdline => Ok(()),
            // Exiting between the two reads.
            None => Err(Mismatch::Gone { pid }),
            Some(args) => Err(Mismatch::OtherCommand {
                pid,
                recorded: self.cmdline.join(" "),
                now: args.join(" "),
            }),
        }
    }

    /// Whether the recorded process has ended (its pid is free, or belongs to a later process).
    pub fn ended(&self) -> bool {
        matches!(
            self.check(),
            Err(Mismatch::Gone { .. } | Mismatch::Reused { .. })
        )
    }

    /// Sends `signal` to the recorded process, only after [`Self::check`] proves it is still the
    /// one recorded. The check is made holding a pidfd of the process, and the signal goes
    /// through that pidfd: if the process ends and its pid is reused right after the check,
    /// the signal fails instead of reaching the newcomer.
    pub fn signal(&self, signal: Signal) -> Result<(), SignalError> {
        send_proven(self.pid, signal, || self.check())
    }

    /// Sends `signal` to `child`, a child of the recorded process: proven by its parent pid
    /// while the recorded process (checked too) is alive — not by its command line, which
    /// PostgreSQL's backends rewrite as they work. Through a pidfd, as [`Self::signal`]. With
    /// [`Reach::Group`], a child that leads its own process group (as PostgreSQL's backends
    /// do) is signalled with its group, so what it started goes too.
    pub fn signal_child(
        &self,
        child: u32,
        signal: Signal,
        reach: Reach,
    ) -> Result<(), SignalError> {
        let started = start_time(child).ok_or(Mismatch::Gone { pid: child })?;
        let proven = || -> Result<(), Mismatch> {
            self.check()?;
            match start_time(child) {
                Some(now) if now == started && parent(child) == Some(self.pid) => Ok(()),
                _ => Err(Mismatch::Gone { pid: child }),
            }
        };
        send_proven(child, signal, proven)?;
        if reach == Reach::Group && process_group(child) == Some(child) && proven().is_ok() {
            // The group is named by its live leader's pid, proven above: no other group can
            // have that id while the leader lives.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child as i32), signal);
        }
        Ok(())
    }
}

/// Sends `signal` to `pid` through a pidfd opened before `proven` runs: what is proven is what
/// is signalled, even if the pid is reused in between.
fn send_proven(
    pid: u32,
    signal: Signal,
    proven: impl Fn() -> Result<(), Mismatch>,
) -> Result<(), SignalError> {
    let failed = |source: std::io::Error| SignalError::Failed {
        pid,
        signal: signal.as_str(),
        source,
    };
    let raw_pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(Mismatch::Gone { pid })?;
    let pidfd = match rustix::process::pidfd_open(raw_pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Err(Mismatch::Gone { pid }.into()),
        Err(e) => return Err(failed(e.into())),
    };
    proven()?;
    let raw = rustix::process::Signal::from_named_raw(signal as i32)
        .ok_or_else(|| failed(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    rustix::process::pidfd_send_signal(&pidfd, raw).map_err(|e| match e {
        rustix::io::Errno::SRCH => SignalError::NotProven(Mismatch::Gone { pid }),
        e => failed(e.into()),
    })
}

/// Whether a signal to a child reaches its process group too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The child only.
    Process,
    /// The child and, when it leads one, its process group.
    Group,
}

/// The command line of `pid`.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// The short name of `pid`'s program.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The working directory of `pid` (needs the same user or root).
pub fn cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// `name (pid N)` for messages.
pub fn describe(pid: u32) -> String {
    match comm(pid) {
        Some(name) => format!("{name} (pid {pid})"),
        None => format!("pid {pid}"),
    }
}

/// One socket of `/proc/net/tcp` or `/proc/net/tcp6`.
struct TcpSocket {
    local: String,
    local_port: u16,
    remote: String,
    /// The kernel's TCP state (`0A` listening, `06` TIME-WAIT).
    state: String,
    /// The running timer's remaining time, in clock ticks.
    timer_ticks: Option<u64>,
    inode: String,
}

/// Every TCP socket the kernel shows this process.
fn tcp_sockets() -> Vec<TcpSocket> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(timer), Some(inode)) = (
                fields.get(1),
                fields.get(2),
                fields.get(3),
                fields.get(5),
                fields.get(9),
            ) else {
                continue;
            };
            let Some(local_port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            // `tr:tm->when`: a timer kind (0 none), then its remaining time in clock ticks.
            let timer_ticks = timer
                .split_once(':')
                .filter(|(kind, _)| *kind != "00")
                .and_then(|(_, when)| u64::from_str_radix(when, 16).ok());
            sockets.push(TcpSocket {
                local: socket_address(local),
                local_port,
                remote: socket_address(remote),
                state: (*state).to_string(),
                timer_ticks,
                inode: (*inode).to_string(),
            });
        }
    }
    sockets
}

/// `127.0.0.1:38432` from the kernel's `0100007F:9620` (IPv4) or its IPv6 form (four 32-bit words,
/// each in the machine's byte order).
fn socket_address(hex: &str) -> String {
    let Some((address, port)) = hex.split_once(':') else {
        return hex.to_string();
    };
    let port = u16::from_str_radix(port, 16).map_or_else(|_| port.to_string(), |p| p.to_string());
    let words: Option<Vec<u32>> = (0..address.len() / 8)
        .map(|i| u32::from_str_radix(&address[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words
        .unwrap_or_default()
        .into_iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    match <[u8; 4]>::try_from(bytes.as_slice()) {
        Ok(v4) => format!("{}:{port}", std::net::Ipv4Addr::from(v4)),
        Err(_) => match <[u8; 16]>::try_from(bytes.as_slice()) {
            Ok(v6) => format!("[{}]:{port}", std::net::Ipv6Addr::from(v6)),
            Err(_) => hex.to_string(),
        },
    }
}

/// The socket inodes listening on TCP `port`.
fn listening_inodes(port: u16) -> Vec<String> {
    tcp_sockets()
        .into_iter()
        .filter(|s| s.state == "0A" && s.local_port == port)
        .map(|s| s.inode)
        .collect()
}

/// A closed connection the kernel keeps in TIME-WAIT on a port: it holds the port against a
/// server's bind until it expires, and no process owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWait {
    /// Its local address (`127.0.0.1:38432`).
    pub local: String,
    /// Its remote address: the same as `local` for a connection that connected to itself.
    pub remote: String,
    /// How long until the kernel drops it, when the timer could be read.
    pub remaining: Option<Duration>,
}

impl std::fmt::Display for TimeWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a closed connection in TIME-WAIT ({} -> {}{})",
            self.local,
            self.remote,
            if self.local == self.remote {
                ", a connection to itself"
            } else {
                ""
            }
        )?;
        match self.remaining {
            Some(left) => write!(
                f,
                ", which the kernel keeps for {} s more; no program holds the port",
                left.as_secs().max(1)
            ),
            None => write!(
                f,
                ", which the kernel keeps for up to 60 s; no program holds the port"
            ),
        }
    }
}

/// The longest-lived TIME-WAIT connection on local TCP `port`, when there is one.
pub fn time_wait(port: u16) -> Option<TimeWait> {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map(|t| t as u64);
    tcp_sockets()
        .into_iter()
        .filter(|s| s.state == "06" && s.local_port == port)
        .map(|s| TimeWait {
            local: s.local,
            remote: s.remote,
            remaining: s
                .timer_ticks
                .zip(ticks_per_second)
                .map(|(ticks, hz)| Duration::from_millis(ticks * 1000 / hz)),
        })
        .max_by_key(|t| t.remaining)
}

/// What keeps a TCP port from being bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortUser {
    /// A process listens on it (described).
    Program(String),
    /// No process: a closed connection the kernel keeps in TIME-WAIT.
    TimeWait(TimeWait),
    /// Neither could be found (another user's process, seen only by root).
    Unknown,
}

impl PortUser {
    /// What holds `port`, as far as this process can see.
    pub fn of(port: u16) -> PortUser {
        match (port_holder(port), time_wait(port)) {
            (Some(program), _) => PortUser::Program(program),
            (None, Some(time_wait)) => PortUser::TimeWait(time_wait),
            (None, None) => PortUser::Unknown,
        }
    }
}

/// The kernel's ephemeral port range, when it can be read.
pub fn ephemeral_ports() -> Option<nanika_config::ports::PortRange> {
    let text = std::fs::read_to_string(nanika_config::ports::EPHEMERAL_RANGE_FILE).ok()?;
    nanika_config::ports::PortRange::parse(&text)
}

/// The process listening on TCP `port`, described, when it can be found (another user's process
/// can only be found as root).
pub fn port_holder(port: u16) -> Option<String> {
    let targets: Vec<String> = listening_inodes(port)
        .into_iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    if targets.is_empty() {
        return None;
    }
    let processes = std::fs::read_dir("/proc").ok()?;
    for entry in processes.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && targets.iter().any(|t| link.as_os_str() == t.as_str())
            {
                return Some(describe(pid));
            }
        }
    }
    None
}

/// Whether the process `pid` holds a socket listening on TCP `port`: what proves that the
/// server answering on a port is the one nanika started, not another program that took the
/// port while it was down.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let targets: Vec<String> = listening_inodes(port)
        .into_iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    if targets.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
    })
}

/// Whether TCP `port` on loopback can be bound now.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_listener_is_proven_by_its_own_process_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        assert!(!listens_on(1, port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }

    /// Waits until `pid` shows its new command line: `spawn` returns when the exec has begun,
    /// and the kernel sets up the new program's arguments a moment later.
    pub(crate) fn exec_done(pid: u32) {
        let shown = (0..1000).any(|_| {
            if argv(pid).is_some_and(|a| !a.is_empty()) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            false
        });
        assert!(shown, "pid {pid} shows no command line");
    }

    #[test]
    fn the_holder_of_a_port_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!port_is_free(port));
        let holder = port_holder(port).expect("our own listener is visible");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(listener);
        assert!(port_is_free(port));
    }

    #[test]
    fn a_connection_in_time_wait_is_found_on_its_port_with_its_remaining_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        // The side that closes first keeps the connection in TIME-WAIT: here the server's, on
        // the listening port.
        drop(server);
        drop(listener);
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &client, &mut byte).unwrap(), 0);
        drop(client);
        let found = (0..500).find_map(|_| {
            time_wait(port).or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                None
            })
        });
        let found = found.expect("the server side of the connection is in TIME-WAIT");
        assert_eq!(found.local, format!("127.0.0.1:{port}"));
        let left = found.remaining.expect("its timer is read");
        assert!(
            left > Duration::from_secs(30) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        assert!(matches!(PortUser::of(port), PortUser::TimeWait(_)));
        let said = found.to_string();
        assert!(
            said.contains("TIME-WAIT") && said.contains("s more"),
            "{said}"
        );
    }

    #[test]
    fn kernel_addresses_are_read() {
        assert_eq!(socket_address("0100007F:9620"), "127.0.0.1:38432");
        assert_eq!(
            socket_address("00000000000000000000000001000000:0050"),
            "[::1]:80"
        );
    }

    #[test]
    fn the_users_of_a_directory_are_found_and_a_process_is_named_by_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&real)
            .spawn()
            .unwrap();
        let users = users_of(&real);
        let started = start_time(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(users.contains(&child.id()), "{users:?}");
        assert!(started.is_some());
        assert_eq!(
            process_group(std::process::id()),
            Some(nix::unistd::getpgrp().as_raw() as u32)
        );
    }

    fn sleeper() -> std::process::Child {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        exec_done(child.id());
        child
    }

    fn kill(mut child: std::process::Child) {
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_recorded_process_matches_only_itself() {
        let child = sleeper();
        let given = vec!["sleep".to_string(), "300".into()];
        let record = ProcessRecord::capture(child.id(), given).unwrap();
        assert_eq!(record.check(), Ok(()));
        assert_eq!(ProcessRecord::observe(child.id()).as_ref(), Some(&record));

        let reused = ProcessRecord {
            start_time: record.start_time + 1,
            ..record.clone()
        };
        assert!(matches!(reused.check(), Err(Mismatch::Reused { .. })));
        assert!(
            reused.ended(),
            "a later process with the pid is not the recorded one"
        );
        let other_pid = ProcessRecord {
            pid: std::process::id(),
            ..record.clone()
        };
        assert!(other_pid.check().is_err());
        let other_command = ProcessRecord {
            cmdline: vec!["sleep".into(), "301".into()],
            ..record.clone()
        };
        assert!(matches!(
            other_command.check(),
            Err(Mismatch::OtherCommand { .. })
        ));
        assert!(!other_command.ended());

        for wrong in [&reused, &other_pid, &other_command] {
            assert!(
                matches!(
                    wrong.signal(Signal::SIGTERM),
                    Err(SignalError::NotProven(_))
                ),
                "{wrong:?}"
            );
        }
        assert!(is_alive(child.id()), "no wrong record reached it");
        record.signal(Signal::SIGTERM).unwrap();
        let mut child = child;
        let status = child.wait().unwrap();
        assert!(!status.success(), "the proven record stopped it");
        assert!(record.ended());
        assert!(matches!(
            record.signal(Signal::SIGTERM),
            Err(SignalError::NotProven(Mismatch::Gone { .. }))
        ));
    }

    #[test]
    fn states_and_children_are_read() {
        let child = sleeper();
        let pid = child.id();
        assert!(children(std::process::id()).contains(&pid));
        assert_eq!(parent(pid), Some(std::process::id()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        let stopped = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            state(pid) == Some('T')
        });
        assert!(stopped, "{:?}", state(pid));
        assert_eq!(describe_state(state(pid)), "stopped, state T");
        kill(child);
    }

    #[test]
    fn this_process_is_alive_and_described() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(cmdline(me).is_some_and(|c| !c.is_empty()));
        assert!(!is_alive(u32::MAX - 1));
    }
}
