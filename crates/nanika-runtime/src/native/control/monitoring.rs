//! The monitoring stack of `[monitoring]`: postgres_exporter, redis_exporter and Prometheus run
//! by the supervisor beside the servers, on loopback, as PostgreSQL's unprivileged server user,
//! each in its own directory of PostgreSQL's home (which is how nanika proves them its own).
//! postgres_exporter connects as [`MONITOR_ROLE`], a member of `pg_monitor` and nothing else.

use super::Native;
use super::topology::write_server_file;
use crate::error::{Result, RuntimeError};
use crate::health::{Prober, quote_ident};
use crate::native::binaries::{self, MonitorBinary};
use crate::native::safe_fs::{Dir, Expect};
use crate::native::supervisor::ServicePlan;
use crate::{Progress, Service};
use nanika_config::Secret;
use nanika_config::monitoring::{
    ALERT_RULES, ALERTMANAGER_CONFIG, ALERTMANAGER_FILE, EXPORTER_QUERIES, MONITOR_ROLE,
    RULES_FILE, prometheus_config, redis_exporter_passwords,
};
use nix::unistd::Uid;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The Redis user redis_exporter logs in as when Redis has a password: it may run the commands
/// the exporter reads its figures with, and reach no key, so that the exporter's open `/scrape`
/// endpoint can show nothing of the data to whoever reaches it on loopback.
pub const REDIS_MONITOR_USER: &str = "nanika_monitor";

/// The ACL rules of [`REDIS_MONITOR_USER`], after its password.
const REDIS_MONITOR_RULES: &str = "resetkeys resetchannels -@all +ping +info +config|get +client|list +client|setname +slowlog|get +slowlog|len +latency|latest +latency|histogram +cluster|info +memory|stats +select +hello +auth";

/// The file in `.nanika/run` holding [`REDIS_MONITOR_USER`]'s password.
const REDIS_MONITOR_PASSWORD_FILE: &str = "redis-monitor.password";

/// The largest alert rules file nanika copies for Prometheus.
const MAX_RULES_BYTES: usize = 4 << 20;

/// The file in postgres_exporter's directory holding [`MONITOR_ROLE`]'s password.
const MONITOR_PASSWORD_FILE: &str = "password";

/// Whether the HTTP server on `port` answers `path` with 200 within `timeout`.
pub fn http_ok(port: u16, path: &str, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..read]);
    head.starts_with("HTTP/") && head.split_whitespace().nth(1) == Some("200")
}

/// The body of a 200 answer of the HTTP server on `port` to `GET path`, read up to
/// `max_bytes` within `timeout`; `None` for anything else.
fn http_body(port: u16, path: &str, timeout: Duration, max_bytes: u64) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = Vec::new();
    stream.take(max_bytes).read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8(answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/") && head.split_whitespace().nth(1) == Some("200"))
        .then(|| body.to_string())
}

/// A scrape target as Prometheus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    /// The job (`postgres`, `redis`, `prometheus`, …).
    pub job: String,
    /// The address scraped.
    pub instance: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed, when it did.
    pub last_error: String,
}

/// An alert Prometheus holds: pending (its condition holds, not yet for its `for`) or firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertReport {
    /// The rule's name (`RedisDown`).
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    /// The rule's summary annotation, when it has one.
    pub summary: String,
}

/// What the project's Prometheus says of its targets and alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusReport {
    /// Every active target.
    pub targets: Vec<TargetReport>,
    /// Every pending or firing alert.
    pub alerts: Vec<AlertReport>,
}

/// The largest answer of Prometheus's API nanika reads.
const MAX_API_BYTES: u64 = 8 << 20;

/// The `data` of a Prometheus API answer on `port`.
fn prometheus_api(port: u16, path: &str) -> Option<serde_json::Value> {
    let body = http_body(port, path, Duration::from_secs(2), MAX_API_BYTES)?;
    let mut answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    (answer["status"] == "success").then(|| answer["data"].take())
}

