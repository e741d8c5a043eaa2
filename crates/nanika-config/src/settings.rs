//! `nanika.toml`: nanika's own settings beyond the spec's files, committed with them. Every
//! section is optional and off when absent, so a project without the file runs exactly the spec.
//!
//! ```toml
//! [backups]
//! enabled = true        # pgBackRest: WAL archiving, `nanika backup now|list|restore|check`
//! retention_full = 2    # full backups kept (each with the differential and incremental ones on it)
//! retention_diff = 7    # differential backups kept
//! full_every = "7d"     # the supervisor's schedule (schedule = false: only `backup now`)
//! diff_every = "1d"
//! incr_every = "1h"
//!
//! [topology.postgres]
//! replicas = 2          # streaming replicas (0, the default: the spec's single server)
//! synchronous = false   # true: a commit waits until one replica has flushed it
//! ports_from = 5433     # the first replica's port, the others follow (default POSTGRES_PORT + 1)
//!
//! [topology.redis]
//! mode = "sentinel"     # "single" (the default), "sentinel" (a replica, three sentinels) or "cluster"
//! ports_from = 6380     # sentinel: the replica's port; cluster: the first of six nodes' (REDIS_PORT + 1)
//! sentinel_ports_from = 26379  # the first of three sentinels (default REDIS_PORT + 20000)
//! down_after_ms = 1000  # Sentinel: a master silent this long is down
//! failover_timeout_ms = 5000
//! node_timeout_ms = 1000  # Cluster: a master silent this long is failed over
//!
//! [monitoring]
//! enabled = true        # Prometheus, postgres_exporter and redis_exporter beside the servers
//! prometheus_port = 9090
//! postgres_exporter_port = 9187
//! redis_exporter_port = 9121
//! scrape_interval = "15s"  # also how often the alert rules are evaluated
//! retention = "7d"      # how long Prometheus keeps its samples
//! backup_metrics_port = 9854  # with [backups]: the schedule's metrics, served by nanika
//! alertmanager = false  # also run Alertmanager, which Prometheus sends firing alerts to
//! alertmanager_port = 9093
//!
//! [logging]
//! postgres = "jsonlog"  # "stderr" (the default: the captured .nanika/logs/postgres.log) or PostgreSQL 15's jsonlog files
//! ```

use crate::finding::Finding;
use crate::parsed::Parsed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The file, relative to the project root.
pub const SETTINGS_FILE: &str = "nanika.toml";

/// Everything `nanika.toml` can set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Backup automation with pgBackRest.
    #[serde(default)]
    pub backups: BackupSettings,
    /// Replicas, Sentinel or Cluster: the spec's roadmap topologies, off by default.
    #[serde(default)]
    pub topology: TopologySettings,
    /// Prometheus and the standard exporters, off by default.
    #[serde(default)]
    pub monitoring: MonitoringSettings,
    /// Where the servers write their logs, the spec's way by default.
    #[serde(default)]
    pub logging: LoggingSettings,
}

/// `[logging]`: how the servers log. Absent, PostgreSQL writes to stderr, which the supervisor
/// captures, as the spec's server does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    /// PostgreSQL's log destination.
    #[serde(default)]
    pub postgres: PostgresLog,
}

/// Where PostgreSQL writes its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresLog {
    /// Plain text on stderr, captured by the supervisor into `.nanika/logs/postgres.log`.
    #[default]
    Stderr,
    /// PostgreSQL 15's `jsonlog` destination: its logging collector writes one JSON object a
    /// line into files of its own, which nanika rotates and reads.
    Jsonlog,
}

impl PostgresLog {
    /// The value as `nanika.toml` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PostgresLog::Stderr => "stderr",
            PostgresLog::Jsonlog => "jsonlog",
        }
    }
}

