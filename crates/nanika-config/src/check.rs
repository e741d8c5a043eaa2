//! The model as a flat list of settings, compared with the spec and traced to where each value
//! came from (`nanika config check`, `nanika config show`).

use crate::dotenv::EnvSource;
use crate::finding::Finding;
use crate::model::Infrastructure;
use crate::project::{COMPOSE_FILE, LoadedProject, POSTGRES_CONF, REDIS_CONF};
use crate::secret::MASK;
use serde::Serialize;
use std::time::Duration;

/// One setting of the model as its file spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The file that sets it (for environment variables: `env`).
    pub file: &'static str,
    /// The key as that file spells it.
    pub key: String,
    /// The value as that file spells it; secrets are masked.
    pub value: String,
    /// Whether the value is a secret (and so masked).
    pub secret: bool,
}

/// Marks settings that belong to the app's environment rather than a file of their own.
pub const ENV: &str = "env";

fn on_off(value: bool) -> String {
    if value { "on" } else { "off" }.to_string()
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn seconds(value: Duration) -> String {
    value.as_secs().to_string()
}

/// Every setting of `infra`, file by file, in the order the files list them.
pub fn settings(infra: &Infrastructure) -> Vec<Setting> {
    let mut out = Vec::new();
    // The free-form settings nanika does not model may hold secrets: those are shown masked.
    let secret_keys: Vec<(&'static str, &str)> = infra
        .postgres
        .other
        .iter()
        .filter(|(key, value)| crate::pgconf::shown_setting(key, value).1)
        .map(|(key, _)| (POSTGRES_CONF, key.as_str()))
        .chain(
            infra
                .redis
                .other
                .iter()
                .filter(|(key, args)| crate::redisconf::shown_directive(key, args).1)
                .map(|(key, _)| (REDIS_CONF, key.as_str())),
        )
        .collect();
    let mut push = |file: &'static str, key: &str, value: String| {
        out.push(Setting {
            file,
            key: key.to_string(),
            value,
            secret: secret_keys.contains(&(file, key)),
        });
    };
    let pg = &infra.postgres;
    push(
        POSTGRES_CONF,
        "listen_addresses",
        pg.listen_addresses.clone(),
    );
    push(POSTGRES_CONF, "port", pg.port.to_string());
    push(
        POSTGRES_CONF,
        "max_connections",
        pg.max_connections.to_string(),
    );
    push(
        POSTGRES_CONF,
        "shared_buffers",
        pg.shared_buffers.to_postgres(),
    );
    push(
        POSTGRES_CONF,
        "effective_cache_size",
        pg.effective_cache_size.to_postgres(),
    );
    push(POSTGRES_CONF, "work_mem", pg.work_mem.to_postgres());
    push(
        POSTGRES_CONF,
        "maintenance_work_mem",
        pg.maintenance_work_mem.to_postgres(),
    );
    push(
        POSTGRES_CONF,
        "random_page_cost",
        pg.random_page_cost.to_string(),
    );
    push(
        POSTGRES_CONF,
        "effective_io_concurrency",
        pg.effective_io_concurrency.to_string(),
    );
    push(
        POSTGRES_CONF,
        "wal_compression",
        pg.wal_compression.as_str().to_string(),
    );
    push(
        POSTGRES_CONF,
        "checkpoint_completion_target",
        pg.checkpoint_completion_target.to_string(),
    );
    let threshold = pg
        .log_min_duration_statement
        .map_or("-1".into(), |d| format!("{}ms", d.as_millis()));
    push(POSTGRES_CONF, "log_min_duration_statement", threshold);
    push(POSTGRES_CONF, "log_connections", on_off(pg.log_connections));
    push(
        POSTGRES_CONF,
        "log_disconnections",
        on_off(pg.log_disconnections),
    );
    push(POSTGRES_CONF, "log_lock_waits", on_off(pg.log_lock_waits));
    push(
        POSTGRES_CONF,
        "log_statement",
        pg.log_statement.as_str().to_string(),
    );
    for (key, value) in &pg.other {
        push(
            POSTGRES_CONF,
            key,
            crate::pgconf::shown_setting(key, value).0,
        );
    }
    let redis = &infra.redis;
    push(REDIS_CONF, "bind", redis.bind.join(" "));
    push(REDIS_CONF, "port", redis.port.to_string());
    push(REDIS_CONF, "timeout", seconds(redis.timeout));
    push(REDIS_CONF, "tcp-keepalive", seconds(redis.tcp_keepalive));
    push(REDIS_CONF, "tcp-backlog", redis.tcp_backlog.to_string());
    push(REDIS_CONF, "maxmemory", redis.maxmemory.to_redis());
    push(
        REDIS_CONF,
        "maxmemory-policy",
        redis.maxmemory_policy.as_str().to_string(),
    );
    push(
        REDIS_CONF,
        "maxmemory-samples",
        redis.maxmemory_samples.to_string(),
    );
    push(REDIS_CONF, "appendonly", yes_no(redis.appendonly));
    push(REDIS_CONF, "appendfilename", redis.appendfilename.clone());
    push(
        REDIS_CONF,
        "appendfsync",
        redis.appendfsync.as_str().to_string(),
    );
    push(
        REDIS_CONF,
        "auto-aof-rewrite-percentage",
        redis.auto_aof_rewrite_percentage.to_string(),
    );
    push(
        REDIS_CONF,
        "auto-aof-rewrite-min-size",
        redis.auto_aof_rewrite_min_size.to_redis(),
    );
    push(REDIS_CONF, "maxclients", redis.maxclients.to_string());
    for (key, args) in &redis.other {
        push(
            REDIS_CONF,
            key,
            crate::redisconf::shown_directive(key, args).0,
        );
    }
    let compose = &infra.compose;
    push(COMPOSE_FILE, "name", compose.project_name.clone());
    for (name, service) in [("postgres", &compose.postgres), ("redis", &compose.redis)] {
        push(
            COMPOSE_FILE,
            &format!("services.{name}.image"),
            service.image.clone(),
        );
        push(
            COMPOSE_FILE,
            &format!("services.{name}.container_name"),
            service.container_name.clone(),
        );
        push(
            COMPOSE_FILE,
            &format!("services.{name}.volume"),
            service.volume.clone(),
        );
    }
    push(COMPOSE_FILE, "network", compose.network.clone());
    push(COMPOSE_FILE, "subnet", compose.subnet.clone());
    let env = &infra.env;
    push(ENV, "POSTGRES_DB", env.postgres_db.clone());
    push(ENV, "POSTGRES_USER", env.postgres_user.clone());
    push(ENV, "DATABASE_URL", env.database_url.to_string());
    push(ENV, "REDIS_URL", env.redis_url.to_string());
    push(ENV, "NODE_ENV", env.node_env.clone());
    push(ENV, "POSTGRES_PORT", env.postgres_port.to_string());
    push(ENV, "REDIS_PORT", env.redis_port.to_string());
    if !env.compose_project_name.is_empty() {
        push(
            ENV,
            "COMPOSE_PROJECT_NAME",
            env.compose_project_name.clone(),
        );
    }
    if let Some(password) = &redis.requirepass {
        out.push(Setting {
            file: REDIS_CONF,
            key: "requirepass".into(),
            value: password.to_string(),
            secret: true,
        });
    }
    for (key, secret) in [
        ("POSTGRES_PASSWORD", &env.postgres_password),
        ("SESSION_SECRET", &env.session_secret),
        ("REDIS_PASSWORD", &env.redis_password),
    ] {
        out.push(Setting {
            file: ENV,
            key: key.into(),
            value: MASK.into(),
            secret: !secret.is_empty(),
        });
    }
    out
}

/// The file name and line where a loaded setting is written, if it is written anywhere.
fn written_at(loaded: &LoadedProject, setting: &Setting) -> (&'static str, Option<usize>) {
    let file = if setting.file == ENV {
        loaded.env_file
    } else {
        setting.file
    };
    let key = match (setting.file, setting.key.as_str()) {
        (COMPOSE_FILE, "network" | "subnet") => "networks",
        (COMPOSE_FILE, key) if key.ends_with(".volume") => key.trim_end_matches(".volume"),
        (_, key) => key,
    };
    (
        file,
        loaded
            .line_of(file, key)
            .or_else(|| loaded.line_of(file, &format!("{key}s"))),
    )
}

/// An info finding for each value that differs from the spec, with both values.
pub fn spec_differences(loaded: &LoadedProject) -> Vec<Finding> {
    let spec = settings(&Infrastructure::spec());
    let mut findings = Vec::new();
    for setting in settings(&loaded.infra) {
        let (file, line) = written_at(loaded, &setting);
        let at_spec = spec
            .iter()
            .find(|s| s.file == setting.file && s.key == setting.key);
        let message = match at_spec {
            Some(spec) if spec.value == setting.value && !setting.secret => continue,
            Some(_) if setting.secret => {
                if differs_secretly(loaded, &setting.key) {
                    "differs from the spec (value hidden)".to_string()
                } else {
                    continue;
                }
            }
            Some(spec) => format!(
                "differs from the spec: spec {}, file {}",
                spec.value, setting.value
            ),
            None => format!("is set to {} here; the spec does not set it", setting.value),
        };
        findings.push(
            Finding::info("differs-from-spec", file, message)
                .at_optional_line(line)
                .for_key(setting.key),
        );
    }
    findings
}

fn differs_secretly(loaded: &LoadedProject, key: &str) -> bool {
    let spec = Infrastructure::spec().env;
    let env = &loaded.infra.env;
    match key {
        "POSTGRES_PASSWORD" => env.postgres_password != spec.postgres_password,
        "SESSION_SECRET" => env.session_secret != spec.session_secret,
        "REDIS_PASSWORD" => env.redis_password != spec.redis_password,
        _ => false,
    }
}

/// Where a resolved setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// The spec's default: no file sets it.
    SpecDefault,
    /// A line of a file.
    File {
        /// The file, relative to the project.
        file: &'static str,
        /// The 1-based line.
        line: usize,
    },
    /// The process environment.
    ProcessEnv,
    /// Nowhere: the server config does not set it, so the server runs with its built-in default.
    MissingFromFile {
        /// The file that should set it.
        file: &'static str,
    },
    /// Not in the server's committed config: nanika adds it to the installed copy because a
    /// setting of `nanika.toml` asks for it.
    AddedFor {
        /// The `nanika.toml` key that asks for it.
        key: &'static str,
        /// Its line, when the file sets it there.
        line: Option<usize>,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::SpecDefault => f.write_str("spec default"),
            Source::File { file, line } => write!(f, "{file}:{line}"),
            Source::ProcessEnv => f.write_str("process env"),
            Source::MissingFromFile { file } => {
                write!(
                    f,
                    "missing from {file}: the server uses its built-in default"
                )
            }
            Source::AddedFor { key, line } => {
                write!(f, "added by nanika for nanika.toml")?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                write!(f, " {key}")
            }
        }
    }
}

