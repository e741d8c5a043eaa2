//! A project: the directory holding the committed config files, and all of them loaded at once.

use crate::compose;
use crate::dotenv::{self, EnvSource};
use crate::finding::Finding;
use crate::model::Infrastructure;
use crate::parsed::Parsed;
use crate::settings::Settings;
use crate::{pgconf, redisconf};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// `postgresql.conf`, relative to the project root (spec S1).
pub const POSTGRES_CONF: &str = "docker/postgres/postgresql.conf";
/// `redis.conf`, relative to the project root (spec S2).
pub const REDIS_CONF: &str = "docker/redis/redis.conf";
/// The compose file, relative to the project root (spec S12).
pub const COMPOSE_FILE: &str = "compose.yaml";
/// The primary's init script for the compose `ha` profile's replica, relative to the root.
pub const POSTGRES_REPLICATION_SCRIPT: &str = "docker/postgres/replication.sh";
/// The committed example environment (spec S13).
pub const ENV_EXAMPLE: &str = ".env.example";
/// The developer's own environment, created from the example and never committed.
pub const ENV_FILE: &str = ".env";
/// nanika's own settings beyond the spec's files; optional (absent: everything off).
pub const SETTINGS_FILE: &str = crate::settings::SETTINGS_FILE;
/// Where nanika keeps its state (data directories, logs, pid files); never committed.
pub const STATE_DIR: &str = ".nanika";

/// The files `nanika init` writes, rendered from `infra`: (path relative to the root, contents).
/// `.env` is not among them: it is a copy of `.env.example` made once and then the user's own.
pub fn render_files(infra: &Infrastructure) -> Vec<(&'static str, String)> {
    vec![
        (POSTGRES_CONF, pgconf::render(&infra.postgres)),
        (REDIS_CONF, redisconf::render(&infra.redis)),
        (COMPOSE_FILE, compose::render(infra)),
        (
            POSTGRES_REPLICATION_SCRIPT,
            compose::render_replication_script(),
        ),
        (ENV_EXAMPLE, dotenv::render_example(&infra.env)),
    ]
}

/// The lines `nanika init` makes sure `.gitignore` has: secrets, state and backups stay local.
pub const GITIGNORE_ENTRIES: &[&str] = &["/.env", "/.nanika/", "/backups/"];

/// Why a project could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// No directory from `start` upwards holds a project.
    #[error("no nanika project in {} or any parent directory (looked for {COMPOSE_FILE} or {POSTGRES_CONF})", start.display())]
    NotFound {
        /// Where the search started.
        start: PathBuf,
    },
    /// A file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A project directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    root: PathBuf,
}

