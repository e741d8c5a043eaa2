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
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;

/// The prefix of session keys unless told otherwise (connect-redis's default).
pub const DEFAULT_PREFIX: &str = "sess:";

/// Sessions a restore reads from PostgreSQL and writes to Redis per round trip.
const BATCH: usize = 1000;

/// SCAN's COUNT for a backup: about the keys read from Redis per round trip, so the rows held
/// and sent to PostgreSQL at once (a few megabytes). Larger pages, put in key order, land closer
/// together in the table's index: at a million sessions 5000 saves PostgreSQL about a tenth of
/// its work over 1000.
const SCAN_COUNT: usize = 5000;

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
    // Binary COPY: nothing to escape here and no text for the server to parse, which is most of
    // what a row costs besides the table's indexes.
    let copy_statement = match staging {
        Staging::Direct => {
            "COPY session_backups (prefix, session_id, user_id, payload, data, expires_at, backed_up_at) FROM STDIN (FORMAT binary)"
        }
        Staging::Deduplicated => {
            sqlx::query(
                "CREATE TEMPORARY TABLE nanika_session_snapshot (LIKE session_backups) ON COMMIT DROP",
            )
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
            "COPY nanika_session_snapshot (prefix, session_id, user_id, payload, data, expires_at, backed_up_at) FROM STDIN (FORMAT binary)"
        }
    };
    let mut copy = tx.copy_in_raw(copy_statement).await.map_err(stage)?;
    let batch = Batch {
        prefix,
        pattern: format!("{}*", redis_glob_escape(prefix)),
        now_ms,
        // The transaction's start, from PostgreSQL itself: it fits.
        backed_up_at: pg_timestamp(now_ms).unwrap_or(PG_INFINITY),
        users: &users,
    };
    let mut rows = CopyRows::new();
    // The SCAN page to ask for next, none once SCAN is through; and the keys of the page before.
    let mut cursor = Some(0);
    let mut keys: Vec<String> = Vec::new();
    while cursor.is_some() || !keys.is_empty() {
        let page = batch.read(con, url, &keys, cursor, &mut rows, &mut report)?;
        (cursor, keys) = match page {
            Some((0, next_keys)) => (None, next_keys),
            Some((next, next_keys)) => (Some(next), next_keys),
            None => (None, Vec::new()),
        };
        // In key order the rows land near each other in the primary key's index, whose upkeep
        // is most of what PostgreSQL spends on a row (about a tenth less than in hash order).
        keys.sort_unstable();
        // The socket takes the rows at once, so PostgreSQL ingests them during the next read.
        copy.send(rows.bytes.as_slice()).await.map_err(stage)?;
        rows.bytes.clear();
    }
    copy.send(COPY_TRAILER.as_slice()).await.map_err(stage)?;
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

/// PostgreSQL's binary COPY header: the signature, no flags, no header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a binary COPY: a row of -1 fields.
const COPY_TRAILER: [u8; 2] = (-1_i16).to_be_bytes();
/// The Unix time of PostgreSQL's epoch (2000-01-01 UTC) in milliseconds; binary timestamps are
/// microseconds from it.
const PG_EPOCH_MS: i64 = 946_684_800_000;
/// The version byte a binary `jsonb` starts with (the JSON text follows).
const JSONB_VERSION: u8 = 1;

/// Rows for a binary COPY, built in one reused buffer.
struct CopyRows {
    bytes: Vec<u8>,
}

impl CopyRows {
    /// A buffer that starts with the COPY header, so that the first rows sent carry it.
    fn new() -> Self {
        Self {
            bytes: COPY_HEADER.to_vec(),
        }
    }

    fn row(&mut self, fields: i16) {
        self.bytes.extend_from_slice(&fields.to_be_bytes());
    }

    fn null(&mut self) {
        self.bytes.extend_from_slice(&(-1_i32).to_be_bytes());
    }

