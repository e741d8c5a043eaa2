//! `[monitoring]` with real processes: nanika runs postgres_exporter, redis_exporter and
//! Prometheus beside the servers; Prometheus scrapes both, every query of the committed Grafana
//! dashboard returns data under load, and the alert rules go pending when Redis keeps dying and
//! when connections pass 80 % of max_connections.

mod common;

use common::{PASSWORD, PG_BIN, Stack, eventually, text};
use serde_json::Value;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether the monitoring programs are installed (Debian: `prometheus`,
/// `prometheus-postgres-exporter`, `prometheus-redis-exporter`; `scripts/install-deps --tests`
/// installs them). Without them the test is skipped with a printed reason, and fails under CI.
fn monitoring_installed() -> bool {
    let installed = [
        "prometheus",
        "prometheus-postgres-exporter",
        "prometheus-redis-exporter",
        "prometheus-alertmanager",
    ]
    .iter()
    .all(|program| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|dir| dir.join(program).is_file())
    });
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "the monitoring programs are missing: run `scripts/install-deps --tests`"
        );
        eprintln!("skipped: the monitoring programs are missing (`scripts/install-deps --tests`)");
    }
    installed
}

/// `text` percent-encoded for a URL's query string.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from Prometheus's HTTP API on `port`, its JSON body.
fn api(port: u16, path: &str) -> Value {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{path}: {head}\n{body}");
    serde_json::from_str(body).unwrap()
}

/// An instant query's result vector.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let answer = api(port, &format!("/api/v1/query?query={}", encoded(promql)));
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    answer["data"]["result"].as_array().unwrap().clone()
}

/// The state (`pending`, `firing`) of the alert `name`, when it is active.
fn alert_state(port: u16, name: &str) -> Option<String> {
    api(port, "/api/v1/alerts")["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .map(|a| a["state"].as_str().unwrap().to_string())
}

/// Every query of the committed dashboard as (panel title, expr).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("monitoring/grafana/nanika-overview.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((title.into(), target["expr"].as_str().unwrap().into()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The Redis password of the first test.
const REDIS_PASSWORD: &str = "redis-Secret-0815";

/// Whether `pid` runs: a zombie (an orphan whose new parent has not reaped it yet) does not.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// A `[monitoring]` section on free ports, with `extra` lines after them; and the ports of
/// Prometheus, postgres_exporter and redis_exporter.
/// `nanika doctor --json`'s checks by name (doctor exits 1 when one fails, which some of these
/// moments mean to cause).
fn doctor_checks(stack: &Stack) -> Value {
    let output = stack.run(&["doctor", "--json"]);
    let checks: Vec<Value> =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
    Value::Object(
        checks
            .into_iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c))
            .collect(),
    )
}

fn monitoring_section(extra: &str) -> (String, [u16; 3]) {
    let [prometheus, postgres, redis] = [(); 3].map(|()| nanika_testkit::free_port());
    (
        format!(
            "[monitoring]\nenabled = true\nprometheus_port = {prometheus}\npostgres_exporter_port = {postgres}\nredis_exporter_port = {redis}\n{extra}"
        ),
        [prometheus, postgres, redis],
    )
}

fn app_options(port: u16) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("nanika_user")
        .password(PASSWORD)
        .database("nanika_game")
}

