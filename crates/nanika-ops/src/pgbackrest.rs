//! Physical backups with pgBackRest, when `nanika.toml` turns `[backups]` on: creating the
//! stanza, checking that WAL reaches the repository, taking full, differential and incremental
//! backups (retention applied by pgBackRest itself after each), and listing them.
//!
//! Every command runs as the server user (it reads the data directory, and PostgreSQL's own
//! `archive-push` writes the same repository), with the config nanika wrote into the state and
//! the superuser's password in its environment, never on its command line.

use crate::error::{OpsError, Result};
use nanika_config::Secret;
use nanika_config::urls::DatabaseUrl;
use nanika_runtime::native::backups;
use nanika_runtime::native::layout::StateLayout;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::path::PathBuf;
use std::process::Command;

/// A backup's kind, as pgBackRest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every file of the cluster.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any kind.
    Incr,
}

impl BackupKind {
    /// The name pgBackRest's `--type` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

/// One backup in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEntry {
    /// Its label, e.g. `20261129-203000F`.
    pub label: String,
    /// Its kind.
    pub kind: BackupKind,
    /// The backup it depends on, for a differential or incremental one.
    pub prior: Option<String>,
    /// When it started and stopped (seconds since the epoch).
    pub started_at: i64,
    /// When it stopped.
    pub stopped_at: i64,
    /// The cluster's size when it was taken, in bytes.
    pub database_bytes: u64,
    /// What it copied (all of the cluster for a full backup, the changes for the others).
    pub copied_bytes: u64,
    /// What it takes in the repository, compressed.
    pub repository_bytes: u64,
    /// The first and last WAL segment it needs to be consistent.
    pub wal_start: Option<String>,
    /// The last WAL segment it needs.
    pub wal_stop: Option<String>,
    /// What `verify` said of it (`valid`, `invalid`), when it was asked.
    pub verified: Option<String>,
}

/// pgBackRest's exit code when another of its processes holds the stanza's lock.
pub const LOCK_BUSY: i32 = 50;
/// How long a command waits for another pgBackRest process (a scheduled backup) to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// pgBackRest for one project.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    program: PathBuf,
    base_args: Vec<String>,
    run_as: Option<(u32, u32)>,
    password: Secret,
}

impl PgBackRest {
    /// pgBackRest at `program` for `layout`'s cluster, connecting as its superuser with
    /// `password`.
    pub fn new(program: PathBuf, layout: &StateLayout, password: Secret) -> PgBackRest {
        PgBackRest {
            program,
            base_args: backups::base_args(layout),
            run_as: layout.server_user.as_ref().map(|u| (u.uid, u.gid)),
            password,
        }
    }

