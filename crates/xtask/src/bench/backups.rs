//! `backup now --type full` and `backup restore --latest` (pgBackRest) against raw pgbackrest
//! commands with the same config, and against pg_dump and pg_restore, on a project of its own
//! with `[backups]` on: its PostgreSQL archives WAL, and its restores replace the cluster, which
//! the other groups' project must not see.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::{Project, Runtime};
use crate::pairing::{Step, measure};
use crate::poll::{self, Backoff};
use crate::process::{as_server, pg_tool, psql, run};
use crate::report::{Report, Row, Target};
use fs_err as fs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What the project's `nanika.toml` says: backups on, none taken by the supervisor, so that
/// nothing but the benchmark touches the repository.
const SETTINGS: &str = "[backups]\nenabled = true\nschedule = false\n";

/// How long a restored cluster may take to be promoted (nanika's own limit).
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// nanika's poll of `pg_is_in_recovery()` after a restore, used by the raw side too.
const PROMOTION_POLL: Duration = Duration::from_millis(50);

/// No goal was set for these rows: they are measured to be read, and say so in the table.
const MEASURED: Target = Target {
    text: "measured, no target",
    ..Target::NONE
};

/// Adds the backup rows, or says in the report why they are not there.
pub fn run_all(ctx: &Context, report: &mut Report) -> Result<()> {
    let Some(pgbackrest) = on_path("pgbackrest") else {
        let why = "`pgbackrest` is not on PATH (`scripts/install-deps --tests` installs it)";
        eprintln!("backups rows skipped: {why}");
        report
            .skipped
            .push(format!("pgBackRest backup and restore: {why}"));
        return Ok(());
    };
    let project = Project::new(&ctx.nanika, Runtime::Native)?;
    fs::write(project.path("nanika.toml"), SETTINGS)?;
    project.run(&["up"])?;
    // Declared after the project, so a server it started is stopped before `down --volumes`.
    let servers = Servers::new(&project, pgbackrest)?;
    // Made once, untimed, as a person's script would at setup (the raw side may run first),
    // and before the data, so that its WAL is archived as it is written, not behind the
    // timed runs.
    servers.pgbackrest(&["stanza-create"])?;
    let scratch = tempfile::tempdir()?;
    let scale = if ctx.options.quick { "2" } else { "50" };
    eprintln!("pgbench -i -s {scale} (backups)…");
    run(project
        .pg_env(&mut pg_tool("pgbench"))
        .args(["-i", "-q", "-s", scale]))?;
    // `check` returns once the WAL written so far is in the repository.
    servers.pgbackrest(&["check"])?;
    let dump = scratch.path().join("pg_dump.dump");
    backups(ctx, &servers, &dump, scale, report)?;
    restores(ctx, &servers, &dump, report)?;
    // Back under nanika, the kept clusters removed, for `down --volumes` to end.
    servers.to_nanika()
}

/// The three backup rows, and the sizes of what they made.
fn backups(
    ctx: &Context,
    servers: &Servers,
    dump: &Path,
    scale: &str,
    report: &mut Report,
) -> Result<()> {
    let project = servers.project;
    let nanika = |step: Step| match step {
        Step::Prepare => Ok(()),
        Step::Run => project.run(&["backup", "now", "--type", "full"]).map(drop),
    };
    let operation = format!("`backup now --type full` (pgbench scale {scale}, pgBackRest)");
    let plain = measure(ctx.slow(), nanika, |step| match step {
        Step::Prepare => Ok(()),
        Step::Run => servers.pgbackrest(&["--type=full", "backup"]),
    })?;
    let mut row = Row::paired(
        operation.clone(),
        "pgbackrest backup --type=full, same config, as the server user",
        MEASURED,
        &plain,
    );
    row.note = Some(
        "nanika also runs stanza-create, check, info ×2 and verify (next row: like for like)"
            .into(),
    );
    report.rows.push(row);

    let same = measure(ctx.slow(), nanika, |step| match step {
        Step::Prepare => Ok(()),
        Step::Run => {
            servers.pgbackrest(&["stanza-create"])?;
            servers.pgbackrest(&["check"])?;
            servers.pgbackrest(&["--type=full", "backup"])?;
            servers.pgbackrest(&["verify"])
        }
    })?;
    let mut row = Row::paired(
        operation.clone(),
        "pgbackrest stanza-create, check, backup --type=full, verify (the commands nanika runs)",
        MEASURED,
        &same,
    );
    row.note = Some("nanika also runs info ×2".into());
    report.rows.push(row);

    let remove = || -> Result<()> {
        if dump.exists() {
            fs::remove_file(dump)?;
        }
        Ok(())
    };
    let logical = measure(ctx.slow(), nanika, |step| match step {
        Step::Prepare => remove(),
        Step::Run => run(project
            .pg_env(&mut pg_tool("pg_dump"))
            .args(["-Fc", "-f"])
            .arg(dump))
        .map(drop),
    })?;
    let mut row = Row::paired(
        operation,
        "pg_dump -Fc of the app database",
        MEASURED,
        &logical,
    );
    row.note = Some(
        "a different kind of backup: nanika's copies the whole cluster and its WAL, restorable to any moment; the dump is the app database at one moment"
            .into(),
    );
    report.rows.push(row);

    let listed: serde_json::Value =
        serde_json::from_str(&project.run(&["backup", "list", "--json"])?)
            .map_err(|e| Error::new(format!("backup list --json: {e}")))?;
    let full = listed
        .as_array()
        .and_then(|all| all.iter().rev().find(|b| b["kind"] == "full"))
        .ok_or_else(|| Error::new(format!("no full backup in `backup list --json`:\n{listed}")))?;
    let bytes = |key: &str| full[key].as_u64().unwrap_or(0);
    report.also.push(format!(
        "Backup sizes (pgbench scale {scale}): a full pgBackRest backup takes {} in the repository (lz4) for a {} cluster; `pg_dump -Fc` of the app database is {}.",
        mib(bytes("repository_bytes")),
        mib(bytes("database_bytes")),
        mib(fs::metadata(dump)?.len()),
    ));
    Ok(())
}