#[test]
fn prometheus_scrapes_both_servers_the_dashboard_has_data_and_alerts_go_pending() {
    if !monitoring_installed() {
        return;
    }
    let stack = Stack::new();
    let (settings, [prometheus, pg_exporter, redis_exporter]) =
        monitoring_section("scrape_interval = \"1s\"\n");
    stack.project.write("nanika.toml", &settings);
    // A Redis password, which redis_exporter reads from its password file.
    stack.project.replace(
        ".env",
        "# REDIS_PASSWORD=",
        &format!("REDIS_PASSWORD={REDIS_PASSWORD}"),
    );
    stack.project.replace(
        ".env",
        "redis://localhost",
        &format!("redis://:{REDIS_PASSWORD}@localhost"),
    );
    stack.up();

    // ps lists the stack, env names Prometheus.
    for (name, port) in [
        ("postgres-exporter", pg_exporter),
        ("redis-exporter", redis_exporter),
        ("prometheus", prometheus),
    ] {
        let row = stack.service(name);
        assert_eq!(row["state"], "healthy", "{row}");
        assert_eq!(row["port"], port, "{row}");
        assert!(row["version"].is_string(), "{row}");
    }
    let env = text(&stack.run(&["env", "--format", "json"]));
    assert!(
        env.contains(&format!(
            "\"PROMETHEUS_URL\": \"http://127.0.0.1:{prometheus}\""
        )),
        "{env}"
    );

    // The exporter's role reads statistics and nothing else; its password is in no plan file.
    assert_eq!(
        stack.psql("SELECT rolsuper, pg_has_role('nanika_monitor', 'pg_monitor', 'member') FROM pg_roles WHERE rolname = 'nanika_monitor'"),
        "f|t"
    );
    // The stack starts from an empty environment, not the one `nanika up` ran in.
    for name in ["prometheus", "postgres-exporter"] {
        let pid = stack.service(name)["pid"].as_i64().unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(!environ.contains("NANIKA_CACHE_DIR"), "{name}: {environ}");
        assert!(environ.contains("PATH="), "{name}: {environ}");
    }
    let plan = std::fs::read_to_string(stack.root.join(".nanika/run/plan.json")).unwrap();
    assert!(plan.contains("DATA_SOURCE_PASS_FILE"), "{plan}");
    assert!(!plan.contains(PASSWORD), "{plan}");
    assert!(!plan.contains(REDIS_PASSWORD), "{plan}");

    // Every target up: both exporters reach their servers (pg_up and redis_up read 1).
    assert!(
        eventually(Duration::from_secs(60), || {
            let targets = api(prometheus, "/api/v1/targets");
            let active = targets["data"]["activeTargets"].as_array().unwrap().clone();
            active.len() == 3 && active.iter().all(|t| t["health"] == "up")
        }),
        "not every target came up: {}",
        api(prometheus, "/api/v1/targets")
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            query(prometheus, "pg_up == 1").len() == 1
                && query(prometheus, "redis_up == 1").len() == 1
        }),
        "the exporters do not reach the servers"
    );
    // doctor reads the same: the stack answers and every target is up.
    let checks = doctor_checks(&stack);
    assert_eq!(checks["monitoring.services"]["verdict"], "ok", "{checks}");
    assert_eq!(checks["monitoring.targets"]["verdict"], "ok", "{checks}");
    assert!(
        checks["monitoring.targets"]["seen"]
            .as_str()
            .unwrap()
            .contains("all 3 targets up"),
        "{checks}"
    );

    // redis_exporter logs in as a user that reaches no key: its open /scrape endpoint shows
    // nothing of the data, whoever asks on loopback.
    let set = Command::new("redis-cli")
        .args(["-p", &stack.redis_port.to_string(), "--no-auth-warning"])
        .args([
            "-a",
            REDIS_PASSWORD,
            "SET",
            "session:x",
            "secret-session-value",
        ])
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", text(&set));
    let mut scrape = std::net::TcpStream::connect(("127.0.0.1", redis_exporter)).unwrap();
    write!(
        scrape,
        "GET /scrape?target=redis://127.0.0.1:{}&check-keys=db0%3D* HTTP/1.0\r\n\r\n",
        stack.redis_port
    )
    .unwrap();
    let mut page = String::new();
    scrape.read_to_string(&mut page).unwrap();
    assert!(page.contains("redis_up 1"), "{page}");
    assert!(!page.contains("secret-session-value"), "{page}");

    // Load on both servers, then every query of the dashboard returns data.
    let pg_port = stack.pg_port.to_string();
    let bench = |args: &[&str]| {
        let output = Command::new(format!("{PG_BIN}/pgbench"))
            .args(args)
            .args(["-h", "127.0.0.1", "-p", &pg_port, "-U", "nanika_user"])
            .arg("nanika_game")
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
    };
    bench(&["-i", "-s", "1", "-q"]);
    bench(&["-n", "-c", "4", "-T", "3"]);
    let redis = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &stack.redis_port.to_string()])
        .args([
            "-a",
            REDIS_PASSWORD,
            "-n",
            "20000",
            "-r",
            "1000",
            "-t",
            "set,get",
            "-q",
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(redis.status.success(), "{}", text(&redis));
    for (panel, expr) in dashboard_queries() {
        let expr = expr.replace("$__rate_interval", "1m");
        assert!(
            eventually(Duration::from_secs(30), || !query(prometheus, &expr)
                .is_empty()),
            "panel {panel:?}: {expr} returns no data"
        );
    }

    // More than 80 % of max_connections (100): PostgresConnectionsHigh goes pending.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let held: Vec<PgConnection> = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..85 {
            held.push(
                PgConnection::connect_with(&app_options(stack.pg_port))
                    .await
                    .unwrap(),
            );
        }
        held
    });
    assert!(
        eventually(Duration::from_secs(30), || alert_state(
            prometheus,
            "PostgresConnectionsHigh"
        )
        .is_some()),
        "85 of 100 connections raised no alert: {}",
        api(prometheus, "/api/v1/alerts")
    );
    runtime.block_on(async {
        for connection in held {
            let _ = connection.close().await;
        }
    });

    // Redis killed whenever it is back: the supervisor's backoff leaves it down for seconds,
    // and RedisDown goes pending.
    let mut state = None;
    let pending = eventually(Duration::from_secs(60), || {
        if let Some(pid) = stack.service("redis")["pid"].as_i64() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        state = alert_state(prometheus, "RedisDown");
        state.is_some()
    });
    assert!(
        pending,
        "RedisDown never went pending: {}",
        api(prometheus, "/api/v1/alerts")
    );
    assert!(
        matches!(state.as_deref(), Some("pending" | "firing")),
        "{state:?}"
    );
    // doctor names the alert.
    let checks = doctor_checks(&stack);
    assert_eq!(checks["monitoring.alerts"]["verdict"], "warn", "{checks}");
    assert!(
        checks["monitoring.alerts"]["seen"]
            .as_str()
            .unwrap()
            .contains("RedisDown ("),
        "{checks}"
    );

    // The stack's own logs are records too.
    let logs = stack.run(&["logs", "prometheus", "--json", "-n", "50"]);
    assert!(logs.status.success(), "{}", text(&logs));
    let records: Vec<Value> = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        records.iter().any(|r| r["service"] == "prometheus"
            && r["level"] == "info"
            && r["timestamp"].is_string()),
        "{records:?}"
    );
}