    fn bigint(&mut self, value: i64) {
        self.bytes.extend_from_slice(&8_i32.to_be_bytes());
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    /// A `text` field, or a `jsonb` one when `head` is its version byte.
    fn text(&mut self, head: &[u8], value: &str) -> Result<()> {
        let len = i32::try_from(head.len() + value.len()).map_err(|_| OpsError::Refused {
            message: format!(
                "a session of {} bytes is more than PostgreSQL stores in one field",
                value.len()
            ),
            hint: "delete or shorten that session in Redis".into(),
        })?;
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(head);
        self.bytes.extend_from_slice(value.as_bytes());
        Ok(())
    }
}

/// A `timestamptz` in binary form: microseconds since PostgreSQL's epoch, when it fits.
fn pg_timestamp(unix_ms: i64) -> Option<i64> {
    unix_ms.checked_sub(PG_EPOCH_MS)?.checked_mul(1000)
}

/// `timestamptz` infinity in binary form.
const PG_INFINITY: i64 = i64::MAX;

/// What every row of one backup shares.
struct Batch<'a> {
    prefix: &'a str,
    /// `SCAN MATCH`'s pattern for the prefix.
    pattern: String,
    now_ms: i64,
    /// `now_ms` as a binary `timestamptz`.
    backed_up_at: i64,
    users: &'a std::collections::HashSet<i64>,
}

impl Batch<'_> {
    /// One round trip to Redis: the remaining time and the value of each of `keys`, whose COPY
    /// rows it appends to `rows`, and the SCAN page at `cursor` (next cursor and keys), if any.
    ///
    /// MGET answers nil for a key that is not a string as for one that expired, and both are
    /// skipped. PTTL goes first: a key that expires in between has a time and no value.
    fn read(
        &self,
        con: &mut redis::Connection,
        url: &RedisUrl,
        keys: &[String],
        cursor: Option<u64>,
        rows: &mut CopyRows,
        report: &mut BackupReport,
    ) -> Result<Option<(u64, Vec<String>)>> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("PTTL").arg(key);
        }
        if !keys.is_empty() {
            pipe.cmd("MGET").arg(keys);
        }
        if let Some(cursor) = cursor {
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
        }
        let mut replies: Vec<redis::Value> = pipe.query(con).map_err(redis_failed(url))?;
        let unexpected = |e: redis::ParsingError| OpsError::Redis {
            target: url.to_string(),
            reason: format!("unexpected reply: {e}"),
        };
        let page = match cursor {
            Some(_) => {
                let reply = replies.pop().unwrap_or_default();
                Some(redis::from_redis_value::<(u64, Vec<String>)>(reply).map_err(unexpected)?)
            }
            None => None,
        };
        if keys.is_empty() {
            return Ok(page);
        }
        let values: Vec<Option<String>> =
            redis::from_redis_value(replies.pop().unwrap_or_default()).map_err(unexpected)?;
        for ((key, ttl), value) in keys.iter().zip(replies).zip(values) {
            let ttl: i64 = redis::from_redis_value(ttl).map_err(unexpected)?;
            match value {
                Some(payload) if ttl != -2 => self.append(rows, key, ttl, &payload)?,
                _ => report.skipped += 1,
            }
        }
        Ok(page)
    }

    /// Appends the COPY row of one session.
    fn append(&self, rows: &mut CopyRows, key: &str, ttl: i64, payload: &str) -> Result<()> {
        let expires_at = if ttl < 0 {
            PG_INFINITY
        } else {
            self.now_ms
                .checked_add(ttl)
                .and_then(pg_timestamp)
                .ok_or_else(|| OpsError::Refused {
                    message: format!("{key} expires later than PostgreSQL can count"),
                    hint: format!("give {key} a shorter time to live"),
                })?
        };
        // `data` is the value as JSON: the value itself when it is JSON, else a JSON string.
        let (json, user) = match serde_json::from_str::<SessionJson>(payload) {
            Ok(parsed) => (None, parsed.user),
            Err(_) => (Some(serde_json::Value::from(payload).to_string()), None),
        };
        rows.row(7);
        rows.text(&[], self.prefix)?;
        rows.text(&[], &key[self.prefix.len()..])?;
        match user.filter(|id| self.users.contains(id)) {
            Some(id) => rows.bigint(id),
            None => rows.null(),
        }
        rows.text(&[], payload)?;
        rows.text(&[JSONB_VERSION], json.as_deref().unwrap_or(payload))?;
        rows.bigint(expires_at);
        rows.bigint(self.backed_up_at);
        Ok(())
    }
}

