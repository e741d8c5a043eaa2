//! The same servers without nanika: initdb, postgres, redis-server, psql and redis-cli with the
//! same committed config files, run two ways.
//!
//! - **Scripted** (the baselines): what a person who scripts it well would write. Both servers
//!   are started at once as children of the script, readiness is polled on nanika's own schedule
//!   ([`Backoff::readiness`]) with `pg_isready` and `redis-cli ping`, and stopping is one signal
//!   each (SIGINT: PostgreSQL's fast shutdown; SIGTERM: Redis's) and a wait on each pid.
//! - **Typed** (context rows): what people usually type, one after the other: `pg_ctl -w`
//!   (which polls every 100 ms), `redis-server --daemonize yes`, `redis-cli shutdown`.

use crate::error::{Error, Result};
use crate::poll::{self, Backoff};
use crate::process::{
    as_server, give_to_server, pg_isready, pg_tool, psql, redis_pong, run, succeeds, workspace,
};
use fs_err as fs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The superuser's password of the raw cluster.
const ADMIN_PASSWORD: &str = "admin-password";

/// How long a server may take to answer before the benchmark gives up.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A PostgreSQL cluster and a Redis in a temporary directory, on free ports.
pub struct RawServers {
    dir: tempfile::TempDir,
    /// PostgreSQL's port.
    pub pg_port: u16,
    /// Redis's port.
    pub redis_port: u16,
    redis_conf: PathBuf,
    /// The scripted way's servers, children of this process.
    postgres: Option<Child>,
    redis: Option<Child>,
}

impl RawServers {
    /// An empty directory with the committed postgresql.conf, the superuser's password file and
    /// a socket directory, all the server account's.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("nanika-raw-").tempdir()?;
        // The server account must reach the files inside.
        fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let root = workspace();
        let conf = dir.path().join("postgresql.conf");
        fs::copy(root.join("docker/postgres/postgresql.conf"), &conf)?;
        give_to_server(&conf)?;
        fs::write(dir.path().join("pw"), ADMIN_PASSWORD)?;
        give_to_server(&dir.path().join("pw"))?;
        fs::create_dir(dir.path().join("sock"))?;
        give_to_server(&dir.path().join("sock"))?;
        Ok(RawServers {
            dir,
            pg_port: crate::process::free_port()?,
            redis_port: crate::process::free_port()?,
            redis_conf: root.join("docker/redis/redis.conf"),
            postgres: None,
            redis: None,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `initdb` with a scram superuser, as the server account.
    pub fn initdb(&self) -> Result<()> {
        // The data directory's parent is root's: make the directory for the server account.
        let data = self.path("data");
        fs::create_dir_all(&data)?;
        fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        give_to_server(&data)?;
        run(as_server(pg_tool("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--pwfile",
            &self.path("pw").display().to_string(),
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
        ])))?;
        Ok(())
    }

    /// The app's role and database, as nanika's `up` makes them.
    pub fn create_app(&self) -> Result<()> {
        run(
            psql(self.pg_port, "postgres", ADMIN_PASSWORD, "postgres").args([
                "-c",
                "CREATE ROLE nanika_user LOGIN CREATEDB PASSWORD 'nanika_password'",
                "-c",
                "CREATE DATABASE nanika_game OWNER nanika_user",
            ]),
        )?;
        Ok(())
    }

    /// Server options for the command line: the committed config, our port, loopback only.
    fn pg_options(&self) -> Vec<String> {
        vec![
            format!("config_file={}", self.path("postgresql.conf").display()),
            format!("port={}", self.pg_port),
            "listen_addresses=127.0.0.1".into(),
            format!("unix_socket_directories={}", self.path("sock").display()),
        ]
    }

    fn spawn_postgres(&self) -> Result<Child> {
        let log = fs::File::create(self.path("postgres.log"))?;
        let mut command = pg_tool("postgres");
        command.arg("-D").arg(self.path("data"));
        for option in self.pg_options() {
            command.args(["-c", &option]);
        }
        as_server(&mut command)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?.into_parts().0)
            .stderr(log.into_parts().0)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start postgres: {e}")))
    }