impl Native<'_> {
    /// What the project's Prometheus says of its targets and alerts, read through its HTTP API
    /// on loopback; `None` when monitoring is off or it does not answer. The caller proves the
    /// listener is nanika's Prometheus first (`status` does): another project's would answer
    /// alike.
    pub fn prometheus_report(&self) -> Option<PrometheusReport> {
        let settings = &self.loaded.settings.monitoring;
        if !settings.enabled {
            return None;
        }
        let port = settings.prometheus_port;
        let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
        let targets = prometheus_api(port, "/api/v1/targets?state=active")?["activeTargets"]
            .as_array()?
            .iter()
            .map(|t| TargetReport {
                job: text(&t["labels"]["job"]),
                instance: text(&t["labels"]["instance"]),
                health: text(&t["health"]),
                last_error: text(&t["lastError"]),
            })
            .collect();
        let alerts = prometheus_api(port, "/api/v1/alerts")?["alerts"]
            .as_array()?
            .iter()
            .map(|a| AlertReport {
                name: text(&a["labels"]["alertname"]),
                state: text(&a["state"]),
                summary: text(&a["annotations"]["summary"]),
            })
            .collect();
        Some(PrometheusReport { targets, alerts })
    }

    /// The monitoring services `nanika.toml` asks for.
    pub fn monitoring_nodes(&self) -> Vec<Service> {
        Service::monitoring(&self.loaded.settings.monitoring)
    }

    /// The port the settings give a monitoring service.
    pub(super) fn monitor_port(&self, service: Service) -> u16 {
        let settings = &self.loaded.settings.monitoring;
        match service {
            Service::PostgresExporter => settings.postgres_exporter_port,
            Service::RedisExporter => settings.redis_exporter_port,
            Service::Alertmanager => settings.alertmanager_port,
            _ => settings.prometheus_port,
        }
    }

    /// Whether a monitoring service answers: Prometheus when it is ready to serve queries, an
    /// exporter when its HTTP server answers (its landing page, which queries nothing).
    pub(super) fn monitor_answers(&self, service: Service, port: u16) -> bool {
        let path = if matches!(service, Service::Prometheus | Service::Alertmanager) {
            "/-/ready"
        } else {
            "/"
        };
        http_ok(port, path, Duration::from_secs(2))
    }

    /// [`REDIS_MONITOR_USER`]'s password, made once and kept owner-only in `.nanika/run`.
    fn redis_monitor_password(&self) -> Result<Secret> {
        let run = self.layout().open_run()?;
        match run.read_small_file(REDIS_MONITOR_PASSWORD_FILE, 4096)? {
            Some(bytes) if !bytes.is_empty() => Ok(Secret::new(
                String::from_utf8_lossy(&bytes).trim().to_string(),
            )),
            _ => {
                let password = super::random_password()?;
                run.replace_file(
                    REDIS_MONITOR_PASSWORD_FILE,
                    password.expose().as_bytes(),
                    0o600,
                )?;
                Ok(password)
            }
        }
    }

    /// The `user` line Redis's own config gets for redis_exporter, so that the user survives a
    /// restart of Redis; empty when monitoring is off or Redis has no password (then every
    /// client is the default user anyway).
    pub(super) fn redis_monitor_acl(&self) -> Result<String> {
        if !self.loaded.settings.monitoring.enabled || self.loaded.infra.redis_password().is_none()
        {
            return Ok(String::new());
        }
        let password = self.redis_monitor_password()?;
        Ok(format!(
            "\n# Added by nanika for nanika.toml's [monitoring]: redis_exporter's user, no keys.\nuser {REDIS_MONITOR_USER} on >{} {REDIS_MONITOR_RULES}\n",
            password.expose()
        ))
    }

    /// Gives the running Redis [`REDIS_MONITOR_USER`] (its config has it from its next start)
    /// after proving the server on the port is this project's; returns the user's password.
    fn prepare_redis_monitor_user(&self, admin: &Secret) -> Result<Secret> {
        let password = self.redis_monitor_password()?;
        let port = self.port(Service::Redis);
        let timeout = Duration::from_secs(5);
        let failed = |why: String| self.start_failed(Service::RedisExporter, why);
        let pid = crate::health::redis_server_pid("127.0.0.1", port, "", Some(admin), timeout)
            .map_err(|e| failed(format!("Redis on port {port} did not say its pid: {e}")))?;
        let ours = self
            .state
            .read_status()
            .and_then(|status| status.services.get(&Service::Redis)?.pid);
        if ours != Some(pid) {
            return Err(failed(format!(
                "the Redis answering on port {port} (pid {pid}) is not the one this project's supervisor runs; nothing was changed in it"
            )));
        }
        let secret = format!(">{}", password.expose());
        let mut args = vec!["ACL", "SETUSER", REDIS_MONITOR_USER, "reset", "on", &secret];
        args.extend(REDIS_MONITOR_RULES.split(' '));
        crate::health::redis_command(port, Some(admin), &args, timeout).map_err(|e| {
            failed(format!(
                "Redis refused to make the user {REDIS_MONITOR_USER}: {e}"
            ))
        })?;
        Ok(password)
    }

    /// The Prometheus URL the app and the user query (`PROMETHEUS_URL`).
    pub fn prometheus_url(&self) -> Option<String> {
        self.loaded.settings.monitoring.enabled.then(|| {
            format!(
                "http://127.0.0.1:{}",
                self.loaded.settings.monitoring.prometheus_port
            )
        })
    }

    /// A monitoring service's directory in PostgreSQL's home, made owner-only for the server
    /// user (or opened, when it is already a real directory of theirs or nanika's).
    fn monitor_dir(&self, service: Service) -> Result<Dir> {
        let layout = self.layout();
        let home = layout.open_postgres_home()?;
        let server = layout
            .server_user
            .as_ref()
            .map_or(Uid::effective().as_raw(), |u| u.uid);
        let (dir, _) = home.make_dir_expecting(
            &super::data_dir_name(service),
            0o700,
            Expect {
                owners: &[Uid::effective().as_raw(), server],
                mode: None,
            },
        )?;
        dir.set_mode(0o700)?;
        if let Some(user) = &layout.server_user {
            dir.set_owner(user.uid, user.gid)?;
        }
        Ok(dir)
    }

    /// Makes sure PostgreSQL has [`MONITOR_ROLE`] with the password postgres_exporter reads,
    /// and returns that password's file. The role can read statistics (`pg_monitor`), not data.
    fn prepare_monitor_role(&self, dir: &Dir) -> Result<std::path::PathBuf> {
        let existing = dir
            .read_small_file(MONITOR_PASSWORD_FILE, 4096)?
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .filter(|text| !text.is_empty());
        let password = match existing {
            Some(text) => Secret::new(text),
            None => super::random_password()?,
        };
        let role = quote_ident(MONITOR_ROLE);
        let literal = password.expose().replace('\'', "''");
        let statements = vec![
            format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MONITOR_ROLE}') THEN CREATE ROLE {role} LOGIN; END IF; END $$"
            ),
            format!(
                "ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 3 PASSWORD '{literal}'"
            ),
            format!("GRANT pg_monitor TO {role}"),
        ];
        // Only the cluster's superuser may make the role; the app's role is never tried instead.
        if self.admin_target().is_none()
            && self.loaded.infra.env.postgres_user != crate::native::postgres::ADMIN_ROLE
        {
            return Err(self.start_failed(
                Service::PostgresExporter,
                format!(
                    "the cluster's superuser password ({}) is gone, so nanika cannot make the monitoring role {MONITOR_ROLE}; put the file back, or set [monitoring] enabled = false",
                    self.layout().postgres_admin_password_file().display()
                ),
            ));
        }
        // The role is made on the primary (a standby refuses it) and reaches the rest by WAL.
        let port = self
            .postgres_primary()
            .map_or(self.port(Service::Postgres), |(_, port)| port);
        Prober::new()
            .map_err(RuntimeError::io("cannot start the health checks"))?
            .execute_quietly(
                &self.superuser_on(port),
                "postgres",
                &statements,
                Duration::from_secs(10),
            )
            .map_err(|e| {
                self.start_failed(
                    Service::PostgresExporter,
                    format!(
                        "PostgreSQL refused to prepare the monitoring role {MONITOR_ROLE}: {e}"
                    ),
                )
            })?;
        write_server_file(self, dir, MONITOR_PASSWORD_FILE, password.expose())?;
        Ok(dir.join(MONITOR_PASSWORD_FILE))
    }

    /// The alert rules Prometheus evaluates: the project's `monitoring/prometheus/alerts.yml`
    /// when it has one, else the rules nanika ships. The project's file is read through no link:
    /// nanika may run as root, and the copy goes to the server user.
    fn alert_rules(&self) -> Result<String> {
        self.project_file(RULES_FILE, ALERT_RULES)
    }

    /// The project's file at `relative` (read through no link, at most [`MAX_RULES_BYTES`]), or
    /// `default` when the project has none.
    fn project_file(&self, relative: &str, default: &str) -> Result<String> {
        let mut dir = Some(Dir::open(self.loaded.project.root())?);
        let (folders, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        for folder in folders.split('/').filter(|f| !f.is_empty()) {
            dir = match dir {
                Some(dir) => dir.open_dir(folder)?,
                None => None,
            };
        }
        let text = match dir {
            Some(dir) => dir.read_small_file(name, MAX_RULES_BYTES)?,
            None => None,
        };
        match text {
            Some(bytes) => String::from_utf8(bytes).map_err(|_| {
                RuntimeError::Other(format!(
                    "{} is not UTF-8 text; nothing was started",
                    self.loaded.project.path(relative).display()
                ))
            }),
            None => Ok(default.to_string()),
        }
    }

    /// Prometheus's configuration and rules, written into its directory; whether either
    /// changed.
    fn write_prometheus_files(&self, dir: &Dir) -> Result<bool> {
        let settings = &self.loaded.settings.monitoring;
        let rules = self.alert_rules()?;
        let config = prometheus_config(
            settings,
            &dir.join("alerts.yml").display().to_string(),
            settings.backup_metrics(&self.loaded.settings.backups),
        )
        .map_err(RuntimeError::Other)?;
        let mut changed = false;
        for (name, text) in [("alerts.yml", &rules), ("prometheus.yml", &config)] {
            if dir.read_small_file(name, MAX_RULES_BYTES)?.as_deref() != Some(text.as_bytes()) {
                write_server_file(self, dir, name, text)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Brings a running Prometheus's rules and configuration up to date with the project (its
    /// `alerts.yml`, `nanika.toml`): written anew and reloaded with SIGHUP, which Prometheus
    /// answers by reading both again. Returns a remark when it did.
    fn refresh_prometheus(&self) -> Result<Option<String>> {
        let dir = self.monitor_dir(Service::Prometheus)?;
        if !self.write_prometheus_files(&dir)? {
            return Ok(None);
        }
        let record = self
            .state
            .read_status()
            .and_then(|status| status.services.get(&Service::Prometheus)?.process.clone());
        match record.map(|record| record.signal(nix::sys::signal::Signal::SIGHUP)) {
            Some(Ok(())) => Ok(Some(
                "Prometheus reloaded its alert rules and configuration".into(),
            )),
            _ => Ok(Some(
                "Prometheus's alert rules and configuration changed; it reads them when it next starts (`nanika down`, then `nanika up`)".into(),
            )),
        }
    }

    /// How to run the monitoring service `service`, its files written into its directory.
    pub(super) fn prepare_monitor(&self, service: Service) -> Result<ServicePlan> {
        let MonitorBinary { program, version } = binaries::find_monitor(&self.search, service)?;
        let layout = self.layout();
        let dir = self.monitor_dir(service)?;
        let port = self.monitor_port(service);
        let listen = format!("127.0.0.1:{port}");
        let mut env = BTreeMap::new();
        let args: Vec<String> = match service {
            Service::PostgresExporter => {
                let password_file = self.prepare_monitor_role(&dir)?;
                write_server_file(self, &dir, "queries.yaml", EXPORTER_QUERIES)?;
                let app = &self.loaded.infra.env;
                env.insert(
                    "DATA_SOURCE_URI".into(),
                    format!(
                        "127.0.0.1:{}/{}?sslmode=disable",
                        self.port(Service::Postgres),
                        app.postgres_db
                    ),
                );
                env.insert("DATA_SOURCE_USER".into(), MONITOR_ROLE.into());
                env.insert(
                    "DATA_SOURCE_PASS_FILE".into(),
                    password_file.display().to_string(),
                );
                vec![
                    format!("--web.listen-address={listen}"),
                    format!("--extend.query-path={}", dir.join("queries.yaml").display()),
                ]
            }
            Service::RedisExporter => {
                let address = format!("redis://127.0.0.1:{}", self.port(Service::Redis));
                let mut args = vec![
                    format!("-redis.addr={address}"),
                    format!("-web.listen-address={listen}"),
                ];
                if let Some(admin) = self.loaded.infra.redis_password() {
                    let password = self.prepare_redis_monitor_user(admin)?;
                    write_server_file(
                        self,
                        &dir,
                        "passwords.json",
                        &redis_exporter_passwords(&address, password.expose()),
                    )?;
                    args.push(format!("-redis.user={REDIS_MONITOR_USER}"));
                    args.push(format!(
                        "-redis.password-file={}",
                        dir.join("passwords.json").display()
                    ));
                }
                args
            }
            Service::Alertmanager => {
                write_server_file(
                    self,
                    &dir,
                    "alertmanager.yml",
                    &self.project_file(ALERTMANAGER_FILE, ALERTMANAGER_CONFIG)?,
                )?;
                vec![
                    format!("--config.file={}", dir.join("alertmanager.yml").display()),
                    format!("--storage.path={}", dir.join("data").display()),
                    format!("--web.listen-address={listen}"),
                    // No cluster of Alertmanagers here: an empty address turns off its gossip
                    // listener, which would otherwise bind port 9094 on every interface.
                    "--cluster.listen-address=".into(),
                ]
            }
            _ => {
                let settings = &self.loaded.settings.monitoring;
                self.write_prometheus_files(&dir)?;
                vec![
                    format!("--config.file={}", dir.join("prometheus.yml").display()),
                    format!("--storage.tsdb.path={}", dir.join("data").display()),
                    format!("--storage.tsdb.retention.time={}", settings.retention),
                    format!("--web.listen-address={listen}"),
                ]
            }
        };
        Ok(ServicePlan {
            program,
            args,
            cwd: dir.path().to_path_buf(),
            run_as: layout.server_user.as_ref().map(|u| (u.uid, u.gid)),
            log: self.log_path(service),
            generation: 0,
            version,
            port,
            restart_hold_ms: 0,
            env,
            clear_env: true,
        })
    }

    /// Starts the monitoring services in `to_start` under the running supervisor and waits
    /// until every one of `wanted` answers; a running Prometheus is brought up to date with the
    /// project's rules and settings. A failure stops what this call started. Returns remarks.
    pub(super) fn up_monitoring(
        &self,
        wanted: &[Service],
        to_start: &[Service],
        plan: &mut crate::native::supervisor::Plan,
        progress: &dyn Progress,
    ) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if wanted.contains(&Service::Prometheus) && !to_start.contains(&Service::Prometheus) {
            notes.extend(self.refresh_prometheus()?);
        }
        // A running service whose command line or environment the settings change now (a
        // retention, a Redis password) restarts with the new one: the supervisor restarts
        // whatever its plan changes.
        let mut changed = Vec::new();
        for service in wanted.iter().filter(|s| !to_start.contains(s)) {
            let fresh = self.prepare_monitor(*service)?;
            if let Some(running) = plan.services.get(service)
                && (&running.program, &running.args, &running.env)
                    != (&fresh.program, &fresh.args, &fresh.env)
            {
                plan.services.insert(*service, fresh);
                changed.push(*service);
            }
        }
        if !changed.is_empty() {
            // The processes to see replaced before any of them counts healthy.
            let status = self.state.read_status();
            let old_pids: Vec<(Service, u32)> = changed
                .iter()
                .filter_map(|s| Some((*s, status.as_ref()?.services.get(s)?.pid?)))
                .collect();
            crate::native::supervisor::write_json(
                &crate::native::supervisor::plan_file(self.layout()),
                &*plan,
            )?;
            self.state
                .signal_supervisor(nix::sys::signal::Signal::SIGHUP)?;
            for (service, pid) in old_pids {
                self.wait_replaced(service, pid)?;
            }
            for service in &changed {
                notes.push(format!("restarted {service}: its settings changed"));
            }
        }
        self.start_under_supervisor(
            wanted,
            to_start,
            plan,
            progress,
            |service| self.prepare_monitor(service),
            || Ok(()),
        )?;
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_nobody_listens_on_is_not_ok() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(!http_ok(port, "/", Duration::from_millis(200)));
    }

    #[test]
    fn a_200_is_ok_and_anything_else_is_not() {
        for (answer, ok) in [
            ("HTTP/1.0 200 OK\r\n\r\n", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
            ("-ERR unknown command\r\n", false),
        ] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 64];
                let _ = stream.read(&mut request);
                stream.write_all(answer.as_bytes()).unwrap();
            });
            assert_eq!(
                http_ok(port, "/-/ready", Duration::from_secs(2)),
                ok,
                "{answer}"
            );
            server.join().unwrap();
        }
    }
}
