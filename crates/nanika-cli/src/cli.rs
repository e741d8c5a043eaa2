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

/// A service or topology node by name.
fn parse_node(name: &str) -> Result<nanika_runtime::Service, String> {
    nanika_runtime::Service::from_name(name).ok_or_else(|| {
        format!("no such service: {name} (postgres, redis, a topology node such as postgres-replica-1, redis-replica-1, sentinel-1, redis-cluster-1, or a monitoring service: postgres-exporter, redis-exporter, prometheus, alertmanager)")
    })
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
        /// Which services: `postgres`, `redis`, a topology node (`postgres-replica-1`) or a
        /// monitoring service (`prometheus`).
        #[arg(value_parser = parse_node, value_name = "SERVICE")]
        services: Vec<nanika_runtime::Service>,
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
        /// Which service or topology node, e.g. `postgres`, `postgres-replica-1`, `sentinel-2`
        /// (all when not given).
        #[arg(value_parser = parse_node, value_name = "SERVICE")]
        service: Option<nanika_runtime::Service>,
        /// Keep printing new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many lines of each log to show first.
        #[arg(long, short = 'n', default_value_t = 100)]
        tail: usize,
        /// Print one JSON object a log record (timestamp, service, level, message, ...).
        #[arg(long)]
        json: bool,
    },
    /// Print the environment an app needs to reach the services (secrets masked).
    Env(EnvArgs),
    /// Run a command with the services' environment (DATABASE_URL, PG*, REDIS_URL, ...).
    Exec {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// The database: migrations, seed data, psql, backups and restores, maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// Redis: redis-cli, keys, INFO, flush, TTL audit.
    #[command(subcommand)]
    Redis(RedisCommand),
    /// Copy the Redis sessions into PostgreSQL and back.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Check everything the spec's troubleshooting checks, and say how to fix what is wrong.
    Doctor {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view of both servers: connections, transactions/s, cache hits, the longest
    /// query, Redis ops/s, memory, evictions, keys by prefix; `q` quits.
    Top {
        /// Print one view, measured over one interval, and exit.
        #[arg(long)]
        once: bool,
        /// Print the view as JSON (with --once).
        #[arg(long)]
        json: bool,
        /// Milliseconds between refreshes (and the interval rates are measured over).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
    },
    /// Physical backups with pgBackRest (`nanika.toml` [backups]): WAL archiving, full,
    /// differential and incremental backups. `db backup` makes portable logical dumps instead.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Fail over to a replica (nanika.toml [topology]): promote a PostgreSQL replica, or have
    /// the Redis sentinels promote theirs.
    #[command(subcommand)]
    Failover(FailoverCommand),
    /// Write the project for another platform: manifests for a Kubernetes cluster.
    #[command(subcommand)]
    Export(ExportCommand),
    /// The cache of pristine PostgreSQL clusters new projects are copied from.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Runs the supervisor (started by `nanika up`; not for direct use).
    #[command(name = "__supervise", hide = true)]
    Supervise,
    /// Makes the cluster cache's spare copy (started by `nanika up`; not for direct use).
    #[command(name = "__refill-cache", hide = true)]
    RefillCache,
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `nanika failover …`.
#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Promote a replica (pg_promote), repoint the other replicas at it, and rejoin the old
    /// primary as a replica (pg_rewind). The old primary is stopped first.
    Postgres {
        /// The replica to promote, e.g. `postgres-replica-2` (default: the one that has
        /// received the most WAL).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
    },
    /// Have the sentinels fail the Redis master over to its replica (SENTINEL FAILOVER).
    Redis,
}

/// `nanika export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Manifests for CloudNativePG (PostgreSQL) and the OT-Container-Kit redis-operator (Redis)
    /// carrying the committed settings, with a kustomization.yaml; prints the settings the
    /// operators manage themselves, the Secrets to create and the app's environment.
    Kubernetes(KubernetesArgs),
}

