//! What must hold across files before any command may act on a server: the files set every
//! setting the spec sets, the URLs agree with the ports and names the servers are set up with,
//! and the names and passwords are ones the servers accept.
//!
//! A project with an error here is never acted on: [`LoadedProject::validate`] is the only way to
//! a [`ValidProject`], and the runtime and the operations take only that.

use crate::check;
use crate::dotenv::EnvSource;
use crate::finding::{Finding, Severity};
use crate::model::Infrastructure;
use crate::project::{LoadedProject, POSTGRES_CONF, REDIS_CONF};
use std::fmt;

/// PostgreSQL truncates longer identifiers to this many bytes (`NAMEDATALEN - 1`).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The findings that concern more than one value: settings missing from the server configs and
/// the environment's agreement with itself. `load` adds them to the project's findings.
pub fn cross_checks(loaded: &LoadedProject) -> Vec<Finding> {
    let mut findings = missing_settings(loaded);
    findings.extend(environment(loaded));
    findings.extend(topology_ports(loaded));
    findings
}

/// How far above its port a Redis Cluster node listens for the other nodes.
pub const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// The topology's nodes and the monitoring stack need ports of their own: none past 65535, none
/// shared with another node or with the spec's two servers.
fn topology_ports(loaded: &LoadedProject) -> Vec<Finding> {
    let file = crate::settings::SETTINGS_FILE;
    let line = |key: &str| loaded.line_of(file, key);
    let env = &loaded.infra.env;
    let ports = match loaded
        .settings
        .topology
        .ports(env.postgres_port, env.redis_port)
    {
        Ok(ports) => ports,
        Err(message) => {
            let key = message.split(':').next().unwrap_or_default().to_string();
            return vec![
                Finding::error("out-of-range", file, message)
                    .at_optional_line(line(&key))
                    .for_key(key)
                    .with_hint("choose a lower first port"),
            ];
        }
    };
    let mut taken: Vec<(u16, String)> = vec![
        (env.postgres_port, "POSTGRES_PORT".into()),
        (env.redis_port, "REDIS_PORT".into()),
    ];
    let named = [
        (
            "topology.postgres.ports_from",
            "PostgreSQL replica",
            &ports.postgres_replicas,
        ),
        (
            "topology.redis.ports_from",
            "Redis replica",
            &ports.redis_replicas,
        ),
        (
            "topology.redis.sentinel_ports_from",
            "sentinel",
            &ports.sentinels,
        ),
        (
            "topology.redis.ports_from",
            "cluster node",
            &ports.cluster_nodes,
        ),
    ];
    // A cluster node also listens on its port + 10000, the cluster bus.
    let buses: Vec<u16> = ports
        .cluster_nodes
        .iter()
        .filter_map(|p| p.checked_add(CLUSTER_BUS_OFFSET))
        .collect();
    let mut findings = Vec::new();
    if buses.len() != ports.cluster_nodes.len() {
        let key = "topology.redis.ports_from";
        findings.push(
            Finding::error(
                "out-of-range",
                file,
                format!("a cluster node's bus port (its port + {CLUSTER_BUS_OFFSET}) would run past 65535"),
            )
            .at_optional_line(line(key))
            .for_key(key)
            .with_hint(format!("choose a first port below {}", 65535 - CLUSTER_BUS_OFFSET - 5)),
        );
    }
    let monitoring = &loaded.settings.monitoring;
    let monitors: Vec<(&str, &str, Vec<u16>)> = if monitoring.enabled {
        monitoring
            .ports(&loaded.settings.backups)
            .into_iter()
            .map(|(key, what, port)| (key, what, vec![port]))
            .collect()
    } else {
        Vec::new()
    };
    let named: Vec<(&str, &str, &Vec<u16>)> = named
        .into_iter()
        .chain([("topology.redis.ports_from", "cluster bus of node", &buses)])
        .chain(monitors.iter().map(|(key, what, list)| (*key, *what, list)))
        .collect();
    for (key, what, list) in named {
        for (index, port) in list.iter().enumerate() {
            let name = if key.starts_with("monitoring.") {
                what.to_string()
            } else {
                format!("{what} {}", index + 1)
            };
            if *port == 0 {
                findings.push(
                    Finding::error(
                        "out-of-range",
                        file,
                        format!("{name} would listen on port 0, which is no port"),
                    )
                    .at_optional_line(line(key))
                    .for_key(key)
                    .with_hint("choose a port from 1024 to 65535"),
                );
                continue;
            }
            if let Some((_, other)) = taken.iter().find(|(p, _)| p == port) {
                findings.push(
                    Finding::error(
                        "port-conflict",
                        file,
                        format!("{name} would listen on port {port}, which {other} already uses"),
                    )
                    .at_optional_line(line(key))
                    .for_key(key)
                    .with_hint(format!("set {key} so the nodes' ports do not overlap")),
                );
            }
            taken.push((*port, name));
        }
    }
    findings
}

