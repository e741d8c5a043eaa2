//! Running the spec's PostgreSQL and Redis.
//!
//! # Layout
//! - [`native`]: the default. The host's own `postgres` and `redis-server` run as children of a
//!   background supervisor (`nanika up`), with their state under the project's `.nanika/`.
//!   [`native::binaries`] finds the servers, [`native::layout`] decides where state lives and who
//!   owns it, [`native::supervisor`] keeps the servers running, [`native::control`] is what the
//!   commands call.
//! - [`compose`]: the same services through `docker compose` and the committed `compose.yaml`;
//!   [`docker`] reads their containers' state, readiness and logs.
//! - [`runtime`]: one interface over both, so that each command is written once.
//! - [`health`]: "ready" as the app sees it: `SELECT 1` as the app user, Redis `PING`.
//! - [`log_records`]: the servers' log lines as structured records (`nanika logs --json`).
//!
//! Nothing here prints; progress is reported through [`Progress`].

pub mod compose;
pub mod docker;
pub mod error;
pub mod health;
pub mod log_records;
pub mod native;
pub mod runtime;

pub use error::RuntimeError;

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the servers nanika runs: the spec's two, or a node of the topology `nanika.toml`
/// asks for (numbered from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// PostgreSQL 15, the spec's server.
    Postgres,
    /// Redis 7, the spec's server.
    Redis,
    /// A streaming replica of PostgreSQL.
    PostgresReplica(u8),
    /// A replica of Redis in Sentinel mode.
    RedisReplica(u8),
    /// A Redis Sentinel.
    Sentinel(u8),
    /// A Redis Cluster node.
    ClusterNode(u8),
    /// postgres_exporter, which `[monitoring]` runs for Prometheus.
    PostgresExporter,
    /// redis_exporter, which `[monitoring]` runs for Prometheus.
    RedisExporter,
    /// Prometheus, which `[monitoring]` runs with the project's alert rules.
    Prometheus,
    /// Alertmanager, which `[monitoring] alertmanager = true` runs for Prometheus's alerts.
    Alertmanager,
}

/// The names of numbered nodes, so that every [`Service`] has a `&'static str` name. The
/// settings allow fewer nodes of each kind than these tables hold.
const POSTGRES_REPLICA_NAMES: [&str; 9] = [
    "postgres-replica-1",
    "postgres-replica-2",
    "postgres-replica-3",
    "postgres-replica-4",
    "postgres-replica-5",
    "postgres-replica-6",
    "postgres-replica-7",
    "postgres-replica-8",
    "postgres-replica-9",
];
const REDIS_REPLICA_NAMES: [&str; 9] = [
    "redis-replica-1",
    "redis-replica-2",
    "redis-replica-3",
    "redis-replica-4",
    "redis-replica-5",
    "redis-replica-6",
    "redis-replica-7",
    "redis-replica-8",
    "redis-replica-9",
];
const SENTINEL_NAMES: [&str; 9] = [
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
    "sentinel-4",
    "sentinel-5",
    "sentinel-6",
    "sentinel-7",
    "sentinel-8",
    "sentinel-9",
];
const CLUSTER_NAMES: [&str; 9] = [
    "redis-cluster-1",
    "redis-cluster-2",
    "redis-cluster-3",
    "redis-cluster-4",
    "redis-cluster-5",
    "redis-cluster-6",
    "redis-cluster-7",
    "redis-cluster-8",
    "redis-cluster-9",
];

impl Service {
    /// The spec's two services, in start order.
    pub const ALL: [Service; 2] = [Service::Postgres, Service::Redis];

