//! `nanika top`: what each server is doing, read from the servers themselves (no exporter or
//! Prometheus needed). A [`Probe`] keeps one connection to each server and takes [`Reading`]s of
//! their counters; two readings make a [`View`], with rates over the time between them.

use crate::pg;
use crate::redis_admin;
use nanika_config::urls::{DatabaseUrl, RedisUrl};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions, Row};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long connecting may take: a stopped server must not freeze a view that refreshes every
/// second.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// Keys looked at per reading to count keys by prefix: a few SCAN pages, cheap every second.
const PREFIX_SAMPLE: usize = 10_000;
/// A query text longer than this is cut: the view shows which query, not all of it.
const QUERY_CHARS: usize = 120;

/// What one server said, or why it said nothing.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Side<T> {
    /// It answered.
    Up(T),
    /// It did not: the reason (not running, not this project's, refused the password, ...).
    Down {
        /// Why.
        reason: String,
    },
}

/// PostgreSQL's counters at one moment.
#[derive(Debug, Clone)]
struct PgCounters {
    connections: i64,
    max_connections: i64,
    transactions: i64,
    blocks_hit: i64,
    blocks_read: i64,
    deadlocks: i64,
    longest: Option<LongestQuery>,
    replicas: Vec<PgReplica>,
}

/// Redis's counters at one moment.
#[derive(Debug, Clone)]
struct RedisCounters {
    commands: u64,
    /// Commands the probe had sent until this reading, all told.
    own_commands: u64,
    view: RedisView,
}

/// Both servers' counters at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    at: Instant,
    postgres: Result<PgCounters, String>,
    redis: Result<RedisCounters, String>,
}

/// The query that has been running longest.
#[derive(Debug, Clone, Serialize)]
pub struct LongestQuery {
    /// Its backend's pid.
    pub pid: i32,
    /// How long it has run, in seconds.
    pub seconds: f64,
    /// Its database.
    pub database: String,
    /// The start of its text; hidden when it mentions a password.
    pub query: String,
}

/// A streaming replica as the primary sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PgReplica {
    /// Its `application_name`.
    pub name: String,
    /// `streaming`, `catchup`, ...
    pub state: String,
    /// WAL bytes written on the primary and not yet replayed on the replica.
    pub lag_bytes: Option<i64>,
    /// How long ago the last replayed change was made on the primary, in seconds.
    pub lag_seconds: Option<f64>,
}

/// PostgreSQL, as the view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresView {
    /// Client connections now.
    pub connections: i64,
    /// `max_connections`.
    pub max_connections: i64,
    /// Connections as a percentage of `max_connections`.
    pub connections_percent: f64,
    /// Transactions (commits and rollbacks, every database) per second between the two
    /// readings, the probe's own left out. PostgreSQL publishes a backend's counts up to a
    /// second late, so a rate over one second is jumpy.
    pub transactions_per_second: f64,
    /// Share of block reads served from shared buffers since the statistics were reset, when
    /// any block was read.
    pub cache_hit_ratio: Option<f64>,
    /// Deadlocks since the statistics were reset.
    pub deadlocks: i64,
    /// The query running longest, when one runs.
    pub longest_query: Option<LongestQuery>,
    /// Streaming replicas (none in the spec's single-node setup).
    pub replicas: Vec<PgReplica>,
}

/// A Redis replica as its master sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisReplica {
    /// `ip:port`.
    pub address: String,
    /// `online`, `wait_bgsave`, ...
    pub state: String,
    /// `master_repl_offset` minus the replica's acknowledged offset.
    pub lag_bytes: Option<i64>,
}

/// Redis, as the view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisView {
    /// `master` or `slave`.
    pub role: String,
    /// Commands per second between the two readings, the probe's own left out.
    pub ops_per_second: f64,
    /// Connected clients.
    pub clients: u64,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `maxmemory` in bytes (0: no limit).
    pub maxmemory: u64,
    /// Used memory as a percentage of `maxmemory`, when there is a limit.
    pub memory_percent: Option<f64>,
    /// Keys evicted since the server started (with `allkeys-lru`, possibly live sessions).
    pub evicted_keys: u64,
    /// Keys in the URL's database.
    pub keys: u64,
    /// Keys counted by prefix (up to and including the first `:`), over `prefixes_sampled`.
    pub keys_by_prefix: BTreeMap<String, u64>,
    /// How many keys the prefix counts looked at: all of them when equal to `keys`.
    pub prefixes_sampled: u64,
    /// Replicas (none in the spec's single-node setup).
    pub replicas: Vec<RedisReplica>,
}

