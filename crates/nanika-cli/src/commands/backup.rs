//! `nanika backup …`: physical backups with pgBackRest, when `nanika.toml` turns them on.

use super::db::{block_on, ops_error};
use crate::cli::{BackupCommand, BackupKindArg, RuntimeArg};
use crate::context;
use crate::error::{CliError, CliResult};
use crate::output::print_table;
use crate::progress::Spinners;
use nanika_config::ValidProject;
use nanika_ops::pg;
use nanika_ops::pgbackrest::{
    self, BackupEntry, BackupKind, PgBackRest, RecoveryTarget, RecoveryTime,
};
use nanika_runtime::Service;
use nanika_runtime::compose::RuntimeKind;
use nanika_runtime::native::backup_schedule as schedule;
use nanika_runtime::native::backups::{self, RestoreMarker};
use nanika_runtime::native::control::Native;
use nanika_runtime::native::layout::{ServerUser, StateLayout};
use nanika_runtime::native::safe_fs;
use nanika_runtime::runtime::{NativeRuntime, Runtime};
use std::path::PathBuf;
use std::time::Duration;

/// Runs `command` on the project's PostgreSQL, once it is proven to be this project's and to
/// archive WAL into this project's repository.
pub fn run(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    command: BackupCommand,
) -> CliResult {
    let valid = context::valid(project_dir)?;
    if !valid.settings.backups.enabled {
        return Err(CliError::usage(
            "backups are off: nanika.toml has no `[backups]` with `enabled = true`; nothing was done",
        )
        .hint("add `[backups]` and `enabled = true` to nanika.toml, then `nanika restart postgres` (`nanika up` when it is stopped)"));
    }
    if nanika_runtime::compose::recorded_runtime(valid.project.root()) == Some(RuntimeKind::Docker)
    {
        return Err(CliError::usage(
            "pgBackRest backups run with the native runtime only: the postgres image has no pgbackrest; nothing was done",
        )
        .hint("`nanika db backup` makes a logical dump with either runtime"));
    }
    let user = ServerUser::for_current_process().map_err(super::services::runtime_error)?;
    let layout = StateLayout::new(valid.project.root(), user);
    if let BackupCommand::Restore { abandon: true, .. } = command {
        return abandon(&valid, &layout);
    }
    refuse_if_unfinished_restore(&layout)?;
    let valid = super::services::target(project_dir, runtime, &[Service::Postgres])?;
    let env = &valid.infra.env;
    let admin_password = layout.postgres_admin_password();
    let admin = pg::admin_url(&env.database_url, admin_password.as_ref());
    let archiving = block_on(pgbackrest::archiving(&admin, &layout)).map_err(ops_error)?;
    if !archiving {
        return Err(CliError::failure(
            "the running PostgreSQL does not archive WAL to this project's pgBackRest repository: it was started before nanika.toml turned backups on; nothing was done",
        )
        .hint("`nanika restart postgres` starts it with the archive settings"));
    }
    let program = nanika_runtime::native::binaries::find_pgbackrest(&context::binary_search())
        .map_err(super::services::runtime_error)?;
    let password = admin_password.unwrap_or_else(|| env.postgres_password.clone());
    let tool = PgBackRest::new(program, &layout, password);
    match command {
        BackupCommand::Check => {
            tool.prepare().map_err(ops_error)?;
            crate::say!(
                "ok: PostgreSQL archives WAL into {}",
                nanika_runtime::native::backups::repository(&layout).display()
            );
        }
        BackupCommand::Now { kind } => {
            tool.prepare().map_err(ops_error)?;
            let made = tool.backup(kind_of(kind)).map_err(ops_error)?;
            let asked = kind_of(kind);
            let note = if made.kind == asked {
                String::new()
            } else {
                format!(
                    " (asked for {}, which needs a backup to build on: pgBackRest made a {} one)",
                    asked.as_str(),
                    made.kind.as_str()
                )
            };
            crate::say!(
                "{} backup {}: {} of cluster, {} copied, {} in the repository, {} s{note}",
                made.kind.as_str(),
                made.label,
                size(made.database_bytes),
                size(made.copied_bytes),
                size(made.repository_bytes),
                made.stopped_at - made.started_at
            );
            // The schedule counts from the last backup of each kind: it reads them again.
            if let Some(mut status) = schedule::read_status(&layout) {
                status.initialized = false;
                if let Ok(run) = layout.open_run() {
                    let _ = nanika_runtime::native::supervisor::write_json_in(
                        &run,
                        "backups.json",
                        &status,
                    );
                }
            }
            // Read back at once: a backup that cannot be restored is worse than none.
            let verification = tool.verify().map_err(ops_error)?;
            if !verification.all_valid() {
                let new_one = match verification.backups.get(&made.label).map(String::as_str) {
                    Some("valid") => "the new backup reads back intact, but ",
                    _ => "",
                };
                return Err(CliError::failure(format!(
                    "{new_one}pgbackrest verify found damage in the repository:\n  {}",
                    verification.problems.join("\n  ")
                ))
                .hint("take a new full backup (`nanika backup now --type full`); look at the disk the repository is on"));
            }
            crate::say!("verified: every backup and archived WAL segment reads back intact");
        }
        BackupCommand::Restore { abandon: true, .. } => unreachable!("handled above"),
        BackupCommand::Restore {
            to, latest, yes, ..
        } => {
            let target = match (to, latest) {
                (Some(text), false) => RecoveryTarget::Time(
                    RecoveryTime::parse(&text)
                        .map_err(|why| CliError::usage(format!("--to: {why}; nothing was done")))?,
                ),
                _ => RecoveryTarget::Latest,
            };
            restore(&valid, &layout, &tool, &target, yes)?;
        }
        BackupCommand::List { json } => {
            let mut backups = tool.list().map_err(ops_error)?;
            let verification = tool.verify().map_err(ops_error)?;
            for backup in &mut backups {
                backup.verified = verification.backups.get(&backup.label).cloned();
            }
            if json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&backups).expect("serializes")
                );
            } else if backups.is_empty() {
                if let Some(line) = schedule_line(&valid) {
                    crate::say!("{line}");
                }
                crate::say!("no backups yet: `nanika backup now --type full` takes one");
            } else {
                print_table(
                    &[
                        "label",
                        "type",
                        "started",
                        "took",
                        "cluster",
                        "copied",
                        "repository",
                        "wal",
                        "verified",
                    ],
                    &backups.iter().map(row).collect::<Vec<_>>(),
                );
                if let Some(line) = schedule_line(&valid) {
                    crate::say!("{line}");
                }
            }
        }
    }
    Ok(())
}