/// `[monitoring]`: Prometheus with the project's alert rules, scraping `postgres_exporter` and
/// `redis_exporter`, all on loopback and run by the supervisor. Absent, none of them runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSettings {
    /// Run the monitoring stack.
    #[serde(default)]
    pub enabled: bool,
    /// Prometheus's port (its own default, 9090).
    #[serde(default = "default_prometheus_port")]
    pub prometheus_port: u16,
    /// postgres_exporter's port (its own default, 9187).
    #[serde(default = "default_postgres_exporter_port")]
    pub postgres_exporter_port: u16,
    /// redis_exporter's port (its own default, 9121).
    #[serde(default = "default_redis_exporter_port")]
    pub redis_exporter_port: u16,
    /// How often Prometheus scrapes the exporters and evaluates the alert rules (`15s`).
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval: String,
    /// How long Prometheus keeps samples (`7d`).
    #[serde(default = "default_monitoring_retention")]
    pub retention: String,
    /// Where nanika's supervisor serves the backup schedule's metrics when `[backups]` are on
    /// too (pgbackrest_exporter's default port, 9854).
    #[serde(default = "default_backup_metrics_port")]
    pub backup_metrics_port: u16,
    /// Also run Alertmanager, which Prometheus sends its firing alerts to.
    #[serde(default)]
    pub alertmanager: bool,
    /// Alertmanager's port (its own default, 9093).
    #[serde(default = "default_alertmanager_port")]
    pub alertmanager_port: u16,
}

impl MonitoringSettings {
    /// Each port with the key that sets it; the backup metrics' only when `backups` are
    /// scheduled.
    pub fn ports(&self, backups: &BackupSettings) -> Vec<(&'static str, &'static str, u16)> {
        let mut ports = vec![
            (
                "monitoring.postgres_exporter_port",
                "postgres_exporter",
                self.postgres_exporter_port,
            ),
            (
                "monitoring.redis_exporter_port",
                "redis_exporter",
                self.redis_exporter_port,
            ),
            (
                "monitoring.prometheus_port",
                "Prometheus",
                self.prometheus_port,
            ),
        ];
        if self.alertmanager {
            ports.push((
                "monitoring.alertmanager_port",
                "Alertmanager",
                self.alertmanager_port,
            ));
        }
        if backups.enabled && backups.schedule {
            ports.push((
                "monitoring.backup_metrics_port",
                "the backup metrics",
                self.backup_metrics_port,
            ));
        }
        ports
    }

    /// The port of the backup metrics, when `backups` are scheduled and monitoring is on.
    pub fn backup_metrics(&self, backups: &BackupSettings) -> Option<u16> {
        (self.enabled && backups.enabled && backups.schedule).then_some(self.backup_metrics_port)
    }
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        MonitoringSettings {
            enabled: false,
            prometheus_port: default_prometheus_port(),
            postgres_exporter_port: default_postgres_exporter_port(),
            redis_exporter_port: default_redis_exporter_port(),
            scrape_interval: default_scrape_interval(),
            retention: default_monitoring_retention(),
            backup_metrics_port: default_backup_metrics_port(),
            alertmanager: false,
            alertmanager_port: default_alertmanager_port(),
        }
    }
}

fn default_prometheus_port() -> u16 {
    9090
}

fn default_postgres_exporter_port() -> u16 {
    9187
}

fn default_redis_exporter_port() -> u16 {
    9121
}

// Prometheus's own default: the `for:` clauses of the alert rules (1m at the shortest) stay
// several samples long.
fn default_scrape_interval() -> String {
    "15s".into()
}

fn default_alertmanager_port() -> u16 {
    9093
}

fn default_backup_metrics_port() -> u16 {
    9854
}

fn default_monitoring_retention() -> String {
    "7d".into()
}

/// `[topology]`: nodes beside the spec's two servers. Absent, nanika runs exactly the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySettings {
    /// `[topology.postgres]`: streaming replicas.
    #[serde(default)]
    pub postgres: PostgresTopology,
    /// `[topology.redis]`: Sentinel or Cluster.
    #[serde(default)]
    pub redis: RedisTopology,
}

/// The most PostgreSQL replicas nanika runs: a laptop's worth.
pub const MAX_POSTGRES_REPLICAS: u8 = 5;

/// Sentinels watching the master: three, so that a quorum of two survives one of them.
pub const SENTINELS: u8 = 3;

/// The sentinel-mode replicas of the master.
pub const SENTINEL_REPLICAS: u8 = 1;

