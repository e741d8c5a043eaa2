//! `postgresql.conf`: reading it the way PostgreSQL 15 does, checking each value against the
//! server's own catalog of settings, and rendering the model back into a file.

use crate::finding::{Finding, did_you_mean};
use crate::model::{LogStatement, PostgresSettings, WalCompression};
use crate::parsed::Parsed;
use crate::units::{MemorySize, parse_postgres_int, postgres_memory_unit};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

/// The type of a PostgreSQL setting, as `pg_settings.vartype` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// on/off.
    Bool,
    /// A whole number, possibly with a unit.
    Integer,
    /// A floating-point number.
    Real,
    /// One of a fixed list of words.
    Enum,
    /// Free text.
    String,
}

/// One setting of PostgreSQL 15, read from `data/pg15-settings.tsv`.
#[derive(Debug, Clone)]
pub struct PgSetting {
    /// The setting's name.
    pub name: &'static str,
    /// Its type.
    pub vartype: PgType,
    /// Its base unit (`8kB`, `kB`, `ms`, `s`, ...), empty for none.
    pub unit: &'static str,
    /// The smallest value, for numbers.
    pub min: Option<f64>,
    /// The largest value, for numbers.
    pub max: Option<f64>,
    /// The allowed words, for enums.
    pub enum_values: Vec<&'static str>,
    /// When it can be changed; `internal` ones cannot be set at all.
    pub context: &'static str,
}

/// Every setting PostgreSQL 15 knows, by lower-cased name (the server matches names ignoring case).
pub static PG15_SETTINGS: LazyLock<BTreeMap<&'static str, PgSetting>> = LazyLock::new(|| {
    include_str!("../data/pg15-settings.tsv")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let cols: Vec<&'static str> = line.split('\t').collect();
            let vartype = match cols[1] {
                "bool" => PgType::Bool,
                "integer" => PgType::Integer,
                "real" => PgType::Real,
                "enum" => PgType::Enum,
                _ => PgType::String,
            };
            let setting = PgSetting {
                name: cols[0],
                vartype,
                unit: cols[2],
                min: cols[3].parse().ok(),
                max: cols[4].parse().ok(),
                enum_values: cols[5].split(',').filter(|v| !v.is_empty()).collect(),
                context: cols[6],
            };
            (cols[0].to_ascii_lowercase().leak() as &'static str, setting)
        })
        .collect()
});

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgEntry {
    /// 1-based line number.
    pub line: usize,
    /// The name, lower-cased as the server treats it.
    pub name: String,
    /// The value with quotes removed and escapes resolved.
    pub value: String,
}

/// A value as the server would read it.
#[derive(Debug, Clone, PartialEq)]
enum PgValue {
    Bool(bool),
    Integer(i64),
    Real(f64),
    Word(String),
}

/// Splits a file into entries, reporting lines that are not `name [=] value`.
pub fn lex(text: &str, file: &Path) -> (Vec<PgEntry>, Vec<Finding>) {
    let mut entries = Vec::new();
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match lex_line(line) {
            Ok(Some((name, value))) => entries.push(PgEntry { line: number, name: name.to_ascii_lowercase(), value }),
            Ok(None) => {}
            Err(what) => findings.push(
                Finding::error("syntax", file, what)
                    .at_line(number)
                    .with_hint("a line is `name = value`; quote text values with single quotes: listen_addresses = '*'"),
            ),
        }
    }
    (entries, findings)
}

fn lex_line(line: &str) -> Result<Option<(String, String)>, String> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$'))
        .unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "expected a setting name, found `{}`",
            rest.chars().take(20).collect::<String>()
        ));
    }
    let mut rest = rest[name_end..].trim_start();
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start();
    }
    let (value, after) = if let Some(quoted) = rest.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    }
                }
                '\'' if quoted[i + 1..].starts_with('\'') => {
                    value.push('\'');
                    chars.next();
                }
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                other => value.push(other),
            }
        }
        let end = end.ok_or_else(|| format!("the value of `{name}` has no closing quote"))?;
        (value, &quoted[end..])
    } else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(format!("`{name}` has no value"));
        }
        (rest[..end].to_string(), &rest[end..])
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(format!(
            "unexpected `{}` after the value of `{name}`",
            after.split_whitespace().next().unwrap_or(after)
        ));
    }
    Ok(Some((name.to_string(), value)))
}