/// Every setting the spec sets must be written in the committed server configs: a missing one
/// would make the server run on its built-in default while every check reads the spec's value.
fn missing_settings(loaded: &LoadedProject) -> Vec<Finding> {
    let mut findings = Vec::new();
    for file in [POSTGRES_CONF, REDIS_CONF] {
        // A missing file is a finding of its own.
        let Some(lines) = loaded
            .lines
            .get(file)
            .filter(|_| !loaded.missing_files.contains(&file))
        else {
            continue;
        };
        let server = if file == POSTGRES_CONF {
            "PostgreSQL"
        } else {
            "Redis"
        };
        for setting in check::settings(&Infrastructure::spec())
            .into_iter()
            .filter(|s| s.file == file && !s.secret)
        {
            let written = lines.keys().any(|k| k.eq_ignore_ascii_case(&setting.key));
            if written {
                continue;
            }
            let line = if file == POSTGRES_CONF {
                format!("{} = {}", setting.key, quoted_pg_value(&setting.value))
            } else {
                format!("{} {}", setting.key, setting.value)
            };
            findings.push(
                Finding::error(
                    "missing-setting",
                    file,
                    format!(
                        "is not set: {server} would run with its built-in default instead of the spec's {}",
                        setting.value
                    ),
                )
                .for_key(setting.key)
                .with_hint(format!(
                    "add `{line}` to {file} (or rewrite the file with `nanika init --force`)"
                )),
            );
        }
    }
    findings
}

fn quoted_pg_value(value: &str) -> String {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        value.to_string()
    } else {
        format!("'{value}'")
    }
}

/// Where a variable of the environment is set, for messages: `.env:7`, `the process
/// environment`, or that it is not set and has its default.
fn origin(loaded: &LoadedProject, key: &str) -> String {
    match loaded.env_sources.get(key) {
        Some(EnvSource::File { line }) => format!("{}:{line}", loaded.env_file),
        Some(EnvSource::ProcessEnv) => "the process environment".into(),
        _ => "not set, so the default".into(),
    }
}

fn env_line(loaded: &LoadedProject, key: &str) -> Option<usize> {
    match loaded.env_sources.get(key) {
        Some(EnvSource::File { line }) => Some(*line),
        _ => None,
    }
}

fn env_error(loaded: &LoadedProject, code: &'static str, key: &str, message: String) -> Finding {
    Finding::error(code, loaded.env_file, message)
        .at_optional_line(env_line(loaded, key))
        .for_key(key)
}

