//! `nanika backup …`: physical backups with pgBackRest, when `nanika.toml` turns them on.

use super::db::{block_on, ops_error};
use crate::cli::{BackupCommand, BackupKindArg, RuntimeArg};
use crate::context;
use crate::error::{CliError, CliResult};
use crate::output::print_table;
use nanika_ops::pg;
use nanika_ops::pgbackrest::{self, BackupEntry, BackupKind, PgBackRest};
use nanika_runtime::Service;
use nanika_runtime::compose::RuntimeKind;
use nanika_runtime::native::layout::{ServerUser, StateLayout};
use std::path::PathBuf;

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
    let valid = super::services::target(project_dir, runtime, &[Service::Postgres])?;
    let user = ServerUser::for_current_process().map_err(super::services::runtime_error)?;
    let layout = StateLayout::new(valid.project.root(), user);
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
        }
        BackupCommand::List { json } => {
            let backups = tool.list().map_err(ops_error)?;
            if json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&backups).expect("serializes")
                );
            } else if backups.is_empty() {
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
                    ],
                    &backups.iter().map(row).collect::<Vec<_>>(),
                );
            }
        }
    }
    Ok(())
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
    ]
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
