//! What `/proc` says about processes and ports: enough to tell nanika's own servers from
//! unrelated programs, so nanika never signals a process it did not start.

use std::path::{Path, PathBuf};

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

/// The socket inodes listening on TCP `port`, from `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push((*inode).to_string());
            }
        }
    }
    inodes
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

/// Whether TCP `port` on loopback can be bound now.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn this_process_is_alive_and_described() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(cmdline(me).is_some_and(|c| !c.is_empty()));
        assert!(!is_alive(u32::MAX - 1));
    }
}
