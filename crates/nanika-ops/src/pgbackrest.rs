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
}

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
        let output = process.output().map_err(|e| OpsError::Io {
            context: format!("cannot run {}", self.program.display()),
            source: e,
        })?;
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

    /// The backups in the repository, oldest first.
    pub fn list(&self) -> Result<Vec<BackupEntry>> {
        let text = self.run("info", &["--output=json"])?;
        parse_info(&text).map_err(|reason| OpsError::Refused {
            message: format!("cannot read pgBackRest's `info --output=json`: {reason}"),
            hint: "is this the pgBackRest version nanika was tested with (2.45)?".into(),
        })
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
}

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
    fn an_empty_repository_lists_nothing() {
        let text = r#"[{"archive":[],"backup":[],"name":"nanika","status":{"code":2,"message":"no valid backups"}}]"#;
        assert!(parse_info(text).unwrap().is_empty());
    }
}