/// How long a restored cluster may take to replay its WAL and be promoted.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// Stops PostgreSQL, keeps its cluster aside, restores `target`, starts it and waits until it
/// is promoted and the app's database answers. When any of that fails, the restored cluster is
/// kept aside in turn and the one from before is put back and started.
fn restore(
    valid: &ValidProject,
    layout: &StateLayout,
    tool: &PgBackRest,
    target: &RecoveryTarget,
    yes: bool,
) -> CliResult {
    let backups = tool.list().map_err(ops_error)?;
    let Some(oldest) = backups.first() else {
        return Err(CliError::failure(
            "the repository has no backup to restore from; nothing was done",
        )
        .hint("`nanika backup now --type full` takes one"));
    };
    let shown = match target {
        RecoveryTarget::Latest => "the last archived commit".to_string(),
        RecoveryTarget::Time(time) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if time.epoch > now {
                return Err(CliError::usage(format!(
                    "--to {} is in the future; nothing was done",
                    time.text
                )));
            }
            // pgBackRest picks a backup that stopped before the target, counted in whole
            // seconds: one that stopped within the target's second does not count.
            if !backups
                .iter()
                .any(|b| b.stopped_at < time.epoch.floor() as i64)
            {
                return Err(CliError::failure(format!(
                    "the oldest backup ended at {}: there is nothing to restore {} from (a moment at least a second after a backup ended is needed); nothing was done",
                    crate::clock::rfc3339(oldest.stopped_at),
                    time.text
                )));
            }
            time.text.clone()
        }
    };
    super::services::confirm(
        &format!(
            "Restore PostgreSQL's cluster of {} to {shown}? Its current cluster is kept aside",
            valid.project.root().display()
        ),
        yes,
    )?;
    // From here a Ctrl-C (which also reaches pgbackrest, in the same process group), SIGTERM
    // or SIGHUP makes the restore fail at its next step, and the cluster from before is put
    // back, instead of ending nanika half-way.
    let interrupt = crate::signals::catch()?;
    let interrupted = || {
        interrupt
            .is_raised()
            .then(|| CliError::failure("interrupted by a signal"))
    };
    // Every commit so far reaches the repository first: `check` switches to a new WAL segment
    // and waits until the old one is archived.
    tool.check().map_err(ops_error)?;
    let native = Native::new(valid, context::binary_search(), context::cluster_cache())
        .map_err(super::services::runtime_error)?;
    let runtime = NativeRuntime::new(native, super::services::supervisor_command(valid)?);
    let stamp = crate::clock::file_stamp();
    let mut marker = RestoreMarker {
        aside: format!("data.before-restore-{stamp}"),
        target: shown.clone(),
        step: backups::STEP_COPYING.into(),
    };
    let aside = marker.aside.clone();
    // Recorded before PostgreSQL stops: whatever ends nanika from here on (a crash, SIGKILL),
    // `up`, `ps`, `doctor` and the schedule know a restore did not finish, and where the
    // cluster from before is.
    write_marker(layout, &marker)?;
    let spinners = Spinners::new();
    let stopped = runtime.native().stop(Service::Postgres, &spinners);
    spinners.finish();
    if let Err(error) = stopped {
        clear_marker(layout);
        return Err(super::services::runtime_error(error));
    }
    if let Err(error) = copy_cluster(layout, &aside) {
        clear_marker(layout);
        return Err(error);
    }
    marker.step = backups::STEP_RESTORING.into();
    write_marker(layout, &marker)?;
    eprintln!(
        "kept the cluster as it was in {}/{aside}; restoring",
        layout.postgres_home.display()
    );
    let env = &valid.infra.env;
    let admin = pg::admin_url(&env.database_url, layout.postgres_admin_password().as_ref());
    let restored = interrupted()
        .map_or(Ok(()), Err)
        .and_then(|()| tool.restore(target).map_err(ops_error))
        .and_then(|()| copy_unarchived_wal(layout, &aside))
        .and_then(|()| interrupted().map_or(Ok(()), Err))
        .and_then(|()| start_postgres(&runtime))
        .and_then(|()| {
            block_on(async {
                pgbackrest::wait_promoted(&admin, RECOVERY_LIMIT).await?;
                let conn = pg::connect(&env.database_url, None).await?;
                pg::close(conn).await;
                Ok(())
            })
            .map_err(ops_error)
        });
    let home = layout.postgres_home.display();
    match restored {
        Ok(()) => {
            clear_marker(layout);
            crate::signals::note_if_late(&interrupt, "the restore");
            crate::say!(
                "restored to {shown}; the cluster as it was before is in {home}/{aside} (delete it once you are sure; `nanika down --volumes` deletes it too)"
            );
            Ok(())
        }
        Err(error) => {
            let failed = format!("data.failed-restore-{stamp}");
            let outcome = match put_back(&runtime, layout, &aside, &failed) {
                Ok(()) => {
                    clear_marker(layout);
                    format!(
                        "the cluster from before is back and running; the failed restore is in {home}/{failed}"
                    )
                }
                Err(why) => format!(
                    "and putting the cluster from before back failed too ({why}): it is in {home}/{aside}; `nanika backup restore --abandon` tries again"
                ),
            };
            Err(CliError::failure(format!(
                "the restore failed: {error}\n{outcome}"
            )))
        }
    }
}