    /// Runs `pgbackrest … COMMAND ARGS` and returns what it printed.
    fn run(&self, command: &str, args: &[&str]) -> Result<String> {
        let mut process = Command::new(&self.program);
        process
            .args(&self.base_args)
            .args(args)
            .arg(command)
            .env("PGPASSWORD", self.password.expose())
            // Its own settings come from the config file alone.
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGSERVICE")
            .current_dir("/");
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::process::CommandExt::uid(&mut process, uid);
            std::os::unix::process::CommandExt::gid(&mut process, gid);
        }
        let shown = format!(
            "{} {} {}",
            self.program.display(),
            self.base_args.join(" "),
            args.iter()
                .chain([&command])
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        );
        // The supervisor's scheduled backup holds pgBackRest's lock while it runs: wait for it
        // rather than fail (pgBackRest 2.45 has no lock wait of its own).
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let output = loop {
            let output = process.output().map_err(|e| OpsError::Io {
                context: format!("cannot run {}", self.program.display()),
                source: e,
            })?;
            if output.status.code() == Some(LOCK_BUSY) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(250));
                continue;
            }
            break output;
        };
        if !output.status.success() {
            let mut said = String::from_utf8_lossy(&output.stderr).into_owned();
            said += &String::from_utf8_lossy(&output.stdout);
            return Err(OpsError::Tool {
                command: shown,
                status: output.status.to_string(),
                stderr: said,
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates the stanza in the repository (nothing when it exists for this cluster), then
    /// checks that PostgreSQL archives WAL into it.
    pub fn prepare(&self) -> Result<()> {
        self.run("stanza-create", &[])?;
        self.run("check", &[])?;
        Ok(())
    }

    /// `check`: the cluster's settings, and a WAL switch that must reach the repository.
    pub fn check(&self) -> Result<()> {
        self.run("check", &[]).map(drop)
    }

    /// Takes a backup of `kind` (pgBackRest takes a full one when there is none to build on),
    /// applies retention, and returns the backup it made.
    pub fn backup(&self, kind: BackupKind) -> Result<BackupEntry> {
        let before: Vec<String> = self.list()?.into_iter().map(|b| b.label).collect();
        self.run("backup", &[&format!("--type={}", kind.as_str())])?;
        self.list()?
            .into_iter()
            .find(|b| !before.contains(&b.label))
            .ok_or_else(|| OpsError::Refused {
                message: "pgBackRest reported success but the repository lists no new backup"
                    .into(),
                hint: "run `nanika backup list` and look at pgbackrest's log in .nanika".into(),
            })
    }

    /// Restores the cluster (PostgreSQL must be stopped) with `--delta` to `target`: the files
    /// of the backup the target needs, then, when PostgreSQL starts, the archived WAL replayed
    /// up to the target and the cluster promoted.
    pub fn restore(&self, target: &RecoveryTarget) -> Result<()> {
        let mut args = vec!["--delta".to_string()];
        match target {
            RecoveryTarget::Latest => args.push("--type=default".into()),
            RecoveryTarget::Time(time) => {
                args.push("--type=time".into());
                args.push(format!("--target={}", time.text));
                args.push("--target-action=promote".into());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("restore", &args).map(drop)
    }

    /// `verify`: every file of every backup and every archived WAL segment read back and checked
    /// against its checksum.
    pub fn verify(&self) -> Result<Verification> {
        let text = self.run("verify", &["--output=text", "--verbose"])?;
        Ok(parse_verify(&text))
    }

    /// The backups in the repository, oldest first.
    pub fn list(&self) -> Result<Vec<BackupEntry>> {
        let text = self.run("info", &["--output=json"])?;
        parse_info(&text).map_err(|reason| OpsError::Refused {
            message: format!("cannot read pgBackRest's `info --output=json`: {reason}"),
            hint: "is this the pgBackRest version nanika was tested with (2.45)?".into(),
        })
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verification {
    /// Each backup's status by label: `valid`, `invalid`, ...
    pub backups: std::collections::BTreeMap<String, String>,
    /// Archived WAL segments missing or failing their checks.
    pub bad_wal_segments: u64,
    /// The lines that say what is wrong (empty when all is well).
    pub problems: Vec<String>,
    /// The overall `status:` line said `ok`.
    pub status_ok: bool,
}

impl Verification {
    /// Whether every backup and WAL segment checked out.
    pub fn all_valid(&self) -> bool {
        self.status_ok && self.bad_wal_segments == 0 && self.backups.values().all(|s| s == "valid")
    }

    /// The labels of the backups that did not check out.
    pub fn invalid_backups(&self) -> Vec<&str> {
        self.backups
            .iter()
            .filter(|(_, status)| *status != "valid")
            .map(|(label, _)| label.as_str())
            .collect()
    }
}

/// Reads `verify --output=text --verbose` (pgBackRest 2.45 exits 0 whatever it finds).
fn parse_verify(text: &str) -> Verification {
    let mut found = Verification::default();
    let mut last_header = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        // The overall verdict is the one `status:` line that is not indented.
        if let Some(status) = raw.strip_prefix("status: ") {
            found.status_ok = status.trim() == "ok";
            continue;
        }
        if let Some(rest) = line.strip_prefix("backup: ") {
            let mut parts = rest.split(", ");
            let label = parts.next().unwrap_or_default().to_string();
            let status = parts
                .find_map(|p| p.strip_prefix("status: "))
                .unwrap_or("unknown")
                .to_string();
            found.backups.insert(label, status);
            last_header = line.to_string();
        } else if line.starts_with("archiveId: ") {
            last_header = line.to_string();
        } else if line.starts_with("missing: ") {
            let bad: u64 = line
                .split(", ")
                .filter_map(|p| p.rsplit_once(": ").and_then(|(_, n)| n.parse::<u64>().ok()))
                .sum();
            if bad > 0 {
                if last_header.starts_with("archiveId: ") {
                    found.bad_wal_segments += bad;
                }
                found.problems.push(format!("{last_header}: {line}"));
            }
        }
    }
    if !found.status_ok && found.problems.is_empty() {
        found.problems.push(format!(
            "pgbackrest verify did not say `status: ok`: {}",
            text.trim().replace('\n', "; ")
        ));
    }
    found
}

/// Where a restore recovers to.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    /// The end of the archived WAL: every commit that reached the repository.
    Latest,
    /// The last commit at or before this moment.
    Time(RecoveryTime),
}

/// A moment to recover to, with its zone: `2026-11-29T20:31:50Z`, `2026-11-29 20:31:50.25+09:00`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryTime {
    /// As pgBackRest and PostgreSQL's `recovery_target_time` read it:
    /// `2026-11-29 20:31:50+00`.
    pub text: String,
    /// Seconds since the epoch.
    pub epoch: f64,
}

impl RecoveryTime {
    /// Reads an RFC 3339 moment (a space for the `T` allowed). A moment without a zone is
    /// refused: read in the server's zone or the user's, it would be a guess.
    pub fn parse(text: &str) -> std::result::Result<RecoveryTime, String> {
        let wrong = || {
            format!(
                "{text:?} is not a moment with its zone, e.g. 2026-11-29T20:31:50Z or 2026-11-29 20:31:50+09:00"
            )
        };
        let bytes = text.as_bytes();
        if bytes.len() < 20 || !matches!(bytes[10], b'T' | b' ') {
            return Err(wrong());
        }
        let number = |range: std::ops::Range<usize>| -> std::result::Result<i64, String> {
            text.get(range)
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(wrong)
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if &text[4..5] != "-" || &text[7..8] != "-" || &text[13..14] != ":" || &text[16..17] != ":"
        {
            return Err(wrong());
        }
        let mut rest = &text[19..];
        let mut fraction = 0.0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(wrong());
            }
            fraction = format!("0.{}", &after_dot[..digits])
                .parse()
                .map_err(|_| wrong())?;
            rest = &after_dot[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            zone if zone.len() == 6 && matches!(&zone[..1], "+" | "-") && &zone[3..4] == ":" => {
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                let hours: i64 = zone[1..3].parse().map_err(|_| wrong())?;
                let minutes: i64 = zone[4..6].parse().map_err(|_| wrong())?;
                sign * (hours * 3600 + minutes * 60)
            }
            _ => return Err(wrong()),
        };
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(wrong());
        }
        let days = days_from_civil(year, month, day);
        let epoch = (days * 86_400 + hour * 3600 + minute * 60 + second - offset) as f64 + fraction;
        // pgBackRest reads `YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM]`, and so does PostgreSQL.
        let zone = if matches!(rest, "Z" | "z") {
            "+00"
        } else {
            rest
        };
        Ok(RecoveryTime {
            text: format!(
                "{} {}{zone}",
                &text[..10],
                &text[11..text.len() - rest.len()]
            ),
            epoch,
        })
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Waits until the server behind `url` has left recovery (a restored cluster replays WAL up to
/// its target, then is promoted), for at most `limit`.
pub async fn wait_promoted(url: &DatabaseUrl, limit: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    let mut conn = crate::pg::connect(url, None).await?;
    loop {
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| OpsError::Sql {
                context: "asking whether recovery is over".into(),
                source: e,
            })?;
        if !in_recovery {
            crate::pg::close(conn).await;
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(OpsError::Refused {
                message: format!(
                    "PostgreSQL is still replaying WAL after {} s",
                    limit.as_secs()
                ),
                hint: "look at `nanika logs postgres`".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether the server behind `url` archives WAL with this project's pgBackRest config: it must
/// have been started with the settings `nanika up` adds when backups are on.
pub async fn archiving(url: &DatabaseUrl, layout: &StateLayout) -> Result<bool> {
    let mut conn = crate::pg::connect(url, None).await?;
    let row =
        sqlx::query("SELECT current_setting('archive_mode'), current_setting('archive_command')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| OpsError::Sql {
                context: "reading archive_mode".into(),
                source: e,
            })?;
    crate::pg::close(conn).await;
    let mode: String = row.get(0);
    let command: String = row.get(1);
    let config = backups::config_file(layout).display().to_string();
    Ok(mode == "on" && command.contains(&config))
}

#[derive(Deserialize)]
struct StanzaInfo {
    #[serde(default)]
    backup: Vec<RawBackup>,
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: i64,
    message: String,
}

/// `info`'s status codes that still mean a readable repository: ok, no stanza yet, no valid
/// backup yet.
const READABLE: [i64; 3] = [0, 1, 2];

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: BackupKind,
    prior: Option<String>,
    timestamp: RawTimes,
    info: RawSizes,
    archive: Option<RawArchive>,
}

#[derive(Deserialize)]
struct RawTimes {
    start: i64,
    stop: i64,
}

#[derive(Deserialize)]
struct RawSizes {
    size: u64,
    delta: u64,
    repository: RawRepositorySizes,
}

#[derive(Deserialize)]
struct RawRepositorySizes {
    delta: u64,
}

#[derive(Deserialize)]
struct RawArchive {
    start: Option<String>,
    stop: Option<String>,
}

/// Reads `pgbackrest info --output=json`: one stanza, its backups.
fn parse_info(text: &str) -> std::result::Result<Vec<BackupEntry>, String> {
    let stanzas: Vec<StanzaInfo> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(status) = stanzas
        .iter()
        .filter_map(|s| s.status.as_ref())
        .find(|s| !READABLE.contains(&s.code))
    {
        return Err(format!(
            "the repository answers \"{}\" (code {})",
            status.message, status.code
        ));
    }
    Ok(stanzas
        .into_iter()
        .flat_map(|s| s.backup)
        .map(|b| BackupEntry {
            label: b.label,
            kind: b.kind,
            prior: b.prior,
            started_at: b.timestamp.start,
            stopped_at: b.timestamp.stop,
            database_bytes: b.info.size,
            copied_bytes: b.info.delta,
            repository_bytes: b.info.repository.delta,
            wal_start: b.archive.as_ref().and_then(|a| a.start.clone()),
            wal_stop: b.archive.and_then(|a| a.stop),
            verified: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_json_is_read_into_entries() {
        let text = r#"[{"archive":[],"backup":[
            {"archive":{"start":"000000010000000000000004","stop":"000000010000000000000004"},
             "backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},
             "info":{"delta":23068672,"repository":{"delta":2891233,"size":2891233},"size":23068672},
             "label":"20261129-203000F","prior":null,"reference":null,
             "timestamp":{"start":1795984200,"stop":1795984203},"type":"full"},
            {"archive":{"start":"000000010000000000000006","stop":"000000010000000000000006"},
             "backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},
             "info":{"delta":8192,"repository":{"delta":500,"size":2891733},"size":23068672},
             "label":"20261129-203000F_20261129-203100D","prior":"20261129-203000F",
             "reference":["20261129-203000F"],
             "timestamp":{"start":1795984260,"stop":1795984261},"type":"diff"}],
            "name":"nanika","status":{"code":0,"message":"ok"}}]"#;
        let entries = parse_info(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].kind, BackupKind::Full);
        assert_eq!(entries[0].repository_bytes, 2891233);
        assert_eq!(entries[1].kind, BackupKind::Diff);
        assert_eq!(entries[1].prior.as_deref(), Some("20261129-203000F"));
        assert_eq!(entries[1].copied_bytes, 8192);
        assert_eq!(
            entries[1].wal_start.as_deref(),
            Some("000000010000000000000006")
        );
    }

    #[test]
    fn recovery_times_need_a_zone_and_are_read_to_the_epoch() {
        let utc = RecoveryTime::parse("2026-11-29T20:31:50Z").unwrap();
        assert_eq!(utc.epoch, 1_795_984_310.0);
        assert_eq!(utc.text, "2026-11-29 20:31:50+00");
        let tokyo = RecoveryTime::parse("2026-11-30 05:31:50.5+09:00").unwrap();
        assert_eq!(tokyo.epoch, 1_795_984_310.5);
        assert_eq!(tokyo.text, "2026-11-30 05:31:50.5+09:00");
        for wrong in [
            "2026-11-29T20:31:50",
            "2026-11-29",
            "yesterday",
            "2026-13-29T20:31:50Z",
            "2026-11-29T20:31:50+0900",
            "2026-11-29T20:31:50.Z",
        ] {
            assert!(RecoveryTime::parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn verify_output_is_read_per_backup_and_for_the_wal() {
        let text = "stanza: nanika\nstatus: error\n\
            \x20 archiveId: 15-1, total WAL checked: 5, total valid WAL: 4\n\
            \x20   missing: 0, checksum invalid: 1, size invalid: 0, other: 0\n\
            \x20 backup: 20261129-204132F, status: invalid, total files checked: 1262, total valid files: 1261\n\
            \x20   missing: 0, checksum invalid: 1, size invalid: 0, other: 0\n\
            \x20 backup: 20261129-204141F, status: valid, total files checked: 1262, total valid files: 1262\n\
            \x20   missing: 0, checksum invalid: 0, size invalid: 0, other: 0\n";
        let found = parse_verify(text);
        assert!(!found.all_valid());
        assert_eq!(found.invalid_backups(), ["20261129-204132F"]);
        assert_eq!(found.backups["20261129-204141F"], "valid");
        assert_eq!(found.bad_wal_segments, 1);
        assert_eq!(found.problems.len(), 2, "{:?}", found.problems);
        assert!(parse_verify("stanza: nanika\nstatus: ok\n").all_valid());
    }

    #[test]
    fn an_empty_repository_lists_nothing() {
        let text = r#"[{"archive":[],"backup":[],"name":"nanika","status":{"code":2,"message":"no valid backups"}}]"#;
        assert!(parse_info(text).unwrap().is_empty());
    }
}
