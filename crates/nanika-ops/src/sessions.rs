//! The session backup (spec: セッションデータのバックアップ): `session_backups` as a snapshot of the
//! sessions in Redis, and putting back those that are neither live nor expired.
//!
//! A backup mirrors Redis at that moment: a session that is gone from Redis (logged out,
//! expired) is gone from the backup in the same transaction, so a restore can never bring a
//! logout back. A restore never overwrites a live key unless told to, and gives each session the
//! rest of its own life (`expires_at` is absolute). Both stream: memory does not grow with the
//! number of sessions.

use crate::error::{OpsError, Result};
use nanika_config::urls::RedisUrl;
use serde::Serialize;
use sqlx::postgres::PgConnection;

/// The prefix of session keys unless told otherwise (connect-redis's default).
pub const DEFAULT_PREFIX: &str = "sess:";

/// Keys looked at per round trip to Redis and rows per batch to PostgreSQL.
const BATCH: usize = 1000;

/// What a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Sessions in the backup now: every live session under the prefix.
    pub backed_up: u64,
    /// Sessions of an earlier backup removed because Redis no longer has them.
    pub removed: u64,
    /// Keys under the prefix that are not sessions (not strings), or expired on the way.
    pub skipped: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Sessions put back.
    pub restored: u64,
    /// Sessions left alone because Redis holds a live key of that name (newer than the backup).
    pub skipped_live: u64,
    /// Sessions whose time is up.
    pub skipped_expired: u64,
}

/// Whether a restore may replace a live key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Never: a live session is newer than its backup (`SET … NX`).
    Never,
    /// Replace live keys with their backed-up value.
    Always,
}

/// The user a session belongs to, when its JSON says (`userId`, `user_id` or `user.id`).
fn user_of(data: &serde_json::Value) -> Option<i64> {
    let id = data
        .get("userId")
        .or_else(|| data.get("user_id"))
        .or_else(|| data.get("user").and_then(|u| u.get("id")))?;
    id.as_i64().or_else(|| id.as_str()?.parse().ok())
}

fn redis_failed(url: &RedisUrl) -> impl Fn(redis::RedisError) -> OpsError + '_ {
    move |e| OpsError::Redis {
        target: url.to_string(),
        reason: e.to_string(),
    }
}

/// Refuses, with the one thing to do, when the schema has no session backups (yet).
async fn require_table(pg: &mut PgConnection) -> Result<()> {
    let ready: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'session_backups' AND column_name = 'prefix')",
    )
    .fetch_one(&mut *pg)
    .await
    .map_err(OpsError::sql("cannot look for session_backups"))?;
    if ready {
        Ok(())
    } else {
        Err(OpsError::Refused {
            message: "this database has no session_backups table (or an old one) yet".into(),
            hint: "run `nanika db migrate`".into(),
        })
    }
}

/// Escapes a value for COPY's text format.
fn copy_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Makes `session_backups` hold exactly the `prefix*` sessions Redis holds now, each with its
/// absolute expiry; sessions gone from Redis are removed in the same transaction.
///
/// The sessions are copied straight into the table while Redis is still being read, so that
/// PostgreSQL ingests one batch while the next is fetched. SCAN may return a key twice (while
/// Redis rehashes): the table's key then refuses the copy, and the backup is taken again
/// through a staging table that drops duplicates. Memory holds one batch either way.
pub async fn backup(
    con: &mut redis::Connection,
    url: &RedisUrl,
    pg: &mut PgConnection,
    prefix: &str,
) -> Result<BackupReport> {
    require_table(pg).await?;
    match backup_once(con, url, pg, prefix, Staging::Direct).await {
        Err(OpsError::Sql { source, .. }) if is_unique_violation(&source) => {
            backup_once(con, url, pg, prefix, Staging::Deduplicated).await
        }
        other => other,
    }
}

/// How the sessions reach `session_backups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staging {
    /// COPY into the table itself: the fast way, refused by a key SCAN returned twice.
    Direct,
    /// COPY into a temporary table, then one INSERT that keeps one row a session.
    Deduplicated,
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23505")
}

