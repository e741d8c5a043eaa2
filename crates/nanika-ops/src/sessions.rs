//! The session backup (spec: セッションデータのバックアップ): session keys in Redis copied into
//! `session_backups` with their remaining TTL, and put back from there.

use crate::error::{OpsError, Result};
use crate::redis_admin;
use nanika_config::urls::RedisUrl;
use serde::Serialize;
use sqlx::postgres::PgConnection;

/// The prefix of session keys unless told otherwise (connect-redis's default).
pub const DEFAULT_PREFIX: &str = "sess:";

/// What a backup or restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    /// Sessions copied.
    pub copied: u64,
    /// Keys skipped: not strings, or expired on the way.
    pub skipped: u64,
}

/// The user a session belongs to, when its JSON says (`userId`, `user_id` or `user.id`).
fn user_of(data: &serde_json::Value) -> Option<i64> {
    let id = data
        .get("userId")
        .or_else(|| data.get("user_id"))
        .or_else(|| data.get("user").and_then(|u| u.get("id")))?;
    id.as_i64().or_else(|| id.as_str()?.parse().ok())
}

/// Copies every `prefix*` string key with its TTL into `session_backups` (replacing older copies).
pub async fn backup(
    con: &mut redis::Connection,
    url: &RedisUrl,
    pg: &mut PgConnection,
    prefix: &str,
) -> Result<SessionReport> {
    let keys = redis_admin::scan(con, url, &format!("{prefix}*"), None)?;
    let mut report = SessionReport::default();
    let mut tx = sqlx::Connection::begin(pg)
        .await
        .map_err(OpsError::sql("cannot begin the session backup"))?;
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
        }
        let meta: Vec<redis::Value> = pipe.query(con).map_err(|e| OpsError::Redis {
            target: url.to_string(),
            reason: e.to_string(),
        })?;
        let strings: Vec<(&String, i64)> = chunk
            .iter()
            .zip(meta.chunks(2))
            .filter_map(|(key, pair)| {
                let kind: String = redis::from_redis_value(pair[0].clone()).ok()?;
                let ttl: i64 = redis::from_redis_value(pair[1].clone()).ok()?;
                (kind == "string" && ttl != -2).then_some((key, ttl))
            })
            .collect();
        report.skipped += (chunk.len() - strings.len()) as u64;
        let mut pipe = redis::pipe();
        for (key, _) in &strings {
            pipe.cmd("GET").arg(*key);
        }
        let values: Vec<Option<String>> = pipe.query(con).map_err(|e| OpsError::Redis {
            target: url.to_string(),
            reason: e.to_string(),
        })?;
        for ((key, ttl), value) in strings.into_iter().zip(values) {
            let Some(payload) = value else {
                report.skipped += 1;
                continue;
            };
            let data: serde_json::Value = serde_json::from_str(&payload)
                .unwrap_or_else(|_| serde_json::Value::String(payload.clone()));
            let session_id = &key[prefix.len()..];
            // A key without a TTL never expires: keep it as 'infinity'.
            sqlx::query(
                "INSERT INTO session_backups (session_id, user_id, payload, data, expires_at, backed_up_at) \
                 VALUES ($1, (SELECT id FROM users WHERE id = $2), $3, $4::jsonb, \
                         CASE WHEN $5 < 0 THEN 'infinity'::timestamptz ELSE now() + make_interval(secs => $5 / 1000.0) END, now()) \
                 ON CONFLICT (session_id) DO UPDATE SET user_id = EXCLUDED.user_id, payload = EXCLUDED.payload, \
                 data = EXCLUDED.data, expires_at = EXCLUDED.expires_at, backed_up_at = EXCLUDED.backed_up_at",
            )
            .bind(session_id)
            .bind(user_of(&data))
            .bind(&payload)
            .bind(data.to_string())
            .bind(ttl as f64)
            .execute(&mut *tx)
            .await
            .map_err(OpsError::sql("cannot store a session (has `nanika db migrate` run?)"))?;
            report.copied += 1;
        }
    }
    tx.commit()
        .await
        .map_err(OpsError::sql("cannot commit the session backup"))?;
    Ok(report)
}

/// Puts back every backed-up session that has not expired, with its remaining TTL.
pub async fn restore(
    con: &mut redis::Connection,
    url: &RedisUrl,
    pg: &mut PgConnection,
    prefix: &str,
) -> Result<SessionReport> {
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT session_id, payload, \
                CASE WHEN expires_at = 'infinity' THEN NULL ELSE (extract(epoch FROM expires_at - now()) * 1000)::bigint END \
         FROM session_backups WHERE expires_at > now() ORDER BY session_id",
    )
    .fetch_all(pg)
    .await
    .map_err(OpsError::sql("cannot read session_backups (has `nanika db migrate` run?)"))?;
    let mut report = SessionReport::default();
    let mut pipe = redis::pipe();
    for (id, payload, ttl_ms) in &rows {
        match ttl_ms {
            Some(ms) if *ms <= 0 => {
                report.skipped += 1;
                continue;
            }
            Some(ms) => pipe
                .cmd("SET")
                .arg(format!("{prefix}{id}"))
                .arg(payload)
                .arg("PX")
                .arg(*ms)
                .ignore(),
            None => pipe
                .cmd("SET")
                .arg(format!("{prefix}{id}"))
                .arg(payload)
                .ignore(),
        };
        report.copied += 1;
    }
    let _: () = pipe.query(con).map_err(|e| OpsError::Redis {
        target: url.to_string(),
        reason: e.to_string(),
    })?;
    Ok(report)
}
