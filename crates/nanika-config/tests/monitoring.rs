//! The monitoring files under monitoring/ are checked by the tools that will read them: promtool
//! checks alerts.yml and prometheus.yml and runs the rules' unit tests (alerts_test.yml); every
//! query of the Grafana dashboard parses as PromQL; and the rules and the dashboard name only
//! metrics the exporters really export (monitoring/exporter-metrics.txt), so a misspelt metric
//! fails here instead of drawing an empty panel or an alert that can never fire.

use nanika_config::Infrastructure;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .join("monitoring")
}

/// Whether `promtool` (Debian: `prometheus`; `scripts/install-deps` installs it) can run. Without
/// it the promtool tests are skipped with a printed reason, and fail under CI, where it must be.
fn promtool_ready() -> bool {
    let ready = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing: run `scripts/install-deps` (Debian package `prometheus`)"
        );
        eprintln!("skipped: promtool is missing (`scripts/install-deps` installs it)");
    }
    ready
}

/// Runs promtool in `dir` (rule files are named relative to the file naming them) and fails
/// with its whole output, and `context` after it, unless it succeeds.
fn promtool(dir: &Path, args: &[&str], context: &str) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "`promtool {}` in {} failed ({}):\n{}{}{context}",
        args.join(" "),
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    if promtool_ready() {
        promtool(
            &monitoring().join("prometheus"),
            &["check", "rules", "alerts.yml"],
            "",
        );
    }
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    if promtool_ready() {
        promtool(
            &monitoring().join("prometheus"),
            &["test", "rules", "alerts_test.yml"],
            "",
        );
    }
}

#[test]
fn scrape_config_passes_promtool_check() {
    if promtool_ready() {
        promtool(
            &monitoring().join("prometheus"),
            &["check", "config", "prometheus.yml"],
            "",
        );
    }
}

/// The configurations nanika renders for a project (every combination of the backup job and
/// Alertmanager) pass promtool, with the committed rules.
#[test]
fn rendered_scrape_configs_pass_promtool_check() {
    if !promtool_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = monitoring().join("prometheus/alerts.yml");
    for (alertmanager, backups) in [
        (false, None),
        (true, None),
        (false, Some(9854)),
        (true, Some(9854)),
    ] {
        let settings = nanika_config::settings::MonitoringSettings {
            enabled: true,
            alertmanager,
            ..Default::default()
        };
        let text = nanika_config::monitoring::prometheus_config(
            &settings,
            &rules.display().to_string(),
            backups,
        )
        .unwrap();
        fs_err::write(dir.path().join("prometheus.yml"), &text).unwrap();
        promtool(dir.path(), &["check", "config", "prometheus.yml"], &text);
    }
}

#[test]
fn compose_scrape_config_passes_promtool_check() {
    if promtool_ready() {
        promtool(
            &monitoring().join("prometheus"),
            &["check", "config", "prometheus.compose.yml"],
            "",
        );
    }
}

/// The compose profile mounts the committed files the tests above check.
#[test]
fn the_compose_profile_mounts_the_checked_files() {
    let root = monitoring().join("..");
    for file in [
        nanika_config::compose::PROMETHEUS_COMPOSE_CONFIG,
        nanika_config::monitoring::RULES_FILE,
    ] {
        assert!(root.join(file).is_file(), "{file} is missing");
    }
    assert!(
        nanika_config::compose::render(&Infrastructure::spec()).contains(
            "./monitoring/prometheus/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro"
        ),
        "compose.yaml does not mount the checked scrape configuration"
    );
}

/// Grafana's own interval variables, which it replaces before a query reaches Prometheus;
/// promtool sees the duration instead. Any other `$` is a dashboard variable promtool cannot
/// parse, and the test says so rather than guess a value.
const GRAFANA_INTERVALS: &[&str] = &["$__rate_interval", "$__interval", "$__range"];

