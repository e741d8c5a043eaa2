//! The servers' logs: written by the supervisor line by line, rotated by size so that a chatty
//! server (`log_statement = 'mod'` under load writes megabytes a second) cannot fill the disk.

use fs_err as fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The size at which a log is rotated.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// How many rotated files are kept (`x.log.1` … `x.log.N`), so a log takes at most (N+1)×10 MiB.
pub const KEPT_ROTATIONS: u32 = 2;

/// A log file that rotates itself.
pub struct RotatingLog {
    path: PathBuf,
    file: fs::File,
    size: u64,
    max_bytes: u64,
}

impl RotatingLog {
    /// Opens (appends to) `path`, owner-only.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::with_limit(path, MAX_LOG_BYTES)
    }

    /// Opens `path` with another rotation size (tests use a small one).
    pub fn with_limit(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = Self::open_file(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
        })
    }

    fn open_file(path: &Path) -> std::io::Result<fs::File> {
        let mut options = fs::OpenOptions::new();
        options.create(true).append(true);
        fs_err::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)
    }

    /// Appends one line.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if line.ends_with(b"\n") {
            self.write_lines(line)
        } else {
            let mut whole = line.to_vec();
            whole.push(b'\n');
            self.write_lines(&whole)
        }
    }

    /// Appends whole lines (`lines` ends with a newline) in as few writes as rotation allows:
    /// one write a chunk rather than one a line is what keeps a chatty server's log cheap.
    pub fn write_lines(&mut self, mut lines: &[u8]) -> std::io::Result<()> {
        while !lines.is_empty() {
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            let take = if lines.len() <= room {
                lines.len()
            } else {
                // The lines that fit; a single line longer than the room goes whole into a
                // fresh file.
                match lines[..room].iter().rposition(|b| *b == b'\n') {
                    Some(end) => end + 1,
                    None if self.size > 0 => {
                        self.rotate()?;
                        continue;
                    }
                    None => lines
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(lines.len(), |end| end + 1),
                }
            };
            self.file.write_all(&lines[..take])?;
            self.size += take as u64;
            lines = &lines[take..];
            if !lines.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..KEPT_ROTATIONS).rev() {
            let _ = fs::rename(numbered(n), numbered(n + 1));
        }
        fs::rename(&self.path, numbered(1))?;
        self.file = Self::open_file(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// A log written by several threads at once (a server's stdout, its stderr, and the supervisor's
/// own remarks): one writer, so rotation sees every byte.
pub type SharedLog = Arc<Mutex<RotatingLog>>;

/// How long the relay lets lines gather in the pipe after it has drained it.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// The pipe size a server's output gets ([`enlarge_pipe`]): what a server logging ~1.5 MB/s
/// (`log_statement = 'mod'` under pgbench) writes in far more than [`GATHER`].
const PIPE_BYTES: i32 = 1 << 20;

/// Enlarges the pipe a server writes its log into to [`PIPE_BYTES`] (as far as the system
/// allows: `/proc/sys/fs/pipe-max-size`), so that it never waits while [`pump`] lets lines
/// gather. Best effort: a smaller pipe only means more wake-ups.
pub fn enlarge_pipe(pipe: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
}

/// Copies `reader` into the log until it ends (a child's stdout or stderr), a chunk of whole
/// lines at a time: as much as the pipe holds, in one write, so that a line is never torn
/// between writers and the relay costs a few syscalls however many lines the server writes.
///
/// After a read that drained the pipe it waits [`GATHER`] before the next: a busy server's lines
/// then arrive hundreds at a time instead of one wake-up, one read and one write a line, which
/// cost the server a few percent of its throughput on a two-core machine (the relay's CPU is the
/// server's). A line reaches the log at most that much later.
pub fn pump(log: &SharedLog, mut reader: impl Read) {
    const CHUNK: usize = 64 * 1024;
    let mut buffer = vec![0u8; CHUNK];
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buffer[..n]);
        // Whole lines go now; a partial one waits for its end, unless it alone fills a chunk.
        let whole = match pending.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            None if pending.len() >= CHUNK => pending.len(),
            None => continue,
        };
        let written = log.lock().map(|mut log| {
            if whole == pending.len() && !pending.ends_with(b"\n") {
                log.write_line(&pending)
            } else {
                log.write_lines(&pending[..whole])
            }
        });
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        pending.drain(..whole);
        if n < CHUNK {
            std::thread::sleep(GATHER);
        }
    }
    if !pending.is_empty() {
        let _ = log.lock().map(|mut log| log.write_line(&pending));
    }
}

