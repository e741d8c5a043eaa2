//! `.env` files: `KEY=VALUE` lines as docker compose and dotenv libraries read them, and the
//! app's environment resolved from them and the process environment.

use crate::env_vars::{self, lookup};
use crate::finding::Finding;
use crate::model::EnvSettings;
use crate::parsed::Parsed;
use crate::secret::Secret;
use crate::urls::{DatabaseUrl, RedisUrl};
use std::collections::BTreeMap;
use std::path::Path;

/// One `KEY=VALUE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvEntry {
    /// 1-based line number.
    pub line: usize,
    /// The variable's name.
    pub key: String,
    /// Its value, unquoted.
    pub value: String,
}

/// Reads `.env` text into entries, reporting malformed lines.
pub fn lex(text: &str, file: &Path) -> (Vec<DotenvEntry>, Vec<Finding>) {
    let mut entries: Vec<DotenvEntry> = Vec::new();
    let mut findings = Vec::new();
    // Editors on Windows save UTF-8 with a byte order mark; read as text it would become part of
    // the first variable's name.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            findings.push(
                Finding::warning(
                    "byte-order-mark",
                    file,
                    "starts with a UTF-8 byte order mark (BOM); nanika ignores it, but other tools may read it as part of the first variable's name",
                )
                .at_line(1)
                .with_hint("save the file as UTF-8 without BOM"),
            );
            rest
        }
        None => text,
    };
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match lex_line(line) {
            Ok((key, value)) => {
                if let Some(first) = entries.iter().find(|e| e.key == key) {
                    findings.push(
                        Finding::error(
                            "duplicate-key",
                            file,
                            format!("set again; line {} set it first", first.line),
                        )
                        .at_line(number)
                        .for_key(&key)
                        .with_hint("keep one of the two lines"),
                    );
                }
                entries.push(DotenvEntry {
                    line: number,
                    key,
                    value,
                });
            }
            Err(what) => {
                let key = line
                    .split('=')
                    .next()
                    .filter(|k| line.contains('=') && !k.is_empty())
                    .map(str::trim);
                let mut finding = Finding::error("syntax", file, what)
                    .at_line(number)
                    .with_hint("each line is KEY=VALUE; quote a value with spaces: KEY=\"a b\"");
                if let Some(key) = key {
                    finding = finding.for_key(key);
                }
                findings.push(finding);
            }
        }
    }
    (entries, findings)
}

fn lex_line(line: &str) -> Result<(String, String), String> {
    let line = line
        .strip_prefix("export ")
        .map(str::trim_start)
        .unwrap_or(line);
    let Some((key, rest)) = line.split_once('=') else {
        return Err(format!(
            "expected KEY=VALUE, found `{}`",
            line.chars().take(30).collect::<String>()
        ));
    };
    let key = key.trim_end();
    if key.is_empty()
        || key.starts_with(|c: char| c.is_ascii_digit())
        || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "`{key}` is not a variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    let rest = rest.trim_start();
    let (value, after) = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let body = &rest[1..];
            let mut value = String::new();
            let mut chars = body.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' if quote == '"' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, other)) => value.push(other),
                        None => {}
                    },
                    c if c == quote => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("the value of {key} has no closing {quote}"))?;
            (value, &body[end..])
        }
        _ => {
            let value = match rest.find(" #") {
                Some(comment) => &rest[..comment],
                None => rest,
            };
            (value.trim_end().to_string(), "")
        }
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(format!(
            "unexpected `{after}` after the quoted value of {key}"
        ));
    }
    Ok((key.to_string(), value))
}

/// `.env.example`'s text with the given host ports written into both the port variables and the
/// URLs, so that a `.env` made from it while `POSTGRES_PORT`/`REDIS_PORT` are exported agrees
/// with the servers from the start. Lines it cannot read are left as they are (and reported by
/// the checks).
pub fn with_ports(text: &str, postgres_port: Option<u16>, redis_port: Option<u16>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let replaced = lex_line(body.trim()).ok().and_then(|(key, value)| {
            match (key.as_str(), postgres_port, redis_port) {
                (env_vars::POSTGRES_PORT, Some(port), _)
                | (env_vars::REDIS_PORT, _, Some(port)) => Some(format!("{key}={port}")),
                (env_vars::DATABASE_URL, Some(port), _) => {
                    let mut url = DatabaseUrl::parse(&value).ok()?;
                    url.port = port;
                    Some(format!("{key}={}", url.expose()))
                }
                (env_vars::REDIS_URL, _, Some(port)) => {
                    let mut url = RedisUrl::parse(&value).ok()?;
                    url.port = port;
                    Some(format!("{key}={}", url.expose()))
                }
                _ => None,
            }
        });
        out += replaced.as_deref().unwrap_or(body);
        out += ending;
    }
    out
}