/// Cluster nodes: three masters, each with one replica.
pub const CLUSTER_NODES: u8 = 6;

/// `[topology.postgres]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTopology {
    /// Streaming replicas (0: none, the spec's single server).
    #[serde(default)]
    pub replicas: u8,
    /// Whether a commit waits for one replica to flush it (`synchronous_standby_names`).
    #[serde(default)]
    pub synchronous: bool,
    /// The first replica's port; replica N listens on `ports_from + N - 1`
    /// (default: `POSTGRES_PORT + 1`).
    #[serde(default)]
    pub ports_from: Option<u16>,
}

/// How Redis runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// The spec's one server.
    #[default]
    Single,
    /// The spec's server as master, one replica, three sentinels (quorum 2).
    Sentinel,
    /// Six cluster nodes (three masters, three replicas) beside the spec's server.
    Cluster,
}

/// `[topology.redis]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTopology {
    /// Single, Sentinel or Cluster.
    #[serde(default)]
    pub mode: RedisMode,
    /// Sentinel: the replica's port; Cluster: the first node's, the others following
    /// (default: `REDIS_PORT + 1`).
    #[serde(default)]
    pub ports_from: Option<u16>,
    /// The first sentinel's port, the others following (default: `REDIS_PORT + 20000`, which
    /// gives Sentinel's usual 26379 for 6379).
    #[serde(default)]
    pub sentinel_ports_from: Option<u16>,
    /// Sentinel's `down-after-milliseconds`: how long a silent master is given.
    #[serde(default = "default_down_after_ms")]
    pub down_after_ms: u32,
    /// Sentinel's `failover-timeout`.
    #[serde(default = "default_failover_timeout_ms")]
    pub failover_timeout_ms: u32,
    /// Cluster's `cluster-node-timeout`.
    #[serde(default = "default_node_timeout_ms")]
    pub node_timeout_ms: u32,
}

impl Default for RedisTopology {
    fn default() -> Self {
        RedisTopology {
            mode: RedisMode::Single,
            ports_from: None,
            sentinel_ports_from: None,
            down_after_ms: default_down_after_ms(),
            failover_timeout_ms: default_failover_timeout_ms(),
            node_timeout_ms: default_node_timeout_ms(),
        }
    }
}

// On loopback a live Redis answers PING in well under a millisecond, even under load; a second
// of silence is a dead process, and a developer testing reconnect logic should not wait 30 s
// (Sentinel's default) for each try.
fn default_down_after_ms() -> u32 {
    1000
}

// Sentinel waits this long before retrying a failover that stalled; twice that bounds how long
// the replicas take to follow the new master.
fn default_failover_timeout_ms() -> u32 {
    5000
}

// As for Sentinel: a second without a pong is a dead node on loopback.
fn default_node_timeout_ms() -> u32 {
    1000
}

/// The bounds of the timeouts above, in milliseconds.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 100..=600_000;

/// Every port one node of the topology listens on, with the node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyPorts {
    /// PostgreSQL replica N (from 1) at index N - 1.
    pub postgres_replicas: Vec<u16>,
    /// The Sentinel-mode replica(s) of Redis.
    pub redis_replicas: Vec<u16>,
    /// The sentinels.
    pub sentinels: Vec<u16>,
    /// The cluster nodes.
    pub cluster_nodes: Vec<u16>,
}

impl TopologySettings {
    /// Whether anything runs beyond the spec's two servers.
    pub fn is_single(&self) -> bool {
        self.postgres.replicas == 0 && self.redis.mode == RedisMode::Single
    }

