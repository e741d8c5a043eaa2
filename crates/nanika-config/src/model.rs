//! The typed model of the whole infrastructure, with the spec's values as its defaults.
//!
//! Every committed file is rendered from an [`Infrastructure`] and parsed back into one, so the
//! files and the model cannot disagree without a check noticing.

use crate::secret::Secret;
use crate::units::MemorySize;
use crate::urls::{DatabaseUrl, RedisUrl};
use serde::Serialize;
use std::time::Duration;

/// Everything nanika sets up: both servers, the compose file and the app's environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Infrastructure {
    /// PostgreSQL's settings (`docker/postgres/postgresql.conf`).
    pub postgres: PostgresSettings,
    /// Redis's settings (`docker/redis/redis.conf`).
    pub redis: RedisSettings,
    /// The compose file (`compose.yaml`).
    pub compose: ComposeSettings,
    /// The app's environment (`.env.example`, `.env`).
    pub env: EnvSettings,
}

impl Infrastructure {
    /// The infrastructure exactly as the spec describes it.
    pub fn spec() -> Self {
        Infrastructure {
            postgres: PostgresSettings::spec(),
            redis: RedisSettings::spec(),
            compose: ComposeSettings::spec(),
            env: EnvSettings::spec(),
        }
    }

    /// The password Redis requires, wherever the project sets it: `REDIS_URL`'s (which
    /// validation holds equal to `REDIS_PASSWORD`), else a `requirepass` in `redis.conf`.
    pub fn redis_password(&self) -> Option<&Secret> {
        Some(&self.env.redis_url.password)
            .filter(|p| !p.is_empty())
            .or(self.redis.requirepass.as_ref())
    }
}

/// `wal_compression`: PostgreSQL 15 takes a method as well as on/off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalCompression {
    /// No compression.
    Off,
    /// `on`, which the server treats as `pglz`.
    On,
    /// The built-in pglz method.
    Pglz,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// `log_statement`: which statements the server logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStatement {
    /// None.
    None,
    /// Data definition (`CREATE`, `ALTER`, `DROP`).
    Ddl,
    /// DDL plus data-modifying statements.
    Mod,
    /// Every statement.
    All,
}

/// Lets a unit-only enum be spelled the way its config file spells it.
macro_rules! config_words {
    ($ty:ty { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            /// The spelling the config file uses.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
            /// Reads the config file's spelling, ignoring case.
            pub fn parse(word: &str) -> Option<Self> {
                $(if word.eq_ignore_ascii_case($word) { return Some(Self::$variant); })+
                None
            }
            /// Every spelling, for hints.
            pub const WORDS: &'static [&'static str] = &[$($word),+];
        }
    };
}

config_words!(WalCompression { Off => "off", On => "on", Pglz => "pglz", Lz4 => "lz4", Zstd => "zstd" });
config_words!(LogStatement { None => "none", Ddl => "ddl", Mod => "mod", All => "all" });
config_words!(MaxmemoryPolicy {
    VolatileLru => "volatile-lru", AllkeysLru => "allkeys-lru", VolatileLfu => "volatile-lfu",
    AllkeysLfu => "allkeys-lfu", VolatileRandom => "volatile-random", AllkeysRandom => "allkeys-random",
    VolatileTtl => "volatile-ttl", Noeviction => "noeviction",
});
config_words!(AppendFsync { Always => "always", Everysec => "everysec", No => "no" });

/// PostgreSQL's settings: the spec's 接続, メモリ, パフォーマンス and ログ sections, plus any other
/// setting the file carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostgresSettings {
    /// `listen_addresses`.
    pub listen_addresses: String,
    /// `port`.
    pub port: u16,
    /// `max_connections`.
    pub max_connections: u32,
    /// `shared_buffers`.
    pub shared_buffers: MemorySize,
    /// `effective_cache_size`.
    pub effective_cache_size: MemorySize,
    /// `work_mem`.
    pub work_mem: MemorySize,
    /// `maintenance_work_mem`.
    pub maintenance_work_mem: MemorySize,
    /// `random_page_cost`.
    pub random_page_cost: f64,
    /// `effective_io_concurrency`.
    pub effective_io_concurrency: u32,
    /// `wal_compression`.
    pub wal_compression: WalCompression,
    /// `checkpoint_completion_target`.
    pub checkpoint_completion_target: f64,
    /// `log_min_duration_statement`; `None` is `-1`, logging no durations.
    pub log_min_duration_statement: Option<Duration>,
    /// `log_connections`.
    pub log_connections: bool,
    /// `log_disconnections`.
    pub log_disconnections: bool,
    /// `log_lock_waits`.
    pub log_lock_waits: bool,
    /// `log_statement`.
    pub log_statement: LogStatement,
    /// Settings beyond the spec's, as written (name, value), in file order.
    pub other: Vec<(String, String)>,
}