/// A setting with where its value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedSetting {
    /// The setting.
    #[serde(flatten)]
    pub setting: Setting,
    /// Its source.
    pub source: Source,
}

/// Every setting of the loaded project with its source (`nanika config show`).
pub fn resolved_settings(loaded: &LoadedProject) -> Vec<ResolvedSetting> {
    settings(&loaded.infra)
        .into_iter()
        .map(|mut setting| {
            let source = match loaded
                .env_sources
                .get(setting.key.as_str())
                .filter(|_| setting.file == ENV)
            {
                Some(EnvSource::ProcessEnv) => Source::ProcessEnv,
                Some(EnvSource::File { line }) => Source::File {
                    file: loaded.env_file,
                    line: *line,
                },
                Some(EnvSource::SpecDefault) => Source::SpecDefault,
                None => match written_at(loaded, &setting) {
                    (file, Some(line)) => Source::File { file, line },
                    (file @ (POSTGRES_CONF | REDIS_CONF), None) if !setting.secret => {
                        // The model holds the spec's value, but the server never sees it.
                        setting.value = "(not set)".into();
                        Source::MissingFromFile { file }
                    }
                    (_, None) => Source::SpecDefault,
                },
            };
            ResolvedSetting { setting, source }
        })
        .chain(added_settings(loaded))
        .collect()
}

