//! The harness of the tests that run real servers: a project with its own free ports, whose
//! servers are stopped (and whose state is removed) when the test ends, even when it fails.
#![allow(dead_code)]

use assert_cmd::Command;
use nanika_testkit::{TempProject, free_port, scratch_root};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const PASSWORD: &str = "nanika_password";

/// A project with its own ports; `down` (and the removal of external state) runs on drop.
pub struct Stack {
    pub project: TempProject,
    /// Set when the project lives in a directory the server user cannot enter.
    pub root: PathBuf,
    pub pg_port: u16,
    pub redis_port: u16,
    /// The cluster cache its nanika uses (`NANIKA_CACHE_DIR`): [`shared_cache`] unless a test
    /// that damages or clears the cache gives it its own.
    pub cache_dir: PathBuf,
    _home: Option<tempfile::TempDir>,
}

impl Stack {
    pub fn new() -> Self {
        Self::in_project(TempProject::empty(), None)
    }

    /// A project inside a 0700 directory, as under /root.
    pub fn in_closed_home() -> Self {
        let home = tempfile::Builder::new()
            .prefix("nanika-home-")
            .tempdir_in(scratch_root())
            .unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let project = TempProject::inside(home.path());
        Self::in_project(project, Some(home))
    }

    pub fn in_project(project: TempProject, home: Option<tempfile::TempDir>) -> Self {
        Self::with_ports(project, home, free_port(), free_port())
    }

    /// A project whose servers use the given ports.
    pub fn with_ports(
        project: TempProject,
        home: Option<tempfile::TempDir>,
        pg_port: u16,
        redis_port: u16,
    ) -> Self {
        let root = project.root().to_path_buf();
        let stack = Stack {
            project,
            root,
            pg_port,
            redis_port,
            cache_dir: shared_cache(),
            _home: home,
        };
        stack.nanika().arg("init").assert().success();
        stack.project.replace(
            ".env",
            "POSTGRES_PORT=5432",
            &format!("POSTGRES_PORT={pg_port}"),
        );
        stack.project.replace(
            ".env",
            "REDIS_PORT=6379",
            &format!("REDIS_PORT={redis_port}"),
        );
        stack.project.replace(
            ".env",
            "@localhost:5432/",
            &format!("@localhost:{pg_port}/"),
        );
        stack.project.replace(
            ".env",
            "redis://localhost:6379",
            &format!("redis://localhost:{redis_port}"),
        );
        stack
    }

    pub fn nanika(&self) -> Command {
        let mut cmd = Command::cargo_bin("nanika").unwrap();
        cmd.current_dir(&self.root)
            .env("NANIKA_RUNTIME", "native")
            .timeout(Duration::from_secs(150));
        for var in foreign_env() {
            cmd.env_remove(var);
        }
        cmd.env(nanika_config::env_vars::NANIKA_CACHE_DIR, &self.cache_dir);
        cmd
    }