impl PostgresSettings {
    /// The spec's values.
    pub fn spec() -> Self {
        PostgresSettings {
            listen_addresses: "*".into(),
            port: 5432,
            max_connections: 100,
            shared_buffers: MemorySize::mib(256),
            effective_cache_size: MemorySize::gib(1),
            work_mem: MemorySize::mib(4),
            maintenance_work_mem: MemorySize::mib(64),
            random_page_cost: 1.1,
            effective_io_concurrency: 200,
            wal_compression: WalCompression::On,
            checkpoint_completion_target: 0.9,
            log_min_duration_statement: Some(Duration::from_millis(1000)),
            log_connections: true,
            log_disconnections: true,
            log_lock_waits: true,
            log_statement: LogStatement::Mod,
            other: Vec::new(),
        }
    }
}

/// `maxmemory-policy`: what Redis evicts when `maxmemory` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    /// Least recently used among keys with a TTL.
    VolatileLru,
    /// Least recently used among all keys.
    AllkeysLru,
    /// Least frequently used among keys with a TTL.
    VolatileLfu,
    /// Least frequently used among all keys.
    AllkeysLfu,
    /// Random keys with a TTL.
    VolatileRandom,
    /// Random keys.
    AllkeysRandom,
    /// Keys with the nearest expiry.
    VolatileTtl,
    /// Evict nothing; refuse writes.
    Noeviction,
}

/// `appendfsync`: when Redis fsyncs its append-only file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppendFsync {
    /// After every write.
    Always,
    /// Once a second.
    Everysec,
    /// When the OS decides.
    No,
}

/// Redis's settings: the spec's ネットワーク, メモリ管理, 永続化 and クライアント管理 sections, plus any
/// other directive the file carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisSettings {
    /// `bind`.
    pub bind: Vec<String>,
    /// `port`.
    pub port: u16,
    /// `timeout`: idle clients are closed after this; zero never closes them.
    pub timeout: Duration,
    /// `tcp-keepalive`.
    pub tcp_keepalive: Duration,
    /// `tcp-backlog`.
    pub tcp_backlog: u32,
    /// `maxmemory`.
    pub maxmemory: MemorySize,
    /// `maxmemory-policy`.
    pub maxmemory_policy: MaxmemoryPolicy,
    /// `maxmemory-samples`.
    pub maxmemory_samples: u32,
    /// `appendonly`.
    pub appendonly: bool,
    /// `appendfilename`.
    pub appendfilename: String,
    /// `appendfsync`.
    pub appendfsync: AppendFsync,
    /// `auto-aof-rewrite-percentage`.
    pub auto_aof_rewrite_percentage: u32,
    /// `auto-aof-rewrite-min-size`.
    pub auto_aof_rewrite_min_size: MemorySize,
    /// `maxclients`.
    pub maxclients: u32,
    /// `requirepass`, when the file sets one (the spec does not).
    pub requirepass: Option<Secret>,
    /// Directives beyond the spec's, as written (name, arguments), in file order.
    pub other: Vec<(String, Vec<String>)>,
}

