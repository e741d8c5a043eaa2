//! The docker runtime: the project's compose services as the commands see them. Their state as
//! `ps` shows it (read off `docker inspect`), readiness as the app sees it (through the published
//! ports, as for native servers), their logs, and the named volumes that hold their data.

use crate::compose::{Compose, RuntimeKind};
use crate::error::{Result, RuntimeError};
use crate::health::{PostgresTarget, ProbeError, Prober};
use crate::native::control::UpReport;
use crate::native::procfs;
use crate::native::safe_fs::Dir;
use crate::runtime::{Deleted, LogSink, Runtime, RuntimeState};
use crate::{Progress, Service, ServiceState, ServiceStatus};
use nanika_config::project::STATE_DIR;
use nanika_config::{LoadedProject, ValidProject};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long `up` waits for the containers' servers to answer the app once compose says they
/// are healthy (the first start of PostgreSQL runs the image's initdb first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The label nanika puts on the volumes it creates: the checkout whose data they hold (compose
/// labels containers with their checkout, but not volumes).
const CHECKOUT_LABEL: &str = "org.nanika.checkout";

/// Why a container refuses the app's password, and the ways out: the images take the password
/// only when they create the data.
const AUTH_REFUSED: &str = "the password was refused: the postgres image sets POSTGRES_PASSWORD only when it creates the volume, so a password changed in .env since then is not the server's. Put the old one back, change it in the server (`ALTER ROLE … PASSWORD …` through `docker exec -it CONTAINER psql -U USER`), or start over with `nanika down --volumes` (deletes the data); for Redis, REDIS_URL's password must be REDIS_PASSWORD's";

/// The port each service listens on inside its container.
fn container_port(service: Service) -> &'static str {
    match service.kind() {
        Service::Postgres => "5432/tcp",
        _ => "6379/tcp",
    }
}

