//! `redis.conf`: reading it the way Redis 7 does, checking the spec's directives by type, and
//! rendering the model back into a file.
//!
//! Redis has no inline comments: `timeout 300 # seconds` is three arguments and the server refuses
//! to start, so the rendered file keeps every comment on a line of its own.

use crate::finding::{Finding, did_you_mean};
use crate::model::{AppendFsync, MaxmemoryPolicy, RedisSettings};
use crate::parsed::Parsed;
use crate::secret::Secret;
use crate::units::{MemorySize, parse_redis_memory};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

/// Every directive a Redis 7.0 configuration file may hold.
pub static REDIS7_DIRECTIVES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../data/redis7-directives.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
});

/// Directives that may legitimately appear more than once.
const REPEATABLE: &[&str] = &[
    "save",
    "include",
    "rename-command",
    "loadmodule",
    "user",
    "client-output-buffer-limit",
    "sentinel",
];

/// One directive line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisDirective {
    /// 1-based line number.
    pub line: usize,
    /// The directive, lower-cased as Redis treats it.
    pub name: String,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
}

/// Splits a line into words as Redis's `sdssplitargs` does: spaces separate, "double quotes" take
/// escapes (`\n`, `\xHH`, ...), 'single quotes' take `\'`, and a closing quote must end the word.
pub fn split_args(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(args);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted argument has no closing quote".into()),
                    Some(c) if c == first => break,
                    Some('\\') if first == '"' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('r') => word.push('\r'),
                        Some('t') => word.push('\t'),
                        Some('b') => word.push('\u{8}'),
                        Some('a') => word.push('\u{7}'),
                        Some('x') => {
                            let hex: String = chars.by_ref().take(2).collect();
                            let byte = u8::from_str_radix(&hex, 16)
                                .map_err(|_| format!("`\\x{hex}` is not a hex escape"))?;
                            word.push(byte as char);
                        }
                        Some(other) => word.push(other),
                        None => return Err("a quoted argument has no closing quote".into()),
                    },
                    Some('\\') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        word.push('\'');
                    }
                    Some(c) => word.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err("a closing quote must be followed by a space".into());
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        args.push(word);
    }
}

/// Splits a file into directives, reporting lines Redis would refuse to read.
pub fn lex(text: &str, file: &Path) -> (Vec<RedisDirective>, Vec<Finding>) {
    let mut directives = Vec::new();
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match split_args(trimmed) {
            Ok(mut words) => {
                let name = words.remove(0).to_ascii_lowercase();
                directives.push(RedisDirective {
                    line: number,
                    name,
                    args: words,
                });
            }
            Err(what) => findings.push(
                Finding::error("syntax", file, what)
                    .at_line(number)
                    .with_hint(
                        "quote an argument that holds spaces: appendfilename \"appendonly.aof\"",
                    ),
            ),
        }
    }
    (directives, findings)
}

/// Redis's booleans.
fn parse_yes_no(word: &str) -> Option<bool> {
    match word.to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Reads `redis.conf` text into the model, reporting every problem with its line.
pub fn parse(text: &str, file: &Path) -> Parsed<RedisSettings> {
    let (directives, mut findings) = lex(text, file);
    let mut settings = RedisSettings::spec();
    let mut lines = BTreeMap::new();
    for directive in &directives {
        let name = directive.name.as_str();
        let fail = |code: &'static str, message: String, hint: String| {
            Finding::error(code, file, message)
                .at_line(directive.line)
                .for_key(name)
                .with_hint(hint)
        };
        if !REDIS7_DIRECTIVES.contains(&name) {
            let hint = match did_you_mean(name, REDIS7_DIRECTIVES.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "see the self-documented redis.conf for Redis 7.0".to_string(),
            };
            findings.push(fail(
                "unknown-key",
                "Redis 7 has no such directive".into(),
                hint,
            ));
            continue;
        }
        if let Some(first) = lines.get(name).filter(|_| !REPEATABLE.contains(&name)) {
            findings.push(fail(
                "duplicate-key",
                format!("set again; line {first} set it first and this later value wins"),
                "keep one of the two lines".into(),
            ));
        }
        lines.insert(name.to_string(), directive.line);
        if directive.args.is_empty() {
            findings.push(fail(
                "wrong-type",
                "has no value".into(),
                format!("write `{name} VALUE`"),
            ));
            continue;
        }
        if let Err(finding) = apply(&mut settings, directive, &fail) {
            findings.push(finding);
        }
    }
    Parsed {
        value: settings,
        lines,
        findings,
    }
}

