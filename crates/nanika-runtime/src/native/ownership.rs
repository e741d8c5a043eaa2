//! Which running processes are this project's, proven from the processes themselves.
//!
//! The supervisor records each process it starts (pid, start time, command line) in
//! `.nanika/run/status.json`. When those records are gone — `.nanika/run` deleted while the
//! servers run — or were left by a supervisor that no longer runs, nanika finds this project's
//! processes by what they run, comparing paths canonically:
//! - the supervisor: `nanika … --project-dir <this project's root> __supervise`;
//! - the postmaster: `postgres -D <this project's data directory>`, which the data directory's
//!   `postmaster.pid` (it survives) names too when it can be read;
//! - Redis: a `redis-server` whose working directory is this project's Redis directory.
//! - a topology node: a postmaster of a replica's data directory (`replica-N` in PostgreSQL's
//!   home), a `redis-server` working in a node's directory (`replica-N`, `sentinel-N`,
//!   `cluster-N` in Redis's).
//! - a monitoring service: a Prometheus or exporter program working in its directory of
//!   PostgreSQL's home (`prometheus`, `postgres-exporter`, `redis-exporter`).
//!
//! A process found so is recorded as it runs ([`ProcessRecord::observe`]); every later signal
//! proves that record again, so a pid reused meanwhile is never signalled.

use super::layout::StateLayout;
use super::procfs::{self, ProcessRecord};
use crate::Service;
use std::path::{Path, PathBuf};

/// What a process of this project is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The supervisor.
    Supervisor,
    /// A server.
    Server(Service),
}

/// The canonical paths a process of this project names (`None` for what does not exist).
struct Places {
    root: Option<PathBuf>,
    data: Option<PathBuf>,
    redis: Option<PathBuf>,
    postgres_home: Option<PathBuf>,
}

impl Places {
    fn of(layout: &StateLayout) -> Places {
        let canonical = |p: &Path| std::fs::canonicalize(p).ok();
        Places {
            root: canonical(&layout.project),
            data: canonical(&layout.postgres_data()),
            redis: canonical(&layout.redis_dir),
            postgres_home: canonical(&layout.postgres_home),
        }
    }
}

/// `arg` as a canonical path, relative to `pid`'s working directory when relative.
fn canonical_arg(pid: u32, arg: &str) -> Option<PathBuf> {
    let path = Path::new(arg);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        procfs::cwd(pid)?.join(path)
    };
    std::fs::canonicalize(path).ok()
}

/// The value of `flag` in `args` (`--flag value`).
fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn is_supervisor_of(pid: u32, args: &[String], places: &Places) -> bool {
    args.iter().skip(1).any(|a| a == "__supervise")
        && value_of(args, "--project-dir")
            .and_then(|dir| canonical_arg(pid, dir))
            .is_some_and(|dir| Some(dir) == places.root)
}

fn is_postmaster_of(pid: u32, args: &[String], places: &Places) -> bool {
    let program = args
        .first()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|name| name == "postgres");
    program
        && value_of(args, "-D")
            .and_then(|dir| canonical_arg(pid, dir))
            .is_some_and(|dir| Some(dir) == places.data)
}

fn is_redis_of(pid: u32, places: &Places) -> bool {
    procfs::comm(pid).is_some_and(|c| c.starts_with("redis-server"))
        && places.redis.is_some()
        && procfs::cwd(pid) == places.redis
}

/// The topology node whose directory `dir` is (`replica-2` in PostgreSQL's home, `sentinel-1`
/// in Redis's), with `kind` telling which.
fn node_of_dir(kind: Service, dir: &Path) -> Option<Service> {
    let name = dir.file_name()?.to_str()?;
    let (prefix, number) = name.rsplit_once('-')?;
    let number: u8 = number.parse().ok().filter(|n| (1..=9).contains(n))?;
    match (kind, prefix) {
        (Service::Postgres, "replica") => Some(Service::PostgresReplica(number)),
        (Service::Redis, "replica") => Some(Service::RedisReplica(number)),
        (Service::Redis, "sentinel") => Some(Service::Sentinel(number)),
        (Service::Redis, "cluster") => Some(Service::ClusterNode(number)),
        _ => None,
    }
}

/// The topology node `pid` is: a postgres whose `-D` is a node's directory in PostgreSQL's
/// home, or a redis-server working in a node's directory in Redis's.
fn topology_node_of(pid: u32, args: &[String], places: &Places) -> Option<Service> {
    let program = args.first().and_then(|p| Path::new(p).file_name())?;
    if program == "postgres" {
        let dir = value_of(args, "-D").and_then(|dir| canonical_arg(pid, dir))?;
        return (dir.parent() == places.postgres_home.as_deref())
            .then(|| node_of_dir(Service::Postgres, &dir))
            .flatten();
    }
    if !procfs::comm(pid).is_some_and(|c| c.starts_with("redis-server")) {
        return None;
    }
    let cwd = procfs::cwd(pid)?;
    (cwd.parent() == places.redis.as_deref())
        .then(|| node_of_dir(Service::Redis, &cwd))
        .flatten()
}

