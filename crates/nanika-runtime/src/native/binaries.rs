//! Finding the server binaries and checking their major versions.

use crate::error::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian and Ubuntu install PostgreSQL 15's server binaries.
pub const DEBIAN_PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The PostgreSQL major version the spec asks for.
pub const POSTGRES_MAJOR: u32 = 15;
/// The Redis major version the spec asks for.
pub const REDIS_MAJOR: u32 = 7;
const PG_INSTALL: &str = "apt-get install -y postgresql-15";
const REDIS_INSTALL: &str = "apt-get install -y redis-server";

/// Where to look, as the user set it (`NANIKA_PG_BIN_DIR`, `NANIKA_REDIS_BIN`) and the `PATH`.
#[derive(Debug, Clone, Default)]
pub struct BinarySearch {
    /// A directory holding `postgres`, `initdb`, `pg_ctl`, `psql`, `pg_dump`…
    pub pg_bin_dir: Option<PathBuf>,
    /// The `redis-server` binary.
    pub redis_server: Option<PathBuf>,
    /// The `PATH` to search.
    pub path: Option<std::ffi::OsString>,
}

/// PostgreSQL's binaries, all from one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresBinaries {
    /// The directory they are in.
    pub bin_dir: PathBuf,
    /// The full version, e.g. `15.18`.
    pub version: String,
}

impl PostgresBinaries {
    /// A tool of the same installation (`postgres`, `initdb`, `psql`, `pg_dump`, ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// The Redis server binary and, when beside it, `redis-cli`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBinaries {
    /// `redis-server`.
    pub server: PathBuf,
    /// The full version, e.g. `7.0.15`.
    pub version: String,
}

impl RedisBinaries {
    /// `redis-cli` from the same directory, else from the PATH.
    pub fn cli(&self) -> PathBuf {
        let beside = self.server.with_file_name("redis-cli");
        if beside.is_file() {
            beside
        } else {
            PathBuf::from("redis-cli")
        }
    }
}

fn path_dirs(search: &BinarySearch) -> Vec<PathBuf> {
    search
        .path
        .as_ref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default()
}

/// Runs `binary --version` and returns what it printed.
fn version_output(binary: &Path) -> Option<String> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first `X.Y[.Z]` in `text`, after `marker` when given.
fn parse_version(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let version: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(version.trim_end_matches('.').to_string())
}

fn major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Finds PostgreSQL: `NANIKA_PG_BIN_DIR`, then a `PATH` directory holding both `postgres` and
/// `initdb` (Debian's `/usr/bin` has only wrappers), then Debian's versioned directory.
pub fn find_postgres(search: &BinarySearch) -> Result<PostgresBinaries> {
    let mut candidates = Vec::new();
    if let Some(dir) = &search.pg_bin_dir {
        candidates.push(dir.clone());
    } else {
        candidates.extend(
            path_dirs(search)
                .into_iter()
                .filter(|d| d.join("initdb").is_file()),
        );
        candidates.push(PathBuf::from(DEBIAN_PG15_BIN));
    }
    let mut wrong = None;
    for dir in &candidates {
        let postgres = dir.join("postgres");
        let Some(text) = version_output(&postgres) else {
            continue;
        };
        let Some(version) = parse_version(&text, "(PostgreSQL)") else {
            continue;
        };
        if major(&version) == Some(POSTGRES_MAJOR) && dir.join("initdb").is_file() {
            // A PATH directory may hold only links to some tools (postgres, initdb): the
            // installation is where `postgres` really is, with pg_dump, psql and the rest.
            let bin_dir = std::fs::canonicalize(&postgres)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| dir.clone());
            return Ok(PostgresBinaries { bin_dir, version });
        }
        wrong.get_or_insert(RuntimeError::WrongVersion {
            binary: postgres,
            found: version,
            expected: POSTGRES_MAJOR,
            install: PG_INSTALL,
        });
    }
    Err(wrong.unwrap_or(RuntimeError::MissingBinary {
        what: "PostgreSQL 15 (postgres, initdb)",
        searched: candidates,
        install: PG_INSTALL,
    }))
}

/// Finds `redis-server`: `NANIKA_REDIS_BIN`, then the `PATH`.
pub fn find_redis(search: &BinarySearch) -> Result<RedisBinaries> {
    let candidates: Vec<PathBuf> = match &search.redis_server {
        Some(binary) => vec![binary.clone()],
        None => path_dirs(search)
            .into_iter()
            .map(|d| d.join("redis-server"))
            .filter(|p| p.is_file())
            .collect(),
    };
    let mut wrong = None;
    for server in &candidates {
        let Some(text) = version_output(server) else {
            continue;
        };
        let Some(version) = parse_version(&text, "v=") else {
            continue;
        };
        if major(&version) == Some(REDIS_MAJOR) {
            return Ok(RedisBinaries {
                server: server.clone(),
                version,
            });
        }
        wrong.get_or_insert(RuntimeError::WrongVersion {
            binary: server.clone(),
            found: version,
            expected: REDIS_MAJOR,
            install: REDIS_INSTALL,
        });
    }
    let searched = if candidates.is_empty() {
        vec![PathBuf::from("$PATH")]
    } else {
        candidates
    };
    Err(wrong.unwrap_or(RuntimeError::MissingBinary {
        what: "Redis 7 (redis-server)",
        searched,
        install: REDIS_INSTALL,
    }))
}