/// PostgreSQL's booleans: on/off, true/false, yes/no, 1/0, and unambiguous prefixes of them.
pub fn parse_pg_bool(raw: &str) -> Option<bool> {
    let word = raw.trim().to_ascii_lowercase();
    match word.as_str() {
        "on" | "1" => return Some(true),
        "off" | "of" | "0" => return Some(false),
        "" | "o" => return None,
        _ => {}
    }
    if "true".starts_with(&word) || "yes".starts_with(&word) {
        Some(true)
    } else if "false".starts_with(&word) || "no".starts_with(&word) {
        Some(false)
    } else {
        None
    }
}

fn format_limit(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Checks one entry against the catalog, giving the value the server would use.
fn check_value(entry: &PgEntry, setting: &PgSetting, file: &Path) -> Result<PgValue, Finding> {
    let name = entry.name.as_str();
    let wrong = |code: &'static str, message: String, hint: String| {
        Finding::error(code, file, message)
            .at_line(entry.line)
            .for_key(name)
            .with_hint(hint)
    };
    let range_check = |value: f64| -> Result<(), Finding> {
        let (Some(min), Some(max)) = (setting.min, setting.max) else {
            return Ok(());
        };
        if value < min || value > max {
            let unit = if setting.unit.is_empty() {
                String::new()
            } else {
                format!(" (in units of {})", setting.unit)
            };
            return Err(wrong(
                "out-of-range",
                format!(
                    "{} is outside the valid range {} to {}{unit}",
                    entry.value,
                    format_limit(min),
                    format_limit(max)
                ),
                format!(
                    "set `{name}` to a value from {} to {}{unit}",
                    format_limit(min),
                    format_limit(max)
                ),
            ));
        }
        Ok(())
    };
    match setting.vartype {
        PgType::Bool => parse_pg_bool(&entry.value)
            .map(PgValue::Bool)
            .ok_or_else(|| {
                wrong(
                    "wrong-type",
                    format!("`{}` is not a boolean", entry.value),
                    format!("use `{name} = on` or `{name} = off`"),
                )
            }),
        PgType::Integer => {
            let value = parse_postgres_int(&entry.value, setting.unit).map_err(|e| {
                let example = if postgres_memory_unit(setting.unit).is_some() {
                    format!("{name} = 64MB")
                } else if !setting.unit.is_empty() {
                    format!("{name} = 1000ms")
                } else {
                    format!("{name} = 100")
                };
                let code = if matches!(e, crate::units::UnitError::BadUnit { .. }) {
                    "wrong-unit"
                } else {
                    "wrong-type"
                };
                wrong(
                    code,
                    e.to_string(),
                    format!("write a whole number with an optional unit, e.g. {example}"),
                )
            })?;
            range_check(value as f64)?;
            Ok(PgValue::Integer(value))
        }
        PgType::Real => {
            let value: f64 = entry.value.trim().parse().map_err(|_| {
                wrong(
                    "wrong-type",
                    format!("`{}` is not a number", entry.value),
                    format!("write a number, e.g. {name} = 1.1"),
                )
            })?;
            range_check(value)?;
            Ok(PgValue::Real(value))
        }
        PgType::Enum => setting
            .enum_values
            .iter()
            .find(|v| v.eq_ignore_ascii_case(entry.value.trim()))
            .map(|v| PgValue::Word(v.to_string()))
            // Enums that grew out of booleans (wal_compression, ...) still take every boolean spelling.
            .or_else(|| {
                let boolean_like =
                    setting.enum_values.contains(&"on") && setting.enum_values.contains(&"off");
                parse_pg_bool(&entry.value)
                    .filter(|_| boolean_like)
                    .map(|b| PgValue::Word(on_off(b).to_string()))
            })
            .ok_or_else(|| {
                wrong(
                    "wrong-value",
                    format!(
                        "`{}` is not one of {}",
                        entry.value,
                        setting.enum_values.join(", ")
                    ),
                    format!("use one of: {}", setting.enum_values.join(", ")),
                )
            }),
        PgType::String => Ok(PgValue::Word(entry.value.clone())),
    }
}

