//! `nanika db …`: migrations, seed, reset, psql, maintain, backup and restore.

use super::services::confirm;
use crate::cli::{DbCommand, FormatArg, MigrateAction, RuntimeArg};
use crate::context;
use crate::error::{CliError, CliResult};
use crate::output::print_table;
use crate::signals;
use indicatif::{ProgressBar, ProgressStyle};
use nanika_config::LoadedProject;
use nanika_ops::dump::{self, Format, RestoreOptions};
use nanika_ops::migrate::{self, State};
use nanika_ops::{OpsError, maintain, pg, reset, seed};
use nanika_runtime::Service;
use signal_hook::consts::SIGINT;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Turns an operation's error into the CLI's, keeping its hint; an interrupted operation exits
/// with 128 + its signal.
pub fn ops_error(error: OpsError) -> CliError {
    let hint = error.hint();
    if let OpsError::Interrupted { signal, .. } = &error {
        let cli = CliError::interrupted(error.to_string(), signal.unwrap_or(SIGINT));
        return match hint {
            Some(hint) => cli.hint(hint),
            None => cli,
        };
    }
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message += &format!(": {text}");
        }
        cause = inner.source();
    }
    let cli = CliError::failure(message);
    match hint {
        Some(hint) => cli.hint(hint),
        None => cli,
    }
}

/// Runs async work on a small runtime of its own.
pub fn block_on<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(work)
}

/// The tools of the installation the project's server runs from, else the ones found on the host.
fn postgres_binaries(
    loaded: &LoadedProject,
) -> CliResult<nanika_runtime::native::binaries::PostgresBinaries> {
    let user = nanika_runtime::native::layout::ServerUser::for_current_process()
        .ok()
        .flatten();
    let layout = nanika_runtime::native::layout::StateLayout::new(loaded.project.root(), user);
    match nanika_runtime::native::supervisor::running_postgres(&layout) {
        Some(binaries) => Ok(binaries),
        None => nanika_runtime::native::binaries::find_postgres(&context::binary_search())
            .map_err(super::services::runtime_error),
    }
}

fn migrations_dir(loaded: &LoadedProject) -> PathBuf {
    loaded.project.path("migrations")
}

