//! The examples in `examples/`, run as the README's "Using nanika from your app" shows, against a
//! real project: the Node app's sessions survive a Redis flush through `nanika sessions backup`
//! and `restore` (a logout stays a logout, a change made after a restore is never rolled back),
//! its `/db` route round-trips through PostgreSQL with `search_path` public, and the Python check
//! passes.
//!
//! The commands are the README's word for word (tests/readme.rs checks that each is here), run by
//! bash in the project's root with this build's `nanika` first on the PATH. The project links
//! `examples/` and `target/client-deps/` to the workspace's, where `scripts/ci-client-deps`
//! installs the packages; without them the test says why and is skipped, or fails when `CI` is set.

mod common;

use common::{Stack, text};
use nanika_testkit::free_port;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// The README's commands, as typed in the project's root.
const UP: &str = "nanika up";
const MIGRATE: &str = "nanika db migrate";
const NODE_APP: &str = "nanika exec -- node examples/node-app/server.js";
const PYTHON_CHECK: &str =
    "nanika exec -- target/client-deps/venv/bin/python examples/python/check.py";
const SESSIONS_BACKUP: &str = "nanika sessions backup";
const REDIS_FLUSH: &str = "nanika redis flush --yes";
const SESSIONS_RESTORE: &str = "nanika sessions restore";
const PSQL: &str = "nanika db psql -- -Atc 'SHOW search_path'";
const PG_DUMP: &str = r#"nanika exec -- sh -c 'pg_dump --schema-only "$DATABASE_URL_LIBPQ"'"#;

/// Sessions the test logs in, and how many of them log out again.
const SESSIONS: u32 = 20;
const LOGGED_OUT: u32 = 5;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Why the examples' packages cannot be used, if they cannot: after saying so on stderr, `true`
/// to skip; a failure when `CI` is set, since CI must run the examples.
fn packages_missing() -> bool {
    let root = workspace();
    let python = root.join("target/client-deps/venv/bin/python");
    let imports = Command::new(&python)
        .args(["-c", "import psycopg, redis"])
        .output();
    let why = if !root
        .join("examples/node-app/node_modules/.package-lock.json")
        .exists()
    {
        "the Node example's packages are not installed (examples/node-app/node_modules)"
    } else if !imports.is_ok_and(|output| output.status.success()) {
        "psycopg 3 and redis-py are not installed in target/client-deps/venv"
    } else {
        return false;
    };
    let why = format!("{why}: run scripts/ci-client-deps");
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    true
}

/// Links the workspace's `examples/` and `target/client-deps/` into the project, so that the
/// README's relative paths work from its root. Node and Python find their packages through them.
fn link_examples(stack: &Stack) {
    let root = workspace();
    std::os::unix::fs::symlink(root.join("examples"), stack.root.join("examples")).unwrap();
    fs_err::create_dir_all(stack.root.join("target")).unwrap();
    std::os::unix::fs::symlink(
        root.join("target/client-deps"),
        stack.root.join("target/client-deps"),
    )
    .unwrap();
}