#[test]
fn dashboard_queries_parse_as_promql() {
    if !promtool_ready() {
        return;
    }
    // promtool has no "parse this expression" command; a recording rule per query makes
    // `check rules` parse each one, and names the panel when one does not.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut panels = String::from("\nwhere");
    for (i, (panel, expr)) in dashboard_queries().iter().enumerate() {
        panels.push_str(&format!("\n  dashboard:query_{i} is in panel {panel:?}"));
        let expr = GRAFANA_INTERVALS
            .iter()
            .fold(expr.clone(), |e, var| e.replace(var, "5m"));
        assert!(
            !expr.contains('$'),
            "panel {panel:?}: a dashboard variable in {expr:?} cannot be checked"
        );
        let expr = serde_json::to_string(&expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    fs_err::write(dir.path().join("dashboard.yml"), rules).expect("write the rules");
    promtool(dir.path(), &["check", "rules", "dashboard.yml"], &panels);
}

#[test]
fn dashboard_names_only_exported_metrics() {
    let known = exported_metrics();
    let queries = dashboard_queries();
    assert!(!queries.is_empty(), "the dashboard has no queries");
    for (panel, expr) in queries {
        let names = exporter_metric_names(&expr);
        assert!(
            !names.is_empty(),
            "panel {panel:?}: {expr:?} names no exporter metric"
        );
        for name in names {
            assert!(
                known.contains(&name),
                "panel {panel:?}: {name} is not in monitoring/exporter-metrics.txt"
            );
        }
    }
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let known = exported_metrics();
    let text = fs_err::read_to_string(monitoring().join("prometheus/alerts.yml")).unwrap();
    let file: RuleFile = serde_saphyr::from_str(&text).expect("alerts.yml parses");
    for rule in file.groups.iter().flat_map(|g| &g.rules) {
        for name in exporter_metric_names(&rule.expr) {
            assert!(
                known.contains(&name),
                "alert {}: {name} is not in monitoring/exporter-metrics.txt",
                rule.alert
            );
        }
    }
}

/// The unit tests feed the settings the spec sets, so the thresholds they test are the spec's
/// (80 % of 100 connections, 90 % of 512 MiB). A change of the spec fails here first.
#[test]
fn alert_unit_tests_use_the_spec_values() {
    let spec = Infrastructure::spec();
    let text = fs_err::read_to_string(monitoring().join("prometheus/alerts_test.yml")).unwrap();
    let file: UnitTestFile = serde_saphyr::from_str(&text).expect("alerts_test.yml parses");
    // maxmemory 0 stands for "no limit", a case of its own in the tests.
    let expected = [
        (
            "pg_settings_max_connections{",
            vec![spec.postgres.max_connections.to_string()],
        ),
        (
            "redis_memory_max_bytes{",
            vec![spec.redis.maxmemory.bytes().to_string(), "0".to_string()],
        ),
    ];
    for (metric, allowed) in expected {
        let series: Vec<_> = file
            .tests
            .iter()
            .flat_map(|t| &t.input_series)
            .filter(|s| s.series.starts_with(metric))
            .collect();
        assert!(!series.is_empty(), "no test feeds {metric}...}}");
        for s in series {
            let first = s.values.split(['x', ' ', '+']).next().unwrap_or_default();
            assert!(
                allowed.iter().any(|a| a == first),
                "{} starts at {first}, not the spec's {}",
                s.series,
                allowed[0]
            );
        }
    }
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: String,
    expr: String,
}

#[derive(Deserialize)]
struct UnitTestFile {
    tests: Vec<UnitTest>,
}

#[derive(Deserialize)]
struct UnitTest {
    input_series: Vec<InputSeries>,
}

#[derive(Deserialize)]
struct InputSeries {
    series: String,
    values: String,
}

/// Every query of the dashboard as (panel title, expr), panels inside rows included.
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(panel: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {title:?}: a target without a PromQL expr");
            });
            out.push((title.to_string(), expr.to_string()));
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            walk(inner, out);
        }
    }
    let text = fs_err::read_to_string(monitoring().join("grafana/nanika-overview.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// The committed list of the exporters' metric names.
fn exported_metrics() -> BTreeSet<String> {
    fs_err::read_to_string(monitoring().join("exporter-metrics.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The identifiers of `expr` with an exporter's prefix (`pg_`, `redis_`): a deliberately small
/// tokenizer that skips quoted strings (label values) and `$` variables. Label and function
/// names never carry those prefixes, so what remains are metric names.
fn exporter_metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if d == c && !escaped {
                        break;
                    }
                    escaped = d == '\\' && !escaped;
                }
            }
            '$' => {
                while chars
                    .next_if(|d| d.is_ascii_alphanumeric() || *d == '_')
                    .is_some()
                {}
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut ident = c.to_string();
                while let Some(d) =
                    chars.next_if(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == ':')
                {
                    ident.push(d);
                }
                if ident.starts_with("pg_") || ident.starts_with("redis_") {
                    names.insert(ident);
                }
            }
            // A number's digits would otherwise start no identifier but could run into one
            // (`5m`); durations and numbers carry no metric names.
            c if c.is_ascii_digit() => {
                while chars
                    .next_if(|d| d.is_ascii_alphanumeric() || *d == '.')
                    .is_some()
                {}
            }
            _ => {}
        }
    }
    names
}