/// `nanika db …`.
pub fn run(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    command: DbCommand,
) -> CliResult<ExitCode> {
    if let DbCommand::Migrate {
        action: Some(MigrateAction::New { name }),
        ..
    } = &command
    {
        // Writes a file in the project and reaches no server.
        let project = context::project(project_dir)?;
        let path = migrate::new_migration(
            &project.path("migrations"),
            name,
            &crate::clock::version_stamp(),
        )
        .map_err(ops_error)?;
        crate::say!("created {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let DbCommand::Restore { path, .. } = &command {
        // The dump is the command's input, checked before any server is reached: one that
        // cannot be read (missing, no permission) is an input error, exit 2, as the README says,
        // whether or not the services run. One that reads but is no dump is refused (exit 1).
        dump::detect(path).map_err(|error| {
            let unreadable = matches!(error, OpsError::Io { .. });
            let mut cli = ops_error(error);
            if unreadable {
                cli.exit = crate::error::Exit::Usage;
            }
            cli
        })?;
    }
    let loaded = super::services::target(project_dir, runtime, &[Service::Postgres])?;
    let url = &loaded.infra.env.database_url;
    match command {
        DbCommand::Migrate {
            action: Some(MigrateAction::New { .. }),
            ..
        } => unreachable!("handled above"),
        DbCommand::Migrate {
            action: Some(MigrateAction::Status { json }),
            ..
        } => {
            let statuses = block_on(async {
                let mut conn = pg::connect(url, None).await?;
                let statuses = migrate::status(&mut conn, &migrations_dir(&loaded)).await;
                pg::close(conn).await;
                statuses
            })
            .map_err(ops_error)?;
            if json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&statuses).expect("serializes")
                );
            } else {
                let rows: Vec<Vec<String>> = statuses
                    .iter()
                    .map(|s| {
                        vec![
                            s.version.to_string(),
                            s.description.clone(),
                            serde_json::to_value(&s.state)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(&["VERSION", "DESCRIPTION", "STATE"], &rows);
            }
            if statuses
                .iter()
                .any(|s| matches!(s.state, State::Modified | State::Missing | State::Dirty))
            {
                return Ok(ExitCode::from(1));
            }
        }
        DbCommand::Migrate {
            action: None,
            dry_run,
        } => {
            let interrupt = signals::catch()?;
            let applied = block_on(migrate::run_interruptible(
                url,
                &migrations_dir(&loaded),
                dry_run,
                &interrupt,
            ))
            .map_err(ops_error)?;
            signals::note_if_late(&interrupt, "the migration");
            let verb = if dry_run { "would apply" } else { "applied" };
            if applied.is_empty() {
                crate::say!("nothing to apply: the database is up to date");
            }
            for migration in applied {
                crate::say!("{verb} {} {}", migration.version, migration.description);
            }
        }
        DbCommand::Seed { users, messages } => {
            let bar = (users + messages > 0 && std::io::stderr().is_terminal()).then(|| {
                let bar = ProgressBar::new(users + messages);
                bar.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec}")
                        .expect("valid template"),
                );
                bar
            });
            let interrupt = signals::catch()?;
            let report = block_on(seed::run(
                url,
                users,
                messages,
                &mut |done, _| {
                    if let Some(bar) = &bar {
                        bar.set_position(done);
                    }
                },
                &interrupt,
            ));
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let report = report.map_err(ops_error)?;
            signals::note_if_late(&interrupt, "the seed");
            crate::say!(
                "added {} users, {} rooms, {} messages",
                report.users,
                report.rooms,
                report.messages
            );
        }
        DbCommand::Reset { yes, empty } => {
            let to = if empty {
                reset::ResetTo::Empty
            } else {
                reset::ResetTo::Seeded
            };
            let then = match to {
                reset::ResetTo::Empty => "and leave it empty",
                reset::ResetTo::Seeded => "then migrate and seed it again",
            };
            confirm(
                &format!("drop database {} with all its data, {then}?", url.database),
                yes,
            )?;
            let interrupt = signals::catch()?;
            let admin_url = pg::admin_url(url, admin_password(&loaded).as_ref());
            block_on(reset::reset(
                url,
                &admin_url,
                &migrations_dir(&loaded),
                to,
                &interrupt,
            ))
            .map_err(ops_error)?;
            signals::note_if_late(&interrupt, "the reset");
            match to {
                reset::ResetTo::Empty => crate::say!(
                    "database {} recreated, empty: `nanika db restore PATH` restores a dump into it",
                    url.database
                ),
                reset::ResetTo::Seeded => {
                    crate::say!("database {} recreated, migrated and seeded", url.database)
                }
            }
        }
        DbCommand::Psql { args } => {
            let bins = postgres_binaries(&loaded)?;
            let mut command = std::process::Command::new(bins.tool("psql"));
            command.args(&args);
            for key in nanika_config::urls::DatabaseUrl::REDIRECTING_ENV {
                command.env_remove(key);
            }
            for (key, value) in url.pg_env() {
                command.env(key, value);
            }
            return exit_like(command.status(), "psql");
        }
        DbCommand::Maintain { json } => {
            let advice = block_on(async {
                let mut conn = pg::connect(url, None).await?;
                let advice = maintain::maintain(&mut conn).await;
                pg::close(conn).await;
                advice
            })
            .map_err(ops_error)?;
            if json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&advice).expect("serializes")
                );
            } else {
                crate::say!("VACUUM ANALYZE done");
                for item in &advice {
                    crate::say!("{}: {}\n  fix: {}", item.table, item.seen, item.fix);
                }
                if advice.is_empty() {
                    crate::say!("no advice: no table is scanned sequentially too often or bloated");
                }
            }
        }
        DbCommand::Backup {
            output,
            format,
            jobs,
        } => {
            let format = match format {
                FormatArg::Custom => Format::Custom,
                FormatArg::Sql => Format::Sql,
                FormatArg::Directory => Format::Directory,
            };
            let path = output.unwrap_or_else(|| {
                dump::default_path(
                    loaded.project.root(),
                    &url.database,
                    format,
                    &crate::clock::file_stamp(),
                )
            });
            let bins = postgres_binaries(&loaded)?;
            let interrupt = signals::catch()?;
            let spinner = spinner(&format!(
                "backing up {} to {}",
                url.database,
                path.display()
            ));
            let report = dump::backup(&bins, url, &path, format, jobs, &interrupt);
            spinner.finish_and_clear();
            let report = report.map_err(ops_error)?;
            signals::note_if_late(&interrupt, "the backup");
            crate::say!(
                "wrote {} ({} bytes, {:.2} s)",
                report.path.display(),
                report.bytes,
                report.seconds
            );
        }
        DbCommand::Restore {
            path,
            clean,
            verify,
            jobs,
            yes,
        } => {
            return restore(
                &loaded,
                &path,
                RestoreOptions {
                    admin_password: admin_password(&loaded),
                    clean,
                    verify,
                    jobs,
                },
                yes,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spinner(message: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(80));
    bar
}

/// Exits with the child's code, as the tool it wraps would have.
pub fn exit_like(
    status: std::io::Result<std::process::ExitStatus>,
    what: &str,
) -> CliResult<ExitCode> {
    use std::os::unix::process::ExitStatusExt;
    let status =
        status.map_err(|e| CliError::failure(format!("cannot run {what}")).caused_by(e))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// The password of the native cluster's own superuser, when it has one.
pub(crate) fn admin_password(loaded: &LoadedProject) -> Option<nanika_config::Secret> {
    let user = nanika_runtime::native::layout::ServerUser::for_current_process()
        .ok()
        .flatten();
    nanika_runtime::native::layout::StateLayout::new(loaded.project.root(), user)
        .postgres_admin_password()
}

fn restore(
    loaded: &LoadedProject,
    path: &std::path::Path,
    mut options: RestoreOptions,
    yes: bool,
) -> CliResult<ExitCode> {
    let url = &loaded.infra.env.database_url;
    let bins = postgres_binaries(loaded)?;
    // The file was checked by `run` before anything was asked or connected to.
    let mut safety_backup = false;
    if options.clean {
        let tables = block_on(dump::table_count(url)).map_err(ops_error)?;
        if tables > 0 {
            confirm(
                &format!(
                    "replace database {} ({tables} tables) with {}? A safety backup is taken first",
                    url.database,
                    path.display()
                ),
                yes,
            )?;
            safety_backup = true;
        } else {
            options.clean = false;
        }
    }
    let interrupt = signals::catch()?;
    if safety_backup {
        let safety = dump::default_path(
            loaded.project.root(),
            &format!("{}-before-restore", url.database),
            Format::Custom,
            &crate::clock::file_stamp(),
        );
        let report = dump::backup(&bins, url, &safety, Format::Custom, 1, &interrupt)
            .map_err(|error| ops_error(nothing_restored(error, &url.database)))?;
        crate::say!("safety backup: {}", report.path.display());
    }
    let spinner = spinner(&format!("restoring {}", path.display()));
    let verify = options.verify;
    let report = block_on(dump::restore(&bins, url, path, options, &interrupt));
    spinner.finish_and_clear();
    let report = report.map_err(ops_error)?;
    signals::note_if_late(&interrupt, "the restore");
    if report.replaced {
        let rows = report
            .rows
            .as_ref()
            .map(|r| format!(", {} rows", r.iter().map(|(_, n)| n).sum::<i64>()))
            .unwrap_or_default();
        crate::say!(
            "restored {} tables{rows} into {} in {:.2} s",
            report.tables.len(),
            url.database,
            report.seconds
        );
    }
    if verify {
        if report.differences.is_empty() {
            crate::say!(
                "verified: every table of {} has the row count the backup itself holds",
                url.database
            );
        } else {
            let count = |n: i64| {
                if n < 0 {
                    "no such table".to_string()
                } else {
                    format!("{n} rows")
                }
            };
            for (table, in_dump, in_database) in &report.differences {
                crate::say!(
                    "differs: {table}: {} in the backup, {} in {}",
                    count(*in_dump),
                    count(*in_database),
                    url.database
                );
            }
            return Err(CliError::failure(format!(
                "{} differs from the backup in {} tables",
                url.database,
                report.differences.len()
            ))
            .hint(if report.replaced {
                "the restore ran, but the database does not hold what the backup holds: look at the tables above"
            } else {
                "nothing was restored; `restore --clean` replaces the database with the backup"
            }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An interrupted safety backup also means the restore never began.
fn nothing_restored(error: OpsError, database: &str) -> OpsError {
    match error {
        OpsError::Interrupted {
            signal,
            cleaned,
            state,
            hint,
        } => OpsError::Interrupted {
            signal,
            cleaned,
            state: format!("{state}; nothing was restored, {database} is unchanged"),
            hint,
        },
        other => other,
    }
}
