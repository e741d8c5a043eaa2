//! The docker runtime: `docker compose` with the committed `compose.yaml`, as the spec's commands
//! run it, and the choice between it and the native runtime.

use crate::Service;
use crate::error::{Result, RuntimeError};
use crate::native::safe_fs::Dir;
use nanika_config::project::{COMPOSE_FILE, STATE_DIR};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Which runtime runs a project's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The host's own servers, supervised by nanika.
    Native,
    /// `docker compose`.
    Docker,
}

impl RuntimeKind {
    /// Its name, as `--runtime` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Native => "native",
            RuntimeKind::Docker => "docker",
        }
    }
}

/// What `--runtime` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// The one the project already uses; for a new project docker when an engine answers, else native.
    Auto,
    /// Exactly this one.
    Explicit(RuntimeKind),
}

/// The runtime a project came up with, recorded in `.nanika/runtime` (its data lives there).
pub fn recorded_runtime(project: &Path) -> Option<RuntimeKind> {
    match std::fs::read_to_string(project.join(STATE_DIR).join("runtime"))
        .ok()?
        .trim()
    {
        "native" => Some(RuntimeKind::Native),
        "docker" => Some(RuntimeKind::Docker),
        _ => None,
    }
}

/// Records the runtime a project came up with, in a file nanika creates (never through a link a
/// clone may carry), renamed into place.
pub fn record_runtime(project: &Path, kind: RuntimeKind) -> Result<()> {
    let (state, _) = Dir::open(project)?.make_dir(STATE_DIR, 0o700)?;
    let temp = "runtime.tmp";
    state.remove_file(temp)?;
    let mut file = state.create_file(temp, 0o600)?;
    std::io::Write::write_all(&mut file, format!("{}\n", kind.as_str()).as_bytes())
        .map_err(RuntimeError::io("cannot record the runtime"))?;
    state.rename_over(temp, "runtime")
}

/// The runtime to use, and a note when an explicit choice switches away from the recorded one.
/// `auto` never switches a project silently; `docker_available` is asked only when needed.
pub fn choose(
    choice: RuntimeChoice,
    recorded: Option<RuntimeKind>,
    docker_available: impl FnOnce() -> bool,
) -> (RuntimeKind, Option<String>) {
    match (choice, recorded) {
        (RuntimeChoice::Auto, Some(kind)) => (kind, None),
        (RuntimeChoice::Auto, None) => (
            if docker_available() {
                RuntimeKind::Docker
            } else {
                RuntimeKind::Native
            },
            None,
        ),
        (RuntimeChoice::Explicit(kind), Some(old)) if old != kind => {
            let stays = match old {
                RuntimeKind::Native => "in .nanika/ (the native runtime's data)",
                RuntimeKind::Docker => {
                    "in the project's docker volumes (nanika-game_postgres_data and nanika-game_redis_data unless COMPOSE_PROJECT_NAME names another project)"
                }
            };
            (
                kind,
                Some(format!(
                    "switching this project from {} to {}; the old data stays {stays}",
                    old.as_str(),
                    kind.as_str()
                )),
            )
        }
        (RuntimeChoice::Explicit(kind), _) => (kind, None),
    }
}

/// `docker compose` for one project.
#[derive(Debug, Clone)]
pub struct Compose {
    /// The `docker` client.
    pub docker: PathBuf,
    /// The project's root.
    pub project: PathBuf,
    /// The compose project's name (the compose file's `name:`, or the project's
    /// `COMPOSE_PROJECT_NAME`), passed explicitly so that nothing else in the environment points
    /// nanika at another project.
    pub name: String,
    /// Files laid over the compose file (`-f`), e.g. the one that renames the containers.
    pub overrides: Vec<PathBuf>,
}

impl Compose {
    /// Compose for the project at `project` named `name`, with the `docker` on the PATH.
    pub fn new(project: &Path, name: &str) -> Self {
        Compose {
            docker: PathBuf::from("docker"),
            project: project.to_path_buf(),
            name: name.to_string(),
            overrides: Vec::new(),
        }
    }