/// Whether `host` is this machine, where nanika's servers listen.
pub fn is_local_host(host: &str) -> bool {
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// The environment agrees with itself and names things the servers accept.
fn environment(loaded: &LoadedProject) -> Vec<Finding> {
    let env = &loaded.infra.env;
    let mut findings = Vec::new();
    // A variable that failed to parse keeps the spec's value in the model: comparing it would
    // report a second, misleading finding about a value the user never wrote.
    let unparsed = |key: &str| {
        loaded
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error && f.key.as_deref() == Some(key))
    };

    // One source for ports: the URL the app uses must reach the port the server listens on.
    for (url_key, port_key, url_port, host, port, server) in [
        (
            "DATABASE_URL",
            "POSTGRES_PORT",
            env.database_url.port,
            env.database_url.host.as_str(),
            env.postgres_port,
            "PostgreSQL",
        ),
        (
            "REDIS_URL",
            "REDIS_PORT",
            env.redis_url.port,
            env.redis_url.host.as_str(),
            env.redis_port,
            "Redis",
        ),
    ] {
        if unparsed(url_key) || unparsed(port_key) {
            continue;
        }
        if url_port != port {
            findings.push(
                env_error(
                    loaded,
                    "port-mismatch",
                    url_key,
                    format!(
                        "reaches port {url_port}, but {server} listens on {port} ({port_key}: {}); the app and nanika would reach another server",
                        origin(loaded, port_key)
                    ),
                )
                .with_hint(format!(
                    "make the two agree: change the port in {url_key} ({}) or set {port_key}={url_port}",
                    origin(loaded, url_key)
                )),
            );
        }
        if !is_local_host(host) {
            findings.push(
                env_error(
                    loaded,
                    "not-local",
                    url_key,
                    format!("points at `{host}`, but this project's {server} listens on 127.0.0.1"),
                )
                .with_hint(format!(
                    "write localhost (or 127.0.0.1) as the host of {url_key}"
                )),
            );
        }
    }
    if !unparsed("POSTGRES_PORT") && !unparsed("REDIS_PORT") && env.postgres_port == env.redis_port
    {
        findings.push(
            env_error(
                loaded,
                "port-conflict",
                "REDIS_PORT",
                format!(
                    "is {}, the same port as POSTGRES_PORT ({}): both servers cannot listen on it",
                    env.redis_port,
                    origin(loaded, "POSTGRES_PORT")
                ),
            )
            .with_hint(
                "give each service its own port, e.g. POSTGRES_PORT=5432 and REDIS_PORT=6379",
            ),
        );
    }

    for (key, value, what) in [
        ("POSTGRES_USER", env.postgres_user.as_str(), "role"),
        ("POSTGRES_DB", env.postgres_db.as_str(), "database"),
    ] {
        if let Some(finding) = identifier(loaded, key, value, what) {
            findings.push(finding);
        }
    }
    if env.postgres_password.is_empty() && loaded.env_sources.contains_key("POSTGRES_PASSWORD") {
        findings.push(
            env_error(
                loaded,
                "empty-password",
                "POSTGRES_PASSWORD",
                "is empty: the servers use scram-sha-256, which accepts no empty password".into(),
            )
            .with_hint("set a password (e.g. `openssl rand -hex 16`) in POSTGRES_PASSWORD and DATABASE_URL"),
        );
    }
    findings.extend(url_mismatches(loaded, &unparsed));
    findings
}

/// A role or database name PostgreSQL would refuse, truncate or fold.
fn identifier(loaded: &LoadedProject, key: &str, name: &str, what: &str) -> Option<Finding> {
    let error = |code, message: String, hint: String| {
        Some(env_error(loaded, code, key, message).with_hint(hint))
    };
    if name.is_empty() {
        return error(
            "bad-name",
            format!("is empty; PostgreSQL needs a {what} name"),
            format!("set {key}, e.g. {key}=nanika_game"),
        );
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return error(
            "name-too-long",
            format!(
                "is {} bytes long; PostgreSQL truncates names to {MAX_IDENTIFIER_BYTES} bytes, so the {what} it creates would not be the one the app asks for",
                name.len()
            ),
            format!("use a {what} name of at most {MAX_IDENTIFIER_BYTES} bytes"),
        );
    }
    if name.starts_with("pg_") {
        return error(
            "reserved-name",
            format!("`{name}` starts with `pg_`, which PostgreSQL reserves for its own {what}s"),
            format!("choose a {what} name that does not start with pg_"),
        );
    }
    if name.chars().any(|c| c.is_control()) {
        return error(
            "bad-name",
            format!("contains a control character; PostgreSQL cannot name a {what} with it"),
            format!("use letters, digits and _ in {key}"),
        );
    }
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if !plain {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        return Some(
            Finding::warning(
                "quoted-name",
                loaded.env_file,
                format!(
                    "`{name}` is not a plain lower-case name: nanika creates the {what} as {quoted}, and SQL that writes it unquoted means `{}` instead",
                    name.to_lowercase()
                ),
            )
            .at_optional_line(env_line(loaded, key))
            .for_key(key)
            .with_hint(format!(
                "prefer lower-case letters, digits and _; or quote it as {quoted} in every SQL statement"
            )),
        );
    }
    None
}