/// Stores one directive in the model, or says why its value is wrong.
fn apply(
    settings: &mut RedisSettings,
    directive: &RedisDirective,
    fail: &dyn Fn(&'static str, String, String) -> Finding,
) -> Result<(), Finding> {
    let name = directive.name.as_str();
    let args = &directive.args;
    let one = || -> Result<&str, Finding> {
        match args.as_slice() {
            [value] => Ok(value.as_str()),
            _ => Err(fail(
                "wrong-type",
                format!(
                    "takes one argument, found {}: {}",
                    args.len(),
                    shown_directive(name, args).0
                ),
                "Redis has no comments after a directive: put a comment on its own line starting with #".into(),
            )),
        }
    };
    let number = |min: u64, max: u64| -> Result<u64, Finding> {
        let raw = one()?;
        let value: u64 = raw.parse().map_err(|_| {
            fail(
                "wrong-type",
                format!("`{raw}` is not a whole number"),
                format!("write `{name} {min}` or more"),
            )
        })?;
        if value < min || value > max {
            return Err(fail(
                "out-of-range",
                format!("{value} is outside {min} to {max}"),
                format!("use a value from {min} to {max}"),
            ));
        }
        Ok(value)
    };
    let memory = || -> Result<MemorySize, Finding> {
        let raw = one()?;
        parse_redis_memory(raw).map_err(|e| {
            let code = if matches!(e, crate::units::UnitError::BadUnit { .. }) {
                "wrong-unit"
            } else {
                "wrong-type"
            };
            fail(
                code,
                e.to_string(),
                format!("write a size such as `{name} 64mb`"),
            )
        })
    };
    let yes_no = || -> Result<bool, Finding> {
        let raw = one()?;
        parse_yes_no(raw).ok_or_else(|| {
            fail(
                "wrong-type",
                format!("`{raw}` is not yes or no"),
                format!("write `{name} yes` or `{name} no`"),
            )
        })
    };
    const INT_MAX: u64 = i32::MAX as u64;
    match name {
        "bind" => settings.bind = args.clone(),
        "port" => settings.port = number(0, 65535)? as u16,
        "timeout" => settings.timeout = Duration::from_secs(number(0, INT_MAX)?),
        "tcp-keepalive" => settings.tcp_keepalive = Duration::from_secs(number(0, INT_MAX)?),
        "tcp-backlog" => settings.tcp_backlog = number(0, INT_MAX)? as u32,
        "maxmemory" => settings.maxmemory = memory()?,
        "maxmemory-policy" => {
            let raw = one()?;
            settings.maxmemory_policy = MaxmemoryPolicy::parse(raw).ok_or_else(|| {
                fail(
                    "wrong-value",
                    format!("`{raw}` is not a policy"),
                    format!("use one of: {}", MaxmemoryPolicy::WORDS.join(", ")),
                )
            })?;
        }
        "maxmemory-samples" => settings.maxmemory_samples = number(1, 64)? as u32,
        "appendonly" => settings.appendonly = yes_no()?,
        "appendfilename" => {
            let raw = one()?;
            if raw.is_empty() || raw.contains('/') {
                return Err(fail(
                    "wrong-value",
                    format!("`{raw}` must be a file name, not a path"),
                    "set the directory with `dir`".into(),
                ));
            }
            settings.appendfilename = raw.to_string();
        }
        "appendfsync" => {
            let raw = one()?;
            settings.appendfsync = AppendFsync::parse(raw).ok_or_else(|| {
                fail(
                    "wrong-value",
                    format!("`{raw}` is not a fsync policy"),
                    format!("use one of: {}", AppendFsync::WORDS.join(", ")),
                )
            })?;
        }
        "auto-aof-rewrite-percentage" => {
            settings.auto_aof_rewrite_percentage = number(0, INT_MAX)? as u32
        }
        "auto-aof-rewrite-min-size" => settings.auto_aof_rewrite_min_size = memory()?,
        "maxclients" => settings.maxclients = number(1, INT_MAX)? as u32,
        "requirepass" => settings.requirepass = Some(Secret::new(one()?)).filter(|s| !s.is_empty()),
        _ => settings.other.push((directive.name.clone(), args.clone())),
    }
    Ok(())
}

/// Quotes an argument when Redis would otherwise split or misread it.
pub fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && !arg.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        return arg.to_string();
    }
    let mut out = String::from('"');
    for c in arg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Renders the model as a `redis.conf`, laid out in the spec's sections with its comments.
