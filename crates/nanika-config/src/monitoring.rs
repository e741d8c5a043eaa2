//! The monitoring stack's files for one project (`[monitoring]` in `nanika.toml`): Prometheus's
//! scrape configuration with the project's ports, the alert rules it evaluates, and the extra
//! query postgres_exporter runs. nanika writes them into its state when it starts the stack;
//! the committed `monitoring/` files are their documented, tested source.

use crate::settings::{MonitoringSettings, interval_secs};

/// Where a project keeps its alert rules, relative to its root. When the project has no such
/// file, nanika uses [`ALERT_RULES`], the rules it ships.
pub const RULES_FILE: &str = "monitoring/prometheus/alerts.yml";

/// The alert rules nanika ships (`monitoring/prometheus/alerts.yml`, with its unit tests).
pub const ALERT_RULES: &str = include_str!("../../../monitoring/prometheus/alerts.yml");

/// The name of the role postgres_exporter connects as: a member of `pg_monitor`, nothing more.
pub const MONITOR_ROLE: &str = "nanika_monitor";

/// postgres_exporter's `--extend.query-path` file: the replication lag the
/// `PostgresReplicationLag` rule reads. `pg_replication_lag` (the exporter's own example, 0 on a
/// primary) speaks for the server it watches when that is a standby; `pg_replica_*` is each
/// standby's lag as its primary sees it in `pg_stat_replication`, so the exporter that watches
/// the primary covers every replica (`replay_lag` is NULL, read 0, while nothing is replayed).
pub const EXPORTER_QUERIES: &str = "\
# Written by nanika for postgres_exporter's --extend.query-path.
pg_replica:
  query: \"SELECT application_name, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) AS replay_lag_seconds, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) AS lag_bytes FROM pg_stat_replication WHERE NOT pg_is_in_recovery()\"
  master: true
  metrics:
    - application_name:
        usage: \"LABEL\"
        description: \"The standby's application_name\"
    - replay_lag_seconds:
        usage: \"GAUGE\"
        description: \"How long ago the standby replayed the WAL it last confirmed, in seconds\"
    - lag_bytes:
        usage: \"GAUGE\"
        description: \"WAL bytes written on the primary that the standby has not replayed\"
pg_replication:
  query: \"SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 ELSE GREATEST (0, EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))) END AS lag\"
  master: true
  metrics:
    - lag:
        usage: \"GAUGE\"
        description: \"Replication lag behind master in seconds\"
";

/// Prometheus's configuration: every target on loopback at the project's ports, the rules in
/// `rules_file`, the job names the rules match on (`postgres`, `redis`), and the supervisor's
/// backup metrics (job `nanika`) at `backup_metrics` when backups are scheduled. Refuses a
/// `scrape_interval` that is no interval (reading nanika.toml refuses it first; no default
/// stands in for it here either).
pub fn prometheus_config(
    settings: &MonitoringSettings,
    rules_file: &str,
    backup_metrics: Option<u16>,
) -> Result<String, String> {
    // A rule is evaluated as often as it is fed.
    let interval = interval_secs(&settings.scrape_interval).ok_or_else(|| {
        format!(
            "nanika.toml: [monitoring] scrape_interval = {:?} is not an interval such as \"15s\"",
            settings.scrape_interval
        )
    })?;
    // A scrape must end before the next begins.
    let timeout = interval.min(10);
    let mut text = format!(
        "# Written by nanika from nanika.toml's [monitoring]; rewritten at every `nanika up`.\n\
         global:\n  scrape_interval: {interval}s\n  scrape_timeout: {timeout}s\n  evaluation_interval: {interval}s\n\
         \nrule_files:\n  - {rules}\n\
         \nscrape_configs:\n\
         \x20 - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:{prometheus}\"]\n\
         \x20 - job_name: postgres\n    static_configs:\n      - targets: [\"127.0.0.1:{postgres}\"]\n\
         \x20 - job_name: redis\n    static_configs:\n      - targets: [\"127.0.0.1:{redis}\"]\n",
        rules = yaml_string(rules_file),
        prometheus = settings.prometheus_port,
        postgres = settings.postgres_exporter_port,
        redis = settings.redis_exporter_port,
    );
    // The backup job is the last of scrape_configs; `alerting` is a key of its own after it.
    if let Some(port) = backup_metrics {
        text += &format!(
            "  - job_name: nanika\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        );
    }
    if settings.alertmanager {
        text += &format!(
            "\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{}\"]\n",
            settings.alertmanager_port
        );
    }
    Ok(text)
}

/// `text` as a double-quoted YAML string (a JSON string is one).
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// Where a project keeps its own Alertmanager configuration (receivers, routes), relative to its
/// root; without it, nanika's [`ALERTMANAGER_CONFIG`].
pub const ALERTMANAGER_FILE: &str = "monitoring/alertmanager/alertmanager.yml";

/// Alertmanager's configuration when the project has none: every alert to one receiver that
/// sends nothing, so alerts are grouped, silenced and shown (`$ALERTMANAGER_URL`, `amtool`)
/// until the project adds a receiver of its own (e-mail, Slack, a webhook).
pub const ALERTMANAGER_CONFIG: &str = "\
# Written by nanika: no receiver sends anywhere until the project's
# monitoring/alertmanager/alertmanager.yml says where.
route:
  receiver: nanika
  group_by: [alertname, instance]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: nanika
";

/// redis_exporter's `--redis.password-file`: a JSON object from the Redis address it is given
/// to that Redis's password.
pub fn redis_exporter_passwords(address: &str, password: &str) -> String {
    let mut map = serde_json::Map::new();
    map.insert(address.into(), password.into());
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_interval_that_is_no_interval_is_refused_not_replaced() {
        let settings = MonitoringSettings {
            scrape_interval: "often".into(),
            ..Default::default()
        };
        let refused = prometheus_config(&settings, "alerts.yml", None).unwrap_err();
        assert!(refused.contains("scrape_interval = \"often\""), "{refused}");
    }

    #[test]
    fn the_scrape_configuration_names_the_projects_ports_and_rules() {
        let settings = MonitoringSettings {
            enabled: true,
            prometheus_port: 19090,
            postgres_exporter_port: 19187,
            redis_exporter_port: 19121,
            scrape_interval: "1s".into(),
            ..MonitoringSettings::default()
        };
        let text = prometheus_config(&settings, "/state/prometheus/alerts.yml", None).unwrap();
        assert!(!text.contains("job_name: nanika"));
        for expected in [
            "scrape_interval: 1s",
            "scrape_timeout: 1s",
            "evaluation_interval: 1s",
            "- \"/state/prometheus/alerts.yml\"",
            "job_name: postgres",
            "127.0.0.1:19187",
            "127.0.0.1:19121",
            "127.0.0.1:19090",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        let text = prometheus_config(&settings, "alerts.yml", Some(19854)).unwrap();
        assert!(
            text.contains(
                "job_name: nanika\n    static_configs:\n      - targets: [\"127.0.0.1:19854\"]"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_shipped_rules_are_the_committed_file() {
        assert!(ALERT_RULES.contains("alert: RedisDown"));
        assert_eq!(
            redis_exporter_passwords("redis://127.0.0.1:6380", "p\"w"),
            r#"{"redis://127.0.0.1:6380":"p\"w"}"#
        );
    }
}