#[test]
fn turning_monitoring_off_stops_the_stack_and_down_leaves_nothing() {
    if !monitoring_installed() {
        return;
    }
    let stack = Stack::new();
    let (settings, _) = monitoring_section("");
    stack.project.write("nanika.toml", &settings);
    stack.up();
    let pid = stack.service("prometheus")["pid"].as_i64().unwrap();

    stack.project.write(
        "nanika.toml",
        &settings.replace("enabled = true", "enabled = false"),
    );
    let output = stack.up();
    assert!(
        text(&output).contains("stopped prometheus: nanika.toml no longer asks for it"),
        "{}",
        text(&output)
    );
    assert!(
        eventually(Duration::from_secs(15), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "Prometheus (pid {pid}) still runs"
    );
    let rows = stack.status();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["service"] != "prometheus"),
        "{rows}"
    );

    // On again; `restart` takes a monitoring service by name.
    stack.project.write("nanika.toml", &settings);
    stack.up();
    let before = stack.service("prometheus")["pid"].as_i64().unwrap();
    let restarted = stack.run(&["restart", "prometheus"]);
    assert!(restarted.status.success(), "{}", text(&restarted));
    let row = stack.service("prometheus");
    assert_eq!(row["state"], "healthy", "{row}");
    assert_ne!(row["pid"].as_i64().unwrap(), before, "{row}");

    // The supervisor is killed, so the stack runs orphaned: `ps` finds each process
    // of it from the process itself, and `down` stops them all.
    let pids: Vec<i64> = ["postgres-exporter", "redis-exporter", "prometheus"]
        .iter()
        .map(|name| stack.service(name)["pid"].as_i64().unwrap())
        .collect();
    let supervisor: i32 = std::fs::read_to_string(stack.root.join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(
            Duration::from_secs(10),
            || stack.service("prometheus")["state"] == "unsupervised"
        ),
        "{}",
        stack.service("prometheus")
    );
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived `nanika down`");
    }
}

