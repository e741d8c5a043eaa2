//! Migrations: SQL files in `migrations/`, applied in order with sqlx's migrator (its
//! `_sqlx_migrations` table and file naming, so `sqlx migrate` users feel at home): each in a
//! transaction, recorded with a checksum, serialised by an advisory lock.

use crate::error::{OpsError, Result};
use serde::Serialize;
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::PgConnection;
use std::path::{Path, PathBuf};

/// The table sqlx records applied migrations in.
pub const TABLE: &str = "_sqlx_migrations";

/// The schema the spec implies, as the project's first migrations: (file name, SQL). The
/// repository's own `migrations/` is their one source; `nanika init` writes them into new projects.
pub const INITIAL: &[(&str, &str)] = &[
    (
        "20250801000001_users.sql",
        include_str!("../../../migrations/20250801000001_users.sql"),
    ),
    (
        "20250801000002_chat.sql",
        include_str!("../../../migrations/20250801000002_chat.sql"),
    ),
    (
        "20250801000003_session_backups.sql",
        include_str!("../../../migrations/20250801000003_session_backups.sql"),
    ),
    (
        "20261129000001_session_backups_prefix.sql",
        include_str!("../../../migrations/20261129000001_session_backups_prefix.sql"),
    ),
];

/// Where a migration stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Applied, and its file is unchanged.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but its file changed since.
    Modified,
    /// Applied, but its file is gone.
    Missing,
    /// Started and failed half-way.
    Dirty,
}

/// One migration and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Its version (the file name's number).
    pub version: i64,
    /// Its description (the file name's words).
    pub description: String,
    /// Where it stands.
    pub state: State,
}

async fn migrator(dir: &Path) -> Result<Migrator> {
    if !dir.is_dir() {
        return Err(OpsError::Migration {
            message: format!("{} does not exist", dir.display()),
            hint: "create it with `nanika db migrate new NAME`, or `nanika init` for the spec's schema".into(),
        });
    }
    Migrator::new(dir.to_path_buf())
        .await
        .map_err(|e| OpsError::Migration {
            message: format!("cannot read the migrations in {}: {e}", dir.display()),
            hint: "files are named VERSION_DESCRIPTION.sql, e.g. 20250801000001_users.sql".into(),
        })
}

fn explain(error: MigrateError) -> OpsError {
    let (message, hint) = match &error {
        MigrateError::VersionMismatch(v) => (
            format!("migration {v} was changed after it was applied (its checksum differs)"),
            "restore the file's applied text (e.g. `git checkout -- migrations/`) and put the change in a new migration".to_string(),
        ),
        MigrateError::VersionMissing(v) => (
            format!("migration {v} was applied, but its file is missing from migrations/"),
            "restore the file; an applied migration must stay".to_string(),
        ),
        MigrateError::Dirty(v) => (
            format!("migration {v} was left half-applied"),
            format!("repair the schema by hand, then `DELETE FROM {TABLE} WHERE version = {v}` and migrate again"),
        ),
        MigrateError::ExecuteMigration(source, v) => (
            format!("migration {v} failed: {source}"),
            "nothing of it was applied (it ran in a transaction); fix the SQL and run `nanika db migrate` again".to_string(),
        ),
        other => (other.to_string(), "see `nanika db migrate status`".to_string()),
    };
    OpsError::Migration { message, hint }
}

/// The advisory lock every nanika migration command holds from before the migrations table is
/// created until it is done: sqlx's own lock is taken only after `CREATE TABLE IF NOT EXISTS`,
/// which two sessions racing on a new database fail with a duplicate key in `pg_type`.
const LOCK_KEY: i64 = 0x6e61_6e69_6b61; // "nanika"

/// Runs `work` holding [`LOCK_KEY`]; released when done, failed or not (and by the server when
/// the connection drops).
async fn locked<T>(
    conn: &mut PgConnection,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
) -> Result<T> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(OpsError::sql("cannot take the migration lock"))?;
    let result = work(&mut *conn).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}