/// What `docker inspect` says of one container, as far as nanika needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    name: String,
    state: InspectedState,
    restart_count: u32,
    #[serde(default)]
    mounts: Vec<InspectedMount>,
    network_settings: InspectedNetwork,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedState {
    status: String,
    pid: u32,
    exit_code: i64,
    started_at: String,
    health: Option<InspectedHealth>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedHealth {
    status: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedMount {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetwork {
    #[serde(default)]
    ports: Option<BTreeMap<String, Option<Vec<InspectedBinding>>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedBinding {
    host_port: String,
}

impl Inspected {
    fn published_port(&self, service: Service) -> Option<u16> {
        self.network_settings
            .ports
            .as_ref()?
            .get(container_port(service))?
            .as_ref()?
            .iter()
            .find_map(|b| b.host_port.parse().ok())
    }
}

/// Seconds since the epoch of an RFC 3339 time as docker writes it
/// (`2026-11-29T13:47:55.603026524Z`); `None` for docker's zero time or anything unexpected.
fn epoch_seconds(time: &str) -> Option<u64> {
    let (date, clock) = time.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let clock = clock.trim_end_matches('Z');
    let clock = clock.split(['.', '+']).next()?;
    let mut clock = clock.split(':').map(|p| p.parse::<i64>());
    let (hour, minute, second) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    if year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// `line` without terminal control sequences: `docker compose logs` starts lines with a
/// clear-line code even with `--no-color`, which would garble a file or a pipe.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The file laid over the compose file under another project name: the containers get that
/// name (the committed file fixes `nanika-game-db`/`-redis`, which a second project would fight
/// over), and Docker picks the network's subnet (the committed 172.20.0.0/16 would overlap the
/// first project's). Written into `.nanika/`, owner-only, each time, so it always says what the
/// configuration says.
fn write_rename(
    root: &std::path::Path,
    containers: &BTreeMap<Service, String>,
    network: &str,
) -> Result<PathBuf> {
    let mut text = String::from(
        "# Written by nanika for COMPOSE_PROJECT_NAME; edits are overwritten.\nservices:\n",
    );
    for (service, name) in containers {
        text += &format!("  {service}:\n    container_name: {name}\n");
    }
    text += &format!("networks:\n  {network}:\n    ipam: !reset {{}}\n");
    let (state, _) = Dir::open(root)?.make_dir(STATE_DIR, 0o700)?;
    let temp = "compose.rename.yaml.tmp";
    state.remove_file(temp)?;
    let mut file = state.create_file(temp, 0o600)?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(RuntimeError::io("cannot write the compose rename file"))?;
    state.rename_over(temp, RENAME_FILE)?;
    Ok(root.join(STATE_DIR).join(RENAME_FILE))
}

/// Fails unless `output` succeeded or failed only because some of the objects asked about do
/// not exist (what `docker inspect` does for a missing one, while printing the others).
fn only_missing(output: &std::process::Output, what: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.to_lowercase().contains("no such"))
        .collect();
    if output.status.success() || other.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Command {
            command: what.to_string(),
            status: output.status.to_string(),
            stderr: other.join("\n"),
        })
    }
}

/// The compose file nanika lays over the committed one under another project name.
const RENAME_FILE: &str = "compose.rename.yaml";

/// What the docker runtime can do from the compose file alone, whatever the rest of the
/// configuration says: stop the project's containers, delete its volumes, read their logs.
pub struct DockerState {
    compose: Compose,
    containers: BTreeMap<Service, String>,
    volumes: Vec<String>,
}

impl DockerState {
    /// The compose project of `loaded`, once its containers are known not to be another
    /// checkout's (the spec fixes their names, so two checkouts on one engine would share them).
    pub fn new(loaded: &LoadedProject) -> Result<Self> {
        let settings = &loaded.infra.compose;
        let chosen = &loaded.infra.env.compose_project_name;
        let root = loaded.project.root();
        let (mut compose, containers) = if chosen.is_empty() || *chosen == settings.project_name {
            (
                Compose::new(root, &settings.project_name),
                BTreeMap::from([
                    (Service::Postgres, settings.postgres.container_name.clone()),
                    (Service::Redis, settings.redis.container_name.clone()),
                ]),
            )
        } else {
            (
                Compose::new(root, chosen),
                BTreeMap::from([
                    (Service::Postgres, format!("{chosen}-db")),
                    (Service::Redis, format!("{chosen}-redis")),
                ]),
            )
        };
        if compose.name != settings.project_name {
            compose
                .overrides
                .push(write_rename(root, &containers, &settings.network)?);
        }
        let names: Vec<&str> = containers.values().map(String::as_str).collect();
        compose.check_ownership(&names)?;
        let volumes = [&settings.postgres.volume, &settings.redis.volume]
            .iter()
            .map(|v| format!("{}_{v}", compose.name))
            .collect();
        Ok(DockerState {
            compose,
            containers,
            volumes,
        })
    }

    /// The `docker compose` of this project.
    pub fn compose(&self) -> &Compose {
        &self.compose
    }

    fn docker(&self) -> Command {
        let mut command = Command::new(&self.compose.docker);
        command.stdin(Stdio::null());
        command
    }

    fn compose_command(&self, args: &[&str]) -> Command {
        let base = self.compose.base();
        let mut command = Command::new(&base[0]);
        command.args(&base[1..]).args(args).stdin(Stdio::null());
        command
    }

    /// `docker inspect` of the project's containers that exist, by service. A failure other
    /// than "no such container" is an error, never read as "there is none".
    fn inspect(&self) -> Result<BTreeMap<Service, Inspected>> {
        let output = self
            .docker()
            .args(["inspect", "--type", "container"])
            .args(self.containers.values())
            .output()
            .map_err(RuntimeError::io("cannot run docker inspect"))?;
        only_missing(&output, "docker inspect")?;
        // A missing container makes `docker inspect` fail, but it still prints the others.
        let found: Vec<Inspected> = if output.stdout.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            serde_json::from_slice(&output.stdout).map_err(|e| {
                RuntimeError::Other(format!("cannot read what docker inspect printed: {e}"))
            })?
        };
        Ok(self
            .containers
            .iter()
            .filter_map(|(service, name)| {
                found
                    .iter()
                    .find(|i| i.name.trim_start_matches('/') == name)
                    .map(|i| (*service, i.clone()))
            })
            .collect())
    }

    /// The project's volumes that exist, with the checkout nanika labelled each with (empty
    /// for a volume that compose made on its own).
    fn existing_volumes(&self) -> Result<Vec<(String, String)>> {
        let output = self
            .docker()
            .args([
                "volume",
                "inspect",
                "--format",
                &format!("{{{{.Name}}}}\t{{{{index .Labels \"{CHECKOUT_LABEL}\"}}}}"),
            ])
            .args(&self.volumes)
            .output()
            .map_err(RuntimeError::io("cannot run docker volume inspect"))?;
        only_missing(&output, "docker volume inspect")?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, c)| (n.to_string(), c.trim().to_string()))
            .collect())
    }

    fn checkout(&self) -> String {
        std::fs::canonicalize(&self.compose.project)
            .unwrap_or_else(|_| self.compose.project.clone())
            .display()
            .to_string()
    }

    /// Refuses when one of the project's volumes exists but is not provably this checkout's:
    /// labelled with another checkout, or with none and not mounted by this checkout's own
    /// containers. Another checkout that ran `up` and then `down` leaves exactly such volumes,
    /// and `up` here would otherwise start on its data (and `down --volumes` delete it).
    pub fn check_volumes(&self) -> Result<()> {
        let ours = self.checkout();
        let mounted: Vec<String> = self
            .inspect()?
            .values()
            .flat_map(|i| i.mounts.iter().filter_map(|m| m.name.clone()))
            .collect();
        for (volume, owner) in self.existing_volumes()? {
            if owner == ours || (owner.is_empty() && mounted.contains(&volume)) {
                continue;
            }
            return Err(RuntimeError::VolumeOfAnotherCheckout {
                volume,
                owner: PathBuf::from(owner),
                project: self.compose.name.clone(),
            });
        }
        Ok(())
    }

    /// Creates the project's missing volumes before compose does, labelled with this checkout
    /// (compose puts no checkout on a volume), with the labels compose itself would put, so that
    /// compose takes them as its own.
    fn create_volumes(&self) -> Result<()> {
        let existing: Vec<String> = self
            .existing_volumes()?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let prefix = format!("{}_", self.compose.name);
        for volume in self.volumes.iter().filter(|v| !existing.contains(v)) {
            let short = volume.strip_prefix(&prefix).unwrap_or(volume);
            let output = self
                .docker()
                .args(["volume", "create"])
                .args([
                    "--label",
                    &format!("com.docker.compose.project={}", self.compose.name),
                ])
                .args(["--label", &format!("com.docker.compose.volume={short}")])
                .args(["--label", &format!("{CHECKOUT_LABEL}={}", self.checkout())])
                .arg(volume)
                .output()
                .map_err(RuntimeError::io("cannot run docker volume create"))?;
            if !output.status.success() {
                return Err(RuntimeError::Command {
                    command: format!("docker volume create {volume}"),
                    status: output.status.to_string(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
        }
        Ok(())
    }

    /// Runs a compose command, passing its progress lines on (`Container nanika-game-db
    /// Started` becomes the postgres step `started`); its last lines go into the error.
    fn run_reporting(&self, args: &[&str], progress: &dyn Progress) -> Result<()> {
        let mut command = self.compose_command(args);
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(RuntimeError::io("cannot run docker compose"))?;
        let mut last: Vec<String> = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let line = line.trim().to_string();
                let step = line.strip_prefix("Container ").and_then(|rest| {
                    let (name, event) = rest.split_once(char::is_whitespace)?;
                    let service = self
                        .containers
                        .iter()
                        .find(|(_, n)| n.as_str() == name)
                        .map(|(s, _)| *s)?;
                    Some((service, event.trim().to_lowercase()))
                });
                match step {
                    // "healthy" and "stopped" end a spinner: readiness is decided below, by a
                    // real query, not by the healthcheck.
                    Some((service, event)) if event == "healthy" => {
                        progress.step(service, "container healthy")
                    }
                    Some((service, event)) => progress.step(service, &event),
                    None if !line.is_empty() => progress.note(&line),
                    None => {}
                }
                last.push(line);
                if last.len() > 20 {
                    last.remove(0);
                }
            }
        }
        let status = child
            .wait()
            .map_err(RuntimeError::io("cannot wait for docker compose"))?;
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Command {
                command: format!("docker compose {}", args.join(" ")),
                status: status.to_string(),
                stderr: last.join("\n"),
            })
        }
    }
}