/// `backup restore --abandon`: after a restore that did not finish, the cluster from before
/// back in place and started.
fn abandon(valid: &ValidProject, layout: &StateLayout) -> CliResult {
    let Some(marker) = backups::unfinished_restore(layout) else {
        return Err(CliError::usage(
            "no restore of this project is unfinished; nothing was done",
        ));
    };
    let native = Native::new(valid, context::binary_search(), context::cluster_cache())
        .map_err(super::services::runtime_error)?;
    let runtime = NativeRuntime::new(native, super::services::supervisor_command(valid)?);
    if marker.step == backups::STEP_COPYING {
        // The cluster was never touched: only the partial copy goes.
        let _ = safe_fs::remove_tree(&layout.postgres_home.join(&marker.aside));
        start_postgres(&runtime)?;
        clear_marker(layout);
        crate::say!(
            "the cluster was untouched; the partial copy was removed and PostgreSQL started"
        );
        return Ok(());
    }
    let failed = format!("data.failed-restore-{}", crate::clock::file_stamp());
    put_back(&runtime, layout, &marker.aside, &failed).map_err(|why| {
        CliError::failure(format!("cannot put the cluster from before back: {why}"))
    })?;
    clear_marker(layout);
    crate::say!(
        "the cluster from before the restore is back and running; the unfinished restore is in {}/{failed}",
        layout.postgres_home.display()
    );
    Ok(())
}