/// The programs a monitoring service may run, by file name (Debian's and upstream's).
const MONITOR_PROGRAMS: [&str; 7] = [
    "prometheus",
    "prometheus-alertmanager",
    "alertmanager",
    "prometheus-postgres-exporter",
    "postgres_exporter",
    "prometheus-redis-exporter",
    "redis_exporter",
];

/// The monitoring service `pid` is: one of [`MONITOR_PROGRAMS`] working in a monitoring
/// service's directory of PostgreSQL's home.
fn monitor_of(pid: u32, args: &[String], places: &Places) -> Option<Service> {
    let program = args.first().and_then(|p| Path::new(p).file_name())?;
    if !MONITOR_PROGRAMS.iter().any(|name| program == *name) {
        return None;
    }
    let cwd = procfs::cwd(pid)?;
    if cwd.parent() != places.postgres_home.as_deref() {
        return None;
    }
    Service::from_name(cwd.file_name()?.to_str()?).filter(|s| s.is_monitor())
}

/// Whether `record`, which has just passed [`ProcessRecord::check`], is this project's `role`:
/// a record read from a file proves a process is the one recorded, this proves that process is
/// this project's (a forged record naming some other program is refused).
pub fn is_this_projects(layout: &StateLayout, role: Role, record: &ProcessRecord) -> bool {
    let places = Places::of(layout);
    match role {
        Role::Supervisor => is_supervisor_of(record.pid, &record.cmdline, &places),
        Role::Server(Service::Postgres) => is_postmaster_of(record.pid, &record.cmdline, &places),
        Role::Server(Service::Redis) => is_redis_of(record.pid, &places),
        Role::Server(monitor) if monitor.is_monitor() => {
            monitor_of(record.pid, &record.cmdline, &places) == Some(monitor)
        }
        // A topology node runs in its own directory of the project's state.
        Role::Server(node) => {
            let (program, dir) = if node.kind() == Service::Postgres {
                (
                    "postgres",
                    layout
                        .postgres_home
                        .join(super::control::data_dir_name(node)),
                )
            } else {
                (
                    "redis-server",
                    layout.redis_dir.join(super::control::data_dir_name(node)),
                )
            };
            procfs::comm(record.pid).is_some_and(|c| c.starts_with(program))
                && std::fs::canonicalize(&dir).is_ok_and(|d| procfs::cwd(record.pid) == Some(d))
        }
    }
}

/// This project's processes, as found now.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Its supervisors (one at most, unless `.nanika/run` was deleted under a running one and
    /// another was started since).
    pub supervisors: Vec<ProcessRecord>,
    /// Its postmaster.
    pub postgres: Option<ProcessRecord>,
    /// Its Redis.
    pub redis: Option<ProcessRecord>,
    /// Its topology's nodes.
    pub nodes: Vec<(Service, ProcessRecord)>,
    /// Server processes that use this project's state but belong to no server found above (a
    /// backend whose postmaster is gone): never signalled, since nothing proves nanika started
    /// them, but they keep the files in use.
    pub strays: Vec<u32>,
}

impl Found {
    /// The server process of `service`.
    pub fn server(&self, service: Service) -> Option<&ProcessRecord> {
        match service {
            Service::Postgres => self.postgres.as_ref(),
            Service::Redis => self.redis.as_ref(),
            node => self.nodes.iter().find(|(s, _)| *s == node).map(|(_, r)| r),
        }
    }

    /// Whether a process nanika started (and proved so) runs: its supervisor or a server.
    pub fn any_started(&self) -> bool {
        !self.supervisors.is_empty()
            || self.postgres.is_some()
            || self.redis.is_some()
            || !self.nodes.is_empty()
    }

    /// The servers found: the spec's two and the topology's nodes.
    pub fn services(&self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|s| self.server(*s).is_some())
            .chain(self.nodes.iter().map(|(s, _)| *s))
            .collect()
    }

    /// Whether nothing of this project runs, strays included.
    pub fn is_empty(&self) -> bool {
        self.supervisors.is_empty()
            && self.postgres.is_none()
            && self.redis.is_none()
            && self.nodes.is_empty()
            && self.strays.is_empty()
    }

    /// Each process, described for a message (`postgres (pid 123)`).
    pub fn describe(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .supervisors
            .iter()
            .map(|s| format!("the supervisor (pid {})", s.pid))
            .collect();
        for service in self.services() {
            if let Some(record) = self.server(service) {
                all.push(format!("{service} (pid {})", record.pid));
            }
        }
        all.extend(self.strays.iter().map(|pid| {
            format!(
                "{}, working in its state with no server of nanika's as its parent (not signalled: nothing proves nanika started it)",
                procfs::describe(*pid)
            )
        }));
        all
    }
}