    /// The ports of every node, given the spec's two ports; `Err` says which setting runs past
    /// port 65535.
    pub fn ports(&self, postgres_port: u16, redis_port: u16) -> Result<TopologyPorts, String> {
        fn run(
            key: &str,
            from: Option<u16>,
            default_from: u32,
            count: u8,
        ) -> Result<Vec<u16>, String> {
            let first = from.map_or(default_from, u32::from);
            (0..u32::from(count))
                .map(|i| {
                    u16::try_from(first + i)
                        .map_err(|_| format!("{key}: {count} ports from {first} run past 65535"))
                })
                .collect()
        }
        let redis = &self.redis;
        let (replicas, sentinels, cluster) = match redis.mode {
            RedisMode::Single => (0, 0, 0),
            RedisMode::Sentinel => (SENTINEL_REPLICAS, SENTINELS, 0),
            RedisMode::Cluster => (0, 0, CLUSTER_NODES),
        };
        let redis_from = u32::from(redis_port) + 1;
        Ok(TopologyPorts {
            postgres_replicas: run(
                "topology.postgres.ports_from",
                self.postgres.ports_from,
                u32::from(postgres_port) + 1,
                self.postgres.replicas,
            )?,
            redis_replicas: run(
                "topology.redis.ports_from",
                redis.ports_from,
                redis_from,
                replicas,
            )?,
            sentinels: run(
                "topology.redis.sentinel_ports_from",
                redis.sentinel_ports_from,
                u32::from(redis_port) + 20_000,
                sentinels,
            )?,
            cluster_nodes: run(
                "topology.redis.ports_from",
                redis.ports_from,
                redis_from,
                cluster,
            )?,
        })
    }
}

/// `[backups]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Archive WAL and take backups with pgBackRest (off: the spec's PostgreSQL, untouched).
    #[serde(default)]
    pub enabled: bool,
    /// Full backups kept; an older one goes with the backups and WAL that depend on it.
    #[serde(default = "default_retention_full")]
    pub retention_full: u32,
    /// Differential backups kept.
    #[serde(default = "default_retention_diff")]
    pub retention_diff: u32,
    /// Whether the supervisor takes backups on the schedule below (off: only `nanika backup
    /// now`).
    #[serde(default = "default_true")]
    pub schedule: bool,
    /// How often a full backup is taken (`7d`; units `s`, `m`, `h`, `d`).
    #[serde(default = "default_full_every")]
    pub full_every: String,
    /// How often a differential one is.
    #[serde(default = "default_diff_every")]
    pub diff_every: String,
    /// How often an incremental one is.
    #[serde(default = "default_incr_every")]
    pub incr_every: String,
}

impl BackupSettings {
    /// The schedule's intervals in seconds: (full, diff, incr). Only for settings that passed
    /// [`parse`] without findings (an unreadable interval is a finding there).
    pub fn intervals(&self) -> Option<(u64, u64, u64)> {
        Some((
            interval_secs(&self.full_every)?,
            interval_secs(&self.diff_every)?,
            interval_secs(&self.incr_every)?,
        ))
    }
}

/// `90s`, `15m`, `1h`, `7d` in seconds; `None` for anything else, or zero.
pub fn interval_secs(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).filter(|s| *s > 0)
}

fn default_true() -> bool {
    true
}

fn default_full_every() -> String {
    "7d".into()
}

fn default_diff_every() -> String {
    "1d".into()
}

fn default_incr_every() -> String {
    "1h".into()
}

/// Retention's bounds: at least one backup is kept, and more than this is not a laptop's.
pub const RETENTION_RANGE: std::ops::RangeInclusive<u32> = 1..=99;

fn default_retention_full() -> u32 {
    2
}

fn default_retention_diff() -> u32 {
    7
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            enabled: false,
            retention_full: default_retention_full(),
            retention_diff: default_retention_diff(),
            schedule: true,
            full_every: default_full_every(),
            diff_every: default_diff_every(),
            incr_every: default_incr_every(),
        }
    }
}