    /// `nanika` set up as [`Stack::nanika`] does, as a plain std command, for what
    /// assert_cmd's cannot do (spawn it and wait with resource usage: [`peak_rss_kib`]).
    pub fn nanika_std(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("nanika"));
        cmd.current_dir(&self.root).env("NANIKA_RUNTIME", "native");
        for var in foreign_env() {
            cmd.env_remove(var);
        }
        cmd.env(nanika_config::env_vars::NANIKA_CACHE_DIR, &self.cache_dir);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.nanika().args(args).output().unwrap()
    }

    /// Runs `nanika ARGS PATH` in the project.
    pub fn run_path(&self, args: &[&str], path: &Path) -> Output {
        self.nanika().args(args).arg(path).output().unwrap()
    }

    pub fn up(&self) -> Output {
        let output = self.run(&["up"]);
        assert!(
            output.status.success(),
            "nanika up failed:\n{}",
            text(&output)
        );
        output
    }

    pub fn status(&self) -> Value {
        let output = self.run(&["ps", "--json"]);
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub fn service(&self, name: &str) -> Value {
        self.status()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap()
            .clone()
    }

    /// Runs SQL in the app database as the app user and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("nanika_game", sql)
    }

    /// Runs SQL in `database` as the app user and returns its unaligned output.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let output = self.psql_with(PASSWORD, database, sql);
        assert!(output.status.success(), "psql {sql}: {}", text(&output));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Runs SQL as the app user with `password`, whatever comes of it.
    pub fn psql_with(&self, password: &str, database: &str, sql: &str) -> Output {
        let port = self.pg_port.to_string();
        std::process::Command::new(format!("{PG_BIN}/psql"))
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "nanika_user",
                "-d",
                database,
                "-Atc",
                sql,
            ])
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    }

    pub fn redis(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}",
            text(&output)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Processes whose command line or working directory is inside this project's state.
    pub fn own_processes(&self) -> Vec<String> {
        let state = self.root.join(".nanika");
        let external = std::fs::read_link(state.join("postgres")).ok();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            if status.contains("State:\tZ") {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            let inside =
                |p: &Path| cmdline.contains(&p.display().to_string()) || cwd.starts_with(p);
            if inside(&state)
                || inside(&self.root.join("docker"))
                || external.as_deref().is_some_and(inside)
            {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
        found
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.nanika().args(["down", "--volumes", "--yes"]).output();
    }
}

/// The cluster cache every test's nanika shares unless it needs its own: one per user on the
/// machine, so a test pays `initdb` only when no test before it did (the cache itself makes
/// concurrent use safe). Never the developer's own cache, which tests must not damage or clear.
/// `NANIKA_TEST_CACHE=off` in the test run's environment turns it off (every project then runs
/// its own `initdb`), to measure what the cache saves.
pub fn shared_cache() -> PathBuf {
    if std::env::var_os("NANIKA_TEST_CACHE").is_some_and(|v| v == "off") {
        return PathBuf::from("off");
    }
    scratch_root().join(format!(
        "nanika-test-cache-{}",
        nix::unistd::Uid::effective().as_raw()
    ))
}

/// A cluster cache of a test's own, inside a temp directory the server user can pass through.
pub fn own_cache() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("nanika-cache-test-")
        .tempdir_in(scratch_root())
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    (dir, cache)
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `check` on a short, growing interval until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether a test that is about running as root can run: outside CI it says it skipped when not
/// root; under CI (which runs as root) a skip is a failure.
pub fn as_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI runs as root"
    );
    eprintln!("skipped {test}: it needs root");
    false
}

/// The variables a test's nanika must not inherit from the developer's shell: every one nanika
/// reads (a developer's exported port or URL would point the test at their own servers), and
/// libpq's that would redirect the tools nanika runs. `NANIKA_RUNTIME` is not among them: every
/// caller sets it.
pub fn foreign_env() -> impl Iterator<Item = &'static str> {
    nanika_config::env_vars::ALL
        .iter()
        .map(|var| var.name)
        .filter(|name| *name != nanika_config::env_vars::NANIKA_RUNTIME)
        .chain(
            nanika_config::urls::DatabaseUrl::REDIRECTING_ENV
                .iter()
                .copied(),
        )
}

/// Runs `command` (its output discarded) and returns whether it succeeded and its peak resident
/// memory in KiB: the high-water mark the kernel keeps (`VmHWM` in `/proc/PID/status`), read
/// every 2 ms until it exits. A peak held for less than that can be missed; one that grows with
/// the data is held as long as the data is.
pub fn peak_rss_kib(command: &mut std::process::Command) -> (bool, u64) {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let high_water = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        peak = peak.max(high_water);
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), peak);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Makes pgBackRest's repository of `stack` unwritable (mode 000) until dropped, when it gets its
/// mode back (0750), also when the test fails half way: the project's cleanup must still be able
/// to remove it.
pub struct UnwritableRepository(PathBuf);

impl UnwritableRepository {
    pub fn new(stack: &Stack) -> Self {
        let repo = stack.root.join(".nanika/postgres/pgbackrest/repo/backup");
        std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o000)).unwrap();
        UnwritableRepository(repo)
    }
}

impl Drop for UnwritableRepository {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o750));
    }
}

/// A process killed and reaped when dropped, also when the test fails half way.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `nanika logs --json -f -n 1 postgres`, and once it has printed its tail, slow queries
/// until the follower prints one of them: returns that record. Retried, in case a loaded
/// machine lets the follower attach after the first query.
pub fn follow_slow_query(stack: &Stack) -> serde_json::Value {
    use std::io::BufRead;
    let mut follower = KillOnDrop(
        stack
            .nanika_std()
            .args(["logs", "--json", "-f", "-n", "1", "postgres"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = follower.0.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The tail's record comes first; the follower watches the log from then on.
    assert!(
        seen.recv_timeout(Duration::from_secs(30)).is_ok(),
        "logs --json -f printed nothing"
    );
    // A slow query is logged when it ends, a second after the follower printed the tail.
    for attempt in 0..5 {
        let sql = format!("SELECT pg_sleep(1.05), {attempt} AS followed");
        stack.psql(&sql);
        while let Ok(line) = seen.recv_timeout(Duration::from_secs(3)) {
            let record: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            if record["statement"].as_str() == Some(sql.as_str()) {
                return record;
            }
        }
    }
    panic!("logs --json -f never printed the slow query");
}