/// Refuses to act on a cluster a restore left unfinished (`up`, `down --volumes`, `backup`).
pub fn refuse_if_unfinished_restore(layout: &StateLayout) -> CliResult {
    match backups::unfinished_restore(layout) {
        Some(marker) => Err(CliError::failure(format!(
            "{}; nothing was done",
            backups::unfinished_restore_message(layout, &marker)
        ))
        .hint("nanika backup restore --abandon")),
        None => Ok(()),
    }
}

fn write_marker(layout: &StateLayout, marker: &RestoreMarker) -> CliResult {
    let run = layout.open_run().map_err(super::services::runtime_error)?;
    nanika_runtime::native::supervisor::write_json_in(&run, "restore.json", marker)
        .map_err(super::services::runtime_error)
}

fn clear_marker(layout: &StateLayout) {
    if let Ok(run) = layout.open_run() {
        let _ = run.remove_file("restore.json");
    }
}

/// Starts PostgreSQL again (the supervisor still runs Redis).
fn start_postgres(runtime: &NativeRuntime<'_>) -> CliResult {
    let spinners = Spinners::new();
    let started = runtime.up(&[Service::Postgres], &spinners);
    spinners.finish();
    started.map(drop).map_err(super::services::runtime_error)
}

/// Runs `cp ARGS` in PostgreSQL's home as the server user.
fn cp_as_server(
    layout: &StateLayout,
    args: &[&std::ffi::OsStr],
) -> CliResult<std::process::Output> {
    let mut cp = std::process::Command::new("cp");
    cp.args(args).current_dir(&layout.postgres_home);
    if let Some(user) = &layout.server_user {
        std::os::unix::process::CommandExt::uid(&mut cp, user.uid);
        std::os::unix::process::CommandExt::gid(&mut cp, user.gid);
    }
    cp.output()
        .map_err(|e| CliError::failure("cannot run cp").caused_by(e))
}