/// Reads `nanika.toml`'s text. A file that does not parse, or sets a key nanika does not know
/// or a value out of range, is an error finding on its line: the command stops, nothing runs
/// with a value the file did not mean.
pub fn parse(text: &str, file: &Path) -> Parsed<Settings> {
    let lines = key_lines(text);
    let mut findings = Vec::new();
    let value = match toml::from_str::<Settings>(text) {
        Ok(settings) => settings,
        Err(error) => {
            let line = error.span().map(|span| {
                text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            });
            // The parser's message names the value, not its key: the key set on that line says
            // which setting is wrong (`unknown variant \`json\`` alone does not).
            let key = line.and_then(|line| {
                lines
                    .iter()
                    .find(|(_, at)| **at == line)
                    .map(|(key, _)| key.clone())
            });
            let message = error.message().trim();
            let finding = match &key {
                Some(key) if !message.contains(key.rsplit('.').next().unwrap_or(key)) => {
                    Finding::error("invalid-settings", file, format!("{key}: {message}"))
                        .for_key(key.clone())
                }
                Some(key) => Finding::error("invalid-settings", file, message.to_string())
                    .for_key(key.clone()),
                None => Finding::error("invalid-settings", file, message.to_string()),
            };
            findings.push(
                finding
                    .at_optional_line(line)
                    .with_hint(
                        "the keys are [backups] enabled, retention_full, retention_diff, schedule, full_every, diff_every, incr_every; [topology.postgres] replicas, synchronous, ports_from; [topology.redis] mode, ports_from, sentinel_ports_from, down_after_ms, failover_timeout_ms, node_timeout_ms; [monitoring] enabled, prometheus_port, postgres_exporter_port, redis_exporter_port, scrape_interval, retention, backup_metrics_port, alertmanager, alertmanager_port; [logging] postgres (\"stderr\" or \"jsonlog\"); see the README",
                    ),
            );
            Settings::default()
        }
    };
    for (key, number) in [
        ("backups.retention_full", value.backups.retention_full),
        ("backups.retention_diff", value.backups.retention_diff),
    ] {
        if !RETENTION_RANGE.contains(&number) {
            findings.push(
                Finding::error(
                    "out-of-range",
                    file,
                    format!(
                        "{key} = {number} is outside {}..={}",
                        RETENTION_RANGE.start(),
                        RETENTION_RANGE.end()
                    ),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied()),
            );
        }
    }
    if value.topology.postgres.replicas > MAX_POSTGRES_REPLICAS {
        let key = "topology.postgres.replicas";
        findings.push(
            Finding::error(
                "out-of-range",
                file,
                format!(
                    "{key} = {} is more than {MAX_POSTGRES_REPLICAS}",
                    value.topology.postgres.replicas
                ),
            )
            .for_key(key)
            .at_optional_line(lines.get(key).copied()),
        );
    }
    let redis = &value.topology.redis;
    for (key, number) in [
        ("topology.redis.down_after_ms", redis.down_after_ms),
        (
            "topology.redis.failover_timeout_ms",
            redis.failover_timeout_ms,
        ),
        ("topology.redis.node_timeout_ms", redis.node_timeout_ms),
    ] {
        if !TIMEOUT_RANGE_MS.contains(&number) {
            findings.push(
                Finding::error(
                    "out-of-range",
                    file,
                    format!(
                        "{key} = {number} is outside {}..={}",
                        TIMEOUT_RANGE_MS.start(),
                        TIMEOUT_RANGE_MS.end()
                    ),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied()),
            );
        }
    }
    // The monitoring programs run unprivileged: a port below 1024 would fail as they bind it.
    for (key, _, port) in value.monitoring.ports(&BackupSettings {
        enabled: true,
        ..BackupSettings::default()
    }) {
        if port < 1024 {
            findings.push(
                Finding::error(
                    "out-of-range",
                    file,
                    format!("{key} = {port}: the monitoring stack runs unprivileged and cannot listen below 1024"),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied())
                .with_hint("choose a port from 1024 to 65535"),
            );
        }
    }
    for (key, text, most) in [
        (
            "monitoring.scrape_interval",
            &value.monitoring.scrape_interval,
            3600,
        ),
        (
            "monitoring.retention",
            &value.monitoring.retention,
            3650 * 86_400,
        ),
    ] {
        if interval_secs(text).is_some_and(|secs| secs > most) {
            findings.push(
                Finding::error(
                    "out-of-range",
                    file,
                    format!(
                        "{key} = {text:?} is longer than {}",
                        if most == 3600 { "1h" } else { "3650d" }
                    ),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied()),
            );
        }
    }
    if value.backups.enabled && value.topology.postgres.replicas > 0 {
        let key = "topology.postgres.replicas";
        findings.push(
            Finding::error(
                "unsupported-combination",
                file,
                "[backups] enabled with PostgreSQL replicas is not supported yet: pgBackRest's stanza names one data directory, which stops being the primary after a failover".to_string(),
            )
            .for_key(key)
            .at_optional_line(lines.get(key).copied())
            .with_hint("turn one of them off: [backups] enabled = false, or [topology.postgres] replicas = 0"),
        );
    }
    for (key, text) in [
        ("backups.full_every", &value.backups.full_every),
        ("backups.diff_every", &value.backups.diff_every),
        ("backups.incr_every", &value.backups.incr_every),
        (
            "monitoring.scrape_interval",
            &value.monitoring.scrape_interval,
        ),
        ("monitoring.retention", &value.monitoring.retention),
    ] {
        if interval_secs(text).is_none() {
            findings.push(
                Finding::error(
                    "invalid-interval",
                    file,
                    format!("{key} = {text:?} is not an interval"),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied())
                .with_hint("a whole number and a unit: 90s, 15m, 1h, 7d"),
            );
        }
    }
    Parsed {
        value,
        lines,
        findings,
    }
}