/// `nanika.toml`'s own settings, and the server settings nanika adds for them to the installed
/// copy of a committed config (never to the committed file).
fn added_settings(loaded: &LoadedProject) -> Vec<ResolvedSetting> {
    use crate::settings::SETTINGS_FILE;
    let backups = &loaded.settings.backups;
    let line = |key: &str| loaded.line_of(SETTINGS_FILE, key);
    let own = |key: &'static str, value: String| {
        let setting = Setting {
            file: SETTINGS_FILE,
            key: key.to_string(),
            value,
            secret: false,
        };
        let source = match line(key) {
            Some(line) => Source::File {
                file: SETTINGS_FILE,
                line,
            },
            None => Source::SpecDefault,
        };
        ResolvedSetting { setting, source }
    };
    let added =
        |file: &'static str, key: &str, value: String, reason: &'static str| ResolvedSetting {
            setting: Setting {
                file,
                key: key.into(),
                value,
                secret: false,
            },
            source: Source::AddedFor {
                key: reason,
                line: line(reason),
            },
        };
    let mut all = vec![own("backups.enabled", on_off(backups.enabled))];
    if backups.enabled {
        all.extend([
            own("backups.retention_full", backups.retention_full.to_string()),
            own("backups.retention_diff", backups.retention_diff.to_string()),
            own("backups.schedule", on_off(backups.schedule)),
            own("backups.full_every", backups.full_every.clone()),
            own("backups.diff_every", backups.diff_every.clone()),
            own("backups.incr_every", backups.incr_every.clone()),
        ]);
        for (key, value) in [
            ("archive_mode", "on"),
            (
                "archive_command",
                "pgbackrest --config=<state>/pgbackrest/pgbackrest.conf --stanza=nanika archive-push %p",
            ),
        ] {
            all.push(added(POSTGRES_CONF, key, value.into(), "backups.enabled"));
        }
    }
    let log = loaded.settings.logging.postgres;
    all.push(own("logging.postgres", log.as_str().into()));
    if log == crate::settings::PostgresLog::Jsonlog {
        // Given on the server's command line (`-c`), so they win over the committed file.
        const WHY: &str = "logging.postgres";
        for (key, value) in [
            ("logging_collector", "on"),
            ("log_destination", "jsonlog"),
            ("log_directory", "<state>/postgres/jsonlog"),
            ("log_filename", "postgresql-%Y-%m-%d_%H%M%S.log"),
            ("log_rotation_size", "10MB"),
            ("log_rotation_age", "0"),
        ] {
            all.push(added(POSTGRES_CONF, key, value.into(), WHY));
        }
    }
    let topology = &loaded.settings.topology;
    let postgres = &topology.postgres;
    all.push(own(
        "topology.postgres.replicas",
        postgres.replicas.to_string(),
    ));
    if postgres.replicas > 0 {
        all.push(own(
            "topology.postgres.synchronous",
            on_off(postgres.synchronous),
        ));
        const WHY: &str = "topology.postgres.replicas";
        all.extend([
            added(POSTGRES_CONF, "wal_log_hints", "on".into(), WHY),
            added(
                POSTGRES_CONF,
                "hba_file",
                "<state>/postgres/pg_hba.conf (replication for nanika_replication, on loopback only)".into(),
                WHY,
            ),
            added(POSTGRES_CONF, "cluster_name", "the node's name".into(), WHY),
        ]);
        if postgres.synchronous {
            all.push(added(
                POSTGRES_CONF,
                "synchronous_standby_names",
                "'ANY 1 (every node)'".into(),
                "topology.postgres.synchronous",
            ));
        }
    }
    let redis = &topology.redis;
    let mode = match redis.mode {
        crate::settings::RedisMode::Single => "single",
        crate::settings::RedisMode::Sentinel => "sentinel",
        crate::settings::RedisMode::Cluster => "cluster",
    };
    all.push(own("topology.redis.mode", mode.into()));
    if redis.mode == crate::settings::RedisMode::Sentinel {
        all.extend([
            own(
                "topology.redis.down_after_ms",
                redis.down_after_ms.to_string(),
            ),
            own(
                "topology.redis.failover_timeout_ms",
                redis.failover_timeout_ms.to_string(),
            ),
            added(
                REDIS_CONF,
                "repl-diskless-sync-delay",
                "0".into(),
                "topology.redis.mode",
            ),
        ]);
        if loaded.infra.redis_password().is_some() {
            let mut masterauth = added(
                REDIS_CONF,
                "masterauth",
                "(the Redis password)".into(),
                "topology.redis.mode",
            );
            masterauth.setting.secret = true;
            all.push(masterauth);
        }
    }
    if redis.mode == crate::settings::RedisMode::Cluster {
        all.push(own(
            "topology.redis.node_timeout_ms",
            redis.node_timeout_ms.to_string(),
        ));
    }
    all
}