/// `ms` milliseconds after the epoch as a `timestamptz` literal in UTC.
fn timestamp_text(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // The civil date of a day count (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}+00",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

async fn backup_once(
    con: &mut redis::Connection,
    url: &RedisUrl,
    pg: &mut PgConnection,
    prefix: &str,
    staging: Staging,
) -> Result<BackupReport> {
    let stage = |e| OpsError::sql("cannot stage the session backup")(e);
    let mut report = BackupReport::default();
    let mut tx = sqlx::Connection::begin(&mut *pg)
        .await
        .map_err(OpsError::sql("cannot begin the session backup"))?;
    // The transaction's start: each session's expiry is counted from it, as `now()` would.
    let now_ms: i64 = sqlx::query_scalar("SELECT (extract(epoch FROM now()) * 1000)::bigint")
        .fetch_one(&mut *tx)
        .await
        .map_err(stage)?;
    // Sessions of users that exist keep their user; others get none (the key is a reference).
    let users: std::collections::HashSet<i64> = sqlx::query_scalar("SELECT id FROM users")
        .fetch_all(&mut *tx)
        .await
        .map_err(OpsError::sql("cannot read the users"))?
        .into_iter()
        .collect();
    // The earlier backup's sessions, to count those gone from Redis once the new one is in.
    for statement in [
        "CREATE TEMPORARY TABLE nanika_session_previous (session_id text) ON COMMIT DROP",
        "WITH gone AS (DELETE FROM session_backups WHERE prefix = $1 RETURNING session_id) \
         INSERT INTO nanika_session_previous SELECT session_id FROM gone",
    ] {
        sqlx::query(statement)
            .bind(prefix)
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
    }
    let copy_statement = match staging {
        Staging::Direct => {
            "COPY session_backups (prefix, session_id, user_id, payload, data, expires_at, backed_up_at) FROM STDIN"
        }
        Staging::Deduplicated => {
            sqlx::query(
                "CREATE TEMPORARY TABLE nanika_session_snapshot (LIKE session_backups) ON COMMIT DROP",
            )
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
            "COPY nanika_session_snapshot (prefix, session_id, user_id, payload, data, expires_at, backed_up_at) FROM STDIN"
        }
    };
    let mut copy = tx.copy_in_raw(copy_statement).await.map_err(stage)?;
    let pattern = format!("{}*", redis_glob_escape(prefix));
    let batch = Batch {
        prefix,
        now_ms,
        users: &users,
    };
    let mut cursor: u64 = 0;
    let mut pending: Vec<String> = Vec::new();
    let mut rows = String::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query(con)
            .map_err(redis_failed(url))?;
        pending.extend(keys);
        if pending.len() >= BATCH || (next == 0 && !pending.is_empty()) {
            batch.snapshot(con, url, &pending, &mut rows, &mut report)?;
            copy.send(rows.as_bytes()).await.map_err(stage)?;
            pending.clear();
            rows.clear();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let copied = copy.finish().await.map_err(stage)?;
    report.backed_up = match staging {
        Staging::Direct => copied,
        Staging::Deduplicated => sqlx::query(
            "INSERT INTO session_backups SELECT * FROM nanika_session_snapshot ON CONFLICT DO NOTHING",
        )
        .execute(&mut *tx)
        .await
        .map_err(OpsError::sql("cannot store the sessions"))?
        .rows_affected(),
    };
    report.removed = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM nanika_session_previous p WHERE NOT EXISTS \
         (SELECT 1 FROM session_backups b WHERE b.prefix = $1 AND b.session_id = p.session_id)",
    )
    .bind(prefix)
    .fetch_one(&mut *tx)
    .await
    .map_err(OpsError::sql("cannot count the sessions gone from Redis"))?
    .try_into()
    .unwrap_or(0);
    tx.commit()
        .await
        .map_err(OpsError::sql("cannot commit the session backup"))?;
    Ok(report)
}

/// Escapes the glob characters of a prefix for `SCAN MATCH`.
fn redis_glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What every row of one backup shares.
struct Batch<'a> {
    prefix: &'a str,
    now_ms: i64,
    users: &'a std::collections::HashSet<i64>,
}