/// Reads the pid `postmaster.pid` names, when it can be read.
fn postmaster_pid_file(layout: &StateLayout) -> Option<u32> {
    std::fs::read_to_string(layout.postgres_data().join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Finds this project's processes from `/proc`.
pub fn discover(layout: &StateLayout) -> Found {
    let places = Places::of(layout);
    let me = std::process::id();
    let mut found = Found::default();
    let mut postmasters = Vec::new();
    let mut server_processes = Vec::new();
    let mut node_processes: Vec<(Service, u32)> = Vec::new();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default();
    for pid in pids {
        if pid == me || !procfs::is_alive(pid) {
            continue;
        }
        let Some(args) = procfs::argv(pid) else {
            continue;
        };
        if is_supervisor_of(pid, &args, &places) {
            found.supervisors.extend(ProcessRecord::observe(pid));
        } else if is_postmaster_of(pid, &args, &places) {
            postmasters.push(pid);
        } else if is_redis_of(pid, &places) {
            found.redis = ProcessRecord::observe(pid);
        } else if let Some(node) = topology_node_of(pid, &args, &places) {
            node_processes.push((node, pid));
        } else if let Some(monitor) = monitor_of(pid, &args, &places) {
            node_processes.push((monitor, pid));
        } else if let Some(comm) = procfs::comm(pid)
            && (comm == "postgres" || comm.starts_with("redis-server"))
            && procfs::cwd(pid).is_some_and(|cwd| {
                [&places.data, &places.redis, &places.postgres_home]
                    .into_iter()
                    .flatten()
                    .any(|dir| cwd.starts_with(dir))
            })
        {
            server_processes.push(pid);
        }
    }
    // A backend has the postmaster's command line for a moment after the fork, until it
    // renames itself: the postmaster is the one whose parent is not one of them.
    let firsts: Vec<u32> = postmasters
        .iter()
        .copied()
        .filter(|pid| procfs::parent(*pid).is_none_or(|p| !postmasters.contains(&p)))
        .collect();
    let named = postmaster_pid_file(layout);
    found.postgres = firsts
        .iter()
        .copied()
        // PostgreSQL's own lock file, when readable, must name the same process.
        .find(|pid| named.is_none_or(|n| n == *pid))
        .and_then(ProcessRecord::observe);
    // A node's server is the one whose parent is not a process of the same node (a PostgreSQL
    // backend keeps its postmaster's command line for a moment after the fork).
    let node_pids: Vec<u32> = node_processes.iter().map(|(_, pid)| *pid).collect();
    for (node, pid) in &node_processes {
        let child = procfs::parent(*pid).is_some_and(|p| node_pids.contains(&p));
        if !child && !found.nodes.iter().any(|(s, _)| s == node) {
            found
                .nodes
                .extend(ProcessRecord::observe(*pid).map(|r| (*node, r)));
        }
    }
    let servers: Vec<u32> = [&found.postgres, &found.redis]
        .into_iter()
        .flatten()
        .map(|r| r.pid)
        .chain(found.nodes.iter().map(|(_, r)| r.pid))
        .collect();
    found.strays = server_processes
        .into_iter()
        .chain(postmasters)
        .chain(node_pids)
        .filter(|pid| !servers.contains(pid))
        .filter(|pid| procfs::parent(*pid).is_none_or(|p| !servers.contains(&p)))
        .collect();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervisor_is_recognised_by_its_canonical_project_directory() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("game");
        std::fs::create_dir_all(project.join("sub")).unwrap();
        let layout = StateLayout::new(&project, None);
        let places = Places::of(&layout);
        let me = std::process::id();
        let args = |dir: &str| {
            vec![
                "/usr/bin/nanika".to_string(),
                "--project-dir".into(),
                dir.into(),
                "__supervise".into(),
            ]
        };
        let roundabout = format!("{}/sub/..", project.display());
        assert!(is_supervisor_of(me, &args(&roundabout), &places));
        assert!(!is_supervisor_of(
            me,
            &args(&dir.path().display().to_string()),
            &places
        ));
        let mut not_supervising = args(&project.display().to_string());
        not_supervising.pop();
        assert!(!is_supervisor_of(me, &not_supervising, &places));
    }

    #[test]
    fn nothing_is_found_for_a_project_that_never_ran() {
        let dir = tempfile::tempdir().unwrap();
        let found = discover(&StateLayout::new(dir.path(), None));
        assert!(found.is_empty(), "{found:?}");
    }
}
