//! A nanika project in a temporary directory, on free ports, driven through the built binary.

use crate::error::{Error, Result};
use crate::process::{APP_PASSWORD, free_port, psql, run, workspace};
use fs_err as fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Variables of the bench's own environment that would steer nanika elsewhere (another project,
/// port or runtime): the project's `.env` must be all it reads.
pub const NOT_INHERITED: &[&str] = &[
    "NANIKA_PROJECT_DIR",
    "NANIKA_RUNTIME",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "DATABASE_URL",
    "REDIS_URL",
];

/// Which runtime a project's commands use (`--runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// Host binaries under nanika's supervisor.
    Native,
    /// docker compose with the committed compose.yaml.
    Docker,
}

impl Runtime {
    fn as_arg(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Docker => "docker",
        }
    }
}

/// A nanika project (`nanika init`) in a temporary directory, its ports moved to free ones.
/// Dropping a native project runs `down --volumes`; a docker project's containers and volumes
/// are the caller's to remove (see `bench::docker`).
pub struct Project {
    dir: tempfile::TempDir,
    nanika: PathBuf,
    runtime: Runtime,
    /// PostgreSQL's host port.
    pub pg_port: u16,
    /// Redis's host port.
    pub redis_port: u16,
}

impl Project {
    /// `nanika init` in a new temporary directory, with free ports in `.env`. A docker project
    /// then gets the committed compose.yaml and server configs, so that the benchmark runs what
    /// the repository ships whatever `init` renders.
    pub fn new(nanika: &Path, runtime: Runtime) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("nanika-bench-").tempdir()?;
        let project = Project {
            dir,
            nanika: nanika.to_path_buf(),
            runtime,
            pg_port: free_port()?,
            redis_port: free_port()?,
        };
        project.run(&["init"])?;
        let env = project.path(".env");
        let (pg, redis) = (project.pg_port, project.redis_port);
        let text = fs::read_to_string(&env)?
            .replace("POSTGRES_PORT=5432", &format!("POSTGRES_PORT={pg}"))
            .replace("REDIS_PORT=6379", &format!("REDIS_PORT={redis}"))
            .replace("@localhost:5432/", &format!("@localhost:{pg}/"))
            .replace(
                "redis://localhost:6379",
                &format!("redis://localhost:{redis}"),
            );
        fs::write(&env, text)?;
        if runtime == Runtime::Docker {
            let root = workspace();
            for file in [
                "compose.yaml",
                "docker/postgres/postgresql.conf",
                "docker/redis/redis.conf",
            ] {
                let to = project.path(file);
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::copy(root.join(file), to)?;
            }
        }
        Ok(project)
    }

    /// The project directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the project.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `nanika --runtime R ARGS` in the project, with nothing inherited that points elsewhere.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.nanika);
        command
            .args(["--runtime", self.runtime.as_arg()])
            .args(args)
            .current_dir(self.dir.path());
        for var in NOT_INHERITED {
            command.env_remove(var);
        }
        command
    }

    /// Runs `nanika ARGS`, checked.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    /// SQL as the cluster's superuser: only it may end the autovacuum worker that holds a
    /// database which was just restored.
    pub fn admin_psql(&self, sql: &str) -> Result<String> {
        let password = fs::read_to_string(self.path(".nanika/run/postgres-admin.password"))?;
        let out =
            run(psql(self.pg_port, "postgres", password.trim(), "postgres").args(["-Atc", sql]))?;
        Ok(out.trim().to_string())
    }

    /// SQL as the app's user on `database`.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let out = run(self.app_psql(database).args(["-Atc", sql]))?;
        Ok(out.trim().to_string())
    }

    /// psql as the app's user on `database`, to add arguments to.
    pub fn app_psql(&self, database: &str) -> Command {
        psql(self.pg_port, "nanika_user", APP_PASSWORD, database)
    }

    /// Sets libpq's variables for the app's user and database on `command` (pg_dump, …).
    pub fn pg_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg_port.to_string())
            .env("PGUSER", "nanika_user")
            .env("PGPASSWORD", APP_PASSWORD)
            .env("PGDATABASE", "nanika_game")
    }

    /// The pid `ps --json` reports for `service`.
    pub fn pid(&self, service: &str) -> Result<u32> {
        let json = self.run(&["ps", "--json"])?;
        let start = json
            .find(&format!("\"service\": \"{service}\""))
            .ok_or_else(|| Error::new(format!("no {service} in `nanika ps --json`:\n{json}")))?;
        let block = &json[start..json[start..].find('}').map_or(json.len(), |e| start + e)];
        block
            .split("\"pid\": ")
            .nth(1)
            .and_then(|s| s.split([',', '\n']).next())
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| {
                Error::new(format!(
                    "no pid for {service} in `nanika ps --json`:\n{json}"
                ))
            })
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.runtime == Runtime::Native {
            let _ = self
                .command(&["down", "--volumes", "--yes"])
                .stdin(Stdio::null())
                .output();
        }
    }
}
