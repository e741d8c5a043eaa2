//! Migrations: SQL files in `migrations/`, applied in order with sqlx's migrator (its
//! `_sqlx_migrations` table and file naming, so `sqlx migrate` users feel at home): each in a
//! transaction, recorded with a checksum, serialised by an advisory lock.

use crate::error::{OpsError, Result};
use crate::interrupt::{CLEANUP_LIMIT, Interrupt, race};
use crate::pg::{self, Ended, Session};
use nanika_config::urls::DatabaseUrl;
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
    let mut pending = Vec::new();
    locked(conn, async |conn| {
        run_unlocked(conn, dir, dry_run, &mut pending).await
    })
    .await
}

/// [`run`] on a connection of its own to `url`, stopped by `interrupt`. Each migration is
/// applied in a transaction of its own, so an interrupt abandons the one in progress and ends
/// its session: the server rolls it back and releases the lock. The error then says which of
/// the pending migrations were applied before the interrupt and which are still pending.
pub async fn run_interruptible(
    url: &DatabaseUrl,
    dir: &Path,
    dry_run: bool,
    interrupt: &Interrupt,
) -> Result<Vec<Status>> {
    let Some(mut session) = Session::open(url, interrupt).await? else {
        return Err(interrupt.error(Vec::new(), "no migration was applied"));
    };
    let mut pending = Vec::new();
    let ran = race(
        interrupt,
        locked(session.conn(), async |conn| {
            run_unlocked(conn, dir, dry_run, &mut pending).await
        }),
    )
    .await;
    match ran {
        Some(result) => {
            session.close().await;
            result
        }
        None => {
            let cleaned = match session.abandon().await {
                Ended::Yes => {
                    "ended the migration's session: the server rolled back the migration in progress and released the lock"
                }
                Ended::NotYet => {
                    "asked the server to end the migration's session; it rolls back the migration in progress and releases the lock when it does"
                }
            };
            let (state, hint) = after_interrupt(url, dir, &pending).await;
            Err(interrupt.error_hinted(vec![cleaned.into()], state, hint))
        }
    }
}

/// Where the `pending` migrations stand after an interrupt, read afresh (without the lock: an
/// abandoned session that has not ended yet still holds it), and what to do next.
async fn after_interrupt(
    url: &DatabaseUrl,
    dir: &Path,
    pending: &[Status],
) -> (String, Option<String>) {
    let read = tokio::time::timeout(CLEANUP_LIMIT, async {
        let mut conn = pg::connect(url, None).await?;
        let statuses = status_unlocked(&mut conn, dir).await;
        pg::close(conn).await;
        statuses
    })
    .await;
    let Ok(Ok(now)) = read else {
        return (
            "which migrations are applied now could not be read".into(),
            Some("see `nanika db migrate status`".into()),
        );
    };
    if let Some(dirty) = now.iter().find(|s| s.state == State::Dirty) {
        // A migration outside a transaction (`-- no-transaction`) can be left half-applied.
        let error = explain(MigrateError::Dirty(dirty.version));
        let hint = error.hint();
        return (error.to_string(), hint);
    }
    if pending.is_empty() {
        return ("no migration was applied".into(), None);
    }
    let (applied, left): (Vec<&Status>, Vec<&Status>) = pending.iter().partition(|p| {
        now.iter()
            .any(|s| s.version == p.version && s.state == State::Applied)
    });
    let list = |some: &[&Status]| {
        some.iter()
            .map(|s| format!("{} {}", s.version, s.description))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let state = if applied.is_empty() {
        format!("no migration was applied; still pending: {}", list(&left))
    } else if left.is_empty() {
        format!(
            "all {} pending migrations were applied ({})",
            applied.len(),
            list(&applied)
        )
    } else {
        format!(
            "applied {} of {} pending migrations ({}); still pending: {}",
            applied.len(),
            pending.len(),
            list(&applied),
            list(&left)
        )
    };
    let hint = (!left.is_empty()).then(|| "run `nanika db migrate` again to apply the rest".into());
    (state, hint)
}

/// Copies the pending migrations into `pending_seen` (what [`after_interrupt`] reports on), then
/// applies them.
async fn run_unlocked(
    conn: &mut PgConnection,
    dir: &Path,
    dry_run: bool,
    pending_seen: &mut Vec<Status>,
) -> Result<Vec<Status>> {
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
    pending_seen.clone_from(&pending);
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
    // Two migrations made in the same second would share a version, which the migrator refuses:
    // take the next free one.
    let taken: Vec<i64> = fs_err::read_dir(dir)
        .map_err(OpsError::io(format!("cannot read {}", dir.display())))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.split('_').next()?.parse().ok()
        })
        .collect();
    let mut version: i64 = timestamp.parse().map_err(|_| OpsError::Refused {
        message: format!("`{timestamp}` is not a migration version"),
        hint: "versions are YYYYMMDDHHMMSS".into(),
    })?;
    while taken.contains(&version) {
        version += 1;
    }
    let path = dir.join(format!("{version}_{slug}.sql"));
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
    fn migrations_made_in_the_same_second_get_distinct_versions() {
        let dir = tempfile::tempdir().unwrap();
        let first = new_migration(dir.path(), "add friends", "20261129120000").unwrap();
        let second = new_migration(dir.path(), "add guilds", "20261129120000").unwrap();
        assert!(
            first.ends_with("20261129120000_add_friends.sql"),
            "{first:?}"
        );
        assert!(
            second.ends_with("20261129120001_add_guilds.sql"),
            "{second:?}"
        );
    }

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
