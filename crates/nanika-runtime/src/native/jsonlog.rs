//! PostgreSQL's `jsonlog` destination (`[logging] postgres = "jsonlog"` in `nanika.toml`): the
//! server's logging collector writes one JSON object a line into files of its own, in a
//! directory of PostgreSQL's state the server user owns; nanika keeps the newest
//! [`KEPT_FILES`] of them and reads them for `nanika logs`.
//!
//! What PostgreSQL writes to stderr before its collector starts (and the supervisor's remarks)
//! still goes to the captured `.nanika/logs/postgres.log`: the readers here merge both.

use super::layout::StateLayout;
use super::safe_fs::{Dir, Expect};
use crate::error::Result;
use nanika_config::settings::PostgresLog;
use std::io::{Read, Seek};

/// The directory of the collector's files, in PostgreSQL's home (beside `data`, so a
/// `down --volumes` deletes it with the cluster and a cluster copy never carries it).
pub const DIR: &str = "jsonlog";

/// The collector's file names: the `.log` suffix becomes `.json` for the jsonlog files, and the
/// time in the name makes the names sort oldest first.
pub const FILENAME: &str = "postgresql-%Y-%m-%d_%H%M%S.log";

/// The prefix of every file the collector makes from [`FILENAME`].
const PREFIX: &str = "postgresql-";

/// How many files of each kind (`.json`, and the collector's `.log` for stray stderr) are
/// kept: with 10 MB rotation, at most 30 MB of JSON, as the captured logs keep three files.
pub const KEPT_FILES: usize = 3;

/// The settings that turn the collector on, in `postgres -c` form; none for `stderr`.
const KEYS: [&str; 6] = [
    "logging_collector",
    "log_destination",
    "log_directory",
    "log_filename",
    "log_rotation_size",
    "log_rotation_age",
];

/// Sets the logging arguments of a PostgreSQL command line for `mode`: any this module added
/// before are removed first, so the result depends on `mode` alone and the supervisor restarts
/// the server exactly when the destination changed.
pub fn apply(args: &mut Vec<String>, layout: &StateLayout, mode: PostgresLog) {
    let mut kept = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let ours = args[i] == "-c"
            && args.get(i + 1).is_some_and(|value| {
                KEYS.iter()
                    .any(|key| value.strip_prefix(key).is_some_and(|v| v.starts_with('=')))
            });
        if ours {
            i += 2;
        } else {
            kept.push(args[i].clone());
            i += 1;
        }
    }
    if mode == PostgresLog::Jsonlog {
        let dir = layout.postgres_home.join(DIR);
        for setting in [
            "logging_collector=on".to_string(),
            "log_destination=jsonlog".to_string(),
            format!("log_directory={}", dir.display()),
            format!("log_filename={FILENAME}"),
            // PostgreSQL rotates by size itself; nanika prunes the oldest (see `prune`).
            "log_rotation_size=10MB".to_string(),
            "log_rotation_age=0".to_string(),
        ] {
            kept.extend(["-c".to_string(), setting]);
        }
    }
    *args = kept;
}

/// The destination a PostgreSQL command line (as the plan holds it) logs to.
pub fn mode_of(args: &[String]) -> PostgresLog {
    if args.iter().any(|a| a == "log_destination=jsonlog") {
        PostgresLog::Jsonlog
    } else {
        PostgresLog::Stderr
    }
}

/// Makes the directory, owner-only and the server user's, checked without following a link
/// (as pgBackRest's are), and prunes what an earlier run left beyond [`KEPT_FILES`].
pub fn install(layout: &StateLayout) -> Result<()> {
    let home = layout.open_postgres_home()?;
    let me = nix::unistd::Uid::effective().as_raw();
    let owners = [me, layout.server_user.as_ref().map_or(me, |u| u.uid)];
    let (dir, _) = home.make_dir_expecting(
        DIR,
        0o700,
        Expect {
            owners: &owners,
            mode: Some(0o700),
        },
    )?;
    if let Some(user) = &layout.server_user {
        dir.set_owner(user.uid, user.gid)?;
    }
    prune(&dir, KEPT_FILES)?;
    Ok(())
}

/// The directory, opened without following a link; `None` when there is none (yet).
pub fn open(layout: &StateLayout) -> Option<Dir> {
    layout.open_postgres_home().ok()?.open_dir(DIR).ok()?
}