/// Renders `.env.example`: the spec's variables with their meanings as comments.
pub fn render_example(env: &EnvSettings) -> String {
    let mut out = String::from(
        "# The app's environment (spec: 環境変数). `nanika init` copies this file to .env (mode 0600);\n\
         # edit .env, never this file, and keep .env out of version control.\n\
         # Variables set in the process environment win over .env.\n\n# PostgreSQL\n",
    );
    out += &format!(
        "POSTGRES_DB={}\nPOSTGRES_USER={}\n",
        env.postgres_db, env.postgres_user
    );
    out += &format!("POSTGRES_PASSWORD={}\n", env.postgres_password.expose());
    out += "\n# アプリケーション\n";
    out += &format!("DATABASE_URL={}\n", env.database_url.expose());
    out += &format!("REDIS_URL={}\n", env.redis_url.expose());
    out += &format!("SESSION_SECRET={}\n", env.session_secret.expose());
    out += &format!("NODE_ENV={}\n", env.node_env);
    out +=
        "\n# Host ports (defaults 5432 and 6379); change both these and the URLs above together.\n";
    out += &format!(
        "POSTGRES_PORT={}\nREDIS_PORT={}\n",
        env.postgres_port, env.redis_port
    );
    out += "\n# A password for Redis (optional, recommended where other people use this machine):\n\
            # kept in .env only, never in a committed file; put it in REDIS_URL as well,\n\
            # redis://:PASSWORD@localhost:6379\n";
    if env.redis_password.is_empty() {
        out += "# REDIS_PASSWORD=\n";
    } else {
        out += &format!("REDIS_PASSWORD={}\n", env.redis_password.expose());
    }
    out += "\n# Docker runtime only: another compose project name for a second checkout on the same\n\
            # engine (renames its containers, volumes and network; default: nanika-game).\n";
    if env.compose_project_name.is_empty() {
        out += "# COMPOSE_PROJECT_NAME=\n";
    } else {
        out += &format!("COMPOSE_PROJECT_NAME={}\n", env.compose_project_name);
    }
    out
}

/// Where a variable's value came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EnvSource {
    /// The process environment, which wins over the file.
    ProcessEnv,
    /// A line of the `.env` file read.
    File {
        /// 1-based line.
        line: usize,
    },
    /// Neither: the spec's default.
    SpecDefault,
}

/// The app's environment, with where each value came from.
#[derive(Debug, Clone)]
pub struct ResolvedEnv {
    /// The typed settings.
    pub settings: EnvSettings,
    /// The source of each registry variable.
    pub sources: BTreeMap<&'static str, EnvSource>,
}