/// What `nanika top` shows.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// The time the rates were measured over, in milliseconds.
    pub interval_ms: u64,
    /// PostgreSQL.
    pub postgres: Side<PostgresView>,
    /// Redis.
    pub redis: Side<RedisView>,
}

/// Keeps a connection to each server and reads their counters.
pub struct Probe {
    database: Option<DatabaseUrl>,
    redis: Option<RedisUrl>,
    pg_conn: Option<PgConnection>,
    redis_conn: Option<redis::Connection>,
    /// Transactions the probe itself ran since the last reading: left out of the rate.
    own_transactions: i64,
    /// Commands the probe sent to Redis, all told: left out of its rate.
    own_commands: u64,
    /// Why a server is not read at all (it was not proven to be this project's).
    refused: [Option<String>; 2],
}

impl Probe {
    /// A probe of the servers behind `database` and `redis`. `None` (with the reason) for a
    /// server that was not proven to be this project's: it is reported down, never connected to.
    pub fn new(database: Result<DatabaseUrl, String>, redis: Result<RedisUrl, String>) -> Probe {
        let refused = [database.clone().err(), redis.clone().err()];
        Probe {
            database: database.ok(),
            redis: redis.ok(),
            pg_conn: None,
            redis_conn: None,
            own_transactions: 0,
            own_commands: 0,
            refused,
        }
    }

    /// Reads both servers' counters now.
    pub async fn read(&mut self) -> Reading {
        let postgres = match (&self.database, &self.refused[0]) {
            (_, Some(reason)) => Err(reason.clone()),
            (Some(url), None) => {
                let url = url.clone();
                let read = self.read_postgres(&url).await;
                if read.is_err() {
                    self.pg_conn = None;
                }
                read
            }
            (None, None) => Err("no database URL".into()),
        };
        let redis = match (&self.redis, &self.refused[1]) {
            (_, Some(reason)) => Err(reason.clone()),
            (Some(url), None) => {
                let url = url.clone();
                let read = self.read_redis(&url);
                if read.is_err() {
                    self.redis_conn = None;
                }
                read
            }
            (None, None) => Err("no Redis URL".into()),
        };
        Reading {
            at: Instant::now(),
            postgres,
            redis,
        }
    }