impl RuntimeState for DockerState {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    // `--profile "*"` on every `down`: compose leaves the containers of a profile it was not
    // given running (and the network with them), so the `ha` profile's replicas and sentinels
    // would outlive `nanika down`.
    fn down(&self, progress: &dyn Progress) -> Result<Vec<String>> {
        self.run_reporting(&["--profile", "*", "down"], progress)?;
        Ok(Vec::new())
    }

    fn removable(&self) -> Result<Vec<String>> {
        // Before the question: never ask about another checkout's data.
        self.check_volumes()?;
        Ok(self
            .existing_volumes()?
            .into_iter()
            .map(|(name, _)| format!("the docker volume {name}"))
            .collect())
    }

    fn remove_state(&self, progress: &dyn Progress) -> Result<Deleted> {
        self.check_volumes()?;
        let before = self.existing_volumes()?;
        self.run_reporting(&["--profile", "*", "down", "--volumes"], progress)?;
        let after = self.existing_volumes()?;
        if !after.is_empty() {
            let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
            return Err(RuntimeError::Other(format!(
                "the docker volume(s) {} are still there (in use by a container outside this compose project?): see `docker ps -a --filter volume={}`",
                names.join(", "),
                names[0]
            )));
        }
        Ok(Deleted {
            notes: Vec::new(),
            deleted: before
                .into_iter()
                .filter(|v| !after.contains(v))
                .map(|(name, _)| format!("the docker volume {name}"))
                .collect(),
        })
    }

