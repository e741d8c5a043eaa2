//! Running the tools the benchmarks time: checked runs, the server account, psql.

use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian puts PostgreSQL 15's programs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The app's password in the `.env` that `nanika init` writes.
pub const APP_PASSWORD: &str = "nanika_password";

/// A PostgreSQL program by name, from [`PG_BIN`].
pub fn pg_tool(name: &str) -> Command {
    Command::new(Path::new(PG_BIN).join(name))
}

/// The workspace root (two levels above this crate).
pub fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// A TCP port on loopback that nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `command` to completion and returns its stdout; a failure (including death by signal,
/// which has no exit code) is an error with the command line and everything it printed, so a
/// failing run can never count as a fast one.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot run {command:?}: {e}")))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `command` exits with success, its output discarded: for readiness polls, where a
/// failure only means "not yet".
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The unprivileged account the servers run as when we are root (initdb and postgres refuse
/// root).
pub fn server_user() -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid, user.gid))
}

/// Makes `command` run as the server account (when we are root).
pub fn as_server(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    command
}

/// Hands `path` to the server account (when we are root).
pub fn give_to_server(path: &Path) -> Result<()> {
    if let Some((uid, gid)) = server_user() {
        nix::unistd::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::new(format!("cannot chown {}: {e}", path.display())))?;
    }
    Ok(())
}

/// `psql -X -q` on loopback as `user` (password through the environment, never the command
/// line) to `database`.
pub fn psql(port: u16, user: &str, password: &str, database: &str) -> Command {
    let mut command = pg_tool("psql");
    command
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", user, "-d", database])
        .env("PGPASSWORD", password);
    command
}

/// `redis-cli -p PORT ping` answered PONG.
pub fn redis_pong(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"PONG"))
}

/// `pg_isready` on loopback: the server accepts connections (not starting, not shutting down).
pub fn pg_isready(port: u16) -> Command {
    let mut command = pg_tool("pg_isready");
    command.args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()]);
    command
}