impl RedisSettings {
    /// The spec's values.
    pub fn spec() -> Self {
        RedisSettings {
            bind: vec!["0.0.0.0".into()],
            port: 6379,
            timeout: Duration::from_secs(300),
            tcp_keepalive: Duration::from_secs(300),
            tcp_backlog: 511,
            maxmemory: MemorySize::mib(512),
            maxmemory_policy: MaxmemoryPolicy::AllkeysLru,
            maxmemory_samples: 5,
            appendonly: true,
            appendfilename: "appendonly.aof".into(),
            appendfsync: AppendFsync::Everysec,
            auto_aof_rewrite_percentage: 100,
            auto_aof_rewrite_min_size: MemorySize::mib(64),
            maxclients: 1000,
            requirepass: None,
            other: Vec::new(),
        }
    }
}

/// One service of the compose file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposeService {
    /// The image, e.g. `postgres:15-alpine`.
    pub image: String,
    /// `container_name`.
    pub container_name: String,
    /// The named volume holding the service's data.
    pub volume: String,
}

impl ComposeService {
    /// The major version in the image tag (`15` of `postgres:15-alpine`), if it has one.
    pub fn major_version(&self) -> Option<u32> {
        let tag = self.image.rsplit_once(':')?.1;
        tag.split(['.', '-']).next()?.parse().ok()
    }
}

/// The compose file: two services, their volumes and one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposeSettings {
    /// The compose project name (`name:`).
    pub project_name: String,
    /// The `postgres` service.
    pub postgres: ComposeService,
    /// The `redis` service.
    pub redis: ComposeService,
    /// The network both services join.
    pub network: String,
    /// The network's subnet.
    pub subnet: String,
}

impl ComposeSettings {
    /// The spec's values.
    pub fn spec() -> Self {
        ComposeSettings {
            project_name: "nanika-game".into(),
            postgres: ComposeService {
                image: "postgres:15-alpine".into(),
                container_name: "nanika-game-db".into(),
                volume: "postgres_data".into(),
            },
            redis: ComposeService {
                image: "redis:7-alpine".into(),
                container_name: "nanika-game-redis".into(),
                volume: "redis_data".into(),
            },
            network: "nanika-network".into(),
            subnet: "172.20.0.0/16".into(),
        }
    }
}

/// The app's environment (spec section 環境変数).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvSettings {
    /// `POSTGRES_DB`.
    pub postgres_db: String,
    /// `POSTGRES_USER`.
    pub postgres_user: String,
    /// `POSTGRES_PASSWORD`.
    pub postgres_password: Secret,
    /// `DATABASE_URL`.
    pub database_url: DatabaseUrl,
    /// `REDIS_URL`.
    pub redis_url: RedisUrl,
    /// `SESSION_SECRET`.
    pub session_secret: Secret,
    /// `NODE_ENV`.
    pub node_env: String,
    /// `POSTGRES_PORT`: the host port PostgreSQL is reached on (default 5432).
    pub postgres_port: u16,
    /// `REDIS_PORT`: the host port Redis is reached on (default 6379).
    pub redis_port: u16,
    /// `REDIS_PASSWORD`: the password Redis requires; empty for none.
    pub redis_password: Secret,
    /// `COMPOSE_PROJECT_NAME`: the docker runtime's compose project; empty for the compose
    /// file's own `name:`.
    pub compose_project_name: String,
}

/// The spec's placeholder session secret, which must not reach production.
pub const PLACEHOLDER_SESSION_SECRET: &str = "your-secret-key-change-in-production";
/// The spec's development password, which must not reach production.
pub const SPEC_POSTGRES_PASSWORD: &str = "nanika_password";

impl EnvSettings {
    /// The spec's values.
    pub fn spec() -> Self {
        EnvSettings {
            postgres_db: "nanika_game".into(),
            postgres_user: "nanika_user".into(),
            postgres_password: Secret::new(SPEC_POSTGRES_PASSWORD),
            database_url: DatabaseUrl::parse(
                "postgresql://nanika_user:nanika_password@localhost:5432/nanika_game?schema=public",
            )
            .expect("the spec's DATABASE_URL is valid"),
            redis_url: RedisUrl::parse("redis://localhost:6379")
                .expect("the spec's REDIS_URL is valid"),
            session_secret: Secret::new(PLACEHOLDER_SESSION_SECRET),
            node_env: "development".into(),
            postgres_port: 5432,
            redis_port: 6379,
            redis_password: Secret::new(""),
            compose_project_name: String::new(),
        }
    }
}