impl Batch<'_> {
    /// Reads one batch of keys (type, remaining time, value) in two round trips and appends
    /// their COPY rows to `rows`.
    fn snapshot(
        &self,
        con: &mut redis::Connection,
        url: &RedisUrl,
        keys: &[String],
        rows: &mut String,
        report: &mut BackupReport,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
        }
        let meta: Vec<redis::Value> = pipe.query(con).map_err(redis_failed(url))?;
        let strings: Vec<(&String, i64)> = keys
            .iter()
            .zip(meta.chunks(2))
            .filter_map(|(key, pair)| {
                let kind: String = redis::from_redis_value(pair[0].clone()).ok()?;
                let ttl: i64 = redis::from_redis_value(pair[1].clone()).ok()?;
                (kind == "string" && ttl != -2).then_some((key, ttl))
            })
            .collect();
        report.skipped += (keys.len() - strings.len()) as u64;
        let mut pipe = redis::pipe();
        for (key, _) in &strings {
            pipe.cmd("GET").arg(*key);
        }
        let values: Vec<Option<String>> = pipe.query(con).map_err(redis_failed(url))?;
        let backed_up_at = timestamp_text(self.now_ms);
        for ((key, ttl), value) in strings.into_iter().zip(values) {
            let Some(payload) = value else {
                report.skipped += 1; // expired between the two round trips
                continue;
            };
            // `data` is the value as JSON: the value itself when it is JSON, else a JSON string.
            let (data, user) = match serde_json::from_str::<serde_json::Value>(&payload) {
                Ok(parsed) => (None, user_of(&parsed)),
                Err(_) => (
                    Some(serde_json::Value::String(payload.clone()).to_string()),
                    None,
                ),
            };
            let user = user
                .filter(|id| self.users.contains(id))
                .map_or("\\N".to_string(), |id| id.to_string());
            let expires_at = if ttl < 0 {
                "infinity".to_string()
            } else {
                timestamp_text(self.now_ms + ttl)
            };
            let session_id = &key[self.prefix.len()..];
            rows.push_str(&format!(
                "{}\t{}\t{user}\t{}\t{}\t{expires_at}\t{backed_up_at}\n",
                copy_text(self.prefix),
                copy_text(session_id),
                copy_text(&payload),
                copy_text(data.as_deref().unwrap_or(&payload)),
            ));
        }
        Ok(())
    }
}

/// Puts back the backed-up sessions (of `prefix`, or of every prefix when `None`) under the
/// prefix each was taken from, with the rest of its life; never over a live key unless
/// `overwrite` says so. Reads the backup in batches.
pub async fn restore(
    con: &mut redis::Connection,
    url: &RedisUrl,
    pg: &mut PgConnection,
    prefix: Option<&str>,
    overwrite: Overwrite,
) -> Result<RestoreReport> {
    require_table(pg).await?;
    let expired = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM session_backups WHERE expires_at <= now() AND ($1::text IS NULL OR prefix = $1)",
    )
    .bind(prefix)
    .fetch_one(&mut *pg)
    .await
    .map_err(OpsError::sql("cannot read session_backups"))?;
    let mut report = RestoreReport {
        skipped_expired: expired as u64,
        ..RestoreReport::default()
    };
    let mut after: (String, String) = (String::new(), String::new());
    loop {
        // Keyset pagination: each batch costs the same, and memory holds one batch.
        let rows: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(
            "SELECT prefix, session_id, payload, \
                    CASE WHEN expires_at = 'infinity' THEN NULL \
                         ELSE ceil(extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint END \
             FROM session_backups \
             WHERE expires_at > now() AND ($1::text IS NULL OR prefix = $1) AND (prefix, session_id) > ($2, $3) \
             ORDER BY prefix, session_id LIMIT $4",
        )
        .bind(prefix)
        .bind(&after.0)
        .bind(&after.1)
        .bind(BATCH as i64)
        .fetch_all(&mut *pg)
        .await
        .map_err(OpsError::sql("cannot read session_backups"))?;
        let Some(last) = rows.last() else { break };
        after = (last.0.clone(), last.1.clone());
        let mut pipe = redis::pipe();
        let mut sent = 0;
        for (prefix, id, payload, ttl_ms) in &rows {
            if ttl_ms.is_some_and(|ms| ms <= 0) {
                report.skipped_expired += 1;
                continue;
            }
            let set = pipe.cmd("SET").arg(format!("{prefix}{id}")).arg(payload);
            if let Some(ms) = ttl_ms {
                set.arg("PX").arg(*ms);
            }
            if overwrite == Overwrite::Never {
                set.arg("NX");
            }
            sent += 1;
        }
        let replies: Vec<Option<String>> = if sent == 0 {
            Vec::new()
        } else {
            pipe.query(con).map_err(redis_failed(url))?
        };
        for reply in replies {
            match reply {
                Some(_) => report.restored += 1,
                None => report.skipped_live += 1,
            }
        }
        if rows.len() < BATCH {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiries_are_written_as_utc_timestamps() {
        assert_eq!(super::timestamp_text(0), "1970-01-01 00:00:00.000+00");
        assert_eq!(
            super::timestamp_text(1_795_960_075_123),
            "2026-11-29 13:47:55.123+00"
        );
        assert_eq!(
            super::timestamp_text(951_782_400_000),
            "2000-02-29 00:00:00.000+00"
        );
    }

    use super::*;

    #[test]
    fn copy_rows_escape_what_copy_reads_specially() {
        assert_eq!(copy_text("a\tb\nc\\d\re"), "a\\tb\\nc\\\\d\\re");
    }

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(redis_glob_escape("app*[1]:"), "app\\*\\[1\\]:");
    }
}