/// Reads `postgresql.conf` text into the model, reporting every problem with its line.
pub fn parse(text: &str, file: &Path) -> Parsed<PostgresSettings> {
    let (entries, mut findings) = lex(text, file);
    let mut settings = PostgresSettings::spec();
    let mut lines = BTreeMap::new();
    for entry in &entries {
        if matches!(
            entry.name.as_str(),
            "include" | "include_if_exists" | "include_dir"
        ) {
            findings.push(
                Finding::error(
                    "unsupported-include",
                    file,
                    format!("`{}` is not supported", entry.name),
                )
                .at_line(entry.line)
                .for_key(&entry.name)
                .with_hint(
                    "nanika checks and mounts one file; copy the included settings into this file",
                ),
            );
            continue;
        }
        if let Some(first) = lines.get(&entry.name) {
            findings.push(
                Finding::error(
                    "duplicate-key",
                    file,
                    format!("set again; line {first} set it first and this later value wins"),
                )
                .at_line(entry.line)
                .for_key(&entry.name)
                .with_hint("keep one of the two lines"),
            );
        }
        lines.insert(entry.name.clone(), entry.line);
        if entry.name.contains('.') {
            // A dotted name belongs to an extension (auto_explain.log_min_duration, ...), which the
            // server accepts as a placeholder without knowing its type.
            settings
                .other
                .push((entry.name.clone(), entry.value.clone()));
            continue;
        }
        let Some(setting) = PG15_SETTINGS.get(entry.name.as_str()) else {
            let suggestion = did_you_mean(&entry.name, PG15_SETTINGS.keys().copied());
            let hint = match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "see the list of settings: https://www.postgresql.org/docs/15/runtime-config.html".to_string(),
            };
            findings.push(
                Finding::error("unknown-key", file, "PostgreSQL 15 has no such setting")
                    .at_line(entry.line)
                    .for_key(&entry.name)
                    .with_hint(hint),
            );
            continue;
        };
        if setting.context == "internal" {
            findings.push(
                Finding::error(
                    "read-only",
                    file,
                    "this setting is fixed when PostgreSQL is built and cannot be set",
                )
                .at_line(entry.line)
                .for_key(&entry.name)
                .with_hint("remove the line"),
            );
            continue;
        }
        match check_value(entry, setting, file) {
            Ok(value) => apply(&mut settings, setting, entry, value),
            Err(finding) => findings.push(finding),
        }
    }
    Parsed {
        value: settings,
        lines,
        findings,
    }
}

/// Stores a checked value in the model's typed field, or among the other settings.
fn apply(settings: &mut PostgresSettings, setting: &PgSetting, entry: &PgEntry, value: PgValue) {
    let bytes =
        |n: i64| MemorySize(n.max(0) as u64 * postgres_memory_unit(setting.unit).unwrap_or(1));
    match (entry.name.as_str(), value) {
        ("listen_addresses", PgValue::Word(v)) => settings.listen_addresses = v,
        ("port", PgValue::Integer(v)) => settings.port = v as u16,
        ("max_connections", PgValue::Integer(v)) => settings.max_connections = v as u32,
        ("shared_buffers", PgValue::Integer(v)) => settings.shared_buffers = bytes(v),
        ("effective_cache_size", PgValue::Integer(v)) => settings.effective_cache_size = bytes(v),
        ("work_mem", PgValue::Integer(v)) => settings.work_mem = bytes(v),
        ("maintenance_work_mem", PgValue::Integer(v)) => settings.maintenance_work_mem = bytes(v),
        ("random_page_cost", PgValue::Real(v)) => settings.random_page_cost = v,
        ("effective_io_concurrency", PgValue::Integer(v)) => {
            settings.effective_io_concurrency = v as u32
        }
        ("wal_compression", PgValue::Word(v)) => {
            settings.wal_compression = WalCompression::parse(&v).unwrap_or(WalCompression::On);
        }
        ("wal_compression", PgValue::Bool(v)) => {
            settings.wal_compression = if v {
                WalCompression::On
            } else {
                WalCompression::Off
            };
        }
        ("checkpoint_completion_target", PgValue::Real(v)) => {
            settings.checkpoint_completion_target = v
        }
        ("log_min_duration_statement", PgValue::Integer(v)) => {
            settings.log_min_duration_statement = u64::try_from(v).ok().map(Duration::from_millis);
        }
        ("log_connections", PgValue::Bool(v)) => settings.log_connections = v,
        ("log_disconnections", PgValue::Bool(v)) => settings.log_disconnections = v,
        ("log_lock_waits", PgValue::Bool(v)) => settings.log_lock_waits = v,
        ("log_statement", PgValue::Word(v)) => {
            settings.log_statement = LogStatement::parse(&v).unwrap_or(LogStatement::Mod)
        }
        _ => settings
            .other
            .push((entry.name.clone(), entry.value.clone())),
    }
}