    /// `docker compose` with this project's name, directory and file, before a subcommand.
    pub fn base(&self) -> Vec<String> {
        let mut base = vec![
            self.docker.display().to_string(),
            "compose".into(),
            "--project-name".into(),
            self.name.clone(),
            "--project-directory".into(),
            self.project.display().to_string(),
            "-f".into(),
            self.project.join(COMPOSE_FILE).display().to_string(),
        ];
        for file in &self.overrides {
            base.extend(["-f".to_string(), file.display().to_string()]);
        }
        base
    }

    fn services(services: &[Service]) -> Vec<String> {
        let services = if services.is_empty() {
            &Service::ALL[..]
        } else {
            services
        };
        services.iter().map(|s| s.as_str().to_string()).collect()
    }

    /// `docker compose up -d --wait postgres redis`: detached, returning once the healthchecks pass.
    pub fn up(&self, services: &[Service]) -> Vec<String> {
        let mut command = self.base();
        command.extend(["up", "-d", "--wait"].map(String::from));
        command.extend(Self::services(services));
        command
    }

    /// `docker compose down [-v]`.
    pub fn down(&self, volumes: bool) -> Vec<String> {
        let mut command = self.base();
        command.push("down".into());
        if volumes {
            command.push("-v".into());
        }
        command
    }

    /// `docker compose ps --format json`.
    pub fn ps(&self) -> Vec<String> {
        let mut command = self.base();
        command.extend(["ps", "--all", "--format", "json"].map(String::from));
        command
    }

    /// `docker compose logs [-f] [--tail N] [SERVICE]`.
    pub fn logs(&self, follow: bool, tail: Option<usize>, service: Option<Service>) -> Vec<String> {
        let mut command = self.base();
        command.push("logs".into());
        if follow {
            command.push("-f".into());
        }
        if let Some(n) = tail {
            command.extend(["--tail".to_string(), n.to_string()]);
        }
        command.extend(service.map(|s| s.as_str().to_string()));
        command
    }

    /// `docker compose restart [SERVICE…]`.
    pub fn restart(&self, services: &[Service]) -> Vec<String> {
        let mut command = self.base();
        command.push("restart".into());
        command.extend(Self::services(services));
        command
    }

    /// The version of the Docker engine that answers, or why none does.
    pub fn engine_version(&self) -> std::result::Result<String, String> {
        match self.quiet(&["info", "--format", "{{.ServerVersion}}"]) {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            Ok(_) => Err("no Docker engine answers (`docker info` failed)".into()),
            Err(_) => Err("the docker client is not installed".into()),
        }
    }

    /// The version of the compose plugin, or why there is none.
    pub fn compose_version(&self) -> std::result::Result<String, String> {
        match self.quiet(&["compose", "version", "--short"]) {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            _ => Err("the docker compose plugin is not installed".into()),
        }
    }

    fn quiet(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.docker)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Whether a Docker engine answers and the compose plugin is installed, or why not.
    pub fn available(&self) -> std::result::Result<(), String> {
        self.engine_version()?;
        self.compose_version().map(|_| ())
    }

