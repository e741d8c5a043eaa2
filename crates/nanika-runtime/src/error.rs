//! What can go wrong while running the services; every variant says what to do about it.

use crate::Service;
use crate::native::procfs::PortUser;
use std::path::PathBuf;

/// A failure of the runtime, with a hint for the user.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A server binary was not found.
    #[error("{what} was not found (looked in {})", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingBinary {
        /// Which binary.
        what: &'static str,
        /// Where it was looked for.
        searched: Vec<PathBuf>,
        /// How to install it.
        install: &'static str,
    },
    /// A server binary of the wrong major version.
    #[error("{} is version {found}, but the spec asks for {expected}", binary.display())]
    WrongVersion {
        /// The binary.
        binary: PathBuf,
        /// The version it reports.
        found: String,
        /// The major version needed.
        expected: u32,
        /// How to install the right one.
        install: &'static str,
    },
    /// A port is already taken: by another program, or by a closed connection in TIME-WAIT.
    #[error("port {port} for {service} is already in use{}", match holder {
        PortUser::Program(program) => format!(" by {program}"),
        PortUser::TimeWait(time_wait) => format!(" by {time_wait}"),
        PortUser::Unknown => String::new(),
    })]
    PortInUse {
        /// The service that wanted it.
        service: Service,
        /// The port.
        port: u16,
        /// What holds it, as far as nanika can see.
        holder: PortUser,
        /// The kernel's ephemeral port range, when the port is inside it.
        ephemeral: Option<nanika_config::ports::PortRange>,
    },
    /// A data directory from another PostgreSQL major version.
    #[error("{} holds a PostgreSQL {found} cluster, but this is PostgreSQL {expected}", path.display())]
    DataDirVersion {
        /// The data directory.
        path: PathBuf,
        /// Its version.
        found: String,
        /// The server's version.
        expected: u32,
    },
    /// A data directory PostgreSQL would refuse (owner or permissions).
    #[error("{}: {problem}", path.display())]
    DataDirPermissions {
        /// The data directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// The command that fixes it.
        fix: String,
    },
    /// A server exited or failed while starting.
    #[error("{service} failed to start: {reason}")]
    StartFailed {
        /// The service.
        service: Service,
        /// What happened.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },
    /// A file or directory operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path nanika would have to follow a link to use, or that belongs to someone else: it is
    /// left exactly as it is.
    #[error("{}: {problem}", path.display())]
    Untrusted {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A helper program failed.
    #[error("`{command}` failed ({status})")]
    Command {
        /// The command line (no secrets).
        command: String,
        /// How it ended.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The services are run by another runtime than the one asked for.
    #[error("this project's data lives in the {existing} runtime, not {requested}")]
    RuntimeMismatch {
        /// The runtime the project first came up with.
        existing: String,
        /// The one asked for.
        requested: String,
    },
    /// Docker was asked for but cannot be used.
    #[error("docker compose is not available: {0}")]
    DockerUnavailable(String),
    /// A command needs a service of this project that is not running.
    #[error("this project's {service} is not running{}", other_listener.as_ref().map(|o| format!(" ({o}, but that is not this project's)")).unwrap_or_default())]
    NotRunning {
        /// The service.
        service: Service,
        /// What answers on the configured port instead, when something does.
        other_listener: Option<String>,
    },
    /// The configuration names another port than the one the running server listens on.
    #[error(
        "this project's {service} runs on port {running}, but the configuration now says {configured}"
    )]
    PortMoved {
        /// The service.
        service: Service,
        /// The port it listens on.
        running: u16,
        /// The port the configuration names.
        configured: u16,
    },
    /// The URL reaches a server that answers but is not this project's.
    #[error("{address} answers, but it is not this project's {service}{}", whose.as_ref().map(|w| format!(" (it belongs to {w})")).unwrap_or_default())]
    NotThisProject {
        /// The service.
        service: Service,
        /// What was reached, `host:port`.
        address: String,
        /// Whose server it is, when it says.
        whose: Option<String>,
    },
    /// A process nanika would have signalled is not provably the one it started: it was left
    /// alone.
    #[error("nanika did not signal {process}: {reason}")]
    NotProven {
        /// The process, as nanika knew it.
        process: String,
        /// Why it is not proven (e.g. its pid now belongs to a process started later).
        reason: String,
    },
    /// Processes of this project still run after nanika tried to stop them.
    #[error("still running after `nanika down`: {}{}", processes.join("; "), with_details(details))]
    StillRunning {
        /// Each, described (`postgres (pid 123)`).
        processes: Vec<String>,
        /// What was tried, and how it went.
        details: Vec<String>,
    },
    /// `down --volumes` found processes of this project using the state it was to delete.
    #[error("refusing to delete this project's state, which is still in use by: {}{}; nothing was deleted", processes.join("; "), with_details(details))]
    InUse {
        /// Each, described (`postgres (pid 123)`).
        processes: Vec<String>,
        /// What was tried, and how it went.
        details: Vec<String>,
    },
    /// A container the compose file names belongs to another checkout of the project.
    #[error("the container {container} belongs to another checkout, {}; nothing was done", if owner.as_os_str().is_empty() { "not made by compose".to_string() } else { owner.display().to_string() })]
    ContainerOfAnotherCheckout {
        /// The container's name.
        container: String,
        /// The directory of the checkout that made it.
        owner: PathBuf,
    },
    /// A volume of the compose project exists, but nothing proves it is this checkout's: another
    /// checkout's `up` made it (and its `down` kept it).
    #[error("the docker volume {volume} holds the data of another checkout, {}; nothing was done", if owner.as_os_str().is_empty() { "one nanika did not label (a `docker compose up` without nanika)".to_string() } else { owner.display().to_string() })]
    VolumeOfAnotherCheckout {
        /// The volume's name.
        volume: String,
        /// The checkout its label names (empty: none).
        owner: PathBuf,
        /// The compose project's name.
        project: String,
    },
    /// Something else, said in words.
    #[error("{0}")]
    Other(String),
}

