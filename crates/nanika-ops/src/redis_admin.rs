//! Redis administration: listing keys with SCAN (never KEYS, which blocks the server on a large
//! keyspace), INFO, a flush that keeps a snapshot, and an audit of TTLs and big keys.

use crate::error::{OpsError, Result};
use nanika_config::urls::RedisUrl;
use nanika_runtime::native::safe_fs::Kind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Keys asked for per SCAN call: large enough to be quick, small enough to never block Redis.
const SCAN_COUNT: usize = 1000;

/// Connects to the URL's Redis (authenticating when it has a password).
pub fn connect(url: &RedisUrl) -> Result<redis::Connection> {
    let fail = |e: redis::RedisError| OpsError::Redis {
        target: url.to_string(),
        reason: e.to_string(),
    };
    let client = redis::Client::open(url.expose()).map_err(fail)?;
    client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(fail)
}

fn failed(url: &RedisUrl) -> impl Fn(redis::RedisError) -> OpsError + '_ {
    move |e| OpsError::Redis {
        target: url.to_string(),
        reason: e.to_string(),
    }
}

/// Up to `limit` keys matching `pattern`, found with SCAN, in the order SCAN returns them.
pub fn scan(
    con: &mut redis::Connection,
    url: &RedisUrl,
    pattern: &str,
    limit: Option<usize>,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(con)
            .map_err(failed(url))?;
        keys.extend(batch);
        if limit.is_some_and(|l| keys.len() >= l) {
            keys.truncate(limit.unwrap_or(usize::MAX));
            return Ok(keys);
        }
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// `INFO [section]` as text.
pub fn info(con: &mut redis::Connection, url: &RedisUrl, section: Option<&str>) -> Result<String> {
    let mut command = redis::cmd("INFO");
    if let Some(section) = section {
        command.arg(section);
    }
    command.query(con).map_err(failed(url))
}

/// One field of `INFO` text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// What a flush did.
#[derive(Debug, Clone, Serialize)]
pub struct FlushReport {
    /// Keys there were before.
    pub keys_removed: u64,
    /// Where the snapshot taken before was copied, when the server's files are on this machine.
    pub snapshot: Option<PathBuf>,
}

/// Saves a snapshot (copied to `backup_dir` when the server writes it on this machine), then
/// deletes every key of every database. `backup_dir` is the project's `backups/`: created 0700
/// when missing, refused when it is a link; the copy is a new 0600 file nanika creates.
pub fn flush(
    con: &mut redis::Connection,
    url: &RedisUrl,
    backup_dir: &Path,
    timestamp: &str,
) -> Result<FlushReport> {
    let keys_removed: u64 = redis::cmd("DBSIZE").query(con).map_err(failed(url))?;
    let _: () = redis::cmd("SAVE").query(con).map_err(failed(url))?;
    let config = |name: &str, con: &mut redis::Connection| -> Result<String> {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(con)
            .map_err(failed(url))?;
        Ok(pair.get(1).cloned().unwrap_or_default())
    };
    let rdb = Path::new(&config("dir", con)?).join(config("dbfilename", con)?);
    let snapshot = if rdb.is_file() {
        Some(copy_snapshot(&rdb, backup_dir, timestamp)?)
    } else {
        None
    };
    let _: () = redis::cmd("FLUSHALL").query(con).map_err(failed(url))?;
    Ok(FlushReport {
        keys_removed,
        snapshot,
    })
}

/// Copies `rdb` to a new owner-only `redis-TIMESTAMP.rdb` (`-2`, `-3`… when taken) in
/// `backup_dir`.
fn copy_snapshot(rdb: &Path, backup_dir: &Path, timestamp: &str) -> Result<PathBuf> {
    let dir = crate::dump::open_project_backups(backup_dir)?;
    let stem = format!("redis-{}", crate::dump::file_name_part(timestamp));
    let mut name = format!("{stem}.rdb");
    let mut n = 2;
    while dir.kind(&name)? != Kind::Missing {
        name = format!("{stem}-{n}.rdb");
        n += 1;
    }
    let mut target = dir.create_file(&name, 0o600)?;
    let path = dir.join(&name);
    let copied =
        fs_err::File::open(rdb).and_then(|mut source| std::io::copy(&mut source, &mut target));
    if let Err(error) = copied {
        let _ = dir.remove_file(&name);
        return Err(OpsError::io(format!(
            "cannot copy the Redis snapshot to {}",
            path.display()
        ))(error));
    }
    Ok(path)
}

/// What `ttl-audit` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TtlAudit {
    /// Keys looked at.
    pub scanned: u64,
    /// Keys in the database (`DBSIZE`); more than `scanned` when the audit was limited.
    pub total: u64,
    /// Keys without a TTL, by prefix (the part before the first `:`), most first.
    pub without_ttl: Vec<(String, u64)>,
    /// The biggest keys and their memory in bytes, biggest first.
    pub biggest: Vec<(String, u64)>,
    /// Keys evicted since the server started (`INFO stats`).
    pub evicted_keys: u64,
    /// The sessions under the session prefix.
    pub sessions: SessionAudit,
}