/// The two restore rows: raw pgbackrest with the same steps, and pg_restore of the dump.
fn restores(ctx: &Context, servers: &Servers, dump: &Path, report: &mut Report) -> Result<()> {
    let project = servers.project;
    let operation = "`backup restore --latest --yes`";
    let physical = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => servers.to_nanika(),
            Step::Run => project
                .run(&["backup", "restore", "--latest", "--yes"])
                .map(drop),
        },
        |step| match step {
            Step::Prepare => servers.to_raw(),
            Step::Run => servers.raw_restore(),
        },
    )?;
    let mut row = Row::paired(
        operation,
        "pgbackrest check, postgres stopped (SIGINT, wait), pgbackrest restore --delta --type=default, postgres started, pg_is_in_recovery() polled every 50 ms until false",
        MEASURED,
        &physical,
    );
    row.note = Some(
        "nanika also copies the stopped cluster aside (cp -a --reflink=auto), lists the backups and connects to the app database"
            .into(),
    );
    report.rows.push(row);

    // pg_restore's WAL would be replayed by the next restore of the latest backup: an
    // incremental backup after it, untimed, starts each of nanika's restores where the others
    // started.
    let fresh = |database: &str| -> Result<()> {
        project.admin_psql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))?;
        project.admin_psql(&format!("CREATE DATABASE {database} OWNER nanika_user"))?;
        Ok(())
    };
    let logical = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => {
                servers.to_nanika()?;
                project.admin_psql("DROP DATABASE IF EXISTS raw_restore WITH (FORCE)")?;
                project.run(&["backup", "now", "--type", "incr"]).map(drop)
            }
            Step::Run => project
                .run(&["backup", "restore", "--latest", "--yes"])
                .map(drop),
        },
        |step| match step {
            Step::Prepare => {
                servers.to_nanika()?;
                fresh("raw_restore")
            }
            Step::Run => run(project
                .pg_env(&mut pg_tool("pg_restore"))
                .args(["-j", "2", "-d", "raw_restore"])
                .arg(dump))
            .map(drop),
        },
    )?;
    let mut row = Row::paired(
        operation,
        "pg_restore -j 2 of the pg_dump -Fc file into an empty database",
        MEASURED,
        &logical,
    );
    row.note = Some(
        "a different kind of restore: nanika's puts back the whole cluster from files and replays WAL, pg_restore loads rows and builds indexes; before each of nanika's, untimed, an incremental backup so that it does not replay pg_restore's WAL"
            .into(),
    );
    report.rows.push(row);
    servers.to_nanika()?;
    project.admin_psql("DROP DATABASE IF EXISTS raw_restore WITH (FORCE)")?;
    Ok(())
}

/// The project's PostgreSQL, run either by nanika's supervisor or, for the raw restore, as a
/// child of the benchmark with the very command line nanika runs it with.
struct Servers<'p> {
    project: &'p Project,
    pgbackrest: PathBuf,
    /// `--config=… --stanza=nanika`, as nanika passes them.
    base_args: Vec<String>,
    /// PostgreSQL's home (`.nanika/postgres`, or where it links to when we are root).
    home: PathBuf,
    admin_password: String,
    /// The postmaster's program and arguments, read from nanika's running server.
    program: PathBuf,
    args: Vec<String>,
    /// The raw side's server, while it runs (nanika's is down then).
    raw: RefCell<Option<Child>>,
}