    fn redis_command(&self) -> Command {
        let mut command = Command::new("redis-server");
        command.arg(&self.redis_conf).args([
            "--port",
            &self.redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.path("redis").display().to_string(),
        ]);
        command
    }

    fn spawn_redis(&self) -> Result<Child> {
        fs::create_dir_all(self.path("redis"))?;
        let log = fs::File::create(self.path("redis.log"))?;
        self.redis_command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?.into_parts().0)
            .stderr(log.into_parts().0)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start redis-server: {e}")))
    }

    /// Waits on nanika's schedule until `ready`, or until `child` has exited.
    fn wait_ready(&self, what: &str, child: &mut Child, ready: impl FnMut() -> bool) -> Result<()> {
        let log = self.path(&format!("{what}.log"));
        poll::until(what, READY_LIMIT, Backoff::readiness(), ready, || {
            let status = child.try_wait().ok()??;
            let tail = fs::read_to_string(&log).unwrap_or_default();
            Some(format!("it exited ({status}):\n{tail}"))
        })
    }

    /// PostgreSQL's half of the scripted start: optionally initdb first and the app's role and
    /// database after. Returns the server (if it was started) with how the chain went, so that
    /// a server is never left unowned by an error.
    fn postgres_chain(&self, cold: bool) -> (Option<Child>, Result<()>) {
        if cold && let Err(e) = self.initdb() {
            return (None, Err(e));
        }
        let mut child = match self.spawn_postgres() {
            Ok(child) => child,
            Err(e) => return (None, Err(e)),
        };
        let port = self.pg_port;
        let mut result =
            self.wait_ready("postgres", &mut child, || succeeds(&mut pg_isready(port)));
        if cold && result.is_ok() {
            result = self.create_app();
        }
        (Some(child), result)
    }

    fn redis_chain(&self) -> (Option<Child>, Result<()>) {
        let mut child = match self.spawn_redis() {
            Ok(child) => child,
            Err(e) => return (None, Err(e)),
        };
        let port = self.redis_port;
        let result = self.wait_ready("redis", &mut child, || redis_pong(port));
        (Some(child), result)
    }

    fn start_both(&mut self, cold: bool) -> Result<()> {
        let ((postgres, pg_result), (redis, redis_result)) = std::thread::scope(|scope| {
            let pg = scope.spawn(|| self.postgres_chain(cold));
            let redis = self.redis_chain();
            let pg = pg
                .join()
                .unwrap_or_else(|_| (None, Err(Error::new("the postgres thread panicked"))));
            (pg, redis)
        });
        self.postgres = postgres;
        self.redis = redis;
        pg_result.and(redis_result)
    }

    /// Scripted cold start: initdb, postgres and the app's role and database, while Redis starts
    /// alongside; returns once both answer.
    pub fn cold_start(&mut self) -> Result<()> {
        self.start_both(true)
    }

    /// Scripted warm start of an existing cluster: both servers at once, until both answer.
    pub fn start(&mut self) -> Result<()> {
        self.start_both(false)
    }

    /// Whether the scripted way's servers run.
    pub fn started(&self) -> bool {
        self.postgres.is_some() || self.redis.is_some()
    }

    /// Scripted stop: SIGINT to postgres and SIGTERM to Redis at once, then a wait on each pid;
    /// both must exit cleanly.
    pub fn stop(&mut self) -> Result<()> {
        // Both signals go out before either wait, so the two shut down side by side. A server
        // that cannot be signalled stays in `self`, for Drop to end.
        if let Some(child) = &self.postgres {
            send(child, Signal::SIGINT, "postgres")?;
        }
        if let Some(child) = &self.redis {
            send(child, Signal::SIGTERM, "redis-server")?;
        }
        for (name, child) in [
            ("postgres", self.postgres.take()),
            ("redis-server", self.redis.take()),
        ] {
            if let Some(mut child) = child {
                let status = child.wait()?;
                if !status.success() {
                    return Err(Error::new(format!("{name} exited with {status} on stop")));
                }
            }
        }
        Ok(())
    }

    /// Typed: `pg_ctl -w start`, which polls every 100 ms.
    pub fn pg_ctl_start(&self) -> Result<()> {
        let options = self
            .pg_options()
            .iter()
            .map(|o| format!("-c {o}"))
            .collect::<Vec<_>>()
            .join(" ");
        run(as_server(
            pg_tool("pg_ctl")
                .arg("-D")
                .arg(self.path("data"))
                .arg("-l")
                .arg(self.path("sock/pg.log"))
                .args(["-w", "-o", &options, "start"]),
        ))?;
        Ok(())
    }

    /// Typed: `pg_ctl -w -m fast stop`.
    pub fn pg_ctl_stop(&self) -> Result<()> {
        run(as_server(
            pg_tool("pg_ctl")
                .arg("-D")
                .arg(self.path("data"))
                .args(["-w", "-m", "fast", "stop"]),
        ))?;
        Ok(())
    }

    /// Typed: `redis-server --daemonize yes`, then `redis-cli ping` until PONG.
    pub fn redis_daemon_start(&self) -> Result<()> {
        fs::create_dir_all(self.path("redis"))?;
        run(self.redis_command().args([
            "--daemonize",
            "yes",
            "--pidfile",
            &self.path("redis.pid").display().to_string(),
            "--logfile",
            &self.path("redis.log").display().to_string(),
        ]))?;
        // until redis-cli ping; do sleep …; done — on nanika's schedule: these rows differ from
        // the scripted ones in pg_ctl and in starting one server after the other, not here.
        poll::until(
            "redis",
            READY_LIMIT,
            Backoff::readiness(),
            || redis_pong(self.redis_port),
            || None,
        )
    }

    /// The daemonized Redis's pid, while it runs.
    fn redis_daemon(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.path("redis.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // A zombie has exited; it only waits for its parent (init, for a daemon).
        (!stat.contains(") Z")).then_some(pid)
    }

    /// Typed: `redis-cli shutdown`, then a wait until the daemon's pid is gone.
    pub fn redis_cli_shutdown(&self) -> Result<()> {
        // redis-cli reports the dropped connection of a server that shut down as an error.
        let _ = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string(), "shutdown"])
            .stdin(Stdio::null())
            .output();
        poll::until(
            "redis shutdown",
            READY_LIMIT,
            Backoff::readiness(),
            || self.redis_daemon().is_none(),
            || None,
        )
    }

    /// Stops whatever runs, whichever way it was started.
    pub fn ensure_stopped(&mut self) -> Result<()> {
        if self.started() {
            self.stop()?;
        }
        if self.path("data/postmaster.pid").exists() {
            self.pg_ctl_stop()?;
        }
        if self.redis_daemon().is_some() {
            self.redis_cli_shutdown()?;
        }
        Ok(())
    }

    /// Deletes the cluster and Redis's data (for the next cold start).
    pub fn wipe(&self) -> Result<()> {
        for dir in ["data", "redis"] {
            if self.path(dir).exists() {
                fs::remove_dir_all(self.path(dir))?;
            }
        }
        Ok(())
    }
}

/// Sends `signal` to `child`.
fn send(child: &Child, signal: Signal, name: &str) -> Result<()> {
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, signal).map_err(|e| Error::new(format!("cannot signal {name} ({pid}): {e}")))
}

impl Drop for RawServers {
    fn drop(&mut self) {
        // Nothing is timed any more: end at once, but never leave a server behind.
        for (child, signal) in [
            (self.postgres.take(), Signal::SIGQUIT),
            (self.redis.take(), Signal::SIGKILL),
        ] {
            if let Some(mut child) = child {
                let _ = kill(Pid::from_raw(child.id() as i32), signal);
                let _ = child.wait();
            }
        }
        if self.path("data/postmaster.pid").exists() {
            let _ = as_server(pg_tool("pg_ctl").arg("-D").arg(self.path("data")).args([
                "-m",
                "immediate",
                "stop",
            ]))
            .output();
        }
        if self.redis_daemon().is_some() {
            let _ = Command::new("redis-cli")
                .args(["-p", &self.redis_port.to_string(), "shutdown", "nosave"])
                .output();
        }
    }
}
