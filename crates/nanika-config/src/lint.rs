//! Risks rather than syntax: settings a server accepts but that lose data, leak secrets or expose
//! a service (`nanika config lint`). Each finding says why it matters and what to do.

use crate::finding::{Finding, Severity};
use crate::model::{
    LogStatement, MaxmemoryPolicy, PLACEHOLDER_SESSION_SECRET, SPEC_POSTGRES_PASSWORD,
};
use crate::ports::{EPHEMERAL_RANGE_FILE, PortRange};
use crate::project::{LoadedProject, POSTGRES_CONF, REDIS_CONF};
use crate::units::MemorySize;

/// What the lint is told about where the project will run.
#[derive(Debug, Clone, Copy, Default)]
pub struct LintOptions {
    /// Judge for production: weak secrets become errors.
    pub production: bool,
    /// The machine's memory, to judge `shared_buffers` by; `None` skips that rule.
    pub machine_memory: Option<MemorySize>,
    /// The kernel's ephemeral port range (see [`crate::ports`]), to judge the ports by; `None`
    /// skips that rule.
    pub ephemeral_ports: Option<PortRange>,
}

/// Passwords so common that they are the first ones tried.
const COMMON_PASSWORDS: &[&str] = &[
    "password", "postgres", "admin", "changeme", "secret", "123456", "12345678", "qwerty",
    "letmein",
];

/// The shortest password and session secret lint accepts without a finding.
const MIN_PASSWORD_LEN: usize = 12;
const MIN_SESSION_SECRET_LEN: usize = 32;

/// Every risk in the loaded project.
pub fn lint(loaded: &LoadedProject, options: LintOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let infra = &loaded.infra;
    let env_file = loaded.env_file;
    let env_line = |key: &str| loaded.line_of(env_file, key);
    let secret_severity = if options.production {
        Severity::Error
    } else {
        Severity::Warning
    };

    if matches!(
        infra.redis.maxmemory_policy,
        MaxmemoryPolicy::AllkeysLru | MaxmemoryPolicy::AllkeysLfu | MaxmemoryPolicy::AllkeysRandom
    ) {
        findings.push(
            Finding::warning(
                "session-eviction",
                REDIS_CONF,
                format!(
                    "{} lets Redis evict any key when maxmemory is reached, session keys included: users are logged out without any error",
                    infra.redis.maxmemory_policy.as_str()
                ),
            )
            .at_optional_line(loaded.line_of(REDIS_CONF, "maxmemory-policy"))
            .for_key("maxmemory-policy")
            .with_hint("keep sessions in a separate Redis with `maxmemory-policy noeviction`; or use a volatile-* policy, which evicts only keys with a TTL, and give cache keys shorter TTLs than sessions"),
        );
    }

    let password = infra.env.postgres_password.expose();
    let weak = if password == SPEC_POSTGRES_PASSWORD {
        Some("is the spec's example password, known to anyone who has read it")
    } else if COMMON_PASSWORDS.contains(&password.to_ascii_lowercase().as_str()) {
        Some("is one of the most common passwords")
    } else if password.chars().count() < MIN_PASSWORD_LEN {
        Some("is shorter than 12 characters")
    } else {
        None
    };
    if let Some(why) = weak {
        findings.push(
            Finding::new(secret_severity, "weak-password", env_file, why)
                .at_optional_line(env_line("POSTGRES_PASSWORD"))
                .for_key("POSTGRES_PASSWORD")
                .with_hint("set a random password of 20 or more characters (e.g. `openssl rand -base64 24`) in POSTGRES_PASSWORD and DATABASE_URL"),
        );
    }

    let secret = infra.env.session_secret.expose();
    let placeholder = if secret == PLACEHOLDER_SESSION_SECRET {
        Some("is the spec's placeholder: anyone can forge session cookies signed with it")
    } else if secret.chars().count() < MIN_SESSION_SECRET_LEN {
        Some("is shorter than 32 characters, too short to sign sessions safely")
    } else {
        None
    };
    if let Some(why) = placeholder {
        findings.push(
            Finding::new(secret_severity, "weak-session-secret", env_file, why)
                .at_optional_line(env_line("SESSION_SECRET"))
                .for_key("SESSION_SECRET")
                .with_hint("set a random value of 32 or more bytes, e.g. `openssl rand -hex 32`"),
        );
    }

    if infra.redis_password().is_none() {
        findings.push(
            Finding::warning(
                "redis-no-password",
                env_file,
                format!(
                    "Redis requires no password: any program of any user on this machine can connect to 127.0.0.1:{} and read or change every key (sessions included), or reconfigure it with CONFIG SET",
                    infra.env.redis_port
                ),
            )
            .for_key("REDIS_PASSWORD")
            .with_hint("set REDIS_PASSWORD in .env and the same password in REDIS_URL (redis://:PASSWORD@localhost:6379); nanika gives it to Redis from its own owner-only copy of redis.conf"),
        );
    }

    let exposed = infra.redis.bind.iter().any(|address| !is_loopback(address));
    if exposed
        && infra.redis.requirepass.is_none()
        && infra.redis.other.iter().all(|(k, _)| k != "user")
    {
        let severity = if options.production {
            Severity::Error
        } else {
            Severity::Warning
        };
        findings.push(
            Finding::new(
                severity,
                "redis-open",
                REDIS_CONF,
                format!("Redis listens on {} without a password: anyone who reaches the port can read sessions and run commands", infra.redis.bind.join(" ")),
            )
            .at_optional_line(loaded.line_of(REDIS_CONF, "bind"))
            .for_key("bind")
            .with_hint("keep the port published on 127.0.0.1 only (compose.yaml does; nanika's native runtime binds loopback), and set `requirepass` plus the password in REDIS_URL before exposing it"),
        );
    }

    if infra.postgres.log_statement != LogStatement::None {
        findings.push(
            Finding::warning(
                "password-in-log",
                POSTGRES_CONF,
                format!(
                    "log_statement = '{}' logs DDL, so `CREATE/ALTER ROLE … PASSWORD '…'` writes role passwords into the server log in clear text",
                    infra.postgres.log_statement.as_str()
                ),
            )
            .at_optional_line(loaded.line_of(POSTGRES_CONF, "log_statement"))
            .for_key("log_statement")
            .with_hint("set passwords with psql's \\password (it sends a SCRAM hash, not the password), and use log_statement = 'none' where logs leave the machine"),
        );
    }

    if let Some(memory) = options.machine_memory {
        let shared_buffers = infra.postgres.shared_buffers;
        if shared_buffers.bytes() > memory.bytes() / 4 {
            findings.push(
                Finding::warning(
                    "shared-buffers-too-large",
                    POSTGRES_CONF,
                    format!(
                        "{} is more than a quarter of this machine's {} of memory",
                        shared_buffers.to_postgres(),
                        memory.to_postgres()
                    ),
                )
                .at_optional_line(loaded.line_of(POSTGRES_CONF, "shared_buffers"))
                .for_key("shared_buffers")
                .with_hint(
                    "keep shared_buffers at or below 25% of memory; the OS cache does the rest",
                ),
            );
        }
    }

    if let Some(range) = options.ephemeral_ports {
        for (service, key, port) in [
            ("PostgreSQL", "POSTGRES_PORT", infra.env.postgres_port),
            ("Redis", "REDIS_PORT", infra.env.redis_port),
        ] {
            if range.contains(port) {
                findings.push(
                    Finding::warning(
                        "port-in-ephemeral-range",
                        env_file,
                        format!(
                            "{service}'s port {port} is inside the kernel's ephemeral port range {range} ({EPHEMERAL_RANGE_FILE}), from which every outgoing connection takes its source port: while the server is down, a client's connection can hold the port (for up to 60 s after it closes, in TIME-WAIT), and the server then cannot bind it"
                        ),
                    )
                    .at_optional_line(env_line(key))
                    .for_key(key)
                    .with_hint(format!(
                        "pick a port below {} (and above 1024) in {key} and the matching URL, or reserve this one for servers with net.ipv4.ip_local_reserved_ports",
                        range.low
                    )),
                );
            }
        }
    }

    findings
}