    fn log_tail(&self, service: Service, lines: usize) -> Result<Vec<String>> {
        let output = self
            .compose_command(&[
                "logs",
                "--no-color",
                "--no-log-prefix",
                "--tail",
                &lines.to_string(),
                service.as_str(),
            ])
            .stderr(Stdio::piped())
            .output()
            .map_err(RuntimeError::io("cannot run docker compose logs"))?;
        if !output.status.success() {
            return Err(RuntimeError::Command {
                command: format!("docker compose logs {service}"),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(plain)
            .collect())
    }

    fn follow_logs(&self, services: &[Service], sink: &LogSink) -> Result<()> {
        let mut children = Vec::new();
        for service in services {
            let child = self
                .compose_command(&[
                    "logs",
                    "--follow",
                    "--no-color",
                    "--no-log-prefix",
                    "--tail",
                    "0",
                    service.as_str(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(RuntimeError::io("cannot run docker compose logs"))?;
            children.push((*service, child));
        }
        std::thread::scope(|scope| {
            for (service, child) in &mut children {
                let Some(stdout) = child.stdout.take() else {
                    continue;
                };
                let service = *service;
                scope.spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                        sink(service, &plain(&line));
                    }
                });
            }
        });
        for (_, mut child) in children {
            let _ = child.wait();
        }
        Ok(())
    }
}

/// One of the project's containers, as `doctor` reports it.
#[derive(Debug, Clone)]
pub struct ContainerReport {
    /// The service it runs.
    pub service: Service,
    /// The container's name.
    pub container: String,
    /// Docker's state (`running`, `restarting`, `exited`…), `None` when there is no container.
    pub status: Option<String>,
    /// The healthcheck's verdict (`healthy`, `unhealthy`, `starting`), when it has one.
    pub health: Option<String>,
    /// How often docker restarted it.
    pub restarts: u32,
    /// The exit code of its last run.
    pub exit_code: i64,
}

impl DockerState {
    /// Each of the project's containers, as docker reports it.
    pub fn containers(&self) -> Result<Vec<ContainerReport>> {
        let inspected = self.inspect()?;
        Ok(self
            .containers
            .iter()
            .map(|(service, name)| {
                let found = inspected.get(service);
                ContainerReport {
                    service: *service,
                    container: name.clone(),
                    status: found.map(|i| i.state.status.clone()),
                    health: found.and_then(|i| i.state.health.as_ref().map(|h| h.status.clone())),
                    restarts: found.map_or(0, |i| i.restart_count),
                    exit_code: found.map_or(0, |i| i.state.exit_code),
                }
            })
            .collect())
    }
}

/// The docker runtime of one validated project.
pub struct Docker<'a> {
    valid: &'a ValidProject,
    state: DockerState,
}

impl<'a> Docker<'a> {
    /// The docker runtime of `valid`, once its containers are known not to be another checkout's.
    pub fn new(valid: &'a ValidProject) -> Result<Self> {
        Ok(Docker {
            state: DockerState::new(valid)?,
            valid,
        })
    }