/// Copies the stopped cluster to `aside` in PostgreSQL's home (a reflink where the filesystem
/// has them). A copy that fails is removed: this call made it.
fn copy_cluster(layout: &StateLayout, aside: &str) -> CliResult {
    let words = [
        "-a",
        "-T",
        "--reflink=auto",
        "--sparse=always",
        "data",
        aside,
    ];
    let args: Vec<&std::ffi::OsStr> = words.iter().map(std::ffi::OsStr::new).collect();
    let output = cp_as_server(layout, &args)?;
    if !output.status.success() {
        let _ = nanika_runtime::native::safe_fs::remove_tree(&layout.postgres_home.join(aside));
        return Err(CliError::failure(format!(
            "cannot keep the cluster aside before restoring ({}); nothing was restored and the partial copy was removed: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
        .hint("`nanika up` starts PostgreSQL again as it was"));
    }
    Ok(())
}

/// Puts the WAL the cluster from before had written but not archived (what was committed
/// between `pgbackrest check` and the stop) into the restored cluster's `pg_wal`, where
/// recovery reads it after the archive: PostgreSQL's documented way to lose no commit.
fn copy_unarchived_wal(layout: &StateLayout, aside: &str) -> CliResult {
    let old = layout.postgres_home.join(aside).join("pg_wal");
    let files: Vec<std::ffi::OsString> = std::fs::read_dir(&old)
        .map_err(|e| CliError::failure(format!("cannot read {}", old.display())).caused_by(e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            std::path::Path::new(aside)
                .join("pg_wal")
                .join(e.file_name())
                .into_os_string()
        })
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    let mut args: Vec<&std::ffi::OsStr> = ["-n", "--preserve=all", "-t", "data/pg_wal"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend(files.iter().map(|f| f.as_os_str()));
    let output = cp_as_server(layout, &args)?;
    if !output.status.success() {
        return Err(CliError::failure(format!(
            "cannot copy the unarchived WAL into the restored cluster: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// After a failed restore: PostgreSQL stopped, the restored cluster renamed to `failed`, the
/// one kept `aside` renamed back, PostgreSQL started.
fn put_back(
    runtime: &NativeRuntime<'_>,
    layout: &StateLayout,
    aside: &str,
    failed: &str,
) -> Result<(), String> {
    let spinners = Spinners::new();
    let stopped = runtime.native().stop(Service::Postgres, &spinners);
    spinners.finish();
    match stopped {
        // Not running is fine: the restored cluster may never have started.
        Ok(()) | Err(nanika_runtime::RuntimeError::NotRunning { .. }) => {}
        Err(error) => return Err(format!("PostgreSQL did not stop: {error}")),
    }
    let home = layout.open_postgres_home().map_err(|e| e.to_string())?;
    if home.kind("data").map_err(|e| e.to_string())? != safe_fs::Kind::Missing {
        home.rename_new("data", failed).map_err(|e| e.to_string())?;
    }
    if let Err(error) = home.rename_new(aside, "data") {
        // Never leave no cluster at all: `up` would make an empty one.
        let _ = home.rename_new(failed, "data");
        return Err(error.to_string());
    }
    start_postgres(runtime).map_err(|e| e.to_string())
}

/// One line on the supervisor's backup schedule, when `nanika.toml` has backups on: its
/// intervals, the last backup of each kind, what runs now and the last failure.
pub fn schedule_line(loaded: &nanika_config::LoadedProject) -> Option<String> {
    let settings = &loaded.settings.backups;
    if !settings.enabled {
        return None;
    }
    if !settings.schedule {
        return Some(
            "backups: not scheduled (nanika.toml: schedule = false); `nanika backup now` takes one"
                .into(),
        );
    }
    let user = ServerUser::for_current_process().ok().flatten();
    let layout = StateLayout::new(loaded.project.root(), user);
    let status = schedule::read_status(&layout).unwrap_or_default();
    let at =
        |t: Option<u64>| t.map_or_else(|| "-".to_string(), |t| crate::clock::rfc3339(t as i64));
    let mut line = format!(
        "backups: full every {}, diff every {}, incr every {}; last full {}, diff {}, incr {}",
        settings.full_every,
        settings.diff_every,
        settings.incr_every,
        at(status.last_full),
        at(status.last_diff),
        at(status.last_incr)
    );
    if let Some(kind) = &status.running {
        line += &format!("; taking a {kind} backup now");
    }
    if let Some(error) = &status.last_error {
        line += &format!(
            "\nbackups: the scheduled attempt at {} FAILED: {error}",
            at(status.last_attempt)
        );
    }
    Some(line)
}

fn kind_of(arg: BackupKindArg) -> BackupKind {
    match arg {
        BackupKindArg::Full => BackupKind::Full,
        BackupKindArg::Diff => BackupKind::Diff,
        BackupKindArg::Incr => BackupKind::Incr,
    }
}

fn row(backup: &BackupEntry) -> Vec<String> {
    vec![
        backup.label.clone(),
        backup.kind.as_str().into(),
        crate::clock::rfc3339(backup.started_at),
        format!("{} s", backup.stopped_at - backup.started_at),
        size(backup.database_bytes),
        size(backup.copied_bytes),
        size(backup.repository_bytes),
        match (&backup.wal_start, &backup.wal_stop) {
            (Some(start), Some(stop)) if start == stop => start.clone(),
            (Some(start), Some(stop)) => format!("{start}..{stop}"),
            _ => "-".into(),
        },
        backup.verified.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
