//! `nanika env` and `nanika exec`: the environment an app needs to reach the services.

use crate::cli::{EnvArgs, EnvFormat};
use crate::context;
use crate::error::{CliError, CliResult};
use nanika_config::LoadedProject;
use nanika_config::secret::MASK;
use std::path::PathBuf;
use std::process::Command;

/// One variable: its name, its real value, and whether it is a secret.
struct Var {
    name: &'static str,
    value: String,
    secret: bool,
    /// How to show a secret one without its secret (a URL with its password masked), when not
    /// all of it is secret.
    masked: Option<String>,
}

/// The app's variables as resolved, then the libpq forms of `DATABASE_URL`.
fn app_env(loaded: &LoadedProject) -> Vec<Var> {
    let env = &loaded.infra.env;
    let url = &env.database_url;
    let var = |name, value: String, secret| Var {
        name,
        value,
        secret,
        masked: None,
    };
    let mut vars = vec![
        var("POSTGRES_DB", env.postgres_db.clone(), false),
        var("POSTGRES_USER", env.postgres_user.clone(), false),
        var(
            "POSTGRES_PASSWORD",
            env.postgres_password.expose().to_string(),
            true,
        ),
        var("POSTGRES_PORT", env.postgres_port.to_string(), false),
        var("DATABASE_URL", url.expose(), true),
        var("DATABASE_URL_LIBPQ", url.libpq_url(), true),
        var("REDIS_URL", env.redis_url.expose(), true),
        var("REDIS_PORT", env.redis_port.to_string(), false),
        var(
            "SESSION_SECRET",
            env.session_secret.expose().to_string(),
            true,
        ),
        var("NODE_ENV", env.node_env.clone(), false),
    ];
    for (name, value) in url.pg_env() {
        vars.push(var(name, value, name == "PGPASSWORD"));
    }
    vars.extend(topology_env(loaded));
    let monitoring = &loaded.settings.monitoring;
    if monitoring.enabled {
        vars.push(var(
            "PROMETHEUS_URL",
            format!("http://127.0.0.1:{}", monitoring.prometheus_port),
            false,
        ));
        if monitoring.alertmanager {
            vars.push(var(
                "ALERTMANAGER_URL",
                format!("http://127.0.0.1:{}", monitoring.alertmanager_port),
                false,
            ));
        }
    }
    vars
}