    fn postgres_target(&self, port: u16) -> PostgresTarget {
        let env = &self.valid.infra.env;
        PostgresTarget {
            host: "127.0.0.1".into(),
            port,
            user: env.postgres_user.clone(),
            password: env.postgres_password.clone(),
            database: env.postgres_db.clone(),
        }
    }

    /// One readiness probe as the app on `port`: `SELECT 1` as its user on its database, or
    /// `PING`.
    fn probe(
        &self,
        prober: &Prober,
        service: Service,
        port: u16,
    ) -> std::result::Result<(), ProbeError> {
        let timeout = Duration::from_secs(2);
        match service.kind() {
            Service::Postgres => prober
                .postgres(&self.postgres_target(port), timeout)
                .map(|_| ()),
            _ => crate::health::redis_ping(port, self.valid.infra.redis_password(), timeout),
        }
    }

    /// Refuses a port held by anything but this project's own running container, before compose
    /// starts anything (compose would start one service and leave the other half made).
    fn check_ports(&self, services: &[Service]) -> Result<()> {
        let inspected = self.state.inspect()?;
        for &service in services {
            let port = self.port(service);
            let ours = inspected.get(&service).is_some_and(|c| {
                c.state.status == "running" && c.published_port(service) == Some(port)
            });
            if !ours && !procfs::port_is_free(port) {
                return Err(RuntimeError::PortInUse {
                    service,
                    port,
                    holder: procfs::PortUser::of(port),
                    ephemeral: procfs::ephemeral_ports().filter(|range| range.contains(port)),
                });
            }
        }
        Ok(())
    }

    fn start_failed(&self, service: Service, reason: String) -> RuntimeError {
        RuntimeError::StartFailed {
            service,
            reason,
            log: PathBuf::from(format!("the {service} container's log")),
            log_tail: self
                .state
                .log_tail(service, crate::native::control::LOG_TAIL_LINES)
                .unwrap_or_default(),
        }
    }