pub fn render(settings: &RedisSettings) -> String {
    let s = settings;
    let line = |comment: &str, key: &str, value: String| {
        if comment.is_empty() {
            format!("{key} {value}\n")
        } else {
            format!("# {comment}\n{key} {value}\n")
        }
    };
    let mut out = String::from(
        "# Redis 7 for nanika-game (spec: Redis設定詳細).\n\
         # Rendered by `nanika init`; `nanika config check` checks it against the spec.\n\
         # Redis allows no comment after a directive, so each comment has its own line.\n\
         # nanika's native runtime adds only what it needs on top: bind on loopback, port and dir.\n\n\
         # ネットワーク設定\n",
    );
    out += &line(
        "",
        "bind",
        s.bind
            .iter()
            .map(|b| quote(b))
            .collect::<Vec<_>>()
            .join(" "),
    );
    out += &line("", "port", s.port.to_string());
    out += &line(
        "クライアントタイムアウト（秒）",
        "timeout",
        s.timeout.as_secs().to_string(),
    );
    out += &line(
        "TCP keep-alive（秒）",
        "tcp-keepalive",
        s.tcp_keepalive.as_secs().to_string(),
    );
    out += &line("接続キューサイズ", "tcp-backlog", s.tcp_backlog.to_string());
    out += "\n# メモリ管理\n";
    out += &line("最大メモリ使用量", "maxmemory", s.maxmemory.to_redis());
    out += &line(
        "LRUキャッシュポリシー",
        "maxmemory-policy",
        s.maxmemory_policy.as_str().into(),
    );
    out += &line(
        "LRUサンプリング数",
        "maxmemory-samples",
        s.maxmemory_samples.to_string(),
    );
    out += "\n# 永続化設定\n";
    out += &line("AOF有効", "appendonly", yes_no(s.appendonly).into());
    out += &line(
        "",
        "appendfilename",
        format!(
            "\"{}\"",
            s.appendfilename.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    );
    out += &line(
        "1秒ごとにfsync",
        "appendfsync",
        s.appendfsync.as_str().into(),
    );
    out += &line(
        "",
        "auto-aof-rewrite-percentage",
        s.auto_aof_rewrite_percentage.to_string(),
    );
    out += &line(
        "",
        "auto-aof-rewrite-min-size",
        s.auto_aof_rewrite_min_size.to_redis(),
    );
    out += "\n# クライアント管理\n";
    out += &line("最大同時接続数", "maxclients", s.maxclients.to_string());
    if let Some(password) = &s.requirepass {
        out += &line("", "requirepass", quote(password.expose()));
    }
    if !s.other.is_empty() {
        out += "\n# その他の設定\n";
        for (key, args) in &s.other {
            out += &line(
                "",
                key,
                args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_redis_splits_them() {
        assert_eq!(
            split_args(r#"appendfilename "append only.aof""#).unwrap(),
            ["appendfilename", "append only.aof"]
        );
        assert_eq!(
            split_args(r#"a "x\x41\n" 'it\'s'"#).unwrap(),
            ["a", "xA\n", "it's"]
        );
        assert!(split_args(r#"a "open"#).is_err());
        assert!(split_args(r#"a "x"y"#).is_err());
    }

    #[test]
    fn an_inline_comment_is_an_error_as_in_redis() {
        let parsed = parse("timeout 300   # seconds\n", Path::new("redis.conf"));
        assert_eq!(parsed.findings.len(), 1, "{:?}", parsed.findings);
        assert_eq!(parsed.findings[0].line, Some(1));
        assert_eq!(parsed.findings[0].key.as_deref(), Some("timeout"));
    }

    #[test]
    fn quoting_round_trips() {
        for arg in [
            "plain",
            "with space",
            "q\"uote",
            "back\\slash",
            "",
            "tab\there",
        ] {
            assert_eq!(split_args(&quote(arg)).unwrap(), [arg]);
        }
    }
}

/// Whether a `redis.conf` directive's value is a secret, and so masked wherever nanika shows
/// it: a password (`requirepass`, `masterauth`, any `*pass*`), the replication user, or an ACL
/// `user` line (whose rules hold `>password` or its hash).
pub fn is_secret_directive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(
        key.as_str(),
        "requirepass" | "masterauth" | "masteruser" | "user"
    ) || key.contains("pass")
}

/// A directive's arguments as nanika shows them: a secret one masked. An ACL `user` line keeps
/// its name and rules and loses only its passwords and their hashes (`>…`, `<…`, `#…`, `!…`).
pub fn shown_directive(key: &str, args: &[String]) -> (String, bool) {
    // `sentinel auth-pass MASTER PASSWORD`, `sentinel sentinel-pass PASSWORD`: the password
    // is the last argument.
    if key.eq_ignore_ascii_case("sentinel")
        && args
            .first()
            .is_some_and(|sub| sub.to_ascii_lowercase().contains("pass"))
        && let Some((_, before)) = args.split_last()
    {
        let mut shown = before.to_vec();
        shown.push(crate::secret::MASK.to_string());
        return (shown.join(" "), true);
    }
    if !is_secret_directive(key) {
        return (args.join(" "), false);
    }
    if key.eq_ignore_ascii_case("user") {
        let shown: Vec<String> = args
            .iter()
            .map(|arg| match arg.chars().next() {
                Some(first @ ('>' | '<' | '#' | '!')) => format!("{first}{}", crate::secret::MASK),
                _ => arg.clone(),
            })
            .collect();
        return (shown.join(" "), true);
    }
    (crate::secret::MASK.to_string(), true)
}

#[cfg(test)]
mod shown_tests {
    use super::*;

    #[test]
    fn secret_directives_are_masked_and_an_acl_user_keeps_its_rules() {
        let args = |text: &str| text.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            shown_directive("masterauth", &args("s3cret")),
            ("****".to_string(), true)
        );
        assert_eq!(
            shown_directive("user", &args("alice on >pw <old #abc !def ~* +@all")),
            (
                "alice on >**** <**** #**** !**** ~* +@all".to_string(),
                true
            )
        );
        assert_eq!(
            shown_directive("sentinel", &args("auth-pass mymaster pw")),
            ("auth-pass mymaster ****".to_string(), true)
        );
        assert_eq!(
            shown_directive("sentinel", &args("down-after-milliseconds mymaster 500")),
            ("down-after-milliseconds mymaster 500".to_string(), false)
        );
        assert_eq!(
            shown_directive("maxmemory", &args("512mb")),
            ("512mb".to_string(), false)
        );
    }
}