#[test]
fn a_monitoring_port_taken_by_a_server_is_refused_with_its_key() {
    let stack = Stack::new();
    stack.project.write(
        "nanika.toml",
        &format!(
            "[monitoring]\nenabled = true\nprometheus_port = {}\n",
            stack.redis_port
        ),
    );
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert!(
        said.contains("nanika.toml:3")
            && said.contains("monitoring.prometheus_port")
            && said.contains("REDIS_PORT"),
        "{said}"
    );
}

#[test]
fn with_scheduled_backups_prometheus_reads_the_schedule_and_backup_failing_fires() {
    if !monitoring_installed() {
        return;
    }
    let pgbackrest = Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !pgbackrest {
        assert!(
            std::env::var_os("CI").is_none(),
            "pgbackrest is missing: scripts/install-deps --tests installs it"
        );
        eprintln!("skipped: pgbackrest is missing");
        return;
    }
    let stack = Stack::new();
    let alertmanager = nanika_testkit::free_port();
    let (settings, [prometheus, ..]) = monitoring_section(&format!(
        "backup_metrics_port = {}\nscrape_interval = \"1s\"\nalertmanager = true\nalertmanager_port = {alertmanager}\n",
        nanika_testkit::free_port()
    ));
    stack.project.write(
        "nanika.toml",
        &format!("[backups]\nenabled = true\nincr_every = \"3s\"\n{settings}"),
    );
    stack.up();
    let limit = Duration::from_secs(90);
    assert!(
        eventually(limit, || {
            query(prometheus, "up{job=\"nanika\"} == 1").len() == 1
                && query(prometheus, "nanika_backup_last_run_success{kind=\"postgres\"} == 1").len() == 1
                && query(
                    prometheus,
                    "time() - nanika_backup_last_success_timestamp_seconds{kind=\"postgres\"} < 600",
                )
                .len()
                    == 1
        }),
        "the schedule's first backup never showed in Prometheus: {:?}",
        query(prometheus, "{job=\"nanika\"}")
    );
    assert_eq!(alert_state(prometheus, "BackupTooOld"), None);

    // The repository becomes unwritable: the next scheduled backup fails, and the alert fires.
    let _unwritable = common::UnwritableRepository::new(&stack);
    assert!(
        eventually(limit, || alert_state(prometheus, "BackupFailing")
            .as_deref()
            == Some("firing")),
        "BackupFailing never fired: {}",
        api(prometheus, "/api/v1/alerts")
    );
    // Prometheus sends the firing alert on to Alertmanager.
    assert_eq!(stack.service("alertmanager")["state"], "healthy");
    let env = text(&stack.run(&["env", "--format", "json"]));
    assert!(
        env.contains(&format!(
            "\"ALERTMANAGER_URL\": \"http://127.0.0.1:{alertmanager}\""
        )),
        "{env}"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            api(alertmanager, "/api/v2/alerts")
                .as_array()
                .is_some_and(|alerts| {
                    alerts
                        .iter()
                        .any(|a| a["labels"]["alertname"] == "BackupFailing")
                })
        }),
        "Alertmanager never received BackupFailing: {}",
        api(alertmanager, "/api/v2/alerts")
    );
}

