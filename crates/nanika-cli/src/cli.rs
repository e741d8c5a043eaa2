//! The command line, as clap types.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Development infrastructure for the nanika-game backend: PostgreSQL 15 and Redis 7, configured
/// as the spec says.
#[derive(Debug, Parser)]
#[command(name = "nanika", version, about, propagate_version = true)]
pub struct Cli {
    /// The project directory (default: the nearest one above the current directory).
    #[arg(long, global = true, env = "NANIKA_PROJECT_DIR", value_name = "DIR")]
    pub project_dir: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the spec's config files, .env and .gitignore entries into a new project.
    Init(InitArgs),
    /// Check, lint or show the project's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `nanika init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to create the project (default: the current directory).
    pub dir: Option<PathBuf>,
    /// Overwrite config files that already exist (an existing .env is always kept).
    #[arg(long)]
    pub force: bool,
}

/// `nanika config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Report every error in the config files, and every value that differs from the spec.
    Check {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Report risky settings: evictable sessions, weak secrets, exposed ports, passwords in logs.
    Lint {
        /// Judge for production: weak passwords and secrets become errors.
        #[arg(long)]
        production: bool,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every resolved setting and where it came from (secrets masked).
    Show {
        /// Print the settings as JSON.
        #[arg(long)]
        json: bool,
    },
}