/// What clients of the topology's nodes need: the replicas' URLs and a failover-aware URL,
/// the sentinels, the cluster's nodes. Nothing for the spec's single servers.
fn topology_env(loaded: &LoadedProject) -> Vec<Var> {
    let env = &loaded.infra.env;
    let Ok(ports) = loaded
        .settings
        .topology
        .ports(env.postgres_port, env.redis_port)
    else {
        return Vec::new();
    };
    let url = &env.database_url;
    let at_port = |port: u16| nanika_config::urls::DatabaseUrl {
        port,
        ..url.clone()
    };
    let mut vars = Vec::new();
    if !ports.postgres_replicas.is_empty() {
        let replicas: Vec<_> = ports
            .postgres_replicas
            .iter()
            .map(|p| at_port(*p))
            .collect();
        vars.push(Var {
            name: "DATABASE_REPLICA_URLS",
            value: replicas
                .iter()
                .map(|u| u.expose())
                .collect::<Vec<_>>()
                .join(","),
            secret: true,
            masked: Some(
                replicas
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        });
        // libpq's multi-host form: a client tries each node and keeps the one that takes
        // writes, so it follows `nanika failover postgres`.
        let hosts: Vec<String> = std::iter::once(env.postgres_port)
            .chain(ports.postgres_replicas.iter().copied())
            .map(|p| format!("{}:{p}", url.host))
            .collect();
        let failover = |libpq: String| {
            let single = format!("@{}:{}/", url.host, url.port);
            let multi = libpq.replacen(&single, &format!("@{}/", hosts.join(",")), 1);
            let joiner = if multi.contains('?') { '&' } else { '?' };
            format!("{multi}{joiner}target_session_attrs=read-write")
        };
        vars.push(Var {
            name: "DATABASE_FAILOVER_URL",
            value: failover(url.libpq_url()),
            secret: true,
            masked: Some(failover(url.masked_libpq_url())),
        });
    }
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let plain = |name, value| Var {
        name,
        value,
        secret: false,
        masked: None,
    };
    if !ports.sentinels.is_empty() {
        vars.push(plain("REDIS_SENTINELS", list(&ports.sentinels)));
        vars.push(plain(
            "REDIS_SENTINEL_MASTER",
            nanika_runtime::native::control::SENTINEL_MASTER.to_string(),
        ));
    }
    if !ports.cluster_nodes.is_empty() {
        vars.push(plain("REDIS_CLUSTER_NODES", list(&ports.cluster_nodes)));
    }
    vars
}

/// The value to show: masked unless asked, with a URL's password masked in place.
fn shown(var: &Var, loaded: &LoadedProject, show_secrets: bool) -> String {
    if show_secrets || !var.secret {
        return var.value.clone();
    }
    if let Some(masked) = &var.masked {
        return masked.clone();
    }
    match var.name {
        "DATABASE_URL" => loaded.infra.env.database_url.to_string(),
        "REDIS_URL" => loaded.infra.env.redis_url.to_string(),
        "DATABASE_URL_LIBPQ" => loaded.infra.env.database_url.masked_libpq_url(),
        _ => MASK.to_string(),
    }
}

/// `value` single-quoted for sh and bash: inside single quotes nothing is special but the quote
/// itself, which is closed, escaped and reopened (`'\''`), so `eval` gives back `value` exactly.
fn shell_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `value` as a .env value that Node's `dotenv` and Docker Compose's parser (compose-go
/// `dotenv/parser.go`) both read back as `value`; `None` when no such form exists.
///
/// - Single quotes are literal in both: no escapes, no `$` interpolation, `#` is no comment. They
///   cannot hold a `'`, a `\` at the end (compose reads `\'` as an escaped quote and looks on),
///   or a carriage return (Node turns one into a newline before it parses). One-line values go
///   there, which nanika's own line-by-line .env reader reads alike too.
/// - Double quotes: Node reads only `\n` and `\r` in them (a `\"` or `\\` stays two characters)
///   while compose reads every backslash escape and interpolates `$`. So a value with a line
///   break goes there, as `\n` and `\r`, when it has no `"`, `\` or `$`.
/// - Else a value with line breaks that single quotes can hold is written across lines in them.
/// - A value with a `'`, a carriage return or a `\` at its end, and also a `"`, `\` or `$`, has no
///   form both read alike.
fn dotenv_value(value: &str) -> Option<String> {
    let single = !value.contains(['\'', '\r']) && !value.ends_with('\\');
    let double = !value.contains(['"', '\\', '$']);
    if single && !value.contains('\n') {
        Some(format!("'{value}'"))
    } else if double {
        Some(format!(
            "\"{}\"",
            value.replace('\n', r"\n").replace('\r', r"\r")
        ))
    } else if single {
        Some(format!("'{value}'"))
    } else {
        None
    }
}

/// The variables as `format` prints them; the human `KEY=value` lines when `None`.
fn render(vars: &[(&'static str, String)], format: Option<EnvFormat>) -> CliResult<String> {
    let lines: Vec<String> = match format {
        None => vars
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect(),
        Some(EnvFormat::Shell) => vars
            .iter()
            .map(|(name, value)| format!("export {name}={}", shell_quoted(value)))
            .collect(),
        Some(EnvFormat::Dotenv) => vars
            .iter()
            .map(|(name, value)| match dotenv_value(value) {
                Some(value) => Ok(format!("{name}={value}")),
                None => Err(CliError::failure(format!(
                    "{name} cannot be written as a .env value that Node's dotenv and Docker Compose read alike: it has a `'`, a carriage return or a `\\` at its end, and also a `\"`, `\\` or `$`"
                ))
                .hint("print it with --format shell or --format json, or choose a value without one of them")),
            })
            .collect::<CliResult<_>>()?,
        Some(EnvFormat::Json) => {
            let map: serde_json::Map<String, serde_json::Value> = vars
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone().into()))
                .collect();
            let json = serde_json::to_string_pretty(&map)
                .map_err(|e| CliError::failure("cannot write the JSON").caused_by(e))?;
            vec![json]
        }
    };
    Ok(lines.join("\n"))
}

/// `nanika env`.
pub fn env(project_dir: Option<&PathBuf>, args: &EnvArgs) -> CliResult {
    let loaded = context::valid(project_dir)?;
    let vars: Vec<(&'static str, String)> = app_env(&loaded)
        .iter()
        .map(|var| (var.name, shown(var, &loaded, args.show_secrets)))
        .collect();
    // Rendered whole before printing, so a value that cannot be written prints nothing at all.
    let text = render(&vars, args.format())?;
    crate::say!("{text}");
    Ok(())
}

/// `nanika exec -- CMD…`: runs CMD with the app's environment; exits with its code.
pub fn exec(
    project_dir: Option<&PathBuf>,
    command: &[String],
) -> CliResult<std::process::ExitCode> {
    let loaded = context::valid(project_dir)?;
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]);
    for key in nanika_config::urls::DatabaseUrl::REDIRECTING_ENV {
        child.env_remove(key);
    }
    for var in app_env(&loaded) {
        child.env(var.name, var.value);
    }
    let status = child.status().map_err(|e| {
        CliError::failure(format!("cannot run `{}`", command[0]))
            .caused_by(e)
            .hint("check that the command exists and is on the PATH")
    })?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Reads `KEY=…` back with nanika's own .env reader, which reads as compose does.
    fn read_back(line: &str) -> String {
        let (entries, findings) = nanika_config::dotenv::lex(line, Path::new(".env"));
        assert!(findings.is_empty(), "{line}: {findings:?}");
        entries[0].value.clone()
    }

    #[test]
    fn shell_values_are_single_quoted() {
        assert_eq!(
            shell_quoted("-c search_path=public"),
            "'-c search_path=public'"
        );
        assert_eq!(shell_quoted("it's $x"), r"'it'\''s $x'");
        assert_eq!(shell_quoted(""), "''");
    }

    #[test]
    fn dotenv_values_take_the_form_both_readers_agree_on() {
        for (value, form) in [
            ("plain", "'plain'"),
            ("-c search_path=public", "'-c search_path=public'"),
            (r#"a "b" \c $d #e"#, r#"'a "b" \c $d #e'"#),
            ("it's #1", r#""it's #1""#),
            ("two\nlines", r#""two\nlines""#),
            ("cr\rhere", r#""cr\rhere""#),
            ("$two\nlines", "'$two\nlines'"),
            ("", "''"),
        ] {
            assert_eq!(dotenv_value(value).as_deref(), Some(form), "{value:?}");
        }
        for value in ["it's $5", r#"it's "x""#, r"it's \", r"ends with \", "a\r$"] {
            assert_eq!(dotenv_value(value), None, "{value:?}");
        }
    }

    #[test]
    fn one_line_dotenv_values_read_back_with_nanikas_reader() {
        for value in [
            "p+w %41@:/#?&\"$ x",
            "it's #1",
            "two\nlines",
            r"back\slash",
            " padded ",
        ] {
            let form = dotenv_value(value).unwrap();
            assert_eq!(read_back(&format!("K={form}")), value, "{form}");
        }
    }

    #[test]
    fn a_value_without_a_common_form_fails_naming_its_variable_only() {
        let vars = [
            ("NODE_ENV", "development".to_string()),
            ("POSTGRES_PASSWORD", "it's $ecret".to_string()),
        ];
        let err = render(&vars, Some(EnvFormat::Dotenv)).unwrap_err();
        let message = format!("{err:?}");
        assert!(message.contains("POSTGRES_PASSWORD"), "{message}");
        assert!(!message.contains("ecret"), "{message}");
        assert!(render(&vars, Some(EnvFormat::Shell)).is_ok());
    }
}