    /// The service's name, as compose, the CLI, the logs and the state files spell it.
    pub fn as_str(self) -> &'static str {
        let numbered = |names: &'static [&'static str; 9], n: u8| {
            names
                .get(usize::from(n).wrapping_sub(1))
                .copied()
                .unwrap_or("node")
        };
        match self {
            Service::Postgres => "postgres",
            Service::Redis => "redis",
            Service::PostgresReplica(n) => numbered(&POSTGRES_REPLICA_NAMES, n),
            Service::RedisReplica(n) => numbered(&REDIS_REPLICA_NAMES, n),
            Service::Sentinel(n) => numbered(&SENTINEL_NAMES, n),
            Service::ClusterNode(n) => numbered(&CLUSTER_NAMES, n),
            Service::PostgresExporter => "postgres-exporter",
            Service::RedisExporter => "redis-exporter",
            Service::Prometheus => "prometheus",
            Service::Alertmanager => "alertmanager",
        }
    }

    /// The server program behind it: [`Service::Postgres`] for every PostgreSQL node,
    /// [`Service::Redis`] for every `redis-server` (sentinels included); a monitoring
    /// service is a kind of its own.
    pub fn kind(self) -> Service {
        match self {
            Service::Postgres | Service::PostgresReplica(_) => Service::Postgres,
            Service::Redis
            | Service::RedisReplica(_)
            | Service::Sentinel(_)
            | Service::ClusterNode(_) => Service::Redis,
            monitor => monitor,
        }
    }

    /// Whether it is part of the monitoring stack rather than a server.
    pub fn is_monitor(self) -> bool {
        matches!(
            self,
            Service::PostgresExporter
                | Service::RedisExporter
                | Service::Prometheus
                | Service::Alertmanager
        )
    }

    /// The monitoring stack `settings` ask for, in start order: the exporters and Alertmanager
    /// before the Prometheus that scrapes them and sends to it.
    pub fn monitoring(settings: &nanika_config::settings::MonitoringSettings) -> Vec<Service> {
        if !settings.enabled {
            return Vec::new();
        }
        let mut stack = vec![Service::PostgresExporter, Service::RedisExporter];
        if settings.alertmanager {
            stack.push(Service::Alertmanager);
        }
        stack.push(Service::Prometheus);
        stack
    }

    /// Whether it is one of the spec's two servers rather than a topology node.
    pub fn is_primary_service(self) -> bool {
        matches!(self, Service::Postgres | Service::Redis)
    }

    /// The topology nodes `settings` ask for beyond the spec's two servers, in start order:
    /// replicas before the sentinels that watch them.
    pub fn topology(settings: &nanika_config::settings::TopologySettings) -> Vec<Service> {
        use nanika_config::settings::{CLUSTER_NODES, RedisMode, SENTINEL_REPLICAS, SENTINELS};
        let (replicas, sentinels, cluster) = match settings.redis.mode {
            RedisMode::Single => (0, 0, 0),
            RedisMode::Sentinel => (SENTINEL_REPLICAS, SENTINELS, 0),
            RedisMode::Cluster => (0, 0, CLUSTER_NODES),
        };
        (1..=settings.postgres.replicas)
            .map(Service::PostgresReplica)
            .chain((1..=replicas).map(Service::RedisReplica))
            .chain((1..=sentinels).map(Service::Sentinel))
            .chain((1..=cluster).map(Service::ClusterNode))
            .collect()
    }

    /// The service a name means (`postgres`, `redis`, `postgres-replica-2`, `sentinel-1`, …).
    pub fn from_name(name: &str) -> Option<Service> {
        let find = |names: &[&str; 9], make: fn(u8) -> Service| {
            names
                .iter()
                .position(|n| *n == name)
                .map(|i| make(i as u8 + 1))
        };
        match name {
            "postgres" => Some(Service::Postgres),
            "redis" => Some(Service::Redis),
            "postgres-exporter" => Some(Service::PostgresExporter),
            "redis-exporter" => Some(Service::RedisExporter),
            "prometheus" => Some(Service::Prometheus),
            "alertmanager" => Some(Service::Alertmanager),
            _ => find(&POSTGRES_REPLICA_NAMES, Service::PostgresReplica)
                .or_else(|| find(&REDIS_REPLICA_NAMES, Service::RedisReplica))
                .or_else(|| find(&SENTINEL_NAMES, Service::Sentinel))
                .or_else(|| find(&CLUSTER_NAMES, Service::ClusterNode)),
        }
    }
}

impl Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Service::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown service {name:?}")))
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that `{service:8}` lines up the names in a column.
        f.pad(self.as_str())
    }
}

/// What a service is doing, as `nanika ps` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Running and answering a real query.
    Healthy,
    /// Running, not answering yet.
    Starting,
    /// Not running, as asked.
    Stopped,
    /// Not running though it should be; the supervisor is restarting it.
    Crashed,
    /// Running without a supervisor (the supervisor was killed, or `.nanika/run` was deleted
    /// under it); `nanika up` restarts it cleanly, `nanika down` stops it.
    Unsupervised,
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceState::Healthy => "healthy",
            ServiceState::Starting => "starting",
            ServiceState::Stopped => "stopped",
            ServiceState::Crashed => "crashed",
            ServiceState::Unsupervised => "unsupervised",
        })
    }
}

/// The state of one service, with the figures `nanika ps` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// Which service.
    pub service: Service,
    /// What it is doing.
    pub state: ServiceState,
    /// Its main process, when running.
    pub pid: Option<u32>,
    /// The host port it listens on.
    pub port: u16,
    /// Seconds since it (last) started.
    pub uptime_secs: Option<u64>,
    /// The server's version, e.g. `15.18`.
    pub version: Option<String>,
    /// How often the supervisor restarted it after a crash.
    pub restarts: u32,
    /// For a crashed service: in how many milliseconds the supervisor starts it again.
    pub next_start_in_ms: Option<u64>,
    /// A remark on its state (why it runs unsupervised, and what to do about it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Its place in replication when the topology has more than one node: `primary`,
    /// `replica`, `master`, `sentinel`, with what is wrong in parentheses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How far a replica is behind: WAL bytes not yet replayed (PostgreSQL) or the master's
    /// replication offset minus its own (Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// How far a PostgreSQL replica is behind in time (`replay_lag`), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
}

/// Receives progress while services start and stop, e.g. to draw spinners.
pub trait Progress {
    /// `service` moved to a new step (`initialising`, `starting`, `healthy`, ...).
    fn step(&self, service: Service, message: &str);
    /// A remark that is not about one service (e.g. waiting for another `nanika up`).
    fn note(&self, message: &str);
}

/// A [`Progress`] that shows nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: Service, _: &str) {}
    fn note(&self, _: &str) {}
}
