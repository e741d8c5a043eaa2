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

    /// Which runtime runs the services: `native` (the host's own servers, supervised), `docker`
    /// (docker compose), or `auto`: the one the project already uses, else docker when an engine
    /// answers, else native.
    #[arg(long, global = true, env = "NANIKA_RUNTIME", value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// The project's runtime, else docker if an engine answers, else native.
    Auto,
    /// The host's own servers, supervised by nanika.
    Native,
    /// docker compose with the committed compose.yaml.
    Docker,
}

/// A service name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceArg {
    /// PostgreSQL 15.
    Postgres,
    /// Redis 7.
    Redis,
}

impl From<ServiceArg> for nanika_runtime::Service {
    fn from(arg: ServiceArg) -> Self {
        match arg {
            ServiceArg::Postgres => nanika_runtime::Service::Postgres,
            ServiceArg::Redis => nanika_runtime::Service::Redis,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the spec's config files, .env and .gitignore entries into a new project.
    Init(InitArgs),
    /// Check, lint or show the project's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Start the services (all when none is named) and wait until each answers a real query.
    Up {
        /// Which services.
        #[arg(value_enum)]
        services: Vec<ServiceArg>,
        /// Stay in the foreground, showing the logs; Ctrl-C stops everything.
        #[arg(long)]
        attach: bool,
    },
    /// Stop the services gracefully.
    Down {
        /// Also delete all their data (the project's .nanika/ state); asks first.
        #[arg(long, short = 'v')]
        volumes: bool,
        /// Do not ask before deleting data.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Restart services (all running ones when none is named) and wait until healthy.
    Restart {
        /// Which services.
        #[arg(value_enum)]
        services: Vec<ServiceArg>,
    },
    /// Show each service: state, pid, port, uptime, version, restarts.
    #[command(visible_alias = "status")]
    Ps {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the services' logs.
    Logs {
        /// Which service (both when not given).
        #[arg(value_enum)]
        service: Option<ServiceArg>,
        /// Keep printing new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many lines of each log to show first.
        #[arg(long, short = 'n', default_value_t = 100)]
        tail: usize,
    },
    /// Print the environment an app needs to reach the services (secrets masked).
    Env {
        /// Print passwords and secrets instead of masking them.
        #[arg(long)]
        show_secrets: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command with the services' environment (DATABASE_URL, PG*, REDIS_URL, ...).
    Exec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Runs the supervisor (started by `nanika up`; not for direct use).
    #[command(name = "__supervise", hide = true)]
    Supervise,
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