impl Project {
    /// The project at `root`, which must hold a compose file or a PostgreSQL config.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self, ProjectError> {
        let root = root.into();
        if Self::is_project(&root) {
            Ok(Project { root })
        } else {
            Err(ProjectError::NotFound { start: root })
        }
    }

    /// The nearest project at or above `start`.
    pub fn discover(start: &Path) -> Result<Self, ProjectError> {
        start
            .ancestors()
            .find(|dir| Self::is_project(dir))
            .map(|dir| Project {
                root: dir.to_path_buf(),
            })
            .ok_or_else(|| ProjectError::NotFound {
                start: start.to_path_buf(),
            })
    }

    fn is_project(dir: &Path) -> bool {
        dir.join(COMPOSE_FILE).is_file() || dir.join(POSTGRES_CONF).is_file()
    }

    /// The project's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the project.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The environment file in use: `.env` when it exists, else `.env.example`.
    pub fn env_file(&self) -> &'static str {
        if self.path(ENV_FILE).exists() {
            ENV_FILE
        } else {
            ENV_EXAMPLE
        }
    }

    /// Reads every config file. A missing file is a finding; an unreadable one is an error.
    /// `process_env` holds the variables nanika reads from the process environment.
    pub fn load(
        &self,
        process_env: &BTreeMap<String, String>,
    ) -> Result<LoadedProject, ProjectError> {
        self.load_files(process_env, FileSet::All)
    }

    /// Reads what the native services and the operations need: the server configs and the
    /// environment, not the compose file (whose schema check is the costly part of a load).
    pub fn load_for_services(
        &self,
        process_env: &BTreeMap<String, String>,
    ) -> Result<LoadedProject, ProjectError> {
        self.load_files(process_env, FileSet::WithoutCompose)
    }

    fn load_files(
        &self,
        process_env: &BTreeMap<String, String>,
        files: FileSet,
    ) -> Result<LoadedProject, ProjectError> {
        let mut findings = Vec::new();
        let mut missing_files = Vec::new();
        let mut read = |relative: &'static str| -> Result<Option<String>, ProjectError> {
            let path = self.path(relative);
            match fs_err::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing_files.push(relative);
                    findings.push(
                        Finding::error("missing-file", relative, "does not exist").with_hint(
                            "run `nanika init --force` in the project to write the spec's files",
                        ),
                    );
                    Ok(None)
                }
                Err(e) => Err(ProjectError::Unreadable { path, source: e }),
            }
        };
        let postgres =
            read(POSTGRES_CONF)?.map(|text| pgconf::parse(&text, Path::new(POSTGRES_CONF)));
        let redis = read(REDIS_CONF)?.map(|text| redisconf::parse(&text, Path::new(REDIS_CONF)));
        let compose = match files {
            FileSet::All => {
                read(COMPOSE_FILE)?.map(|text| compose::parse(&text, Path::new(COMPOSE_FILE)))
            }
            FileSet::WithoutCompose => None,
        };
        // Optional: a project without it runs the spec alone.
        let settings = match fs_err::read_to_string(self.path(SETTINGS_FILE)) {
            Ok(text) => Some(crate::settings::parse(&text, Path::new(SETTINGS_FILE))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ProjectError::Unreadable {
                    path: self.path(SETTINGS_FILE),
                    source: e,
                });
            }
        };
        let env_file = self.env_file();
        let env_text = read(env_file)?.unwrap_or_default();
        let env = dotenv::resolve(&env_text, Path::new(env_file), process_env);

        let spec = Infrastructure::spec();
        let (postgres, postgres_lines) = absorb(postgres, spec.postgres, &mut findings);
        let (redis, redis_lines) = absorb(redis, spec.redis, &mut findings);
        let (compose, compose_lines) = absorb(compose, spec.compose, &mut findings);
        let (settings, settings_lines) = absorb(settings, Settings::default(), &mut findings);
        findings.extend(env.findings);
        let infra = Infrastructure {
            postgres,
            redis,
            compose,
            env: env.value.settings,
        };
        let mut loaded = LoadedProject {
            project: self.clone(),
            infra,
            settings,
            lines: BTreeMap::from([
                (SETTINGS_FILE, settings_lines),
                (POSTGRES_CONF, postgres_lines),
                (REDIS_CONF, redis_lines),
                (COMPOSE_FILE, compose_lines),
                (env_file, env.lines),
            ]),
            env_file,
            env_sources: env.value.sources,
            missing_files,
            findings,
        };
        let cross = crate::validate::cross_checks(&loaded);
        loaded.findings.extend(cross);
        Ok(loaded)
    }
}

/// Which files a load reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileSet {
    All,
    WithoutCompose,
}

/// The value of a file that was read, or `default` for one that is missing; its findings join the rest.
fn absorb<T>(
    parsed: Option<Parsed<T>>,
    default: T,
    findings: &mut Vec<Finding>,
) -> (T, BTreeMap<String, usize>) {
    match parsed {
        Some(parsed) => {
            findings.extend(parsed.findings);
            (parsed.value, parsed.lines)
        }
        None => (default, BTreeMap::new()),
    }
}

/// A project with every file read into the model.
#[derive(Debug, Clone)]
pub struct LoadedProject {
    /// The project.
    pub project: Project,
    /// The model as the files (and the process environment) set it.
    pub infra: Infrastructure,
    /// `nanika.toml`'s settings (all off when it does not exist).
    pub settings: Settings,
    /// For each file, the line of each key it sets.
    pub lines: BTreeMap<&'static str, BTreeMap<String, usize>>,
    /// The environment file that was read (`.env` or `.env.example`).
    pub env_file: &'static str,
    /// Where each environment variable came from.
    pub env_sources: BTreeMap<&'static str, EnvSource>,
    /// The files that do not exist (each is also a finding).
    pub missing_files: Vec<&'static str>,
    /// Every problem the files have.
    pub findings: Vec<Finding>,
}

impl LoadedProject {
    /// The line where `file` sets `key`, if it does.
    pub fn line_of(&self, file: &str, key: &str) -> Option<usize> {
        self.lines
            .get(file)
            .and_then(|lines| lines.get(key))
            .copied()
    }
}