fn is_loopback(address: &str) -> bool {
    let address = address.trim_start_matches('-');
    address == "localhost" || address == "::1" || address.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::{Project, render_files};
    use std::collections::BTreeMap;

    fn spec_project() -> (tempfile::TempDir, LoadedProject) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in render_files(&crate::Infrastructure::spec()) {
            let path = dir.path().join(path);
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            fs_err::write(path, text).unwrap();
        }
        let loaded = Project::at(dir.path())
            .unwrap()
            .load(&BTreeMap::new())
            .unwrap();
        (dir, loaded)
    }

    fn codes(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn shared_buffers_over_a_quarter_of_memory_is_flagged() {
        let (_dir, loaded) = spec_project();
        let small = LintOptions {
            production: false,
            machine_memory: Some(MemorySize::mib(512)),
            ephemeral_ports: None,
        };
        let found = lint(&loaded, small);
        let finding = found
            .iter()
            .find(|f| f.code == "shared-buffers-too-large")
            .expect("flagged on 512MB");
        assert_eq!(
            (finding.line, finding.key.as_deref()),
            (Some(12), Some("shared_buffers"))
        );
        let large = LintOptions {
            production: false,
            machine_memory: Some(MemorySize::gib(24)),
            ephemeral_ports: None,
        };
        assert!(!codes(&lint(&loaded, large)).contains(&"shared-buffers-too-large"));
    }

    #[test]
    fn production_turns_weak_secrets_into_errors() {
        let (_dir, loaded) = spec_project();
        let severity = |production| {
            lint(
                &loaded,
                LintOptions {
                    production,
                    machine_memory: None,
                    ephemeral_ports: None,
                },
            )
            .into_iter()
            .find(|f| f.code == "weak-password")
            .map(|f| f.severity)
        };
        assert_eq!(severity(false), Some(Severity::Warning));
        assert_eq!(severity(true), Some(Severity::Error));
    }

    #[test]
    fn a_port_inside_the_ephemeral_range_is_flagged_on_its_line() {
        let (dir, _) = spec_project();
        let env = dir.path().join(".env");
        let text = fs_err::read_to_string(dir.path().join(".env.example")).unwrap();
        fs_err::write(
            &env,
            text.replace("POSTGRES_PORT=5432", "POSTGRES_PORT=38432"),
        )
        .unwrap();
        let loaded = Project::at(dir.path())
            .unwrap()
            .load(&BTreeMap::new())
            .unwrap();
        let options = LintOptions {
            ephemeral_ports: PortRange::parse("32768 60999"),
            ..LintOptions::default()
        };
        let found = lint(&loaded, options);
        let flagged: Vec<_> = found
            .iter()
            .filter(|f| f.code == "port-in-ephemeral-range")
            .collect();
        assert_eq!(flagged.len(), 1, "{found:?}");
        assert_eq!(flagged[0].key.as_deref(), Some("POSTGRES_PORT"));
        assert!(flagged[0].line.is_some());
        assert!(
            flagged[0].message.contains("38432"),
            "{}",
            flagged[0].message
        );
        let unknown = LintOptions::default();
        assert!(!codes(&lint(&loaded, unknown)).contains(&"port-in-ephemeral-range"));
    }
}
