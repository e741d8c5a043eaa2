//! `cargo xtask bench [--quick] [--pairs N] [--out PATH]`: times each nanika operation against
//! the raw commands it wraps, alternately (A B A B …, after a warm-up), and writes the medians
//! and ratios to docs/BENCHMARKS.md. `--quick` is a smoke run: one pair each, small data, and the
//! table goes to stdout only. Benchmarks are not tests: nothing here asserts a time.

use fs_err as fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const APP_PASSWORD: &str = "nanika_password";

struct Options {
    quick: bool,
    pairs: usize,
    out: Option<PathBuf>,
}

fn parse_options() -> Options {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    if task != "bench" {
        eprintln!("usage: cargo xtask bench [--quick] [--pairs N] [--out PATH]");
        std::process::exit(2);
    }
    let mut options = Options {
        quick: false,
        pairs: 5,
        out: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--pairs" => {
                options.pairs = args.next().and_then(|n| n.parse().ok()).expect("--pairs N")
            }
            "--out" => options.out = args.next().map(PathBuf::from),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    if options.quick {
        options.pairs = 1;
    }
    options
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion, failing loudly with its output.
fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn timed(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

/// The unprivileged account the servers run as when we are root.
fn server_user() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn as_server(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    command
}

fn give_to_server(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
}

/// `psql -X -q` on loopback as `user` with `password` (through the environment), to `database`.
fn psql(port: u16, user: &str, password: &str, database: &str) -> Command {
    let mut command = Command::new(format!("{PG_BIN}/psql"));
    command
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            database,
        ])
        .env("PGPASSWORD", password);
    command
}

/// A nanika project on free ports.
struct Project {
    dir: tempfile::TempDir,
    nanika: PathBuf,
    pg_port: u16,
    redis_port: u16,
}

impl Project {
    fn new(nanika: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nanika-bench-")
            .tempdir()
            .unwrap();
        let project = Project {
            dir,
            nanika: nanika.to_path_buf(),
            pg_port: free_port(),
            redis_port: free_port(),
        };
        project.run(&["init"]);
        let env = project.dir.path().join(".env");
        let text = fs::read_to_string(&env)
            .unwrap()
            .replace(
                "POSTGRES_PORT=5432",
                &format!("POSTGRES_PORT={}", project.pg_port),
            )
            .replace(
                "REDIS_PORT=6379",
                &format!("REDIS_PORT={}", project.redis_port),
            )
            .replace(
                "@localhost:5432/",
                &format!("@localhost:{}/", project.pg_port),
            )
            .replace(
                "redis://localhost:6379",
                &format!("redis://localhost:{}", project.redis_port),
            );
        fs::write(&env, text).unwrap();
        project
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.nanika);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NANIKA_RUNTIME", "native");
        for var in [
            "POSTGRES_PORT",
            "REDIS_PORT",
            "DATABASE_URL",
            "REDIS_URL",
            "NANIKA_PROJECT_DIR",
        ] {
            command.env_remove(var);
        }
        command
    }

    fn run(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    /// As the cluster's superuser: only it may end the autovacuum worker that holds a database
    /// which was just restored.
    fn admin_psql(&self, sql: &str) -> String {
        let password =
            fs::read_to_string(self.dir.path().join(".nanika/run/postgres-admin.password"))
                .unwrap();
        run(psql(self.pg_port, "postgres", password.trim(), "postgres").args(["-Atc", sql]))
            .trim()
            .to_string()
    }

    fn psql(&self, database: &str, sql: &str) -> String {
        run(psql(self.pg_port, "nanika_user", APP_PASSWORD, database).args(["-Atc", sql]))
            .trim()
            .to_string()
    }

    fn pg_env(&self, command: &mut Command) {
        command
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg_port.to_string())
            .env("PGUSER", "nanika_user")
            .env("PGPASSWORD", APP_PASSWORD)
            .env("PGDATABASE", "nanika_game");
    }

    fn status(&self, service: &str) -> (String, Option<u64>) {
        let json = self.run(&["ps", "--json"]);
        let start = json
            .find(&format!("\"service\": \"{service}\""))
            .expect("service in ps");
        let block = &json[start..json[start..].find('}').map_or(json.len(), |e| start + e)];
        let state = block
            .split("\"state\": \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string();
        let pid = block
            .split("\"pid\": ")
            .nth(1)
            .and_then(|s| s.split([',', '\n']).next())
            .and_then(|p| p.trim().parse().ok());
        (state, pid)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--volumes", "--yes"]).output();
    }
}

