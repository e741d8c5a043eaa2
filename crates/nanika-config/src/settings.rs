//! `nanika.toml`: nanika's own settings beyond the spec's files, committed with them. Every
//! section is optional and off when absent, so a project without the file runs exactly the spec.
//!
//! ```toml
//! [backups]
//! enabled = true        # pgBackRest: WAL archiving, `nanika backup now|list|restore|check`
//! retention_full = 2    # full backups kept (each with the differential and incremental ones on it)
//! retention_diff = 7    # differential backups kept
//! full_every = "7d"     # the supervisor's schedule (schedule = false: only `backup now`)
//! diff_every = "1d"
//! incr_every = "1h"
//! ```

use crate::finding::Finding;
use crate::parsed::Parsed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The file, relative to the project root.
pub const SETTINGS_FILE: &str = "nanika.toml";

/// Everything `nanika.toml` can set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Backup automation with pgBackRest.
    #[serde(default)]
    pub backups: BackupSettings,
}

/// `[backups]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Archive WAL and take backups with pgBackRest (off: the spec's PostgreSQL, untouched).
    #[serde(default)]
    pub enabled: bool,
    /// Full backups kept; an older one goes with the backups and WAL that depend on it.
    #[serde(default = "default_retention_full")]
    pub retention_full: u32,
    /// Differential backups kept.
    #[serde(default = "default_retention_diff")]
    pub retention_diff: u32,
    /// Whether the supervisor takes backups on the schedule below (off: only `nanika backup
    /// now`).
    #[serde(default = "default_true")]
    pub schedule: bool,
    /// How often a full backup is taken (`7d`; units `s`, `m`, `h`, `d`).
    #[serde(default = "default_full_every")]
    pub full_every: String,
    /// How often a differential one is.
    #[serde(default = "default_diff_every")]
    pub diff_every: String,
    /// How often an incremental one is.
    #[serde(default = "default_incr_every")]
    pub incr_every: String,
}

impl BackupSettings {
    /// The schedule's intervals in seconds: (full, diff, incr). Only for settings that passed
    /// [`parse`] without findings (an unreadable interval is a finding there).
    pub fn intervals(&self) -> Option<(u64, u64, u64)> {
        Some((
            interval_secs(&self.full_every)?,
            interval_secs(&self.diff_every)?,
            interval_secs(&self.incr_every)?,
        ))
    }
}

/// `90s`, `15m`, `1h`, `7d` in seconds; `None` for anything else, or zero.
pub fn interval_secs(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).filter(|s| *s > 0)
}

fn default_true() -> bool {
    true
}

fn default_full_every() -> String {
    "7d".into()
}

fn default_diff_every() -> String {
    "1d".into()
}

fn default_incr_every() -> String {
    "1h".into()
}

/// Retention's bounds: at least one backup is kept, and more than this is not a laptop's.
pub const RETENTION_RANGE: std::ops::RangeInclusive<u32> = 1..=99;

fn default_retention_full() -> u32 {
    2
}

fn default_retention_diff() -> u32 {
    7
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            enabled: false,
            retention_full: default_retention_full(),
            retention_diff: default_retention_diff(),
            schedule: true,
            full_every: default_full_every(),
            diff_every: default_diff_every(),
            incr_every: default_incr_every(),
        }
    }
}