/// Removes all but the newest `keep` files of each kind the collector writes, and returns the
/// names it removed. The newest is the one the server writes to; the older ones are closed.
///
/// The supervisor calls this every few seconds rather than nanika doing it when it reads the
/// logs: a server nobody reads the logs of must not fill the disk either.
pub fn prune(dir: &Dir, keep: usize) -> Result<Vec<String>> {
    let names = dir.names()?;
    let mut removed = Vec::new();
    for suffix in [".json", ".log"] {
        let mut files: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(suffix))
            .collect();
        files.sort();
        let excess = files.len().saturating_sub(keep);
        for name in &files[..excess] {
            if dir.remove_file(name)? {
                removed.push((*name).clone());
            }
        }
    }
    Ok(removed)
}

/// The jsonlog files, oldest first.
fn json_files(dir: &Dir) -> Vec<String> {
    let mut files: Vec<String> = dir
        .names()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(".json"))
        .collect();
    files.sort();
    files
}

fn read_lines(dir: &Dir, name: &str) -> Vec<String> {
    let mut text = String::new();
    if let Ok(Some(mut file)) = dir.open_regular(name) {
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text.lines().map(str::to_string).collect()
}

/// The last `count` lines of the jsonlog files, across rotations, oldest first.
pub fn tail(layout: &StateLayout, count: usize) -> Vec<String> {
    let Some(dir) = open(layout) else {
        return Vec::new();
    };
    let mut lines: Vec<String> = Vec::new();
    for name in json_files(&dir).iter().rev() {
        if lines.len() >= count {
            break;
        }
        let mut older = read_lines(&dir, name);
        older.append(&mut lines);
        lines = older;
    }
    lines.split_off(lines.len().saturating_sub(count))
}

/// The time a line was written, as text that sorts in time order with the other lines of the
/// same server (whose zone is the same): `YYYY-MM-DD HH:MM:SS.mmm`.
fn time_key(line: &str) -> Option<String> {
    let time = if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value.get("timestamp")?.as_str()?.to_string()
    } else {
        line.get(..23)?.to_string()
    };
    let key = time.get(..23)?;
    let shape = "dddd-dd-dd dd:dd:dd.ddd";
    key.bytes()
        .zip(shape.bytes())
        .all(|(b, s)| {
            if s == b'd' {
                b.is_ascii_digit()
            } else {
                b == s
            }
        })
        .then(|| key.to_string())
}

/// Merges the captured stderr lines (the early lines, the supervisor's remarks) with the
/// jsonlog lines in time order, each list keeping its own order. A line without a time (a
/// remark, a continuation line) goes with the line before it in its file.
pub fn merge(captured: Vec<String>, json: Vec<String>) -> Vec<String> {
    let keyed = |lines: Vec<String>| {
        let mut last = String::new();
        lines
            .into_iter()
            .map(|line| {
                if let Some(key) = time_key(&line) {
                    last = key;
                }
                (last.clone(), line)
            })
            .collect::<Vec<_>>()
    };
    let (captured, json) = (keyed(captured), keyed(json));
    let mut merged = Vec::with_capacity(captured.len() + json.len());
    let (mut a, mut b) = (captured.into_iter().peekable(), json.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some((ka, _)), Some((kb, _))) => ka <= kb,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        merged.extend(next.map(|(_, line)| line));
    }
    merged
}

/// Follows the newest jsonlog file across rotations: each call returns the lines added since
/// the last one (the rest of a file rotated away first, then the newer files').
pub struct Follower {
    current: Option<String>,
    offset: u64,
    partial: String,
}

impl Follower {
    /// A follower starting at the end of the newest file.
    pub fn at_end(layout: &StateLayout) -> Self {
        let mut follower = Follower {
            current: None,
            offset: 0,
            partial: String::new(),
        };
        if let Some(dir) = open(layout)
            && let Some(newest) = json_files(&dir).pop()
        {
            follower.offset = dir
                .open_regular(&newest)
                .ok()
                .flatten()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
            follower.current = Some(newest);
        }
        follower
    }