/// The last `count` lines of a log (empty when there is none).
pub fn tail(path: &Path, count: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Passes each line added to the logs at `paths` to `sink`, following rotations; with
/// `jsonlog`, also each line PostgreSQL adds to its newest jsonlog file there, as the
/// `postgres` service's. Returns only when the process is stopped.
pub fn follow(
    paths: &[(crate::Service, std::path::PathBuf)],
    jsonlog: Option<&super::layout::StateLayout>,
    sink: &crate::runtime::LogSink,
) {
    use std::io::{Read, Seek};
    let mut offsets: Vec<u64> = paths
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let mut partial: Vec<String> = vec![String::new(); paths.len()];
    let mut json = jsonlog.map(|layout| (layout, super::jsonlog::Follower::at_end(layout)));
    loop {
        if let Some((layout, follower)) = json.as_mut() {
            for line in follower.poll(layout) {
                sink(crate::Service::Postgres, &line);
            }
        }
        for (i, (service, path)) in paths.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(path) else {
                continue;
            };
            let len = file.metadata().map_or(0, |m| m.len());
            if len < offsets[i] {
                offsets[i] = 0; // rotated
            }
            if len == offsets[i] || file.seek(std::io::SeekFrom::Start(offsets[i])).is_err() {
                continue;
            }
            let mut chunk = String::new();
            if let Ok(n) = (&mut file)
                .take(len - offsets[i])
                .read_to_string(&mut chunk)
            {
                offsets[i] += n as u64;
                partial[i].push_str(&chunk);
                while let Some(end) = partial[i].find('\n') {
                    let line: String = partial[i].drain(..=end).collect();
                    sink(*service, line.trim_end_matches('\n'));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = RotatingLog::with_limit(&path, 100).unwrap();
        for i in 0..100 {
            log.write_line(format!("line {i:03} of the log\n").as_bytes())
                .unwrap();
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            total <= 100 * u64::from(KEPT_ROTATIONS + 1),
            "{total} bytes kept"
        );
        assert_eq!(tail(&path, 1), ["line 099 of the log"]);
        assert!(dir.path().join("x.log.2").exists() && !dir.path().join("x.log.3").exists());
    }

    #[test]
    fn a_chunk_of_lines_rotates_between_lines_and_a_long_line_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = RotatingLog::with_limit(&path, 30).unwrap();
        log.write_lines(b"0123456789\nabcdefghij\nKLMNOPQRST\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c.log.1")).unwrap(),
            "0123456789\nabcdefghij\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "KLMNOPQRST\n");
        let long = format!("{}\n", "x".repeat(50));
        log.write_lines(long.as_bytes()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), long);
        assert_eq!(tail(&dir.path().join("c.log.1"), 1), ["KLMNOPQRST"]);
    }

    #[test]
    fn two_streams_share_one_bounded_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let log: SharedLog = Arc::new(Mutex::new(RotatingLog::with_limit(&path, 300).unwrap()));
        let lines = |tag: &str| {
            (0..200)
                .map(|i| format!("{tag} {i:04}\n"))
                .collect::<String>()
                .into_bytes()
        };
        let (out, err) = (lines("out"), lines("err"));
        std::thread::scope(|scope| {
            scope.spawn(|| pump(&log, &out[..]));
            scope.spawn(|| pump(&log, &err[..]));
        });
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            total <= 300 * u64::from(KEPT_ROTATIONS + 1),
            "{total} bytes kept by two writers"
        );
        let newest = tail(&path, 1000);
        assert!(
            newest.iter().all(|l| l.len() == 8),
            "no line is torn: {newest:?}"
        );
    }
}