/// `line` as bash runs it in the project's root, with this build's `nanika` first on the PATH and
/// the environment `Stack::nanika` gives it.
fn bash(stack: &Stack, line: &str) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_nanika")).parent().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let mut cmd = Command::new("bash");
    cmd.args(["-c", line])
        .current_dir(&stack.root)
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("NANIKA_RUNTIME", "native");
    for var in common::foreign_env() {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a README command to its end; its stdout and stderr when it succeeds.
fn run(stack: &Stack, line: &str) -> String {
    let output: Output = assert_cmd::Command::from_std(bash(stack, line))
        .timeout(Duration::from_secs(150))
        .output()
        .unwrap();
    assert!(output.status.success(), "{line}:\n{}", text(&output));
    text(&output)
}

/// The Node app under `nanika exec`, in its own process group: stopped with everything it started
/// when dropped, also when the test fails.
struct App {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl App {
    /// Starts the README's command on a free port and waits for its `listening on PORT`.
    fn start(stack: &Stack) -> App {
        let port = free_port();
        let log = stack.root.join("node-app.log");
        let file = fs_err::File::create(&log).unwrap();
        let child = bash(stack, NODE_APP)
            .env("APP_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(file.file().try_clone().unwrap())
            .stderr(file.into_file())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut app = App { child, port, log };
        let ready = format!("listening on {port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !app.log().contains(&ready) {
            let exited = app.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{NODE_APP} did not print `{ready}` ({exited:?}):\n{}",
                app.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        app
    }

    fn log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP/1.1 request with an empty body, and the session cookie if given.
    fn request(&self, method: &str, path: &str, cookie: Option<&str>) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: 0\r\n{cookie}\r\n",
            self.port
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: no HTTP response in {raw:?}"));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
        let set_cookie = lines
            .filter_map(|line| line.split_once(": "))
            .find(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.split(';').next().unwrap().to_string());
        Response {
            status,
            set_cookie,
            body: body.to_string(),
        }
    }

    /// `GET /me` with `cookie`: `(userId, visits)` on 200, `None` on 401.
    fn me(&self, cookie: &str) -> Option<(u64, u64)> {
        let response = self.request("GET", "/me", Some(cookie));
        if response.status == 401 {
            return None;
        }
        let me = response.json(200);
        Some((
            me["userId"].as_u64().unwrap(),
            me["visits"].as_u64().unwrap(),
        ))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // The group is bash's (or node's, when bash execs it) own: nanika exec and node are in it.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    /// The first `Set-Cookie`'s `name=value`.
    set_cookie: Option<String>,
    body: String,
}

impl Response {
    fn json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A logged-in session as the browser keeps it.
struct Session {
    user: u64,
    /// `connect.sid=s%3A<id>.<signature>`.
    cookie: String,
    visits: u64,
}

impl Session {
    /// The Redis key connect-redis keeps it under.
    fn key(&self) -> String {
        let signed = self.cookie.strip_prefix("connect.sid=s%3A").unwrap();
        format!("sess:{}", signed.split_once('.').unwrap().0)
    }
}

fn ttl(stack: &Stack, key: &str) -> i64 {
    stack.redis(&["TTL", key]).parse().unwrap()
}

#[test]
fn the_node_apps_sessions_survive_a_redis_flush_and_the_python_check_passes() {
    if packages_missing() {
        return;
    }
    let started = Instant::now();
    let stack = Stack::new();
    link_examples(&stack);
    run(&stack, UP);
    run(&stack, MIGRATE);
    let app = App::start(&stack);

    let db = app.request("GET", "/db", None).json(200);
    assert_eq!(db["searchPath"], "public", "{db}");
    assert_eq!(db["roundtrip"], true, "{db}");

    // Log in, keeping each cookie; then some come back a few times and the first ones log out.
    let mut sessions: Vec<Session> = (1..=u64::from(SESSIONS))
        .map(|user| {
            let response = app.request("POST", &format!("/login?user={user}"), None);
            let body = response.json(200);
            assert_eq!(body["visits"], 0);
            let cookie = response.set_cookie.expect("a session cookie at login");
            assert!(cookie.starts_with("connect.sid=s%3A"), "{cookie}");
            Session {
                user,
                cookie,
                visits: 0,
            }
        })
        .collect();
    for session in &mut sessions {
        for _ in 0..session.user % 4 {
            session.visits += 1;
            assert_eq!(
                app.me(&session.cookie),
                Some((session.user, session.visits))
            );
        }
    }
    let (gone, live) = sessions.split_at_mut(LOGGED_OUT as usize);
    for session in gone.iter() {
        assert_eq!(
            app.request("POST", "/logout", Some(&session.cookie)).status,
            204
        );
        assert_eq!(app.me(&session.cookie), None);
        assert_eq!(stack.redis(&["EXISTS", &session.key()]), "0");
    }
    // Sessions of different ages: each its own TTL, so a restore that gave every session the same
    // life (connect-redis's default day, say) would show.
    let mut before = Vec::new();
    for (n, session) in live.iter().enumerate() {
        let secs = 3600 + 60 * n as i64;
        stack.redis(&["EXPIRE", &session.key(), &secs.to_string()]);
        before.push(ttl(&stack, &session.key()));
    }

    let backup = run(&stack, SESSIONS_BACKUP);
    assert!(backup.contains("backed up 15 sessions"), "{backup}");
    run(&stack, REDIS_FLUSH);
    assert_eq!(stack.redis(&["DBSIZE"]), "0");
    let restored = run(&stack, SESSIONS_RESTORE);
    assert!(restored.contains("restored 15 sessions"), "{restored}");

    // Every live session is back with the rest of its life and its visits; no logout came back.
    for (session, before) in live.iter().zip(&before) {
        let after = ttl(&stack, &session.key());
        assert!(
            (before - 5..=*before).contains(&after),
            "{} came back with {after} s to live, had {before} s",
            session.key()
        );
    }
    for session in live.iter_mut() {
        session.visits += 1;
        assert_eq!(
            app.me(&session.cookie),
            Some((session.user, session.visits))
        );
    }
    for session in gone.iter() {
        assert_eq!(
            app.me(&session.cookie),
            None,
            "user {} came back",
            session.user
        );
    }

    // A session used after the restore is newer than its backup: a second restore leaves it be.
    let changed = &mut live[0];
    changed.visits += 1;
    assert_eq!(
        app.me(&changed.cookie),
        Some((changed.user, changed.visits))
    );
    let again = run(&stack, SESSIONS_RESTORE);
    assert!(again.contains("restored 0 sessions"), "{again}");
    assert!(again.contains("skipped 15 live"), "{again}");
    changed.visits += 1;
    assert_eq!(
        app.me(&changed.cookie),
        Some((changed.user, changed.visits)),
        "the second restore rolled back a session used after the first"
    );

    // The other clients the README shows.
    assert_eq!(run(&stack, PSQL).trim(), "public");
    assert!(run(&stack, PG_DUMP).contains("CREATE TABLE public.session_backups"));
    let check = run(&stack, PYTHON_CHECK);
    let json = &check[check.find('{').unwrap()..=check.rfind('}').unwrap()];
    let summary: Value = serde_json::from_str(json).unwrap();
    assert_eq!(summary["ok"], true, "{check}");
    assert_eq!(summary["postgres"]["search_path"], "public", "{check}");
    assert_eq!(summary["redis"]["roundtrip"], true, "{check}");

    assert!(app.log().contains(&format!("listening on {}", app.port)));
    drop(app);
    eprintln!("examples: {:.1} s", started.elapsed().as_secs_f64());
}
