//! Redis under the native runtime: the committed config plus only the overrides native needs.

use super::binaries::RedisBinaries;
use super::layout::StateLayout;
use super::procfs;
use std::path::{Path, PathBuf};

/// The server's program and arguments: the committed `redis.conf`, then loopback, port, the
/// state directory (for the AOF), logging to stdout (the supervisor keeps the log) and a pid file.
pub fn server_args(
    binaries: &RedisBinaries,
    layout: &StateLayout,
    conf: &Path,
    port: u16,
) -> (PathBuf, Vec<String>) {
    let args = vec![
        conf.display().to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--dir".into(),
        layout.redis_dir.display().to_string(),
        "--daemonize".into(),
        "no".into(),
        "--logfile".into(),
        String::new(),
        "--pidfile".into(),
        pid_file(layout).display().to_string(),
    ];
    (binaries.server.clone(), args)
}

/// Where Redis writes its pid.
pub fn pid_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("redis.pid")
}

/// The pid of this project's Redis, when one runs: the pid file names a live `redis-server`
/// whose working directory is this project's Redis directory.
pub fn running(layout: &StateLayout) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(layout))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let is_redis = procfs::comm(pid).is_some_and(|c| c.starts_with("redis-server"));
    let here = procfs::cwd(pid)
        .is_some_and(|cwd| std::fs::canonicalize(&layout.redis_dir).is_ok_and(|d| d == cwd));
    (procfs::is_alive(pid) && is_redis && here).then_some(pid)
}