/// The sessions `ttl-audit` found, and whether Redis may evict them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionAudit {
    /// The prefix of session keys.
    pub prefix: String,
    /// Sessions seen.
    pub count: u64,
    /// Sessions without a TTL: they never expire, logged out or not.
    pub without_ttl: u64,
    /// The shortest remaining life of a session, in seconds.
    pub ttl_min_secs: Option<u64>,
    /// The median remaining life, in seconds (of a uniform sample beyond [`TTL_SAMPLE`] sessions).
    pub ttl_median_secs: Option<u64>,
    /// The longest remaining life, in seconds.
    pub ttl_max_secs: Option<u64>,
    /// The server's `maxmemory-policy`.
    pub maxmemory_policy: String,
    /// Whether that policy lets Redis evict sessions when memory runs out, and the fix.
    pub eviction_risk: Option<String>,
}

/// How many session TTLs the median is taken from, at most: memory stays the same however many
/// sessions there are.
pub const TTL_SAMPLE: usize = 100_000;

/// How many of the biggest keys are kept.
const BIGGEST: usize = 10;

/// Scans every key (or the first `limit`), streaming: counters per prefix, the biggest keys in a
/// bounded heap and a bounded sample of session TTLs, so memory does not grow with the keys.
pub fn ttl_audit(
    con: &mut redis::Connection,
    url: &RedisUrl,
    limit: Option<usize>,
    session_prefix: &str,
) -> Result<TtlAudit> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut without: BTreeMap<String, u64> = BTreeMap::new();
    let mut biggest: BinaryHeap<Reverse<(u64, String)>> = BinaryHeap::new();
    let mut sessions = SessionAudit {
        prefix: session_prefix.to_string(),
        ..SessionAudit::default()
    };
    let mut sample: Vec<u64> = Vec::new();
    // A small deterministic generator for the reservoir: the audit needs no real randomness.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut scanned: u64 = 0;
    let mut cursor: u64 = 0;
    'scan: loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(con)
            .map_err(failed(url))?;
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("PTTL")
                .arg(key)
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(key);
        }
        let replies: Vec<Option<i64>> = if keys.is_empty() {
            Vec::new()
        } else {
            pipe.query(con).map_err(failed(url))?
        };
        for (key, pair) in keys.into_iter().zip(replies.chunks(2)) {
            if limit.is_some_and(|l| scanned >= l as u64) {
                break 'scan;
            }
            scanned += 1;
            let ttl = pair[0];
            if ttl == Some(-1) {
                let prefix = key.split(':').next().unwrap_or(&key).to_string();
                *without.entry(prefix).or_default() += 1;
            }
            if key.starts_with(session_prefix) {
                sessions.count += 1;
                match ttl {
                    Some(-1) => sessions.without_ttl += 1,
                    Some(ms) if ms >= 0 => {
                        let secs = (ms as u64).div_ceil(1000);
                        sessions.ttl_min_secs =
                            Some(sessions.ttl_min_secs.map_or(secs, |m| m.min(secs)));
                        sessions.ttl_max_secs =
                            Some(sessions.ttl_max_secs.map_or(secs, |m| m.max(secs)));
                        let seen = sessions.count - sessions.without_ttl;
                        if sample.len() < TTL_SAMPLE {
                            sample.push(secs);
                        } else {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let slot = (seed % seen) as usize;
                            if slot < TTL_SAMPLE {
                                sample[slot] = secs;
                            }
                        }
                    }
                    _ => {}
                }
            }
            let size = pair[1].unwrap_or(0).max(0) as u64;
            if biggest.len() < BIGGEST {
                biggest.push(Reverse((size, key)));
            } else if biggest
                .peek()
                .is_some_and(|Reverse((smallest, _))| size > *smallest)
            {
                biggest.pop();
                biggest.push(Reverse((size, key)));
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    sample.sort_unstable();
    sessions.ttl_median_secs = sample.get(sample.len() / 2).copied();
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(con)
        .map_err(failed(url))?;
    sessions.maxmemory_policy = policy.get(1).cloned().unwrap_or_default();
    sessions.eviction_risk = eviction_risk(&sessions.maxmemory_policy);
    let mut biggest: Vec<(String, u64)> = biggest
        .into_iter()
        .map(|Reverse((size, key))| (key, size))
        .collect();
    biggest.sort_by_key(|(_, size)| Reverse(*size));
    let mut without: Vec<(String, u64)> = without.into_iter().collect();
    without.sort_by_key(|w| Reverse(w.1));
    let stats = info(con, url, Some("stats"))?;
    let total: u64 = redis::cmd("DBSIZE").query(con).map_err(failed(url))?;
    Ok(TtlAudit {
        scanned,
        total,
        without_ttl: without,
        biggest,
        evicted_keys: info_field(&stats, "evicted_keys")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        sessions,
    })
}

/// What `policy` does to sessions when Redis's memory is full, and the fix; `None` when it
/// never evicts them.
fn eviction_risk(policy: &str) -> Option<String> {
    if policy.starts_with("allkeys-") {
        Some(format!(
            "{policy} evicts any key when maxmemory is reached, sessions included: users are logged out without an error. Keep sessions in a Redis of their own with `maxmemory-policy noeviction`, or use a volatile-* policy and give cache keys shorter TTLs than sessions"
        ))
    } else if policy.starts_with("volatile-") {
        Some(format!(
            "{policy} evicts keys that have a TTL when maxmemory is reached, and sessions have one: give cache keys shorter TTLs than sessions, or keep sessions in a Redis of their own with `maxmemory-policy noeviction`"
        ))
    } else {
        None
    }
}