/// The line of each `section.key = …` (comments and strings aside, as the file is simple).
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    let mut section = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((key, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            let key = key.trim();
            let full = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            lines.insert(full, index + 1);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Parsed<Settings> {
        parse(text, Path::new(SETTINGS_FILE))
    }

    #[test]
    fn no_section_means_everything_off() {
        let parsed = read("");
        assert!(parsed.findings.is_empty());
        assert_eq!(parsed.value, Settings::default());
        assert!(!parsed.value.backups.enabled);
    }

    #[test]
    fn backups_are_read_with_their_lines() {
        let parsed = read("# ours\n[backups]\nenabled = true\nretention_full = 3\n");
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        assert!(parsed.value.backups.enabled);
        assert_eq!(parsed.value.backups.retention_full, 3);
        assert_eq!(parsed.value.backups.retention_diff, 7);
        assert_eq!(parsed.line_of("backups.retention_full"), Some(4));
    }

    #[test]
    fn an_unknown_key_or_a_wrong_type_is_an_error_on_its_line() {
        let parsed = read("[backups]\nenabled = true\nretention_ful = 3\n");
        let finding = &parsed.findings[0];
        assert_eq!(finding.code, "invalid-settings");
        assert_eq!(finding.line, Some(3));
        assert!(finding.message.contains("retention_ful"), "{finding:?}");

        let parsed = read("[backups]\nenabled = \"yes\"\n");
        assert_eq!(parsed.findings[0].line, Some(2));
    }

    #[test]
    fn intervals_have_a_unit_and_are_refused_otherwise() {
        assert_eq!(interval_secs("90s"), Some(90));
        assert_eq!(interval_secs("15m"), Some(900));
        assert_eq!(interval_secs("7d"), Some(604_800));
        for wrong in ["", "7", "0h", "1w", "h", "-1h", "1.5h"] {
            assert_eq!(interval_secs(wrong), None, "{wrong}");
        }
        let parsed = read("[backups]\nincr_every = \"hourly\"\n");
        assert_eq!(parsed.findings[0].code, "invalid-interval");
        assert_eq!(parsed.findings[0].line, Some(2));
        assert_eq!(
            Settings::default().backups.intervals(),
            Some((604_800, 86_400, 3600))
        );
    }

    #[test]
    fn retention_out_of_range_is_refused() {
        let parsed = read("[backups]\nretention_full = 0\n");
        let finding = &parsed.findings[0];
        assert_eq!(finding.code, "out-of-range");
        assert_eq!(finding.key.as_deref(), Some("backups.retention_full"));
        assert_eq!(finding.line, Some(2));
    }

    #[test]
    fn a_topology_is_read_and_its_ports_follow_the_spec_ports() {
        let parsed = read(
            "[topology.postgres]\nreplicas = 2\nsynchronous = true\n[topology.redis]\nmode = \"sentinel\"\n",
        );
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        let topology = &parsed.value.topology;
        assert!(!topology.is_single());
        assert_eq!(parsed.line_of("topology.redis.mode"), Some(5));
        let ports = topology.ports(5432, 6379).unwrap();
        assert_eq!(ports.postgres_replicas, vec![5433, 5434]);
        assert_eq!(ports.redis_replicas, vec![6380]);
        assert_eq!(ports.sentinels, vec![26379, 26380, 26381]);
        assert!(ports.cluster_nodes.is_empty());
        assert!(Settings::default().topology.is_single());
    }

    #[test]
    fn topology_values_out_of_range_are_refused_on_their_line() {
        let parsed = read("[topology.postgres]\nreplicas = 6\n");
        assert_eq!(parsed.findings[0].code, "out-of-range");
        assert_eq!(parsed.findings[0].line, Some(2));
        let parsed = read("[topology.redis]\nmode = \"cluster\"\nnode_timeout_ms = 5\n");
        assert_eq!(
            parsed.findings[0].key.as_deref(),
            Some("topology.redis.node_timeout_ms")
        );
        let parsed = read("[topology.redis]\nmode = \"ring\"\n");
        assert_eq!(parsed.findings[0].code, "invalid-settings");
        assert_eq!(parsed.findings[0].line, Some(2));
        // Ports past 65535 are said, not wrapped.
        let parsed = read("[topology.redis]\nmode = \"cluster\"\nports_from = 65533\n");
        assert!(parsed.value.topology.ports(5432, 6379).is_err());
    }

    #[test]
    fn monitoring_is_off_by_default_and_read_with_its_ports() {
        assert!(!Settings::default().monitoring.enabled);
        let parsed = read(
            "[monitoring]\nenabled = true\nprometheus_port = 19090\nscrape_interval = \"1s\"\n",
        );
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        let monitoring = &parsed.value.monitoring;
        assert!(monitoring.enabled);
        assert_eq!(monitoring.prometheus_port, 19090);
        assert_eq!(monitoring.postgres_exporter_port, 9187);
        let parsed = read("[monitoring]\nscrape_interval = \"often\"\n");
        assert_eq!(parsed.findings[0].code, "invalid-interval");
        assert_eq!(parsed.findings[0].line, Some(2));
        for wrong in [
            "[monitoring]\nprometheus_port = 80\n",
            "[monitoring]\nbackup_metrics_port = 443\n",
            "[monitoring]\nscrape_interval = \"2h\"\n",
            "[monitoring]\nretention = \"20000d\"\n",
        ] {
            let parsed = read(wrong);
            assert_eq!(parsed.findings[0].code, "out-of-range", "{wrong}");
            assert_eq!(parsed.findings[0].line, Some(2), "{wrong}");
        }
    }

    #[test]
    fn logging_is_stderr_by_default_and_an_unknown_destination_is_refused_with_its_key() {
        assert_eq!(Settings::default().logging.postgres, PostgresLog::Stderr);
        let parsed = read("[logging]\npostgres = \"jsonlog\"\n");
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        assert_eq!(parsed.value.logging.postgres, PostgresLog::Jsonlog);
        let parsed = read("[logging]\npostgres = \"json\"\n");
        let finding = &parsed.findings[0];
        assert_eq!(finding.code, "invalid-settings");
        assert_eq!(finding.line, Some(2));
        assert_eq!(finding.key.as_deref(), Some("logging.postgres"));
        assert!(finding.message.contains("logging.postgres"), "{finding:?}");
        assert!(
            finding
                .hint
                .as_deref()
                .unwrap_or_default()
                .contains("jsonlog")
        );
        let parsed = read("[logging]\nredis = \"jsonlog\"\n");
        assert_eq!(parsed.findings[0].code, "invalid-settings");
        assert_eq!(parsed.findings[0].line, Some(2));
    }

    #[test]
    fn backups_with_replicas_are_refused() {
        let parsed = read("[backups]\nenabled = true\n[topology.postgres]\nreplicas = 1\n");
        assert_eq!(parsed.findings[0].code, "unsupported-combination");
        assert_eq!(parsed.findings[0].line, Some(4));
    }
}