    /// Refuses when a container of one of `names` (the compose file's fixed `container_name`s)
    /// belongs to another checkout: `up` would take it over with this checkout's files, and
    /// `down --volumes` would delete that checkout's data. Read off the label compose puts on
    /// every container (`com.docker.compose.project.working_dir`).
    pub fn check_ownership(&self, names: &[&str]) -> Result<()> {
        let ours = std::fs::canonicalize(&self.project).unwrap_or_else(|_| self.project.clone());
        for name in names {
            let output = Command::new(&self.docker)
                .args([
                    "inspect",
                    "--type",
                    "container",
                    "--format",
                    "{{index .Config.Labels \"com.docker.compose.project.working_dir\"}}",
                    name,
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(RuntimeError::io(format!(
                    "cannot run {}",
                    self.docker.display()
                )))?;
            if !output.status.success() {
                continue; // no such container
            }
            let owner = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            let owner_canonical = std::fs::canonicalize(&owner).unwrap_or_else(|_| owner.clone());
            if owner.as_os_str().is_empty() || owner_canonical != ours {
                return Err(RuntimeError::ContainerOfAnotherCheckout {
                    container: name.to_string(),
                    owner,
                });
            }
        }
        Ok(())
    }

    /// Proves that `service`'s container of this compose project runs and publishes the port
    /// the configuration names (`docker compose port`): the containers are the project's own,
    /// found through its compose file and project name, never by a port alone.
    pub fn verify(&self, service: Service, configured: u16) -> Result<()> {
        let container_port = match service.kind() {
            Service::Postgres => "5432",
            _ => "6379",
        };
        let mut command = self.base();
        command.extend([
            "port".to_string(),
            service.as_str().into(),
            container_port.into(),
        ]);
        let output = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(RuntimeError::io(format!("cannot run {}", command[0])))?;
        let published = String::from_utf8_lossy(&output.stdout);
        let port = published
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|_| output.status.success());
        match port {
            None => Err(RuntimeError::NotRunning {
                service,
                other_listener: None,
            }),
            Some(running) if running != configured => Err(RuntimeError::PortMoved {
                service,
                running,
                configured,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Runs a command line built above, with the terminal attached.
    pub fn run(&self, command: &[String]) -> Result<()> {
        let status = Command::new(&command[0])
            .args(&command[1..])
            .status()
            .map_err(RuntimeError::io(format!("cannot run {}", command[0])))?;
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Command {
                command: command.join(" "),
                status: status.to_string(),
                stderr: String::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_the_specs() {
        let compose = Compose::new(Path::new("/p"), "nanika-game");
        let base =
            "docker compose --project-name nanika-game --project-directory /p -f /p/compose.yaml";
        assert_eq!(
            compose.up(&[]).join(" "),
            format!("{base} up -d --wait postgres redis")
        );
        assert_eq!(
            compose.up(&[Service::Redis]).join(" "),
            format!("{base} up -d --wait redis")
        );
        assert_eq!(compose.down(false).join(" "), format!("{base} down"));
        assert_eq!(compose.down(true).join(" "), format!("{base} down -v"));
        assert_eq!(
            compose.ps().join(" "),
            format!("{base} ps --all --format json")
        );
        assert_eq!(
            compose
                .logs(true, Some(50), Some(Service::Postgres))
                .join(" "),
            format!("{base} logs -f --tail 50 postgres")
        );
        assert_eq!(
            compose.restart(&[Service::Postgres]).join(" "),
            format!("{base} restart postgres")
        );
    }

    #[test]
    fn auto_never_switches_a_project() {
        let never = || panic!("not asked when the project has a runtime");
        assert_eq!(
            choose(RuntimeChoice::Auto, Some(RuntimeKind::Native), never),
            (RuntimeKind::Native, None)
        );
        assert_eq!(
            choose(RuntimeChoice::Auto, Some(RuntimeKind::Docker), never),
            (RuntimeKind::Docker, None)
        );
        assert_eq!(
            choose(RuntimeChoice::Auto, None, || false).0,
            RuntimeKind::Native
        );
        assert_eq!(
            choose(RuntimeChoice::Auto, None, || true).0,
            RuntimeKind::Docker
        );
        let (kind, note) = choose(
            RuntimeChoice::Explicit(RuntimeKind::Docker),
            Some(RuntimeKind::Native),
            || true,
        );
        assert_eq!(kind, RuntimeKind::Docker);
        assert!(note.unwrap().contains("old data stays in .nanika/"));
    }

    #[test]
    fn an_engine_that_does_not_answer_is_reported() {
        let compose = Compose {
            docker: PathBuf::from("/nonexistent/docker"),
            project: PathBuf::from("/p"),
            name: "nanika-game".into(),
            overrides: Vec::new(),
        };
        assert_eq!(
            compose.available(),
            Err("the docker client is not installed".into())
        );
    }
}
