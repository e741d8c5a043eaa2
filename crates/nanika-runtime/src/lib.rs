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

/// One of the services nanika runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// PostgreSQL 15.
    Postgres,
    /// Redis 7.
    Redis,
}

impl Service {
    /// Both services, in start order.
    pub const ALL: [Service; 2] = [Service::Postgres, Service::Redis];

    /// The service's name, as compose and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Redis => "redis",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