/// `DATABASE_URL` and `REDIS_URL` must name what `POSTGRES_*` and redis.conf set up, or the app
/// fails to connect while every server looks healthy (and nanika's commands would act on a
/// database the project did not create).
fn url_mismatches(loaded: &LoadedProject, unparsed: &dyn Fn(&str) -> bool) -> Vec<Finding> {
    let env = &loaded.infra.env;
    let url = &env.database_url;
    let mut findings = Vec::new();
    if !unparsed("DATABASE_URL") {
        for (what, in_url, key, expected) in [
            ("user", &url.user, "POSTGRES_USER", &env.postgres_user),
            ("database", &url.database, "POSTGRES_DB", &env.postgres_db),
        ] {
            if in_url != expected {
                findings.push(
                    env_error(
                        loaded,
                        "url-mismatch",
                        "DATABASE_URL",
                        format!(
                            "its {what} is `{in_url}` but {key} is `{expected}` ({})",
                            origin(loaded, key)
                        ),
                    )
                    .with_hint(format!("make DATABASE_URL agree with {key}")),
                );
            }
        }
        if url.password != env.postgres_password {
            findings.push(
                env_error(
                    loaded,
                    "url-mismatch",
                    "DATABASE_URL",
                    "its password differs from POSTGRES_PASSWORD (values hidden)".into(),
                )
                .with_hint("use the same password in both (percent-encoded in the URL)"),
            );
        }
    }
    let redis_password = &env.redis_password;
    if !redis_password.is_empty()
        && !unparsed("REDIS_URL")
        && &env.redis_url.password != redis_password
    {
        let message = if env.redis_url.password.is_empty() {
            "has no password, but REDIS_PASSWORD is set: the app would be refused"
        } else {
            "its password differs from REDIS_PASSWORD (values hidden)"
        };
        findings.push(
            env_error(loaded, "url-mismatch", "REDIS_URL", message.into()).with_hint(
                "write redis://:PASSWORD@localhost:PORT with REDIS_PASSWORD's password, percent-encoded",
            ),
        );
    }
    if let Some(required) = &loaded.infra.redis.requirepass
        && !unparsed("REDIS_URL")
        && &env.redis_url.password != required
    {
        findings.push(
            env_error(
                loaded,
                "url-mismatch",
                "REDIS_URL",
                "its password differs from redis.conf's requirepass (values hidden)".into(),
            )
            .with_hint("write redis://:PASSWORD@HOST:PORT with requirepass's password"),
        );
    }
    findings
}

/// A project whose files and environment have no error: the only project the runtime and the
/// operations accept, so nothing can act on values that validation rejected.
#[derive(Debug, Clone)]
pub struct ValidProject(LoadedProject);

/// A project refused because its files or environment have errors.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The project as loaded.
    pub loaded: LoadedProject,
}

impl Rejected {
    /// The error findings, the reason for the refusal.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.loaded
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the configuration has {} error(s)",
            self.errors().count()
        )
    }
}

impl LoadedProject {
    /// The project as a [`ValidProject`] when it has no error finding.
    pub fn validate(self) -> Result<ValidProject, Box<Rejected>> {
        if self.findings.iter().any(|f| f.severity == Severity::Error) {
            Err(Box::new(Rejected { loaded: self }))
        } else {
            Ok(ValidProject(self))
        }
    }
}

impl std::ops::Deref for ValidProject {
    type Target = LoadedProject;