    /// Waits until each of `services` answers the app through its published port, as native
    /// `up` does: compose's healthcheck runs inside the container, where the app never is.
    fn wait_ready(&self, services: &[Service], progress: &dyn Progress) -> Result<()> {
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending = services.to_vec();
        let mut pause = Duration::from_millis(5);
        while !pending.is_empty() {
            let mut still = Vec::new();
            for service in pending {
                match self.probe(&prober, service, self.port(service)) {
                    Ok(()) => progress.step(service, "healthy"),
                    // Waiting will not make a refused password or a missing database right.
                    Err(ProbeError::Auth) => {
                        return Err(self.start_failed(service, AUTH_REFUSED.into()));
                    }
                    Err(e @ (ProbeError::NoDatabase | ProbeError::Refused(_))) => {
                        return Err(self.start_failed(service, e.to_string()));
                    }
                    Err(_) => still.push(service),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            let inspected = self.state.inspect()?;
            for service in &pending {
                match inspected.get(service).map(|i| i.state.status.as_str()) {
                    Some("running") => {}
                    Some(other) => {
                        return Err(
                            self.start_failed(*service, format!("its container is {other}"))
                        );
                    }
                    None => return Err(self.start_failed(*service, "its container is gone".into())),
                }
            }
            if Instant::now() > deadline {
                return Err(self.start_failed(
                    pending[0],
                    format!("it did not answer within {} s", READY_TIMEOUT.as_secs()),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 3 / 2).min(Duration::from_millis(100));
        }
        Ok(())
    }
}

fn targets(services: &[Service]) -> Vec<Service> {
    if services.is_empty() {
        Service::ALL.to_vec()
    } else {
        services.to_vec()
    }
}

impl Runtime for Docker<'_> {
    fn state(&self) -> &dyn RuntimeState {
        &self.state
    }

    fn port(&self, service: Service) -> u16 {
        match service.kind() {
            Service::Postgres => self.valid.infra.env.postgres_port,
            _ => self.valid.infra.env.redis_port,
        }
    }

    fn up(&self, services: &[Service], progress: &dyn Progress) -> Result<UpReport> {
        let targets = targets(services);
        self.state.check_volumes()?;
        self.check_ports(&targets)?;
        self.state.create_volumes()?;
        // `docker volume create` succeeds on a volume that exists: another checkout may have
        // made it since the check, and its label says so.
        self.state.check_volumes()?;
        let already: Vec<Service> = self
            .status()
            .into_iter()
            .filter(|s| targets.contains(&s.service) && s.state == ServiceState::Healthy)
            .map(|s| s.service)
            .collect();
        let mut args = vec!["up", "--detach", "--wait"];
        args.extend(targets.iter().map(|s| s.as_str()));
        self.state.run_reporting(&args, progress)?;
        crate::compose::record_runtime(self.valid.project.root(), RuntimeKind::Docker)?;
        for service in &targets {
            let port = self.port(*service);
            self.state.compose.verify(*service, port)?;
        }
        self.wait_ready(&targets, progress)?;
        Ok(UpReport {
            started: targets
                .iter()
                .filter(|s| !already.contains(s))
                .copied()
                .collect(),
            already_up: already,
            notes: Vec::new(),
            copied_from_cache: false,
        })
    }

    fn restart(&self, services: &[Service], progress: &dyn Progress) -> Result<()> {
        let targets = targets(services);
        let inspected = self.state.inspect()?;
        for service in &targets {
            if !inspected.contains_key(service) {
                return Err(RuntimeError::NotRunning {
                    service: *service,
                    other_listener: None,
                });
            }
        }
        let mut args = vec!["restart"];
        args.extend(targets.iter().map(|s| s.as_str()));
        self.state.run_reporting(&args, progress)?;
        self.wait_ready(&targets, progress)
    }

    fn status(&self) -> Vec<ServiceStatus> {
        // Docker failing to answer is said on every service, never shown as "no container".
        let (inspected, failure) = match self.state.inspect() {
            Ok(inspected) => (inspected, None),
            Err(e) => (
                BTreeMap::new(),
                Some(format!(
                    "docker could not be asked about the containers: {e}"
                )),
            ),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        std::thread::scope(|scope| {
            let handles: Vec<_> = Service::ALL
                .iter()
                .map(|&service| {
                    let container = inspected.get(&service);
                    let failure = &failure;
                    scope.spawn(move || {
                        let running = container.is_some_and(|c| c.state.status == "running");
                        // Where the container really publishes it, which the configuration may
                        // no longer say: probed there, never on the configured port, where
                        // another server may answer.
                        let published = container.and_then(|c| c.published_port(service));
                        let port = published.unwrap_or_else(|| self.port(service));
                        let prober = Prober::new().ok();
                        let answer = match (&prober, running && published.is_some()) {
                            (Some(p), true) => Some(self.probe(p, service, port)),
                            _ => None,
                        };
                        let answers = matches!(answer, Some(Ok(())));
                        let state = match container.map(|c| c.state.status.as_str()) {
                            Some("running") if answers => ServiceState::Healthy,
                            Some("running") => ServiceState::Starting,
                            Some("restarting") => ServiceState::Crashed,
                            _ => ServiceState::Stopped,
                        };
                        let version = match (service, &prober) {
                            _ if !answers => None,
                            (Service::Postgres, Some(p)) => p
                                .postgres_version(
                                    &self.postgres_target(port),
                                    Duration::from_secs(2),
                                )
                                .ok(),
                            (Service::Redis, _) => crate::health::redis_version(
                                "127.0.0.1",
                                port,
                                self.valid.infra.redis_password(),
                                Duration::from_secs(2),
                            )
                            .ok(),
                            _ => None,
                        };
                        let moved = published
                            .filter(|p| *p != self.port(service))
                            .map(|p| {
                                format!(
                                    "runs on port {p}, but the configuration says {}: `nanika up` moves it",
                                    self.port(service)
                                )
                            });
                        let refused = matches!(answer, Some(Err(ProbeError::Auth)))
                            .then(|| AUTH_REFUSED.to_string());
                        let note = failure.clone().or(moved).or(refused).or_else(|| container.and_then(|c| {
                            let health = c.state.health.as_ref().map(|h| h.status.as_str());
                            match (c.state.status.as_str(), health) {
                                ("running", Some("unhealthy")) => Some(format!(
                                    "the container {} reports unhealthy: see `nanika logs {service}`",
                                    self.state.containers[&service]
                                )),
                                ("exited", _) if c.state.exit_code != 0 => Some(format!(
                                    "the container {} exited with code {}: see `nanika logs {service}`",
                                    self.state.containers[&service], c.state.exit_code
                                )),
                                ("paused", _) => Some(format!(
                                    "the container {} is paused: `docker unpause {}`",
                                    self.state.containers[&service],
                                    self.state.containers[&service]
                                )),
                                _ => None,
                            }
                        }));
                        ServiceStatus {
                            service,
                            state,
                            pid: container.map(|c| c.state.pid).filter(|p| *p != 0),
                            port,
                            uptime_secs: container
                                .filter(|_| running)
                                .and_then(|c| epoch_seconds(&c.state.started_at))
                                .map(|t| now.saturating_sub(t)),
                            version,
                            restarts: container.map_or(0, |c| c.restart_count),
                            next_start_in_ms: None,
                            note,
                            role: None,
                            lag_bytes: None,
                            lag_ms: None,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a status check does not panic"))
                .collect()
        })
    }

    fn verify(&self, service: Service) -> Result<()> {
        self.state.compose.verify(service, self.port(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_terminal_codes() {
        assert_eq!(plain("\x1b[2K2026-11-29 LOG:  x"), "2026-11-29 LOG:  x");
        assert_eq!(plain("\x1b[36mred\x1b[0m [1] ok"), "red [1] ok");
    }

    #[test]
    fn docker_times_are_read_as_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            epoch_seconds("2026-11-29T13:47:55.603026524Z"),
            Some(1_795_960_075)
        );
        assert_eq!(epoch_seconds("0001-01-01T00:00:00Z"), None);
        assert_eq!(epoch_seconds("garbage"), None);
    }
}