/// `nanika export kubernetes`.
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// The namespace of every object (default: the compose project name, nanika-game).
    #[arg(long, value_name = "N")]
    pub namespace: Option<String>,
    /// PostgreSQL instances, a primary and its standbys (default: one more than nanika.toml's
    /// [topology.postgres] replicas).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(nanika_config::kubernetes::MAX_INSTANCES)))]
    pub instances: Option<u32>,
    /// How Redis runs (default: as nanika.toml's [topology.redis] mode; the single server
    /// becomes a replication).
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub redis: Option<RedisLayoutArg>,
    /// The directory to write (default: kubernetes/ in the project). It must be new, empty, or
    /// hold only what an earlier export wrote.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Also write the passwords of .env into Secret manifests (mode 0600, with a warning).
    #[arg(long)]
    pub include_secrets: bool,
    /// Where CloudNativePG puts base backups and WAL, s3://BUCKET/PATH or gs://BUCKET/PATH;
    /// needed exactly when nanika.toml sets [backups] enabled = true.
    #[arg(long, value_name = "URL")]
    pub backup_destination: Option<String>,
    /// The endpoint of an S3-compatible store other than AWS (MinIO, Ceph), https://HOST[:PORT];
    /// only with an s3:// --backup-destination.
    #[arg(long, value_name = "URL")]
    pub backup_endpoint_url: Option<String>,
}

/// `nanika export kubernetes --redis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisLayoutArg {
    /// A master and its replica (RedisReplication).
    Replication,
    /// The same, with three sentinels that fail the master over (RedisSentinel).
    Sentinel,
    /// Three masters each with a replica (RedisCluster).
    Cluster,
}

/// `nanika cache …`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Print the cache's directory (NANIKA_CACHE_DIR, else the default for this user).
    Path,
    /// List the cached clusters and whether each checks out (one that does not is rebuilt).
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every cached cluster; the next new project's `up` runs initdb again. Projects'
    /// own clusters are copies and are not touched.
    Clear,
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

/// `nanika env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Print passwords and secrets instead of masking them.
    #[arg(long)]
    pub show_secrets: bool,
    /// Print for a program instead of for people: `shell` lines to `eval`, a `dotenv` file, or
    /// `json`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<EnvFormat>,
    /// Print as JSON (the same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

impl EnvArgs {
    /// The format asked for, `--json` included; `None` for the default `KEY=value` lines.
    pub fn format(&self) -> Option<EnvFormat> {
        self.format.or(self.json.then_some(EnvFormat::Json))
    }
}

/// `nanika env --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvFormat {
    /// `export KEY='value'` lines, safe to `eval` in sh and bash whatever the values.
    Shell,
    /// A .env file that Node's dotenv and Docker Compose both read back to the same values.
    Dotenv,
    /// One JSON object.
    Json,
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

/// `nanika backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup now (pgBackRest makes the first one full whatever the type), then apply
    /// retention.
    Now {
        /// full: every file; diff: changes since the last full; incr: since the last backup.
        #[arg(long = "type", value_enum, default_value_t = BackupKindArg::Incr)]
        kind: BackupKindArg,
    },
    /// List the backups: kind, when, sizes, the WAL they need.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that PostgreSQL archives WAL into the repository (creating the stanza if needed).
    Check,
    /// Restore the cluster to a moment (--to) or to the last archived commit (--latest): stops
    /// PostgreSQL, keeps the cluster as it was aside, restores, replays WAL, starts. Asks first.
    Restore {
        /// The moment, with its zone: 2026-11-29T20:31:50Z, 2026-11-30 05:31:50+09:00.
        #[arg(long, conflicts_with_all = ["latest", "abandon"], required_unless_present_any = ["latest", "abandon"])]
        to: Option<String>,
        /// Every commit that reached the repository (everything, when the server is running:
        /// the current WAL is archived first).
        #[arg(long, conflicts_with = "abandon")]
        latest: bool,
        /// After a restore that did not finish (a crash, SIGKILL): put the cluster from before
        /// back and start it.
        #[arg(long)]
        abandon: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// A pgBackRest backup type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupKindArg {
    /// Every file of the cluster.
    Full,
    /// Changes since the last full backup.
    Diff,
    /// Changes since the last backup of any kind.
    Incr,
}