    fn deref(&self) -> &LoadedProject {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::{Project, render_files};
    use std::collections::BTreeMap;

    fn project_with(env_edits: &[(&str, &str)], process: &[(&str, &str)]) -> LoadedProject {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in render_files(&Infrastructure::spec()) {
            let path = dir.path().join(path);
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            fs_err::write(path, text).unwrap();
        }
        let mut text = fs_err::read_to_string(dir.path().join(".env.example")).unwrap();
        for (from, to) in env_edits {
            assert!(text.contains(from), "{from}");
            text = text.replace(from, to);
        }
        fs_err::write(dir.path().join(".env"), text).unwrap();
        let process: BTreeMap<String, String> = process
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Project::at(dir.path()).unwrap().load(&process).unwrap()
    }

    fn errors(loaded: &LoadedProject) -> Vec<(&'static str, Option<String>)> {
        loaded
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| (f.code, f.key.clone()))
            .collect()
    }

    #[test]
    fn the_spec_project_is_valid() {
        let loaded = project_with(&[], &[]);
        assert_eq!(errors(&loaded), vec![]);
        assert!(loaded.validate().is_ok());
    }

    #[test]
    fn a_port_exported_without_its_url_is_an_error_naming_both() {
        let loaded = project_with(&[], &[("POSTGRES_PORT", "45432")]);
        let finding = loaded
            .findings
            .iter()
            .find(|f| f.code == "port-mismatch")
            .expect("a port mismatch");
        assert_eq!(finding.key.as_deref(), Some("DATABASE_URL"));
        assert!(finding.message.contains("5432"), "{finding}");
        assert!(finding.message.contains("45432"), "{finding}");
        assert!(finding.message.contains("process environment"), "{finding}");
        assert!(loaded.validate().is_err());
    }

    #[test]
    fn names_postgres_refuses_or_truncates_are_errors() {
        let long = "u".repeat(100);
        for (edit, code) in [
            (
                ("POSTGRES_USER=nanika_user", "POSTGRES_USER=pg_app"),
                "reserved-name",
            ),
            (
                ("POSTGRES_DB=nanika_game", &*format!("POSTGRES_DB={long}")),
                "name-too-long",
            ),
            (
                ("POSTGRES_PASSWORD=nanika_password", "POSTGRES_PASSWORD="),
                "empty-password",
            ),
            (("REDIS_PORT=6379", "REDIS_PORT=5432"), "port-conflict"),
        ] {
            let loaded = project_with(&[edit], &[]);
            assert!(
                errors(&loaded).iter().any(|(c, _)| *c == code),
                "{code}: {:?}",
                loaded.findings
            );
        }
    }

    #[test]
    fn a_mixed_case_name_is_a_warning_that_says_how_it_is_quoted() {
        let loaded = project_with(
            &[
                ("POSTGRES_USER=nanika_user", "POSTGRES_USER=Nanika"),
                ("nanika_user:", "Nanika:"),
            ],
            &[],
        );
        let finding = loaded
            .findings
            .iter()
            .find(|f| f.code == "quoted-name")
            .expect("a quoting warning");
        assert!(finding.message.contains("\"Nanika\""), "{finding}");
        assert_eq!(errors(&loaded), vec![]);
    }

    #[test]
    fn a_server_config_missing_a_spec_setting_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in render_files(&Infrastructure::spec()) {
            let path = dir.path().join(path);
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            let text = if path.ends_with("redis.conf") {
                String::new()
            } else {
                text
            };
            fs_err::write(path, text).unwrap();
        }
        let loaded = Project::at(dir.path())
            .unwrap()
            .load(&BTreeMap::new())
            .unwrap();
        let missing: Vec<_> = loaded
            .findings
            .iter()
            .filter(|f| f.code == "missing-setting")
            .collect();
        assert!(
            missing
                .iter()
                .any(|f| f.key.as_deref() == Some("appendonly")
                    && f.hint
                        .as_deref()
                        .is_some_and(|h| h.contains("appendonly yes"))),
            "{missing:?}"
        );
        assert!(missing.iter().all(|f| f.file.ends_with("redis.conf")));
    }
}