/// What a backup reads from a session's JSON: the user it names (`userId`, `user_id` or
/// `user.id`, the first of them present, as a number or a string of one).
///
/// Parsing into it accepts and refuses exactly what parsing into `serde_json::Value` does, since
/// every value goes through `deserialize_any` as `Value`'s do (numbers, escapes and nesting
/// checked the same), but builds nothing: the backup parses every session, and the maps and
/// strings of a `Value` cost more than the rest of a row.
struct SessionJson {
    user: Option<i64>,
}

impl<'de> Deserialize<'de> for SessionJson {
    fn deserialize<D: Deserializer<'de>>(json: D) -> std::result::Result<Self, D::Error> {
        let user = Part::Root.deserialize(json)?;
        Ok(Self {
            user: user.flatten(),
        })
    }
}

/// Where a JSON value sits in a session, which says what is read from it.
///
/// Each part yields `Some` when it holds what is looked for, keeping the lookup of
/// `serde_json::Value::get`: a key present with a value that is no id still counts as present
/// (`"userId": null` does not fall back to `user_id`), and of a repeated key the last wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The whole session: `Some(user)` where `user` is its user, if any.
    Root,
    /// The value of `user`: `Some(id)` when it is an object with an `id`.
    User,
    /// The value of an id: always `Some`, with the id when it is one.
    Id,
    /// Anything else: read through, never `Some`.
    Other,
}

impl Part {
    /// What a value of this part that is not an object yields; `id` is the value as an id.
    fn leaf(self, id: Option<i64>) -> Option<Option<i64>> {
        (self == Part::Id).then_some(id)
    }
}

impl<'de> DeserializeSeed<'de> for Part {
    type Value = Option<Option<i64>>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        json: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        json.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Part {
    type Value = Option<Option<i64>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(self.leaf(None))
    }

    fn visit_i64<E>(self, value: i64) -> std::result::Result<Self::Value, E> {
        Ok(self.leaf(Some(value)))
    }

    fn visit_u64<E>(self, value: u64) -> std::result::Result<Self::Value, E> {
        Ok(self.leaf(i64::try_from(value).ok()))
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(self.leaf(None))
    }

    fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.leaf(value.parse().ok()))
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(self.leaf(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while items.next_element_seed(Part::Other)?.is_some() {}
        Ok(self.leaf(None))
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut entries: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        // The ids found under `userId`, `user_id` and `user` (Root), or under `id` (User).
        let (mut camel, mut snake, mut nested) = (None, None, None);
        while let Some(key) = entries.next_key_seed(ObjectKey)? {
            match (self, key) {
                (Part::Root, KeyName::UserIdCamel) => camel = entries.next_value_seed(Part::Id)?,
                (Part::Root, KeyName::UserIdSnake) => snake = entries.next_value_seed(Part::Id)?,
                (Part::Root, KeyName::User) => nested = entries.next_value_seed(Part::User)?,
                (Part::User, KeyName::Id) => nested = entries.next_value_seed(Part::Id)?,
                _ => {
                    entries.next_value_seed(Part::Other)?;
                }
            }
        }
        Ok(match self {
            Part::Root => Some(camel.or(snake).or(nested).flatten()),
            Part::User => nested,
            Part::Id | Part::Other => self.leaf(None),
        })
    }
}