/// The same servers, started the way a developer would by hand: initdb, pg_ctl, psql,
/// redis-server, redis-cli, with the same committed config files.
struct Raw {
    dir: tempfile::TempDir,
    pg_port: u16,
    redis_port: u16,
    redis_conf: PathBuf,
}

impl Raw {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nanika-raw-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = workspace();
        fs::copy(
            root.join("docker/postgres/postgresql.conf"),
            dir.path().join("postgresql.conf"),
        )
        .unwrap();
        give_to_server(&dir.path().join("postgresql.conf"));
        fs::write(dir.path().join("pw"), "admin-password").unwrap();
        give_to_server(&dir.path().join("pw"));
        fs::create_dir(dir.path().join("sock")).unwrap();
        give_to_server(&dir.path().join("sock"));
        Raw {
            dir,
            pg_port: free_port(),
            redis_port: free_port(),
            redis_conf: root.join("docker/redis/redis.conf"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn initdb(&self) {
        // The data directory's parent belongs to root: make the directory for the server user.
        fs::create_dir_all(self.path("data")).unwrap();
        fs::set_permissions(self.path("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
        give_to_server(&self.path("data"));
        run(as_server(
            Command::new(format!("{PG_BIN}/initdb"))
                .arg("-D")
                .arg(self.path("data"))
                .args([
                    "-U",
                    "postgres",
                    "--pwfile",
                    &self.path("pw").display().to_string(),
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]),
        ));
    }

    fn pg_start(&self) {
        let options = format!(
            "-c config_file={} -c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.path("postgresql.conf").display(),
            self.pg_port,
            self.path("sock").display()
        );
        run(as_server(
            Command::new(format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(self.path("data"))
                .arg("-l")
                .arg(self.path("sock/pg.log"))
                .args(["-w", "-o", &options, "start"]),
        ));
    }

    fn create_app(&self) {
        run(
            psql(self.pg_port, "postgres", "admin-password", "postgres").args([
                "-c",
                "CREATE ROLE nanika_user LOGIN CREATEDB PASSWORD 'nanika_password'",
                "-c",
                "CREATE DATABASE nanika_game OWNER nanika_user",
            ]),
        );
    }

    fn redis_start(&self) {
        fs::create_dir_all(self.path("redis")).unwrap();
        run(Command::new("redis-server").arg(&self.redis_conf).args([
            "--port",
            &self.redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.path("redis").display().to_string(),
            "--daemonize",
            "yes",
            "--pidfile",
            &self.path("redis.pid").display().to_string(),
            "--logfile",
            &self.path("redis.log").display().to_string(),
        ]));
        // until redis-cli ping; do :; done
        while !Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pg_stop(&self) {
        run(as_server(
            Command::new(format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(self.path("data"))
                .args(["-w", "-m", "fast", "stop"]),
        ));
    }

    fn redis_stop(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string(), "shutdown"])
            .output();
        let pid = fs::read_to_string(self.path("redis.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        while pid.is_some_and(|p| {
            Path::new(&format!("/proc/{p}")).exists()
                && !fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z")
        }) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wipe(&self) {
        for dir in ["data", "redis"] {
            let _ = fs::remove_dir_all(self.path(dir));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if self.path("data/postmaster.pid").exists() {
            let _ = as_server(
                Command::new(format!("{PG_BIN}/pg_ctl"))
                    .arg("-D")
                    .arg(self.path("data"))
                    .args(["-m", "immediate", "stop"]),
            )
            .output();
        }
        let _ = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string(), "shutdown", "nosave"])
            .output();
    }
}

#[derive(Clone)]
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    };
    Stats {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

struct Row {
    operation: String,
    baseline: &'static str,
    target: &'static str,
    nanika: Stats,
    raw: Option<Stats>,
    met: Option<bool>,
    note: String,
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Alternates `nanika` and `raw` after one warm-up of each; `prepare` runs untimed before each.
fn pairs(
    count: usize,
    mut prepare_a: impl FnMut(),
    mut a: impl FnMut() -> Duration,
    mut prepare_b: impl FnMut(),
    mut b: impl FnMut() -> Duration,
) -> (Vec<Duration>, Vec<Duration>) {
    prepare_a();
    a();
    prepare_b();
    b();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..count {
        prepare_a();
        xs.push(a());
        prepare_b();
        ys.push(b());
    }
    (xs, ys)
}

fn row(
    operation: String,
    baseline: &'static str,
    target: &'static str,
    limit: f64,
    xs: &[Duration],
    ys: &[Duration],
) -> Row {
    let (nanika, raw) = (stats(xs), stats(ys));
    let ratio = nanika.median.as_secs_f64() / raw.median.as_secs_f64();
    let row = Row {
        operation,
        baseline,
        target,
        met: Some(ratio <= limit),
        note: format!("{ratio:.2}"),
        nanika,
        raw: Some(raw),
    };
    eprintln!(
        "{}: nanika {} ms, raw {} ms, ratio {}",
        row.operation,
        ms(row.nanika.median),
        ms(row.raw.as_ref().unwrap().median),
        row.note
    );
    row
}

fn main() {
    let options = parse_options();
    let root = workspace();
    eprintln!("building nanika (release)…");
    run(Command::new("cargo")
        .args(["build", "--quiet", "--release", "-p", "nanika-cli"])
        .current_dir(&root));
    let nanika = root.join("target/release/nanika");
    let n = options.pairs;
    let mut rows = Vec::new();

    // Cold up: an empty project to both servers healthy with the app's role and database.
    {
        // Each run gets a new project; replacing the old one drops it, which removes its state.
        let project: std::cell::RefCell<Option<Project>> = std::cell::RefCell::new(None);
        let raw = Raw::new();
        let (xs, ys) = pairs(
            n,
            || {
                project.replace(None);
                project.replace(Some(Project::new(&nanika)));
            },
            || timed(|| drop(project.borrow().as_ref().unwrap().run(&["up"]))),
            || {
                raw.redis_stop();
                if raw.path("data/postmaster.pid").exists() {
                    raw.pg_stop();
                }
                raw.wipe();
            },
            || {
                timed(|| {
                    raw.initdb();
                    raw.pg_start();
                    raw.create_app();
                    raw.redis_start();
                })
            },
        );
        drop(project);
        rows.push(row(
            "cold `up`".into(),
            "initdb + pg_ctl start -w + CREATE ROLE/DATABASE + redis-server + PING",
            "≤ 1.10",
            1.10,
            &xs,
            &ys,
        ));
    }

    let project = Project::new(&nanika);
    project.run(&["up"]);
    project.run(&["down"]);
    let raw = Raw::new();
    raw.initdb();
    raw.pg_start();
    raw.create_app();
    raw.pg_stop();

    // Warm up and down: existing data.
    let (xs, ys) = pairs(
        n,
        || drop(project.run(&["down"])),
        || timed(|| drop(project.run(&["up"]))),
        || {
            raw.redis_stop();
            if raw.path("data/postmaster.pid").exists() {
                raw.pg_stop();
            }
        },
        || {
            timed(|| {
                raw.pg_start();
                raw.redis_start();
            })
        },
    );
    rows.push(row(
        "warm `up`".into(),
        "pg_ctl start -w + redis-server + PING",
        "≤ 1.10, under 1 s",
        1.10,
        &xs,
        &ys,
    ));
    let (xs, ys) = pairs(
        n,
        || drop(project.run(&["up"])),
        || timed(|| drop(project.run(&["down"]))),
        || {
            if !raw.path("data/postmaster.pid").exists() {
                raw.pg_start();
                raw.redis_start();
            }
        },
        || {
            timed(|| {
                raw.pg_stop();
                raw.redis_stop();
            })
        },
    );
    rows.push(row(
        "`down`".into(),
        "pg_ctl stop -m fast + redis-cli SHUTDOWN",
        "≤ 1.10",
        1.10,
        &xs,
        &ys,
    ));

    // Status with a real query each.
    project.run(&["up"]);
    raw.pg_start();
    raw.redis_start();
    let (xs, ys) = pairs(
        n.max(5) * 2,
        || {},
        || timed(|| drop(project.run(&["ps", "--json"]))),
        || {},
        || {
            timed(|| {
                run(Command::new(format!("{PG_BIN}/pg_isready")).args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &raw.pg_port.to_string(),
                ]));
                run(Command::new("redis-cli").args(["-p", &raw.redis_port.to_string(), "ping"]));
            })
        },
    );
    rows.push(row(
        "`status --json`".into(),
        "pg_isready + redis-cli ping",
        "≤ 1.00",
        1.00,
        &xs,
        &ys,
    ));
    drop(raw);

    // Backup and restore of a pgbench database.
    let scale = if options.quick { "1" } else { "50" };
    eprintln!("pgbench -i -s {scale}…");
    let mut pgbench = Command::new(format!("{PG_BIN}/pgbench"));
    project.pg_env(&mut pgbench);
    run(pgbench.args(["-i", "-q", "-s", scale]));
    let dumps = tempfile::tempdir().unwrap();
    let (a_file, b_file) = (dumps.path().join("a.dump"), dumps.path().join("b.dump"));
    let (xs, ys) = pairs(
        n,
        || drop(fs::remove_file(&a_file)),
        || {
            timed(|| {
                drop(
                    project
                        .command(&["db", "backup", "-o"])
                        .arg(&a_file)
                        .output(),
                )
            })
        },
        || drop(fs::remove_file(&b_file)),
        || {
            timed(|| {
                let mut dump = Command::new(format!("{PG_BIN}/pg_dump"));
                project.pg_env(&mut dump);
                run(dump.args(["-Fc", "-f"]).arg(&b_file));
            })
        },
    );
    rows.push(row(
        format!("`db backup` (pgbench scale {scale}, custom)"),
        "pg_dump -Fc",
        "≤ 1.05",
        1.05,
        &xs,
        &ys,
    ));
    let (xs, ys) = pairs(
        n,
        || {
            project.admin_psql("DROP DATABASE IF EXISTS nanika_game WITH (FORCE)");
            project.admin_psql("CREATE DATABASE nanika_game OWNER nanika_user");
        },
        || {
            timed(|| {
                drop(run(project
                    .command(&["db", "restore", "--jobs", "2"])
                    .arg(&b_file)))
            })
        },
        || {
            project.admin_psql("DROP DATABASE IF EXISTS raw_restore WITH (FORCE)");
            project.admin_psql("CREATE DATABASE raw_restore OWNER nanika_user");
        },
        || {
            timed(|| {
                let mut restore = Command::new(format!("{PG_BIN}/pg_restore"));
                project.pg_env(&mut restore);
                run(restore.args(["-j", "2", "-d", "raw_restore"]).arg(&b_file));
            })
        },
    );
    rows.push(row(
        "`db restore --jobs 2` of that dump".into(),
        "pg_restore -j 2 into a fresh database",
        "≤ 1.05",
        1.05,
        &xs,
        &ys,
    ));
    project.admin_psql("DROP DATABASE IF EXISTS raw_restore WITH (FORCE)");
    project.admin_psql("DROP DATABASE IF EXISTS nanika_game WITH (FORCE)");
    project.admin_psql("CREATE DATABASE nanika_game OWNER nanika_user");

    // Seed: a million messages with COPY, against psql's \copy of the same rows.
    project.run(&["db", "migrate"]);
    project.run(&["db", "seed"]);
    let messages: u64 = if options.quick { 20_000 } else { 1_000_000 };
    let room = project.psql(
        "nanika_game",
        "SELECT id FROM chat_rooms WHERE name = 'lobby'",
    );
    let authors: Vec<String> = project
        .psql("nanika_game", "SELECT id FROM users ORDER BY id")
        .lines()
        .map(String::from)
        .collect();
    let csv = dumps.path().join("messages.csv");
    let mut text = String::with_capacity(messages as usize * 24);
    for i in 0..messages {
        text += &format!(
            "{room},{},load message {i}\n",
            authors[(i % authors.len() as u64) as usize]
        );
    }
    fs::write(&csv, text).unwrap();
    let truncate = || drop(project.psql("nanika_game", "TRUNCATE chat_messages"));
    let messages_arg = messages.to_string();
    let (xs, ys) = pairs(
        n,
        truncate,
        || timed(|| drop(project.run(&["db", "seed", "--messages", &messages_arg]))),
        truncate,
        || {
            timed(|| {
                let copy = format!(
                    "\\copy chat_messages (room_id, author_id, body) FROM '{}' WITH (FORMAT csv)",
                    csv.display()
                );
                run(
                    psql(project.pg_port, "nanika_user", APP_PASSWORD, "nanika_game")
                        .args(["-c", &copy]),
                );
            })
        },
    );
    let mut seed_row = row(
        format!("`db seed --messages {messages}`"),
        "psql \\copy of the same rows from CSV",
        "≤ 1.20; ≥ 5× one INSERT a row",
        1.20,
        &xs,
        &ys,
    );
    // One INSERT a row, autocommit, on a sample: rows a second against nanika's.
    let sample: u64 = if options.quick { 2_000 } else { 20_000 };
    let inserts = dumps.path().join("inserts.sql");
    let mut sql = String::new();
    for i in 0..sample {
        sql += &format!(
            "INSERT INTO chat_messages (room_id, author_id, body) VALUES ({room}, {}, 'insert {i}');\n",
            authors[(i % authors.len() as u64) as usize]
        );
    }
    fs::write(&inserts, sql).unwrap();
    truncate();
    let insert_time = timed(|| {
        run(
            psql(project.pg_port, "nanika_user", APP_PASSWORD, "nanika_game")
                .arg("-f")
                .arg(&inserts),
        );
    });
    let insert_rate = sample as f64 / insert_time.as_secs_f64();
    let nanika_rate = messages as f64 / seed_row.nanika.median.as_secs_f64();
    let speedup = nanika_rate / insert_rate;
    seed_row.note = format!(
        "{}; {speedup:.1}× one INSERT a row ({insert_rate:.0} rows/s over {sample} INSERTs)",
        seed_row.note
    );
    seed_row.met = seed_row.met.map(|m| m && speedup >= 5.0);
    rows.push(seed_row);

    // Migrate with nothing pending.
    let samples: Vec<Duration> = (0..n.max(5) * 2)
        .map(|_| timed(|| drop(project.run(&["db", "migrate"]))))
        .collect();
    let migrate = stats(&samples);
    rows.push(Row {
        operation: "`db migrate`, nothing pending".into(),
        baseline: "—",
        target: "under 50 ms",
        met: Some(migrate.median < Duration::from_millis(50)),
        note: "—".into(),
        nanika: migrate,
        raw: None,
    });

    // The supervisor at rest, start-up of the binary, and recovery after SIGKILL.
    let idle = if options.quick { 2 } else { 10 };
    let supervisor: u32 = fs::read_to_string(project.dir.path().join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ticks = || {
        let stat = fs::read_to_string(format!("/proc/{supervisor}/stat")).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(idle));
    let cpu_ticks = ticks() - before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = cpu_ticks as f64 / hz / idle as f64 * 100.0;
    let rss_kib: u64 = fs::read_to_string(format!("/proc/{supervisor}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let version: Vec<Duration> = (0..20)
        .map(|_| timed(|| drop(run(Command::new(&nanika).arg("--version")))))
        .collect();
    let mut recovery = Vec::new();
    for service in ["postgres", "redis"] {
        let mut samples = Vec::new();
        for _ in 0..if options.quick { 1 } else { 3 } {
            project.run(&["restart", service]);
            let (_, pid) = project.status(service);
            let start = Instant::now();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.unwrap() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            loop {
                let healthy = match service {
                    "postgres" => psql(project.pg_port, "nanika_user", APP_PASSWORD, "nanika_game")
                        .args(["-c", "SELECT 1"])
                        .stderr(Stdio::null())
                        .stdout(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success()),
                    _ => Command::new("redis-cli")
                        .args(["-p", &project.redis_port.to_string(), "ping"])
                        .output()
                        .is_ok_and(|o| o.stdout.starts_with(b"PONG")),
                };
                if healthy && start.elapsed() > Duration::from_millis(5) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            samples.push(start.elapsed());
        }
        recovery.push((service, stats(&samples)));
    }

    let report = render(
        &options,
        &rows,
        rss_kib,
        cpu,
        idle,
        &stats(&version),
        &recovery,
    );
    println!("{report}");
    let out = options
        .out
        .clone()
        .or_else(|| (!options.quick).then(|| root.join("docs/BENCHMARKS.md")));
    if let Some(out) = out {
        fs::write(&out, report).unwrap();
        eprintln!("wrote {}", out.display());
    }
}

fn machine() -> String {
    let uname = run(Command::new("uname").args(["-srm"])).trim().to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
        / 1024;
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("?")
        .trim_matches('"')
        .to_string();
    let pg = run(Command::new(format!("{PG_BIN}/postgres")).arg("--version"))
        .trim()
        .to_string();
    let redis = run(Command::new("redis-server").arg("--version"))
        .split_whitespace()
        .nth(2)
        .unwrap_or("?")
        .to_string();
    format!(
        "{os}, {uname}, {cores} cores, {memory} GiB; {pg}; Redis {redis}; run as {}",
        if server_user().is_some() {
            "root (servers as postgres)"
        } else {
            "a normal user"
        }
    )
}

fn render(
    options: &Options,
    rows: &[Row],
    rss_kib: u64,
    cpu: f64,
    idle: u64,
    version: &Stats,
    recovery: &[(&str, Stats)],
) -> String {
    let mut out = String::from(
        "# Benchmarks\n\nEach nanika operation against the raw commands it wraps, timed alternately (A B A B …) after a\nwarm-up of each, ",
    );
    out += &format!(
        "{} pairs per operation; times in milliseconds, median (min–max). Produced by\n`cargo xtask bench`{}.\n\n",
        options.pairs,
        if options.quick {
            " --quick (a smoke run: figures are not representative)"
        } else {
            ""
        }
    );
    out += &format!("Machine: {}.\n\n", machine());
    out += "| operation | raw baseline | nanika | raw | ratio (median) | target | met |\n|---|---|---|---|---|---|---|\n";
    for row in rows {
        let span = |s: &Stats| format!("{} ({}–{})", ms(s.median), ms(s.min), ms(s.max));
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {met} |\n",
            row.operation,
            row.baseline,
            span(&row.nanika),
            row.raw.as_ref().map_or("—".into(), span),
            row.note,
            row.target
        );
    }
    out += &format!(
        "\n## Also measured\n\n- The supervisor at rest for {idle} s: **{:.1} MiB** resident, **{cpu:.2} %** CPU (goal: under 15 MB, ~0 %).\n- `nanika --version`: {} ms median ({}–{}) over 20 runs.\n",
        rss_kib as f64 / 1024.0,
        ms(version.median),
        ms(version.min),
        ms(version.max)
    );
    for (service, stats) in recovery {
        out += &format!(
            "- {service} SIGKILLed → answering again under supervision: {} ms median ({}–{}).\n",
            ms(stats.median),
            ms(stats.min),
            ms(stats.max)
        );
    }
    out
}