    /// The whole lines added since the last call.
    pub fn poll(&mut self, layout: &StateLayout) -> Vec<String> {
        let Some(dir) = open(layout) else {
            return Vec::new();
        };
        let files = json_files(&dir);
        // The current file and every newer one, in order: a file pruned meanwhile is skipped.
        let start = match &self.current {
            Some(current) => files
                .iter()
                .position(|f| f >= current)
                .unwrap_or(files.len()),
            None => 0,
        };
        let mut lines = Vec::new();
        for name in &files[start..] {
            if self.current.as_ref() != Some(name) {
                self.current = Some(name.clone());
                self.offset = 0;
                self.partial.clear();
            }
            let Ok(Some(mut file)) = dir.open_regular(name) else {
                continue;
            };
            let len = file.metadata().map_or(0, |m| m.len());
            if len < self.offset {
                self.offset = 0;
            }
            if len == self.offset || file.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            if let Ok(n) = (&mut file).take(len - self.offset).read_to_end(&mut bytes) {
                self.offset += n as u64;
                self.partial.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = self.partial.find('\n') {
                    let line: String = self.partial.drain(..=end).collect();
                    lines.push(line.trim_end_matches('\n').to_string());
                }
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_files_of_each_kind() {
        let temp = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            for suffix in ["json", "log"] {
                std::fs::write(
                    temp.path()
                        .join(format!("postgresql-2026-11-0{day}_000000.{suffix}")),
                    "{}\n",
                )
                .unwrap();
            }
        }
        std::fs::write(temp.path().join("other.json"), "").unwrap();
        let dir = Dir::open(temp.path()).unwrap();
        let mut removed = prune(&dir, KEPT_FILES).unwrap();
        removed.sort();
        assert_eq!(removed.len(), 4, "{removed:?}");
        let mut left = dir.names().unwrap();
        left.sort();
        assert_eq!(
            left,
            [
                "other.json",
                "postgresql-2026-11-03_000000.json",
                "postgresql-2026-11-03_000000.log",
                "postgresql-2026-11-04_000000.json",
                "postgresql-2026-11-04_000000.log",
                "postgresql-2026-11-05_000000.json",
                "postgresql-2026-11-05_000000.log",
            ]
        );
        assert!(prune(&dir, KEPT_FILES).unwrap().is_empty());
    }

    #[test]
    fn the_arguments_follow_the_mode_alone() {
        let layout = StateLayout::new(std::path::Path::new("/tmp/nanika-jsonlog-test"), None);
        let mut json = vec!["-D".to_string(), "/d".to_string()];
        apply(&mut json, &layout, PostgresLog::Jsonlog);
        apply(&mut json, &layout, PostgresLog::Jsonlog);
        assert_eq!(mode_of(&json), PostgresLog::Jsonlog);
        assert_eq!(json.iter().filter(|a| *a == "-c").count(), 6, "{json:?}");
        assert!(json.contains(&"log_rotation_size=10MB".to_string()));
        assert!(
            json.contains(
                &"log_directory=/tmp/nanika-jsonlog-test/.nanika/postgres/jsonlog".to_string()
            ),
            "{json:?}"
        );
        let mut back = json.clone();
        apply(&mut back, &layout, PostgresLog::Stderr);
        assert_eq!(back, ["-D", "/d"]);
        assert_eq!(mode_of(&back), PostgresLog::Stderr);
    }

    #[test]
    fn the_follower_reads_on_across_rotations_and_pruning() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join(".nanika/postgres").join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let layout = StateLayout::new(temp.path(), None);
        let append = |name: &str, text: &str| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        let first = "postgresql-2026-11-30_050000.json";
        append(first, "{\"old\":1}\n");
        let mut follower = Follower::at_end(&layout);
        assert!(follower.poll(&layout).is_empty(), "starts at the end");
        append(first, "{\"a\":1}\n{\"b\"");
        assert_eq!(follower.poll(&layout), [r#"{"a":1}"#]);
        // The rest of the rotated file first, then the new one from its start.
        append(first, ":2}\n");
        let second = "postgresql-2026-11-30_050100.json";
        append(second, "{\"c\":3}\n");
        assert_eq!(follower.poll(&layout), [r#"{"b":2}"#, r#"{"c":3}"#]);
        // A file pruned under the follower is skipped, not an end.
        std::fs::remove_file(dir.join(first)).unwrap();
        append(second, "{\"d\":4}\n");
        append("postgresql-2026-11-30_050200.json", "{\"e\":5}\n");
        assert_eq!(follower.poll(&layout), [r#"{"d":4}"#, r#"{"e":5}"#]);
        assert_eq!(tail(&layout, 2), [r#"{"d":4}"#, r#"{"e":5}"#]);
        assert_eq!(tail(&layout, 10).len(), 3);
    }

    #[test]
    fn captured_lines_and_json_lines_merge_in_time_order() {
        let captured = vec![
            "2026-11-30 05:00:00.100 UTC [7] LOG:  starting PostgreSQL 15".to_string(),
            "2026-11-30 05:00:00.200 UTC [7] LOG:  redirecting log output".to_string(),
            "nanika: restarted postgres".to_string(),
        ];
        let json = vec![
            r#"{"timestamp":"2026-11-30 05:00:00.150 UTC","message":"a"}"#.to_string(),
            r#"{"timestamp":"2026-11-30 05:00:01.000 UTC","message":"b"}"#.to_string(),
        ];
        let merged = merge(captured.clone(), json.clone());
        assert_eq!(
            merged,
            [
                captured[0].clone(),
                json[0].clone(),
                captured[1].clone(),
                captured[2].clone(),
                json[1].clone(),
            ]
        );
    }
}
