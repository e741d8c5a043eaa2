//! `nanika`: development infrastructure for the nanika-game backend.
//!
//! This crate is the only one that prints, reads the process environment or exits; the work is
//! done by the library crates (see crates/README.md).

mod cli;
mod clock;
mod commands;
mod context;
mod error;
mod output;
mod progress;
mod signals;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, ConfigCommand};
use error::CliResult;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Messages name paths and commands that must stay whole to be copied: no wrapping.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            let exit = error.exit;
            eprintln!("{:?}", miette::Report::new(error));
            exit.into()
        }
    }
}

fn run(cli: Cli) -> CliResult<ExitCode> {
    let project_dir = cli.project_dir.as_ref();
    let runtime = cli.runtime;
    let services = |list: Vec<cli::ServiceArg>| list.into_iter().map(Into::into).collect();
    match cli.command {
        Command::Exec { command } => return commands::env::exec(project_dir, &command),
        Command::Db(command) => return commands::db::run(project_dir, runtime, command),
        Command::Redis(command) => return commands::redis_cmds::run(project_dir, runtime, command),
        Command::Sessions(command) => {
            return commands::redis_cmds::sessions(project_dir, runtime, command);
        }
        Command::Doctor { json } => commands::doctor::run(project_dir, json),
        Command::Backup(command) => commands::backup::run(project_dir, runtime, command),
        Command::Top {
            once,
            json,
            interval_ms,
        } => commands::top::run(
            project_dir,
            runtime,
            once,
            json,
            std::time::Duration::from_millis(interval_ms),
        ),
        Command::Up {
            services: list,
            attach,
        } => commands::services::up(project_dir, runtime, services(list), attach),
        Command::Down { volumes, yes } => {
            commands::services::down(project_dir, runtime, volumes, yes)
        }
        Command::Restart { services: list } => {
            commands::services::restart(project_dir, runtime, list)
        }
        Command::Ps { json } => commands::services::ps(project_dir, runtime, json),
        Command::Logs {
            service,
            follow,
            tail,
            json,
        } => commands::services::logs(
            project_dir,
            runtime,
            commands::services::LogsArgs {
                service,
                follow,
                tail,
                json,
            },
        ),
        Command::Env(args) => commands::env::env(project_dir, &args),
        Command::Cache(command) => commands::cache::run(command),
        Command::Export(cli::ExportCommand::Kubernetes(args)) => {
            commands::export::kubernetes(project_dir, args)
        }
        Command::Failover(command) => commands::failover::run(project_dir, runtime, command),
        Command::Supervise => {
            let project = context::project(project_dir)?;
            let user = nanika_runtime::native::layout::ServerUser::for_current_process()
                .map_err(commands::services::runtime_error)?;
            let layout = nanika_runtime::native::layout::StateLayout::new(project.root(), user);
            nanika_runtime::native::supervisor::run(&layout)
                .map_err(commands::services::runtime_error)
        }
        Command::RefillCache => commands::cache::refill(project_dir),
        Command::Init(args) => commands::init::run(args.dir.as_ref().or(project_dir), args.force),
        Command::Config(ConfigCommand::Check { json }) => {
            commands::config::check(project_dir, json)
        }
        Command::Config(ConfigCommand::Lint { production, json }) => {
            commands::config::lint_project(project_dir, production, json)
        }
        Command::Config(ConfigCommand::Show { json }) => commands::config::show(project_dir, json),
        Command::Completions { shell } => {
            // Rendered first and printed through `say!`, which ends quietly when the reader
            // closes the pipe (`nanika completions bash | head`) instead of panicking.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nanika", &mut script);
            crate::say!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(())
        }
    }
    .map(|()| ExitCode::SUCCESS)
}
