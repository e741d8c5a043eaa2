//! Redis under the native runtime: its own copy of the committed config (plus the password, which
//! only `.env` holds) and only the overrides native needs.

use super::binaries::RedisBinaries;
use super::layout::StateLayout;
use super::procfs;
use crate::error::{Result, RuntimeError};
use nanika_config::Secret;
use std::path::{Path, PathBuf};

/// The server's program and arguments: its copy of `redis.conf`, then loopback, port, its
/// directory (for the AOF), logging to stdout (the supervisor keeps the log), a pid file, its
/// command line left as given (Redis rewrites it by default, and the command line nanika gave it
/// is part of what proves it is nanika's before a signal), and an owner-only Unix socket in its
/// directory, which says when the TCP port is bound (see [`listening`]). No secret: every user
/// can read it.
pub fn server_args(
    binaries: &RedisBinaries,
    layout: &StateLayout,
    port: u16,
) -> (PathBuf, Vec<String>) {
    let args = vec![
        layout.redis_conf().display().to_string(),
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
        "--set-proc-title".into(),
        "no".into(),
        // Relative to `--dir`, where Redis runs: short enough for a socket path wherever the
        // directory is.
        "--unixsocket".into(),
        SOCKET.into(),
        "--unixsocketperm".into(),
        "700".into(),
    ];
    (binaries.server.clone(), args)
}

/// Writes the config Redis runs from: the committed file, then `requirepass` when the password
/// comes from `.env` (the committed file holds none). Owner-only and the Redis user's, in Redis's
/// own directory: `CONFIG REWRITE` rewrites this copy, never the committed file, and no other
/// local user can read the password in it. Written anew at every start, so the committed file
/// stays the truth.
pub fn install_config(
    layout: &StateLayout,
    committed: &Path,
    password: Option<&Secret>,
    committed_sets_password: bool,
    extra: &str,
) -> Result<()> {
    let mut text = fs_err::read_to_string(committed).map_err(RuntimeError::io(format!(
        "cannot read {}",
        committed.display()
    )))?;
    text += extra;
    if let Some(password) = password.filter(|_| !committed_sets_password) {
        text += &format!(
            "\n# Added by nanika from .env (REDIS_PASSWORD / REDIS_URL); never committed.\nrequirepass {}\n",
            nanika_config::redisconf::quote(password.expose())
        );
    }
    let dir = layout.open_redis_dir()?;
    let temp = format!("redis.conf.{}", super::safe_fs::random_hex(6)?);
    let file = dir.create_file(&temp, 0o600)?;
    let written = std::io::Write::write_all(&mut &file, text.as_bytes())
        .map_err(RuntimeError::io(format!(
            "cannot write {}",
            dir.join(&temp).display()
        )))
        .and_then(|()| layout.give_file_to_redis(&file, &dir.join(&temp)))
        .and_then(|()| dir.rename_over(&temp, "redis.conf"));
    if written.is_err() {
        let _ = dir.remove_file(&temp);
    }
    written
}

/// Where Redis writes its pid: its own directory, which the Redis user may write.
pub fn pid_file(layout: &StateLayout) -> PathBuf {
    layout.redis_dir.join("redis.pid")
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

/// The name of Redis's Unix socket in its directory.
pub const SOCKET: &str = "redis.sock";

/// Whether this project's Redis has bound its TCP port, learnt without connecting to it: a
/// connect to a port nobody has bound yet, inside the kernel's ephemeral range, can connect to
/// itself and then hold the port (in TIME-WAIT) against the server's own bind. Redis opens its
/// Unix socket right after its TCP port, so a socket that accepts a connection proves the port
/// is bound (a socket file left by a killed server refuses). A Redis an earlier nanika started
/// without the socket is judged by its pid file, which it writes once its port is bound.
pub fn listening(layout: &StateLayout) -> bool {
    let Ok(dir) = layout.open_redis_dir() else {
        return false;
    };
    if dir.connect_unix(SOCKET).is_ok() {
        return true;
    }
    running(layout).is_some_and(|pid| {
        procfs::cmdline(pid).is_some_and(|args| !args.iter().any(|a| a == "--unixsocket"))
    })
}