/// `nanika db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the pending migrations in migrations/ (or list them with --dry-run).
    Migrate {
        /// What else to do with migrations.
        #[command(subcommand)]
        action: Option<MigrateAction>,
        /// List what would be applied, apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Add the development data (users alice, bob, carol; a lobby; messages); running it again changes nothing.
    Seed {
        /// Also add this many load users (password `load-password`).
        #[arg(long, default_value_t = 0)]
        users: u64,
        /// Also add this many load messages.
        #[arg(long, default_value_t = 0)]
        messages: u64,
    },
    /// Drop the app database, recreate it, migrate and seed; asks first.
    Reset {
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Leave it empty (no migrations, no seed): for `db restore` of a whole dump.
        #[arg(long)]
        empty: bool,
    },
    /// Open psql on the app database (arguments after -- go to psql).
    Psql {
        /// Arguments for psql.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// VACUUM ANALYZE, then advice on missing indexes and bloat.
    Maintain {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up the app database with pg_dump (default: backups/DB-TIMESTAMP.dump).
    Backup {
        /// Where to write it.
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
        /// custom (pg_dump -Fc), sql (plain, as the spec's backup.sql) or directory.
        #[arg(long, value_enum, default_value_t = FormatArg::Custom)]
        format: FormatArg,
        /// Parallel jobs (directory format).
        #[arg(long, default_value_t = 1)]
        jobs: u32,
    },
    /// Restore a backup (custom, directory or SQL; detected) into the app database.
    Restore {
        /// The backup.
        path: std::path::PathBuf,
        /// Replace a database that is not empty (asks first, takes a safety backup).
        #[arg(long)]
        clean: bool,
        /// Restore into a scratch database and compare per-table row counts with the current database.
        #[arg(long)]
        verify: bool,
        /// Parallel jobs (custom and directory formats).
        #[arg(long, default_value_t = 1)]
        jobs: u32,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `nanika db migrate …`.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// List every migration and whether it is applied.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an empty migration file.
    New {
        /// What it does, e.g. add_friends.
        name: String,
    },
}

/// A backup format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// pg_dump's custom format.
    Custom,
    /// Plain SQL.
    Sql,
    /// A directory.
    Directory,
}

/// `nanika redis …`.
#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// Open redis-cli on the project's Redis (arguments after -- go to redis-cli).
    Cli {
        /// Arguments for redis-cli.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List keys matching PATTERN with SCAN (never KEYS, which blocks a large keyspace).
    Keys {
        /// A glob pattern.
        #[arg(default_value = "*")]
        pattern: String,
        /// Stop after this many keys.
        #[arg(long)]
        limit: Option<usize>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print INFO [SECTION].
    Info {
        /// e.g. memory, stats, persistence.
        section: Option<String>,
    },
    /// Delete every key (FLUSHALL), after saving a snapshot; asks first.
    Flush {
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Keys without a TTL by prefix, the biggest keys, and evictions.
    TtlAudit {
        /// Look at this many keys at most (default: every key; the output says when it sampled).
        #[arg(long)]
        limit: Option<usize>,
        /// The prefix of session keys, for the sessions section.
        #[arg(long, default_value = "sess:")]
        session_prefix: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `nanika sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Make session_backups a snapshot of the sessions in Redis now: each with its expiry;
    /// sessions gone from Redis (logged out, expired) leave the backup too.
    Backup {
        /// The session key prefix.
        #[arg(long, default_value = "sess:")]
        prefix: String,
    },
    /// Put back the backed-up sessions that have not expired, each under the prefix it was
    /// taken from, with the rest of its life; a live key is never overwritten.
    Restore {
        /// Only the sessions backed up under this prefix (default: all).
        #[arg(long)]
        prefix: Option<String>,
        /// Replace live keys too (they are newer than the backup).
        #[arg(long)]
        overwrite: bool,
    },
}