/// Every migration, on disk or applied, and where it stands.
pub async fn status(conn: &mut PgConnection, dir: &Path) -> Result<Vec<Status>> {
    locked(conn, async |conn| status_unlocked(conn, dir).await).await
}

async fn status_unlocked(conn: &mut PgConnection, dir: &Path) -> Result<Vec<Status>> {
    let migrator = migrator(dir).await?;
    conn.ensure_migrations_table(TABLE).await.map_err(explain)?;
    let applied = conn.list_applied_migrations(TABLE).await.map_err(explain)?;
    let dirty = conn.dirty_version(TABLE).await.map_err(explain)?;
    let mut statuses: Vec<Status> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| {
            let state = match applied.iter().find(|a| a.version == m.version) {
                _ if dirty == Some(m.version) => State::Dirty,
                Some(a) if a.checksum == m.checksum => State::Applied,
                Some(_) => State::Modified,
                None => State::Pending,
            };
            Status {
                version: m.version,
                description: m.description.to_string(),
                state,
            }
        })
        .collect();
    for applied in &applied {
        if !migrator.version_exists(applied.version) {
            statuses.push(Status {
                version: applied.version,
                description: String::new(),
                state: State::Missing,
            });
        }
    }
    statuses.sort_by_key(|s| s.version);
    Ok(statuses)
}

/// Applies the pending migrations (or, with `dry_run`, only lists them); returns them.
/// Refuses, before applying anything, when an applied migration was changed or removed.
pub async fn run(conn: &mut PgConnection, dir: &Path, dry_run: bool) -> Result<Vec<Status>> {
    locked(conn, async |conn| run_unlocked(conn, dir, dry_run).await).await
}

async fn run_unlocked(conn: &mut PgConnection, dir: &Path, dry_run: bool) -> Result<Vec<Status>> {
    let statuses = status_unlocked(conn, dir).await?;
    if let Some(bad) = statuses
        .iter()
        .find(|s| matches!(s.state, State::Modified | State::Missing | State::Dirty))
    {
        return Err(explain(match bad.state {
            State::Modified => MigrateError::VersionMismatch(bad.version),
            State::Missing => MigrateError::VersionMissing(bad.version),
            _ => MigrateError::Dirty(bad.version),
        }));
    }
    let pending: Vec<Status> = statuses
        .into_iter()
        .filter(|s| s.state == State::Pending)
        .collect();
    if dry_run || pending.is_empty() {
        return Ok(pending);
    }
    migrator(dir)
        .await?
        .run_direct(None, conn, false)
        .await
        .map_err(explain)?;
    Ok(pending)
}

/// Creates an empty migration named after `name`, versioned by `timestamp` (YYYYMMDDHHMMSS).
pub fn new_migration(dir: &Path, name: &str, timestamp: &str) -> Result<PathBuf> {
    let slug: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if slug.is_empty() {
        return Err(OpsError::Refused {
            message: format!("`{name}` gives an empty file name"),
            hint: "use letters and digits, e.g. add_friends".into(),
        });
    }
    fs_err::create_dir_all(dir)
        .map_err(OpsError::io(format!("cannot create {}", dir.display())))?;
    let path = dir.join(format!("{timestamp}_{slug}.sql"));
    let mut options = fs_err::OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = options
        .open(&path)
        .map_err(OpsError::io(format!("cannot create {}", path.display())))?;
    std::io::Write::write_all(&mut file, format!("-- {name}\n").as_bytes())
        .map_err(OpsError::io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_migrations_are_the_initial_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap()
            .join("migrations");
        let mut committed: Vec<String> = fs_err::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let initial: Vec<&str> = INITIAL.iter().map(|(name, _)| *name).collect();
        assert_eq!(committed, initial);
        for (name, sql) in INITIAL {
            assert_eq!(
                &fs_err::read_to_string(root.join(name)).unwrap(),
                sql,
                "migrations/{name} differs from the embedded copy"
            );
        }
    }
}