impl<'p> Servers<'p> {
    fn new(project: &'p Project, pgbackrest: PathBuf) -> Result<Self> {
        let home = fs::canonicalize(project.path(".nanika/postgres"))?;
        let config = home.join("pgbackrest/pgbackrest.conf");
        if !config.is_file() {
            return Err(Error::new(format!(
                "`nanika up` with [backups] on wrote no {}",
                config.display()
            )));
        }
        let pid = project.pid("postgres")?;
        let program = fs::read_link(format!("/proc/{pid}/exe"))?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))?;
        let args = cmdline
            .split(|&b| b == 0)
            .skip(1)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let admin_password =
            fs::read_to_string(project.path(".nanika/run/postgres-admin.password"))?
                .trim()
                .to_string();
        Ok(Servers {
            project,
            pgbackrest,
            base_args: vec![
                format!("--config={}", config.display()),
                "--stanza=nanika".into(),
            ],
            home,
            admin_password,
            program,
            args,
            raw: RefCell::new(None),
        })
    }

    /// `pgbackrest --config=… --stanza=nanika ARGS` as the server user, with the superuser's
    /// password in the environment: how nanika runs it.
    fn pgbackrest(&self, args: &[&str]) -> Result<()> {
        run(as_server(
            Command::new(&self.pgbackrest)
                .args(&self.base_args)
                .args(args)
                .env("PGPASSWORD", &self.admin_password)
                .current_dir("/"),
        ))
        .map(drop)
    }

    /// nanika's supervisor runs PostgreSQL (the raw side's server stopped first); the clusters
    /// earlier restores kept aside are removed, so the disk holds one copy at a time.
    fn to_nanika(&self) -> Result<()> {
        self.stop_raw()?;
        self.project.run(&["up"])?;
        self.remove_kept_clusters()
    }

    /// The raw side's server runs PostgreSQL, started and ready, nanika's being down.
    fn to_raw(&self) -> Result<()> {
        if self.raw.borrow().is_some() {
            return Ok(());
        }
        self.project.run(&["down"])?;
        self.remove_kept_clusters()?;
        self.start_raw()
    }

    /// The raw side's server log, in the project directory (PostgreSQL's home is nanika's).
    fn log(&self) -> PathBuf {
        self.project.path("raw-postgres.log")
    }

    fn start_raw(&self) -> Result<()> {
        let log = fs::File::create(self.log())?;
        let child = as_server(Command::new(&self.program).args(&self.args))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?.into_parts().0)
            .stderr(log.into_parts().0)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start postgres: {e}")))?;
        *self.raw.borrow_mut() = Some(child);
        self.wait_promoted()
    }

    /// Polls `pg_is_in_recovery()` until it is false: ready, and any restore's recovery over.
    fn wait_promoted(&self) -> Result<()> {
        let promoted = || {
            psql(
                self.project.pg_port,
                "postgres",
                &self.admin_password,
                "postgres",
            )
            .args(["-Atc", "SELECT pg_is_in_recovery()"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"f"))
        };
        let gone = || {
            let mut raw = self.raw.borrow_mut();
            let status = raw.as_mut()?.try_wait().ok()??;
            let tail = fs::read_to_string(self.log()).unwrap_or_default();
            Some(format!("it exited ({status}):\n{tail}"))
        };
        poll::until(
            "postgres (raw)",
            RECOVERY_LIMIT,
            Backoff::every(PROMOTION_POLL),
            promoted,
            gone,
        )
    }

    /// Fast shutdown (SIGINT) of the raw side's server and a wait on its pid.
    fn stop_raw(&self) -> Result<()> {
        let Some(mut child) = self.raw.borrow_mut().take() else {
            return Ok(());
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)
            .map_err(|e| Error::new(format!("cannot signal postgres: {e}")))?;
        let status = child.wait()?;
        if !status.success() {
            return Err(Error::new(format!("postgres exited with {status} on stop")));
        }
        Ok(())
    }

    /// The raw restore of the latest backup, timed: archive the current WAL, stop, restore,
    /// start, wait for promotion.
    fn raw_restore(&self) -> Result<()> {
        self.pgbackrest(&["check"])?;
        self.stop_raw()?;
        self.pgbackrest(&["--delta", "--type=default", "restore"])?;
        self.start_raw()
    }

    /// Removes the clusters nanika's restores keep aside (`data.before-restore-…`), and any a
    /// failed one left (`data.failed-restore-…`).
    fn remove_kept_clusters(&self) -> Result<()> {
        for entry in fs::read_dir(&self.home)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("data.before-restore-") || name.starts_with("data.failed-restore-")
            {
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

impl Drop for Servers<'_> {
    fn drop(&mut self) {
        // Nothing is timed any more: end at once, but never leave a server behind.
        if let Some(mut child) = self.raw.get_mut().take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
            let _ = child.wait();
        }
    }
}

/// `name` in a directory of PATH, as nanika looks for it.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}