/// The object keys a session's user is found under, read without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyName {
    UserIdCamel,
    UserIdSnake,
    User,
    Id,
    Other,
}

/// Reads an object key as a [`KeyName`].
struct ObjectKey;

impl<'de> DeserializeSeed<'de> for ObjectKey {
    type Value = KeyName;

    fn deserialize<D: Deserializer<'de>>(self, key: D) -> std::result::Result<KeyName, D::Error> {
        key.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectKey {
    type Value = KeyName;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> std::result::Result<KeyName, E> {
        Ok(match key {
            "userId" => KeyName::UserIdCamel,
            "user_id" => KeyName::UserIdSnake,
            "user" => KeyName::User,
            "id" => KeyName::Id,
            _ => KeyName::Other,
        })
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
    use super::*;

    #[test]
    fn expiries_are_binary_timestamps_from_postgresqls_epoch() {
        assert_eq!(pg_timestamp(946_684_800_000), Some(0));
        assert_eq!(pg_timestamp(946_684_800_001), Some(1000));
        // 2026-11-29 13:47:55.123 UTC
        assert_eq!(pg_timestamp(1_795_960_075_123), Some(849_275_275_123_000));
        assert_eq!(pg_timestamp(i64::MAX), None);
    }

    /// The reading of a session's user the backup had while it parsed sessions into
    /// `serde_json::Value`, which [`SessionJson`] must keep.
    fn user_of_value(data: &serde_json::Value) -> Option<i64> {
        let id = data
            .get("userId")
            .or_else(|| data.get("user_id"))
            .or_else(|| data.get("user").and_then(|u| u.get("id")))?;
        id.as_i64().or_else(|| id.as_str()?.parse().ok())
    }

    #[test]
    fn sessions_are_read_as_serde_json_values_would_be() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let payloads = [
            r#"{"cookie":{"originalMaxAge":86400000,"httpOnly":true,"path":"/"},"userId":42,"visits":3}"#,
            r#"{"userId":"42"}"#,
            r#"{"userId":"+42"}"#,
            r#"{"userId":" 42"}"#,
            r#"{"userId":42.0}"#,
            r#"{"userId":-0}"#,
            r#"{"userId":-7}"#,
            r#"{"userId":9223372036854775807}"#,
            r#"{"userId":9223372036854775808}"#,
            r#"{"userId":123456789012345678901234567890}"#,
            r#"{"userId":null,"user_id":5}"#,
            r#"{"userId":true}"#,
            r#"{"userId":[1]}"#,
            r#"{"userId":{"id":1}}"#,
            r#"{"userId":1,"userId":2}"#,
            r#"{"userId":1,"userId":null}"#,
            r#"{"user_id":"8","user":{"id":9}}"#,
            r#"{"user":{"id":9},"user":{"name":"x"}}"#,
            r#"{"user":{"id":9,"id":"10"},"other":[1,{"userId":3}]}"#,
            r#"{"user":{"name":"x"}}"#,
            r#"{"user":[{"id":1}]}"#,
            r#"{"user":{"user":{"id":1}}}"#,
            r#"{"user\u0049d":11}"#,
            r#"{"USERID":11}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":1e-400}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":NaN}"#,
            r#"[{"userId":1}]"#,
            r#""a string""#,
            "12",
            "null",
            "true",
            " {\"userId\" : 3 } \n",
            "",
            "not json",
            "{",
            "s:9:\"serialized\";",
            "\u{feff}{}",
            &deep,
        ];
        for payload in payloads {
            let expected = serde_json::from_str::<serde_json::Value>(payload)
                .ok()
                .map(|value| user_of_value(&value));
            let read = serde_json::from_str::<SessionJson>(payload)
                .ok()
                .map(|session| session.user);
            assert_eq!(read, expected, "{payload}");
        }
    }

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(redis_glob_escape("app*[1]:"), "app\\*\\[1\\]:");
    }
}
