//! `nanika`: development infrastructure for the nanika-game backend.
//!
//! This crate is the only one that prints, reads the process environment or exits; the work is
//! done by the library crates (see crates/README.md).

mod cli;
mod commands;
mod context;
mod error;
mod output;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, ConfigCommand};
use error::CliResult;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let exit = error.exit;
            eprintln!("{:?}", miette::Report::new(error));
            exit.into()
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let project_dir = cli.project_dir.as_ref();
    match cli.command {
        Command::Init(args) => commands::init::run(args.dir.as_ref().or(project_dir), args.force),
        Command::Config(ConfigCommand::Check { json }) => {
            commands::config::check(project_dir, json)
        }
        Command::Config(ConfigCommand::Lint { production, json }) => {
            commands::config::lint_project(project_dir, production, json)
        }
        Command::Config(ConfigCommand::Show { json }) => commands::config::show(project_dir, json),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "nanika", &mut std::io::stdout());
            Ok(())
        }
    }
}