/// Resolves the app's environment from a `.env` file's text and the process environment
/// (`process_env` holds only the variables nanika reads; it wins over the file).
pub fn resolve(
    text: &str,
    file: &Path,
    process_env: &BTreeMap<String, String>,
) -> Parsed<ResolvedEnv> {
    let (entries, mut findings) = lex(text, file);
    let mut lines = BTreeMap::new();
    let mut raw: BTreeMap<&'static str, (String, EnvSource)> = BTreeMap::new();
    for entry in &entries {
        lines.insert(entry.key.clone(), entry.line);
        if let Some(var) = lookup(&entry.key) {
            raw.insert(
                var.name,
                (entry.value.clone(), EnvSource::File { line: entry.line }),
            );
        }
    }
    for var in env_vars::ALL.iter().filter(|v| v.in_dotenv) {
        if let Some(value) = process_env.get(var.name) {
            raw.insert(var.name, (value.clone(), EnvSource::ProcessEnv));
        }
    }
    let spec = EnvSettings::spec();
    let mut settings = spec.clone();
    let mut sources = BTreeMap::new();
    for var in env_vars::ALL.iter().filter(|v| v.in_dotenv) {
        let Some((value, source)) = raw.get(var.name) else {
            sources.insert(var.name, EnvSource::SpecDefault);
            let required = !matches!(
                var.name,
                env_vars::POSTGRES_PORT
                    | env_vars::REDIS_PORT
                    | env_vars::REDIS_PASSWORD
                    | env_vars::COMPOSE_PROJECT_NAME
            );
            if required {
                findings.push(
                    Finding::error(
                        "missing-key",
                        file,
                        "is not set; the app and the servers need it",
                    )
                    .for_key(var.name)
                    .with_hint(format!("add a `{}=` line (see .env.example)", var.name)),
                );
            }
            continue;
        };
        sources.insert(var.name, source.clone());
        let line = match source {
            EnvSource::File { line } => Some(*line),
            _ => None,
        };
        let origin = if line.is_none() {
            " (from the process environment)"
        } else {
            ""
        };
        let bad = |message: String, hint: &str| {
            Finding::error("wrong-value", file, format!("{message}{origin}"))
                .at_optional_line(line)
                .for_key(var.name)
                .with_hint(hint.to_string())
        };
        match var.name {
            env_vars::POSTGRES_DB => settings.postgres_db = value.clone(),
            env_vars::POSTGRES_USER => settings.postgres_user = value.clone(),
            env_vars::POSTGRES_PASSWORD => settings.postgres_password = Secret::new(value.clone()),
            env_vars::SESSION_SECRET => settings.session_secret = Secret::new(value.clone()),
            env_vars::REDIS_PASSWORD => settings.redis_password = Secret::new(value.clone()),
            env_vars::NODE_ENV => settings.node_env = value.clone(),
            // Docker's own rule for project names, which become container, volume and
            // network names.
            env_vars::COMPOSE_PROJECT_NAME => {
                let valid = value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
                if valid {
                    settings.compose_project_name = value.clone();
                } else {
                    findings.push(bad(
                        format!("`{value}` is not a compose project name"),
                        "use lowercase letters, digits, `-` and `_`, starting with a letter or digit, e.g. nanika-game-2",
                    ));
                }
            }
            env_vars::DATABASE_URL => match DatabaseUrl::parse(value) {
                Ok(url) => settings.database_url = url,
                Err(e) => findings.push(bad(
                    e.to_string(),
                    "write postgresql://USER:PASSWORD@HOST:PORT/DB?schema=public; other parameters must be Prisma's or libpq's; percent-encode special characters in the password",
                )),
            },
            env_vars::REDIS_URL => match RedisUrl::parse(value) {
                Ok(url) => settings.redis_url = url,
                Err(e) => findings.push(bad(e.to_string(), "write redis://[:PASSWORD@]HOST:PORT[/DB]")),
            },
            env_vars::POSTGRES_PORT | env_vars::REDIS_PORT => match value.parse::<u16>() {
                Ok(port) if port > 0 => {
                    if var.name == env_vars::POSTGRES_PORT {
                        settings.postgres_port = port;
                    } else {
                        settings.redis_port = port;
                    }
                }
                _ => findings.push(bad(format!("`{value}` is not a port"), "use a number from 1 to 65535")),
            },
            _ => {}
        }
    }
    Parsed {
        value: ResolvedEnv { settings, sources },
        lines,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_compose_reads_them() {
        assert_eq!(lex_line("A=1").unwrap(), ("A".into(), "1".into()));
        assert_eq!(
            lex_line("export A = x y # c").unwrap(),
            ("A".into(), "x y".into())
        );
        assert_eq!(
            lex_line(r#"A="a # b\n""#).unwrap(),
            ("A".into(), "a # b\n".into())
        );
        assert_eq!(lex_line("A='$x'").unwrap(), ("A".into(), "$x".into()));
        assert!(lex_line("no equals").is_err());
        assert!(lex_line("1A=x").is_err());
        assert!(lex_line("A=\"open").is_err());
    }

    #[test]
    fn the_example_resolves_to_the_spec() {
        let text = render_example(&EnvSettings::spec());
        let parsed = resolve(&text, Path::new(".env.example"), &BTreeMap::new());
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        assert_eq!(parsed.value.settings, EnvSettings::spec());
    }

    #[test]
    fn ports_are_written_into_the_port_variables_and_the_urls() {
        let text = render_example(&EnvSettings::spec());
        let moved = with_ports(&text, Some(45432), Some(46379));
        let parsed = resolve(&moved, Path::new(".env"), &BTreeMap::new());
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        let env = parsed.value.settings;
        assert_eq!((env.postgres_port, env.database_url.port), (45432, 45432));
        assert_eq!((env.redis_port, env.redis_url.port), (46379, 46379));
        assert_eq!(with_ports(&text, None, None), text);
    }

    #[test]
    fn a_byte_order_mark_is_named_and_ignored() {
        let (entries, findings) = lex("\u{feff}POSTGRES_DB=x\n", Path::new(".env"));
        assert_eq!(entries[0].key, "POSTGRES_DB");
        assert_eq!(findings.len(), 1);
        assert!(findings[0].message.contains("byte order mark"));
    }

    #[test]
    fn the_process_environment_wins() {
        let text = render_example(&EnvSettings::spec());
        let process = BTreeMap::from([("POSTGRES_PORT".to_string(), "15432".to_string())]);
        let parsed = resolve(&text, Path::new(".env"), &process);
        assert_eq!(parsed.value.settings.postgres_port, 15432);
        assert_eq!(parsed.value.sources["POSTGRES_PORT"], EnvSource::ProcessEnv);
    }
}