    async fn read_postgres(&mut self, url: &DatabaseUrl) -> Result<PgCounters, String> {
        if self.pg_conn.is_none() {
            let options = pg::options(url, None).application_name("nanika-top");
            let connect = options.connect();
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| format!("{url} did not answer within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| pg_reason(url, &e))?;
            self.pg_conn = Some(conn);
        }
        let conn = self.pg_conn.as_mut().expect("connected above");
        let fail = |e: sqlx::Error| pg_reason(url, &e);
        let totals = sqlx::query(
            "SELECT \
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
               current_setting('max_connections')::bigint, \
               coalesce(sum(xact_commit + xact_rollback), 0)::bigint, \
               coalesce(sum(blks_hit), 0)::bigint, \
               coalesce(sum(blks_read), 0)::bigint, \
               coalesce(sum(deadlocks), 0)::bigint \
             FROM pg_stat_database",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
        let longest = sqlx::query(
            "SELECT pid, extract(epoch FROM clock_timestamp() - query_start)::float8, \
                    coalesce(datname, ''), coalesce(query, '') \
             FROM pg_stat_activity \
             WHERE state NOT IN ('idle') AND backend_type = 'client backend' \
               AND pid <> pg_backend_pid() AND query_start IS NOT NULL \
             ORDER BY query_start LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?
        .map(|row| LongestQuery {
            pid: row.get(0),
            seconds: row.get(1),
            database: row.get(2),
            query: shown_query(row.get(3)),
        });
        let replicas = sqlx::query(
            "SELECT coalesce(application_name, ''), coalesce(state, ''), \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, \
                    extract(epoch FROM replay_lag)::float8 \
             FROM pg_stat_replication ORDER BY application_name",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(fail)?
        .into_iter()
        .map(|row| PgReplica {
            name: row.get(0),
            state: row.get(1),
            lag_bytes: row.get(2),
            lag_seconds: row.get(3),
        })
        .collect();
        self.own_transactions += 3;
        Ok(PgCounters {
            connections: totals.get(0),
            max_connections: totals.get(1),
            transactions: totals.get(2),
            blocks_hit: totals.get(3),
            blocks_read: totals.get(4),
            deadlocks: totals.get(5),
            longest,
            replicas,
        })
    }

    fn read_redis(&mut self, url: &RedisUrl) -> Result<RedisCounters, String> {
        if self.redis_conn.is_none() {
            let client = redis::Client::open(url.expose()).map_err(|e| redis_reason(url, &e))?;
            let conn = client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| redis_reason(url, &e))?;
            self.redis_conn = Some(conn);
        }
        let con = self.redis_conn.as_mut().expect("connected above");
        let info = redis_admin::info(con, url, Some("everything")).map_err(|e| e.to_string())?;
        let keys: u64 = redis::cmd("DBSIZE")
            .query(con)
            .map_err(|e| redis_reason(url, &e))?;
        let (sample, pages) = sample_keys(con).map_err(|e| redis_reason(url, &e))?;
        // INFO, DBSIZE and the SCAN pages: left out of the next rate.
        self.own_commands += 2 + pages;
        let mut keys_by_prefix = BTreeMap::new();
        for key in &sample {
            *keys_by_prefix.entry(prefix(key)).or_insert(0) += 1;
        }
        let number = |field: &str| {
            redis_admin::info_field(&info, field)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let used_memory = number("used_memory");
        let maxmemory = number("maxmemory");
        Ok(RedisCounters {
            commands: number("total_commands_processed"),
            own_commands: self.own_commands,
            view: RedisView {
                role: redis_admin::info_field(&info, "role")
                    .unwrap_or("unknown")
                    .to_string(),
                ops_per_second: 0.0,
                clients: number("connected_clients"),
                used_memory,
                maxmemory,
                memory_percent: (maxmemory > 0)
                    .then(|| 100.0 * used_memory as f64 / maxmemory as f64),
                evicted_keys: number("evicted_keys"),
                keys,
                keys_by_prefix,
                prefixes_sampled: sample.len() as u64,
                replicas: redis_replicas(&info, number("master_repl_offset")),
            },
        })
    }

    /// The view between an earlier reading and a later one.
    pub fn view(&mut self, before: &Reading, after: &Reading) -> View {
        let seconds = after
            .at
            .duration_since(before.at)
            .as_secs_f64()
            .max(f64::EPSILON);
        // The probe's own transactions between the two readings: those of the later one.
        let own = std::mem::take(&mut self.own_transactions).min(3);
        let postgres = match (&before.postgres, &after.postgres) {
            (Ok(b), Ok(a)) => Side::Up(PostgresView {
                connections: a.connections,
                max_connections: a.max_connections,
                connections_percent: 100.0 * a.connections as f64 / a.max_connections.max(1) as f64,
                transactions_per_second: (a.transactions - b.transactions - own).max(0) as f64
                    / seconds,
                cache_hit_ratio: (a.blocks_hit + a.blocks_read > 0)
                    .then(|| a.blocks_hit as f64 / (a.blocks_hit + a.blocks_read) as f64),
                deadlocks: a.deadlocks,
                longest_query: a.longest.clone(),
                replicas: a.replicas.clone(),
            }),
            (_, Err(reason)) | (Err(reason), _) => Side::Down {
                reason: reason.clone(),
            },
        };
        let redis = match (&before.redis, &after.redis) {
            (Ok(b), Ok(a)) => Side::Up(RedisView {
                // What INFO counts up to the later reading includes the earlier reading's
                // DBSIZE and SCANs and the later one's INFO: the probe's own, between the two.
                ops_per_second: a
                    .commands
                    .saturating_sub(b.commands)
                    .saturating_sub(a.own_commands - b.own_commands)
                    as f64
                    / seconds,
                ..a.view.clone()
            }),
            (_, Err(reason)) | (Err(reason), _) => Side::Down {
                reason: reason.clone(),
            },
        };
        View {
            interval_ms: (seconds * 1000.0).round() as u64,
            postgres,
            redis,
        }
    }
}

/// Up to `PREFIX_SAMPLE` keys, with SCAN, and how many SCAN calls that took.
fn sample_keys(con: &mut redis::Connection) -> Result<(Vec<String>, u64), redis::RedisError> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    let mut pages = 0;
    loop {
        // Keys are bytes: one that is not UTF-8 is counted, not an error.
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)?;
        pages += 1;
        keys.extend(
            batch
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        );
        if next == 0 || keys.len() >= PREFIX_SAMPLE {
            return Ok((keys, pages));
        }
        cursor = next;
    }
}

/// The part of a key before its first `:`, with the `:` (`session:` for `session:abc`); the
/// whole key when it has none. Control characters are shown escaped: a key is anyone's text,
/// and a terminal must not take it for commands.
fn prefix(key: &str) -> String {
    let prefix = match key.find(':') {
        Some(at) => &key[..=at],
        None => key,
    };
    printable(prefix)
}

/// `text` with control characters escaped (`\u{1b}`).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A query's text as the view may show it: one line, cut, and hidden when it may hold a
/// password (`ALTER ROLE … PASSWORD '…'`).
fn shown_query(text: String) -> String {
    if text.to_ascii_lowercase().contains("password") {
        return "(hidden: the statement mentions a password)".into();
    }
    let one_line = printable(&text.split_whitespace().collect::<Vec<_>>().join(" "));
    match one_line.char_indices().nth(QUERY_CHARS) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// The replicas in `INFO replication` (`slave0:ip=…,port=…,state=online,offset=…,lag=…`).
fn redis_replicas(info: &str, master_offset: u64) -> Vec<RedisReplica> {
    info.lines()
        .filter(|line| {
            line.strip_prefix("slave")
                .and_then(|rest| rest.split(':').next())
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|line| {
            let fields: BTreeMap<&str, &str> = line
                .split_once(':')?
                .1
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .collect();
            Some(RedisReplica {
                address: format!("{}:{}", fields.get("ip")?, fields.get("port")?),
                state: fields.get("state").unwrap_or(&"").to_string(),
                lag_bytes: fields
                    .get("offset")
                    .and_then(|o| o.parse::<i64>().ok())
                    .map(|o| master_offset as i64 - o),
            })
        })
        .collect()
}

fn pg_reason(url: &DatabaseUrl, error: &sqlx::Error) -> String {
    let reason = match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    format!("{url}: {reason}")
}

fn redis_reason(url: &RedisUrl, error: &redis::RedisError) -> String {
    format!("{url}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_first_colon() {
        assert_eq!(prefix("session:abc:def"), "session:");
        assert_eq!(prefix("plain"), "plain");
        assert_eq!(prefix(":x"), ":");
        assert_eq!(prefix("\u{1b}]0;owned\u{7}:x"), "\\u{1b}]0;owned\\u{7}:");
    }

    #[test]
    fn a_query_with_a_password_is_hidden_and_a_long_one_cut() {
        assert_eq!(
            shown_query("ALTER ROLE app PASSWORD 'hunter2'".into()),
            "(hidden: the statement mentions a password)"
        );
        let long = format!("SELECT {}", "x, ".repeat(100));
        let shown = shown_query(long);
        assert_eq!(shown.chars().count(), QUERY_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(shown_query("SELECT\n  1".into()), "SELECT 1");
    }

    #[test]
    fn redis_replicas_come_from_the_slave_lines_only() {
        let info = "role:master\r\nconnected_slaves:1\r\n\
                    slave0:ip=127.0.0.1,port=7001,state=online,offset=90,lag=0\r\n\
                    slave_read_only:1\r\nmaster_repl_offset:100\r\n";
        let replicas = redis_replicas(info, 100);
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas[0].address, "127.0.0.1:7001");
        assert_eq!(replicas[0].state, "online");
        assert_eq!(replicas[0].lag_bytes, Some(10));
    }
}