/// How to install pgBackRest, for the error that says it is missing.
const PGBACKREST_INSTALL: &str = "sudo apt-get install -y pgbackrest";

/// `pgbackrest`, found on the `PATH` (only with backups on, see `nanika.toml`).
pub fn find_pgbackrest(search: &BinarySearch) -> Result<PathBuf> {
    path_dirs(search)
        .into_iter()
        .map(|d| d.join("pgbackrest"))
        .find(|p| p.is_file())
        .ok_or(RuntimeError::MissingBinary {
            what: "pgBackRest (pgbackrest), which nanika.toml's [backups] needs",
            searched: vec![PathBuf::from("$PATH")],
            install: PGBACKREST_INSTALL,
        })
}

/// How long a monitoring program may take to say its version before nanika goes on without it.
const VERSION_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What `command` prints on stdout and stderr, when it ends within `limit`; it is killed
/// otherwise. The output is read after it ends (a version is a line or two, well within a pipe).
fn bounded_output(command: &mut Command, limit: std::time::Duration) -> Option<String> {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(text)
}

const MONITORING_INSTALL: &str =
    "apt-get install -y prometheus prometheus-postgres-exporter prometheus-redis-exporter";

/// A monitoring program (`[monitoring]`) and its version, when it says one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorBinary {
    /// The program.
    pub program: PathBuf,
    /// Its version, e.g. `2.42.0`.
    pub version: Option<String>,
}

/// Finds the program of a monitoring service in the `PATH`, under Debian's name or the
/// upstream one (`prometheus-postgres-exporter` or `postgres_exporter`).
pub fn find_monitor(search: &BinarySearch, service: crate::Service) -> Result<MonitorBinary> {
    let (names, what): (&[&str], &'static str) = match service {
        crate::Service::PostgresExporter => (
            &["prometheus-postgres-exporter", "postgres_exporter"],
            "postgres_exporter (prometheus-postgres-exporter), which nanika.toml's [monitoring] needs",
        ),
        crate::Service::RedisExporter => (
            &["prometheus-redis-exporter", "redis_exporter"],
            "redis_exporter (prometheus-redis-exporter), which nanika.toml's [monitoring] needs",
        ),
        crate::Service::Alertmanager => (
            &["prometheus-alertmanager", "alertmanager"],
            "Alertmanager (prometheus-alertmanager), which nanika.toml's [monitoring] alertmanager = true needs",
        ),
        _ => (
            &["prometheus"],
            "Prometheus (prometheus), which nanika.toml's [monitoring] needs",
        ),
    };
    // Absolute directories only: nanika may run as root, and a relative `PATH` entry would
    // find a program in whatever directory it was started from.
    let dirs: Vec<PathBuf> = path_dirs(search)
        .into_iter()
        .filter(|d| d.is_absolute())
        .collect();
    let program = names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
        .ok_or(RuntimeError::MissingBinary {
            what,
            searched: vec![PathBuf::from("$PATH")],
            install: if service == crate::Service::Alertmanager {
                "apt-get install -y prometheus-alertmanager"
            } else {
                MONITORING_INSTALL
            },
        })?;
    // redis_exporter takes Go's single-dash flags; both spellings print the version.
    let flag = if service == crate::Service::RedisExporter {
        "-version"
    } else {
        "--version"
    };
    let version =
        bounded_output(Command::new(&program).arg(flag), VERSION_LIMIT).and_then(|text| {
            parse_version(&text, "version").or_else(|| parse_version(&text, "Exporter"))
        });
    Ok(MonitorBinary { program, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_does_not_end_is_killed_at_the_limit() {
        let started = std::time::Instant::now();
        let said = bounded_output(
            Command::new("sleep").arg("10"),
            std::time::Duration::from_millis(100),
        );
        assert_eq!(said, None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let said = bounded_output(
            Command::new("sh").args(["-c", "echo x 1.2.3; echo y >&2"]),
            std::time::Duration::from_secs(5),
        );
        assert_eq!(said.as_deref(), Some("x 1.2.3\ny\n"));
    }

    #[test]
    fn versions_are_read_from_the_servers_own_words() {
        assert_eq!(
            parse_version(
                "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                "(PostgreSQL)"
            )
            .as_deref(),
            Some("15.18")
        );
        assert_eq!(
            parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc", "v=").as_deref(),
            Some("7.0.15")
        );
    }

    #[test]
    fn a_missing_binary_names_where_it_looked_and_how_to_install() {
        let search = BinarySearch {
            redis_server: Some("/nonexistent/redis-server".into()),
            ..Default::default()
        };
        let error = find_redis(&search).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/redis-server"),
            "{error}"
        );
        assert!(
            error
                .hint()
                .unwrap()
                .contains("apt-get install -y redis-server")
        );
    }
}