#[test]
fn the_tokenizer_finds_metrics_and_skips_labels_and_strings() {
    let names = exporter_metric_names(
        r#"sum by (instance) (rate(pg_stat_database_blks_hit{datname="pg_x"}[$__rate_interval])) / redis_up"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["pg_stat_database_blks_hit", "redis_up"]
    );
}

/// monitoring/vector.toml, and again with its commented sinks switched on: Vector is not a
/// Debian package, so the file is checked here as TOML and for the pipeline it describes.
fn vector_configs() -> [(&'static str, toml::Table); 2] {
    let text = fs_err::read_to_string(monitoring().join("vector.toml")).unwrap();
    // The commented sinks: from the first `# [sinks.…]` line on, `# key = value` lines.
    let mut in_sinks = false;
    let uncommented: String = text
        .lines()
        .map(|line| {
            in_sinks |= line.starts_with("# [sinks.");
            match line.strip_prefix("# ") {
                Some(rest) if in_sinks && (rest.starts_with('[') || rest.contains(" = ")) => rest,
                _ => line,
            }
        })
        .map(|line| format!("{line}\n"))
        .collect();
    [
        ("as committed", text.parse().expect("vector.toml is TOML")),
        (
            "with every sink on",
            uncommented
                .parse()
                .expect("vector.toml's commented sinks are TOML"),
        ),
    ]
}

#[test]
fn the_vector_example_runs_logs_json_and_feeds_every_sink() {
    for (which, config) in vector_configs() {
        let source = &config["sources"]["nanika"];
        assert_eq!(source["type"].as_str(), Some("exec"), "{which}");
        let command: Vec<&str> = source["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(command[0], "nanika", "{which}");
        for arg in ["logs", "--json", "-f"] {
            assert!(command.contains(&arg), "{which}: {command:?} lacks {arg}");
        }
        let remap = &config["transforms"]["nanika_records"];
        assert_eq!(remap["type"].as_str(), Some("remap"));
        assert_eq!(
            remap["inputs"].as_array().unwrap()[0].as_str(),
            Some("nanika")
        );
        assert!(
            remap["source"]
                .as_str()
                .unwrap()
                .contains("parse_json(.message)")
        );
        let sinks = config["sinks"].as_table().unwrap();
        for (name, sink) in sinks {
            assert_eq!(
                sink["inputs"].as_array().unwrap()[0].as_str(),
                Some("nanika_records"),
                "{which}: sink {name}"
            );
        }
        let expected: &[&str] = if which == "as committed" {
            &["console"]
        } else {
            &["console", "elasticsearch", "loki"]
        };
        assert_eq!(
            sinks.keys().map(String::as_str).collect::<Vec<_>>(),
            expected,
            "{which}"
        );
    }
}
