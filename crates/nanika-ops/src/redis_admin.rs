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
    /// Keys without a TTL, by prefix (the part before the first `:`), most first.
    pub without_ttl: Vec<(String, u64)>,
    /// The biggest keys and their memory in bytes, biggest first.
    pub biggest: Vec<(String, u64)>,
    /// Keys evicted since the server started (`INFO stats`).
    pub evicted_keys: u64,
}

/// Scans up to `limit` keys and reports TTLs and sizes, pipelining the per-key commands.
pub fn ttl_audit(con: &mut redis::Connection, url: &RedisUrl, limit: usize) -> Result<TtlAudit> {
    let keys = scan(con, url, "*", Some(limit))?;
    let mut without: BTreeMap<String, u64> = BTreeMap::new();
    let mut sizes: Vec<(String, u64)> = Vec::new();
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("PTTL")
                .arg(key)
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(key);
        }
        let replies: Vec<Option<i64>> = pipe.query(con).map_err(failed(url))?;
        for (key, pair) in chunk.iter().zip(replies.chunks(2)) {
            if pair[0] == Some(-1) {
                let prefix = key.split(':').next().unwrap_or(key).to_string();
                *without.entry(prefix).or_default() += 1;
            }
            sizes.push((key.clone(), pair[1].unwrap_or(0).max(0) as u64));
        }
    }
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    sizes.truncate(10);
    let mut without: Vec<(String, u64)> = without.into_iter().collect();
    without.sort_by_key(|w| std::cmp::Reverse(w.1));
    let stats = info(con, url, Some("stats"))?;
    Ok(TtlAudit {
        scanned: keys.len() as u64,
        without_ttl: without,
        biggest: sizes,
        evicted_keys: info_field(&stats, "evicted_keys")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