/// Reads `nanika.toml`'s text. A file that does not parse, or sets a key nanika does not know
/// or a value out of range, is an error finding on its line: the command stops, nothing runs
/// with a value the file did not mean.
pub fn parse(text: &str, file: &Path) -> Parsed<Settings> {
    let lines = key_lines(text);
    let mut findings = Vec::new();
    let value = match toml::from_str::<Settings>(text) {
        Ok(settings) => settings,
        Err(error) => {
            let line = error.span().map(|span| {
                text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            });
            findings.push(
                Finding::error("invalid-settings", file, error.message().trim().to_string())
                    .at_optional_line(line)
                    .with_hint(
                        "the keys are [backups] enabled, retention_full, retention_diff, schedule, full_every, diff_every, incr_every; see the README",
                    ),
            );
            Settings::default()
        }
    };
    for (key, number) in [
        ("backups.retention_full", value.backups.retention_full),
        ("backups.retention_diff", value.backups.retention_diff),
    ] {
        if !RETENTION_RANGE.contains(&number) {
            findings.push(
                Finding::error(
                    "out-of-range",
                    file,
                    format!(
                        "{key} = {number} is outside {}..={}",
                        RETENTION_RANGE.start(),
                        RETENTION_RANGE.end()
                    ),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied()),
            );
        }
    }
    for (key, text) in [
        ("backups.full_every", &value.backups.full_every),
        ("backups.diff_every", &value.backups.diff_every),
        ("backups.incr_every", &value.backups.incr_every),
    ] {
        if interval_secs(text).is_none() {
            findings.push(
                Finding::error(
                    "invalid-interval",
                    file,
                    format!("{key} = {text:?} is not an interval"),
                )
                .for_key(key)
                .at_optional_line(lines.get(key).copied())
                .with_hint("a whole number and a unit: 90s, 15m, 1h, 7d"),
            );
        }
    }
    Parsed {
        value,
        lines,
        findings,
    }
}

/// The line of each `section.key = …` (comments and strings aside, as the file is simple).
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    let mut section = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((key, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            let key = key.trim();
            let full = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            lines.insert(full, index + 1);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Parsed<Settings> {
        parse(text, Path::new(SETTINGS_FILE))
    }

    #[test]
    fn no_section_means_everything_off() {
        let parsed = read("");
        assert!(parsed.findings.is_empty());
        assert_eq!(parsed.value, Settings::default());
        assert!(!parsed.value.backups.enabled);
    }

    #[test]
    fn backups_are_read_with_their_lines() {
        let parsed = read("# ours\n[backups]\nenabled = true\nretention_full = 3\n");
        assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
        assert!(parsed.value.backups.enabled);
        assert_eq!(parsed.value.backups.retention_full, 3);
        assert_eq!(parsed.value.backups.retention_diff, 7);
        assert_eq!(parsed.line_of("backups.retention_full"), Some(4));
    }

    #[test]
    fn an_unknown_key_or_a_wrong_type_is_an_error_on_its_line() {
        let parsed = read("[backups]\nenabled = true\nretention_ful = 3\n");
        let finding = &parsed.findings[0];
        assert_eq!(finding.code, "invalid-settings");
        assert_eq!(finding.line, Some(3));
        assert!(finding.message.contains("retention_ful"), "{finding:?}");

        let parsed = read("[backups]\nenabled = \"yes\"\n");
        assert_eq!(parsed.findings[0].line, Some(2));
    }

    #[test]
    fn intervals_have_a_unit_and_are_refused_otherwise() {
        assert_eq!(interval_secs("90s"), Some(90));
        assert_eq!(interval_secs("15m"), Some(900));
        assert_eq!(interval_secs("7d"), Some(604_800));
        for wrong in ["", "7", "0h", "1w", "h", "-1h", "1.5h"] {
            assert_eq!(interval_secs(wrong), None, "{wrong}");
        }
        let parsed = read("[backups]\nincr_every = \"hourly\"\n");
        assert_eq!(parsed.findings[0].code, "invalid-interval");
        assert_eq!(parsed.findings[0].line, Some(2));
        assert_eq!(
            Settings::default().backups.intervals(),
            Some((604_800, 86_400, 3600))
        );
    }

    #[test]
    fn retention_out_of_range_is_refused() {
        let parsed = read("[backups]\nretention_full = 0\n");
        let finding = &parsed.findings[0];
        assert_eq!(finding.code, "out-of-range");
        assert_eq!(finding.key.as_deref(), Some("backups.retention_full"));
        assert_eq!(finding.line, Some(2));
    }
}