/// Quotes a value unless it is a plain number or word, as `postgresql.conf.sample` writes them.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    }
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

/// Renders the model as a `postgresql.conf`, laid out in the spec's sections with its comments.
pub fn render(settings: &PostgresSettings) -> String {
    let line = |key: &str, value: String, comment: &str| {
        let assignment = format!("{key} = {value}");
        if comment.is_empty() {
            format!("{assignment}\n")
        } else {
            format!("{assignment:<35}# {comment}\n")
        }
    };
    let s = settings;
    let mut out = String::from(
        "# PostgreSQL 15 for nanika-game (spec: PostgreSQL設定詳細).\n\
         # Rendered by `nanika init`; `nanika config check` checks it against the spec.\n\
         # nanika's native runtime adds only what it needs on top: data directory, port,\n\
         # listen_addresses on loopback and the socket directory.\n\n# 接続設定\n",
    );
    out += &line("listen_addresses", quote(&s.listen_addresses), "");
    out += &line("port", s.port.to_string(), "");
    out += &line("max_connections", s.max_connections.to_string(), "");
    out += "\n# メモリ設定\n";
    out += &line(
        "shared_buffers",
        s.shared_buffers.to_postgres(),
        "共有メモリバッファ",
    );
    out += &line(
        "effective_cache_size",
        s.effective_cache_size.to_postgres(),
        "OS+DBキャッシュサイズ",
    );
    out += &line(
        "work_mem",
        s.work_mem.to_postgres(),
        "ソート・ハッシュ操作用メモリ",
    );
    out += &line(
        "maintenance_work_mem",
        s.maintenance_work_mem.to_postgres(),
        "メンテナンス操作用メモリ",
    );
    out += "\n# パフォーマンス設定\n";
    out += &line(
        "random_page_cost",
        s.random_page_cost.to_string(),
        "SSD用に最適化",
    );
    out += &line(
        "effective_io_concurrency",
        s.effective_io_concurrency.to_string(),
        "並行I/O操作数",
    );
    out += &line(
        "wal_compression",
        s.wal_compression.as_str().to_string(),
        "WALログ圧縮",
    );
    out += &line(
        "checkpoint_completion_target",
        s.checkpoint_completion_target.to_string(),
        "",
    );
    out += "\n# ログ設定\n";
    let threshold = s
        .log_min_duration_statement
        .map_or("-1".to_string(), |d| d.as_millis().to_string());
    out += &line(
        "log_min_duration_statement",
        threshold,
        "1秒以上のスロークエリを記録 (ms)",
    );
    out += &line(
        "log_connections",
        on_off(s.log_connections).into(),
        "接続ログ",
    );
    out += &line(
        "log_disconnections",
        on_off(s.log_disconnections).into(),
        "切断ログ",
    );
    out += &line(
        "log_lock_waits",
        on_off(s.log_lock_waits).into(),
        "ロック待機ログ",
    );
    out += &line(
        "log_statement",
        format!("'{}'", s.log_statement.as_str()),
        "DDL/DMLログ",
    );
    if !s.other.is_empty() {
        out += "\n# その他の設定\n";
        for (key, value) in &s.other {
            out += &line(key, quote(value), "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_knows_postgres_15() {
        let shared = &PG15_SETTINGS["shared_buffers"];
        assert_eq!(
            (shared.vartype, shared.unit, shared.min),
            (PgType::Integer, "8kB", Some(16.0))
        );
        assert!(PG15_SETTINGS["log_statement"].enum_values.contains(&"mod"));
        assert!(PG15_SETTINGS.len() > 300);
    }

    #[test]
    fn lexing_follows_the_server() {
        assert_eq!(
            lex_line("a = 'it''s' # c"),
            Ok(Some(("a".into(), "it's".into())))
        );
        assert_eq!(
            lex_line("  port 5432"),
            Ok(Some(("port".into(), "5432".into())))
        );
        assert_eq!(lex_line("w=4MB#x"), Ok(Some(("w".into(), "4MB".into()))));
        assert!(lex_line("a = 'open").is_err());
        assert!(lex_line("a = 1 2").is_err());
        assert_eq!(lex_line("   # only a comment"), Ok(None));
    }

    #[test]
    fn booleans_take_every_spelling_the_server_takes() {
        for yes in ["on", "ON", "true", "t", "yes", "y", "1"] {
            assert_eq!(parse_pg_bool(yes), Some(true), "{yes}");
        }
        for no in ["off", "of", "false", "f", "no", "n", "0"] {
            assert_eq!(parse_pg_bool(no), Some(false), "{no}");
        }
        assert_eq!(parse_pg_bool("o"), None);
        assert_eq!(parse_pg_bool("maybe"), None);
    }
}

/// A `postgresql.conf` value as nanika shows it, and whether it held a secret: a setting named
/// for a pass phrase (`ssl_passphrase_command`) is masked whole, and a connection string
/// (`primary_conninfo`) loses its `password=` value.
pub fn shown_setting(key: &str, value: &str) -> (String, bool) {
    let lower = key.to_ascii_lowercase();
    if lower.contains("pass") {
        return (crate::secret::MASK.to_string(), true);
    }
    if lower.contains("conninfo") {
        let (shown, secret) = mask_conninfo_password(value);
        if secret {
            return (shown, true);
        }
    }
    (value.to_string(), false)
}

/// `conninfo` (libpq's `key = value` pairs, a value plain or single-quoted with `\` escapes)
/// with its `password` value masked; whether it had one.
fn mask_conninfo_password(conninfo: &str) -> (String, bool) {
    let mut out = String::new();
    let mut secret = false;
    let mut chars = conninfo.chars().peekable();
    while chars.peek().is_some() {
        // Whitespace between pairs, kept.
        while let Some(c) = chars.next_if(|c| c.is_whitespace()) {
            out.push(c);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        out += &key;
        while let Some(c) = chars.next_if(|c| c.is_whitespace()) {
            out.push(c);
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        out.push('=');
        while let Some(c) = chars.next_if(|c| c.is_whitespace()) {
            out.push(c);
        }
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            value.push('\'');
            while let Some(c) = chars.next() {
                value.push(c);
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if key.eq_ignore_ascii_case("password") {
            secret = true;
            out += crate::secret::MASK;
        } else {
            out += &value;
        }
    }
    (out, secret)
}

#[cfg(test)]
mod shown_tests {
    use super::*;

    #[test]
    fn a_connection_string_loses_its_password_and_a_pass_phrase_is_masked() {
        assert_eq!(
            shown_setting("primary_conninfo", "host=h password=pw user=u"),
            ("host=h password=**** user=u".to_string(), true)
        );
        assert_eq!(
            shown_setting("primary_conninfo", "host=h password = 'a \\' b' port=1"),
            ("host=h password = **** port=1".to_string(), true)
        );
        assert_eq!(
            shown_setting("ssl_passphrase_command", "echo x"),
            ("****".to_string(), true)
        );
        assert_eq!(shown_setting("work_mem", "4MB"), ("4MB".to_string(), false));
    }
}