/// ` (a; b)` for messages, or nothing.
fn with_details(details: &[String]) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({})", details.join("; "))
    }
}

impl RuntimeError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RuntimeError::MissingBinary { install, .. } | RuntimeError::WrongVersion { install, .. } => {
                format!("install it with `{install}`, or point nanika at it with NANIKA_PG_BIN_DIR / NANIKA_REDIS_BIN")
            }
            RuntimeError::PortInUse { service, holder, ephemeral, .. } => {
                let var = port_variable(*service);
                let first = match holder {
                    PortUser::TimeWait(time_wait) => format!(
                        "run `nanika up` again once it has expired (in {} s at most)",
                        time_wait.remaining.map_or(60, |left| left.as_secs().max(1))
                    ),
                    _ => "stop that program".into(),
                };
                let why = match ephemeral {
                    Some(range) => format!(
                        "; the port is inside the kernel's ephemeral port range {range} ({}), where any outgoing connection may take it: a port below {} is safe from that",
                        nanika_config::ports::EPHEMERAL_RANGE_FILE,
                        range.low
                    ),
                    None => String::new(),
                };
                let set = if service.is_primary_service() {
                    format!("set {var} in .env (and the port in the URLs)")
                } else {
                    format!("set {var}")
                };
                format!("{first}, or pick another port: {set}{why}")
            }
            RuntimeError::DataDirVersion { .. } => {
                "nanika never re-initialises a data directory: upgrade it with pg_upgrade, or back it up and run `nanika down --volumes`".into()
            }
            RuntimeError::DataDirPermissions { fix, .. } => format!("run `{fix}`"),
            RuntimeError::Untrusted { fix, .. } => fix.clone(),
            RuntimeError::StartFailed { log, .. } => format!("the full log is {}", log.display()),
            RuntimeError::RuntimeMismatch { existing, .. } => format!(
                "pass `--runtime {existing}`; to switch, run `nanika down` first and then `--runtime` explicitly (the old data stays where it is)"
            ),
            RuntimeError::DockerUnavailable(_) => "start the Docker engine (Docker Desktop, or `sudo systemctl start docker`): this project's data is in its containers' volumes. The native runtime (`--runtime native`) needs no Docker, but has data of its own".into(),
            RuntimeError::ContainerOfAnotherCheckout { owner, container } => {
                let own = "give this checkout its own compose project with COMPOSE_PROJECT_NAME in its .env (e.g. COMPOSE_PROJECT_NAME=nanika-game-2: its containers, volumes and network get that name), or use the native runtime here (`--runtime native`)";
                if owner.as_os_str().is_empty() {
                    format!("the spec names the containers, so a container of that name blocks this project: remove it (`docker rm -f {container}`) if it is nobody's, or {own}")
                } else if !owner.exists() {
                    format!("{} no longer exists (moved or deleted?): if its containers and volumes are not needed, remove them (`docker rm -f {container}`, `docker volume ls --filter label=com.docker.compose.project`, `docker volume rm …`); else {own}", owner.display())
                } else {
                    format!("the spec names the containers and the compose project, so two checkouts on one engine share them: {own}; or run `nanika down` in {} first (its data stays in its volumes)", owner.display())
                }
            }
            RuntimeError::VolumeOfAnotherCheckout { volume, owner, project } => {
                if owner.as_os_str().is_empty() {
                    format!(
                        "the spec names the compose project, so two checkouts on one engine share its volumes; give this checkout its own with COMPOSE_PROJECT_NAME in its .env (e.g. COMPOSE_PROJECT_NAME=nanika-game-2), or use the native runtime here (`--runtime native`). If {volume} holds this checkout's own data (made by a `docker compose up` here), `docker compose -p {project} up --no-start` here lets nanika recognise it"
                    )
                } else {
                    format!(
                        "the spec names the compose project, so two checkouts on one engine share its volumes: give this checkout its own with COMPOSE_PROJECT_NAME in its .env (e.g. COMPOSE_PROJECT_NAME=nanika-game-2), use that data from {} (`nanika down --volumes` there deletes it), or use the native runtime here (`--runtime native`)",
                        owner.display()
                    )
                }
            }
            RuntimeError::NotRunning { service, .. } => {
                format!("start it with `nanika up {service}`")
            }
            RuntimeError::PortMoved { service, running, configured } => {
                let var = port_variable(*service);
                format!(
                    "to keep using it where it runs, set {var}={running} (and the port in the URL); to move it to {configured}, run `nanika down` and then `nanika up`. Its data is not affected either way"
                )
            }
            RuntimeError::NotProven { .. } => {
                "nanika signals only a process whose pid, start time and command line match what it recorded when it started it (or, with its records gone, whose command line names this project); look at the process (`ps -o pid,lstart,args -p PID`) and stop it yourself if it is this project's".into()
            }
            RuntimeError::StillRunning { .. } | RuntimeError::InUse { .. } => {
                let again = match self {
                    RuntimeError::InUse { .. } => "nanika down --volumes",
                    _ => "nanika down",
                };
                format!("look at it (`ps -o pid,stat,lstart,args -p PID`); a process in state D waits on the kernel (a hung disk or mount) and goes when that returns. Stop it yourself if it is this project's, then run `{again}` again")
            }
            RuntimeError::NotThisProject { service, .. } => {
                let var = port_variable(*service);
                format!("check {var} and the URL in .env and the process environment (`nanika config show`); `nanika ps` shows where this project's servers run")
            }
            _ => return None,
        })
    }
}

/// The environment variable that sets `service`'s host port.
fn port_variable(service: Service) -> &'static str {
    match service {
        Service::Postgres => "POSTGRES_PORT",
        Service::Redis => "REDIS_PORT",
        Service::PostgresReplica(_) => "[topology.postgres] ports_from in nanika.toml",
        Service::Sentinel(_) => "[topology.redis] sentinel_ports_from in nanika.toml",
        Service::RedisReplica(_) | Service::ClusterNode(_) => {
            "[topology.redis] ports_from in nanika.toml"
        }
        Service::PostgresExporter => "[monitoring] postgres_exporter_port in nanika.toml",
        Service::RedisExporter => "[monitoring] redis_exporter_port in nanika.toml",
        Service::Prometheus => "[monitoring] prometheus_port in nanika.toml",
        Service::Alertmanager => "[monitoring] alertmanager_port in nanika.toml",
    }
}

/// Shorthand for the runtime's results.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