#[test]
fn with_replicas_the_primarys_exporter_reports_each_replicas_lag() {
    if !monitoring_installed() {
        return;
    }
    let stack = Stack::new();
    let first = nanika_testkit::free_port_run(1, None);
    let (settings, [prometheus, ..]) = monitoring_section("scrape_interval = \"1s\"\n");
    stack.project.write(
        "nanika.toml",
        &format!("[topology.postgres]\nreplicas = 1\nports_from = {first}\n{settings}"),
    );
    stack.up();
    let mut seen = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            seen = query(
                prometheus,
                "pg_replica_lag_bytes{application_name=\"postgres_replica_1\"}",
            );
            seen.len() == 1
                && query(
                    prometheus,
                    "pg_replica_replay_lag_seconds{application_name=\"postgres_replica_1\"} < 30",
                )
                .len()
                    == 1
        }),
        "no lag series for the replica: {seen:?}"
    );
    assert_eq!(alert_state(prometheus, "PostgresReplicationLag"), None);
}

/// The names of the alerting rules Prometheus has loaded.
fn loaded_rules(port: u16) -> Vec<String> {
    api(port, "/api/v1/rules")["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_projects_own_rules_are_loaded_reloaded_by_up_and_never_read_through_a_link() {
    if !monitoring_installed() {
        return;
    }
    let stack = Stack::new();
    let (settings, [prometheus, ..]) = monitoring_section("");
    stack.project.write("nanika.toml", &settings);
    let rules = |name: &str| {
        format!(
            "groups:\n  - name: project\n    rules:\n      - alert: {name}\n        expr: vector(1)\n"
        )
    };
    std::fs::create_dir_all(stack.root.join("monitoring/prometheus")).unwrap();
    stack
        .project
        .write("monitoring/prometheus/alerts.yml", &rules("ProjectRule"));
    stack.up();
    assert!(
        eventually(Duration::from_secs(30), || loaded_rules(prometheus)
            == ["ProjectRule"]),
        "{:?}",
        loaded_rules(prometheus)
    );

    // An edited file reaches the running Prometheus with the next `up`.
    stack
        .project
        .write("monitoring/prometheus/alerts.yml", &rules("ProjectRuleTwo"));
    let output = stack.up();
    assert!(
        text(&output).contains("Prometheus reloaded its alert rules"),
        "{}",
        text(&output)
    );
    assert!(
        eventually(Duration::from_secs(30), || loaded_rules(prometheus)
            == ["ProjectRuleTwo"]),
        "{:?}",
        loaded_rules(prometheus)
    );

    // A setting on Prometheus's command line restarts it with the next `up`.
    stack
        .project
        .write("nanika.toml", &format!("{settings}retention = \"1d\"\n"));
    let output = stack.up();
    assert!(
        text(&output).contains("restarted prometheus: its settings changed"),
        "{}",
        text(&output)
    );
    let plan = std::fs::read_to_string(stack.root.join(".nanika/run/plan.json")).unwrap();
    assert!(plan.contains("--storage.tsdb.retention.time=1d"), "{plan}");
    // When `up` returns, the Prometheus that answers is the new one.
    let pid = stack.service("prometheus")["pid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--storage.tsdb.retention.time=1d"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );

    // A link in its place is refused: nanika, root here, never copies what it points at to the
    // server user.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "not for the server user").unwrap();
    let file = stack.root.join("monitoring/prometheus/alerts.yml");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(secret.path(), &file).unwrap();
    let refused = stack.run(&["up"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("symbolic link"),
        "{}",
        text(&refused)
    );
    assert_eq!(loaded_rules(prometheus), ["ProjectRuleTwo"]);
}
