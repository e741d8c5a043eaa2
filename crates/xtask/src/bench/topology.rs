//! The "Also measured" lines of `nanika.toml` [topology], each on a project of its own: commit →
//! visible on PostgreSQL's streaming replicas under load, `nanika failover postgres` under four
//! writers (synchronous and not), Redis Sentinel failovers under an INCR loop, and a Redis
//! Cluster master's replica taking over. Figures only: the assertions are the integration
//! tests' (crates/nanika-cli/tests/topology.rs), whose measurements these follow.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::{Project, Runtime};
use crate::poll::{self, Backoff};
use crate::process::{APP_PASSWORD, run};
use crate::report::Report;
use crate::stats::Spread;
use fs_err as fs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Commits timed to the replicas in a full run.
const COMMITS: usize = 200;

/// Commits timed to the replicas in a quick run.
const QUICK_COMMITS: usize = 20;

/// Streaming replicas of the lag measurement.
const LAG_REPLICAS: u16 = 2;

/// After a commit, the replicas are polled back to back for this long (most commits show up
/// within it, and a timer's millisecond would hide them), then every [`SLOW_POLL`].
const BUSY_POLL: Duration = Duration::from_millis(5);

/// The pause between polls of a replica once [`BUSY_POLL`] is over.
const SLOW_POLL: Duration = Duration::from_millis(1);

/// Writers during a PostgreSQL failover.
const WRITERS: i32 = 4;

/// Commits acknowledged before the primary is killed (the writers are up to speed), and by the
/// new primary before they stop (they all found it).
const COMMITS_AROUND_FAILOVER: usize = 400;

/// A writer gives up on a connection attempt after this long and tries the next host.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// A writer gives up on an INSERT after this long and reconnects: a killed primary's socket
/// may say nothing.
const INSERT_LIMIT: Duration = Duration::from_secs(5);

/// Sentinel failovers timed in a full run (a quick run: one).
const SENTINEL_RUNS: usize = 5;

/// Cluster failovers timed in a full run (a quick run: one).
const CLUSTER_RUNS: usize = 3;

/// Nodes of a Redis Cluster (nanika's: three masters, a replica each).
const CLUSTER_NODES: u16 = 6;

/// A Cluster node's bus listens on its port + this.
const CLUSTER_BUS: u16 = 10_000;

/// The longest wait for anything here: a failover, a node's return, a replica's catching up.
const LIMIT: Duration = Duration::from_secs(60);

/// A Redis connection's connect and read timeout: a dead node must not stall a poll.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);

/// One commit a writer had acknowledged.
#[derive(Clone, Copy, Debug)]
struct Ack {
    /// The writer.
    writer: i32,
    /// Its commit's number.
    n: i32,
    /// The port of the server that acknowledged it.
    port: u16,
    /// When.
    at: Instant,
}

/// The commits the writers had acknowledged, in order.
type Acked = Arc<Mutex<Vec<Ack>>>;

/// One INCR a client had acknowledged: when, by which port, the counter's new value.
type Incr = (Instant, u16, i64);

/// Measures each topology on a project of its own.
pub fn run_all(ctx: &Context, report: &mut Report) -> Result<()> {
    replica_lag(ctx, report)?;
    for synchronous in [true, false] {
        postgres_failover(ctx, synchronous, report)?;
    }
    sentinel(ctx, report)?;
    cluster(ctx, report)
}

/// A project with `settings` as its nanika.toml, up. Dropping it runs `down --volumes`, so an
/// error anywhere after this leaves no server behind.
fn up(ctx: &Context, settings: &str) -> Result<Project> {
    let project = Project::new(&ctx.nanika, Runtime::Native)?;
    fs::write(project.path("nanika.toml"), settings)?;
    eprintln!("nanika up ({})…", settings.lines().next().unwrap_or(""));
    project.run(&["up"])?;
    Ok(project)
}

/// The first of `count` consecutive free ports on 127.0.0.1 (each with `bus` above it free too),
/// claimed the way the test suite claims its own, so that a suite running meanwhile does not
/// take them; never 5432 or 6379.
fn free_ports(count: u16, bus: Option<u16>) -> u16 {
    nanika_testkit::free_port_run(count, bus)
}

/// A runtime for the database clients: several threads, so that the writers go on while this
/// thread blocks on `nanika failover`.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?)
}

/// Runs `f` on what `mutex` guards; a writer that panicked holding it left a log worth reading.
fn with<T, R>(mutex: &Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
    f(&mut mutex.lock().unwrap_or_else(PoisonError::into_inner))
}

/// SIGKILLs `service` (its pid from `ps --json`); returns the moment it was sent.
fn sigkill(project: &Project, service: &str) -> Result<Instant> {
    let pid = project.pid(service)?;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .map_err(|e| Error::new(format!("cannot SIGKILL {service} ({pid}): {e}")))?;
    Ok(Instant::now())
}

/// Waits up to [`LIMIT`] for `ready`, polling every `every`.
fn wait(what: &str, every: Duration, ready: impl FnMut() -> bool) -> Result<()> {
    poll::until(what, LIMIT, Backoff::every(every), ready, || None)
}

/// The greatest of `values` (0 for none).
fn worst(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

// ---- PostgreSQL ----

/// The app's connection to the server on `port`.
fn app_options(port: u16) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("nanika_user")
        .password(APP_PASSWORD)
        .database("nanika_game")
}

/// A connection of the app's to the server on `port`.
async fn connect(port: u16) -> Result<PgConnection> {
    PgConnection::connect_with(&app_options(port))
        .await
        .map_err(|e| Error::new(format!("cannot connect to PostgreSQL on {port}: {e}")))
}

/// A database error, with what was being done.
fn sql(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| Error::new(format!("{what}: {e}"))
}

/// Commit → visible on each of [`LAG_REPLICAS`] asynchronous replicas, under a second writer's
/// load.
fn replica_lag(ctx: &Context, report: &mut Report) -> Result<()> {
    let first = free_ports(LAG_REPLICAS, None);
    let project = up(
        ctx,
        &format!("[topology.postgres]\nreplicas = {LAG_REPLICAS}\nports_from = {first}\n"),
    )?;
    project.psql(
        "nanika_game",
        "CREATE TABLE marks (id int PRIMARY KEY); CREATE TABLE load (id serial, pad text)",
    )?;
    let commits = if ctx.options.quick {
        QUICK_COMMITS
    } else {
        COMMITS
    };
    let replicas: Vec<u16> = (first..first + LAG_REPLICAS).collect();
    let (lags, rows) = runtime()?.block_on(lags(project.pg_port, &replicas, commits))?;
    if let Some(s) = Spread::of_ms(&lags) {
        report.also.push(format!(
            "PostgreSQL, {LAG_REPLICAS} asynchronous streaming replicas: a commit is visible on each in **{:.2} ms** median, {:.2} ms worst ({commits} commits × {LAG_REPLICAS} replicas, while a second writer inserted {rows} rows of 200 B).",
            s.median, s.max
        ));
    }
    Ok(())
}

/// Commits `commits` marks on the primary and times each to each replica while [`load`] writes;
/// returns the times and the rows the load wrote.
async fn lags(primary: u16, replicas: &[u16], commits: usize) -> Result<(Vec<Duration>, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(primary, stop.clone()));
    let lags = marks(primary, replicas, commits).await;
    stop.store(true, Ordering::Relaxed);
    let rows = load
        .await
        .map_err(|e| Error::new(format!("the load writer: {e}")))??;
    Ok((lags?, rows))
}

/// Inserts batches of 20 rows of 200 bytes until `stop`; returns how many rows.
async fn load(port: u16, stop: Arc<AtomicBool>) -> Result<u64> {
    let mut conn = connect(port).await?;
    let mut rows = 0;
    while !stop.load(Ordering::Relaxed) {
        sqlx::query("INSERT INTO load (pad) SELECT repeat('x', 200) FROM generate_series(1, 20)")
            .execute(&mut conn)
            .await
            .map_err(sql("the load writer's INSERT"))?;
        rows += 20;
    }
    Ok(rows)
}

/// Commits marks 0..`commits` one at a time; the time from each commit to its visibility on
/// each replica.
async fn marks(primary: u16, replicas: &[u16], commits: usize) -> Result<Vec<Duration>> {
    let mut conn = connect(primary).await?;
    let mut readers = Vec::new();
    for port in replicas {
        let mut reader = connect(*port).await?;
        has_marks(&mut reader).await?;
        readers.push(reader);
    }
    let mut lags = Vec::new();
    for id in 0..commits as i32 {
        sqlx::query("INSERT INTO marks VALUES ($1)")
            .bind(id)
            .execute(&mut conn)
            .await
            .map_err(sql("a mark's INSERT"))?;
        lags.extend(visible(&mut readers, id, Instant::now()).await?);
    }
    Ok(lags)
}

/// Waits until the replica `reader` has the table of marks: it is created just before, and a
/// SELECT from it on a replica that has not replayed it yet would fail.
async fn has_marks(reader: &mut PgConnection) -> Result<()> {
    let start = Instant::now();
    loop {
        let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('marks')::text")
            .fetch_one(&mut *reader)
            .await
            .map_err(sql("a replica's to_regclass"))?;
        if table.is_some() {
            return Ok(());
        }
        if start.elapsed() > LIMIT {
            return Err(Error::new("the table of marks did not reach a replica"));
        }
        tokio::time::sleep(SLOW_POLL).await;
    }
}

/// How long after `committed` mark `id` showed on each reader: the readers that have not
/// shown it yet are asked round after round, so that one replica's wait does not count in
/// another's time.
async fn visible(
    readers: &mut [PgConnection],
    id: i32,
    committed: Instant,
) -> Result<Vec<Duration>> {
    let mut seen: Vec<Option<Duration>> = vec![None; readers.len()];
    while seen.iter().any(Option::is_none) {
        for (reader, seen) in readers.iter_mut().zip(&mut seen) {
            if seen.is_some() {
                continue;
            }
            let row: Option<i32> = sqlx::query_scalar("SELECT id FROM marks WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *reader)
                .await
                .map_err(sql("a replica's SELECT"))?;
            if row.is_some() {
                *seen = Some(committed.elapsed());
            }
        }
        let elapsed = committed.elapsed();
        if elapsed > LIMIT {
            return Err(Error::new(format!(
                "mark {id} not on every replica after {} s",
                LIMIT.as_secs()
            )));
        }
        if elapsed > BUSY_POLL {
            tokio::time::sleep(SLOW_POLL).await;
        }
    }
    Ok(seen.into_iter().flatten().collect())
}

/// [`WRITERS`] writers through `DATABASE_FAILOVER_URL`'s hosts, the primary SIGKILLed, `nanika
/// failover postgres`: the time to the command's end and to the new primary's first
/// acknowledged write, the commits acknowledged and those the new primary does not have.
fn postgres_failover(ctx: &Context, synchronous: bool, report: &mut Report) -> Result<()> {
    let first = free_ports(1, None);
    let project = up(
        ctx,
        &format!(
            "[topology.postgres]\nreplicas = 1\nsynchronous = {synchronous}\nports_from = {first}\n"
        ),
    )?;
    let hosts = failover_hosts(&project)?;
    project.psql(
        "nanika_game",
        "CREATE TABLE acked (writer int, n int, PRIMARY KEY (writer, n))",
    )?;
    let rt = runtime()?;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(w, hosts.clone(), acked.clone(), stop.clone())))
        .collect();
    let outcome = fail_over(&project, &acked);
    // Stopped whatever happened: the runtime's drop would not wait for them.
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        rt.block_on(writer)
            .map_err(|e| Error::new(format!("a writer: {e}")))?;
    }
    let (command, killed, new) = outcome?;
    let present = rt.block_on(present(new))?;
    let acked = with(&acked, |log| log.clone());
    let first_ack = acked
        .iter()
        .filter(|a| a.port == new && a.at > killed)
        .map(|a| a.at.duration_since(killed))
        .min()
        .ok_or_else(|| Error::new("no write reached the new primary"))?;
    let lost = acked
        .iter()
        .filter(|a| !present.contains(&(a.writer, a.n)))
        .count();
    let mode = if synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    report.also.push(format!(
        "PostgreSQL failover, 1 {mode} replica, {WRITERS} writers reconnecting through `DATABASE_FAILOVER_URL`'s hosts: SIGKILL of the primary → `nanika failover postgres` done in **{:.0} ms**, → first write acknowledged by the new primary in **{:.0} ms**; {} commits acknowledged, **{lost} lost** (one run).",
        command.as_secs_f64() * 1000.0,
        first_ack.as_secs_f64() * 1000.0,
        acked.len()
    ));
    Ok(())
}

/// The ports of `DATABASE_FAILOVER_URL`'s hosts, in its order (`postgres://u:p@h:1,h:2/db?…`).
fn failover_hosts(project: &Project) -> Result<Vec<u16>> {
    let json = project.run(&["env", "--format", "json", "--show-secrets"])?;
    let env: Value = serde_json::from_str(&json)
        .map_err(|e| Error::new(format!("`nanika env --format json`: {e}\n{json}")))?;
    let url = env["DATABASE_FAILOVER_URL"].as_str().unwrap_or("");
    let hosts = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map_or("", |(_, hosts)| hosts);
    hosts
        .split(',')
        .map(|host| host.rsplit_once(':')?.1.parse().ok())
        .collect::<Option<Vec<u16>>>()
        .filter(|ports| !ports.is_empty())
        .ok_or_else(|| Error::new(format!("no hosts in DATABASE_FAILOVER_URL {url:?}")))
}

/// Once the writers are going, SIGKILLs the primary and runs `nanika failover postgres`, then
/// waits until the new primary has acknowledged [`COMMITS_AROUND_FAILOVER`] commits: the
/// command's time from the kill, the moment of the kill and the new primary's port.
fn fail_over(project: &Project, acked: &Acked) -> Result<(Duration, Instant, u16)> {
    let count = |port: Option<u16>| {
        with(acked, |log| {
            log.iter()
                .filter(|a| port.is_none_or(|p| a.port == p))
                .count()
        })
    };
    wait("the writers", Duration::from_millis(10), || {
        count(None) >= COMMITS_AROUND_FAILOVER
    })?;
    let killed = sigkill(project, "postgres")?;
    project.run(&["failover", "postgres"])?;
    let command = killed.elapsed();
    let new = primary_port(project)?;
    wait(
        "the writers on the new primary",
        Duration::from_millis(10),
        || count(Some(new)) >= COMMITS_AROUND_FAILOVER,
    )?;
    Ok((command, killed, new))
}

/// The port of the node `ps --json` calls the primary.
fn primary_port(project: &Project) -> Result<u16> {
    let json = project.run(&["ps", "--json"])?;
    let rows: Value = serde_json::from_str(&json)
        .map_err(|e| Error::new(format!("`nanika ps --json`: {e}\n{json}")))?;
    rows.as_array()
        .into_iter()
        .flatten()
        .find(|row| row["role"] == "primary")
        .and_then(|row| row["port"].as_u64())
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| Error::new(format!("no primary in `nanika ps --json`:\n{json}")))
}

/// One writer: INSERTs its numbered rows through the first of `hosts` that takes writes (as
/// libpq does with target_session_attrs=read-write) and logs each acknowledged commit; after an
/// error or a stalled INSERT it connects again.
async fn writer(writer: i32, hosts: Vec<u16>, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0;
    let mut conn: Option<(PgConnection, u16)> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some((c, port)) = conn.as_mut() else {
            conn = read_write(&hosts).await;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        };
        let port = *port;
        n += 1;
        let insert = sqlx::query("INSERT INTO acked VALUES ($1, $2)")
            .bind(writer)
            .bind(n)
            .execute(&mut *c);
        match tokio::time::timeout(INSERT_LIMIT, insert).await {
            Ok(Ok(_)) => with(&acked, |log| {
                log.push(Ack {
                    writer,
                    n,
                    port,
                    at: Instant::now(),
                })
            }),
            _ => conn = None,
        }
    }
}

/// A connection to the first of `hosts` whose `transaction_read_only` is off.
async fn read_write(hosts: &[u16]) -> Option<(PgConnection, u16)> {
    for &port in hosts {
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            CONNECT_LIMIT,
            PgConnection::connect_with(&app_options(port)),
        )
        .await
        else {
            continue;
        };
        let read_only: std::result::Result<String, _> =
            sqlx::query_scalar("SHOW transaction_read_only")
                .fetch_one(&mut conn)
                .await;
        if read_only.is_ok_and(|r| r == "off") {
            return Some((conn, port));
        }
    }
    None
}

/// The (writer, n) rows the server on `port` has.
async fn present(port: u16) -> Result<BTreeSet<(i32, i32)>> {
    let mut conn = connect(port).await?;
    let rows: Vec<(i32, i32)> = sqlx::query_as("SELECT writer, n FROM acked")
        .fetch_all(&mut conn)
        .await
        .map_err(sql("reading the acknowledged rows"))?;
    Ok(rows.into_iter().collect())
}

// ---- Redis ----

/// A connection to the Redis (or Sentinel) on `port`, with [`REDIS_TIMEOUT`] to connect and
/// to read.
fn redis(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let conn = client.get_connection_with_timeout(REDIS_TIMEOUT).ok()?;
    conn.set_read_timeout(Some(REDIS_TIMEOUT)).ok()?;
    Some(conn)
}

/// `INFO section` of the node on `port`; `None` while it does not answer.
fn info(port: u16, section: &str) -> Option<String> {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut redis(port)?)
        .ok()
}

/// Whether `INFO replication` of `port` says a replica whose link to its master is up.
fn linked_replica(port: u16) -> bool {
    info(port, "replication")
        .is_some_and(|i| i.contains("role:slave") && i.contains("master_link_status:up"))
}

/// The master the first answering sentinel names.
fn sentinel_master(sentinels: &[u16]) -> Option<u16> {
    sentinels.iter().find_map(|port| {
        let (_, master): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("nanika")
            .query(&mut redis(*port)?)
            .ok()?;
        Some(master)
    })
}

/// Sentinel failovers (down-after 1 s, failover timeout 2 s) of a SIGKILLed master under a
/// Sentinel-aware INCR loop: the time to the first INCR a new master acknowledged, and the
/// acknowledged INCRs it does not have.
fn sentinel(ctx: &Context, report: &mut Report) -> Result<()> {
    let replica = free_ports(1, None);
    let from = free_ports(3, None);
    let project = up(
        ctx,
        &format!(
            "[topology.redis]\nmode = \"sentinel\"\nports_from = {replica}\nsentinel_ports_from = {from}\ndown_after_ms = 1000\nfailover_timeout_ms = 2000\n"
        ),
    )?;
    let sentinels: Vec<u16> = (from..from + 3).collect();
    let log: Arc<Mutex<Vec<Incr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client = incr_loop(sentinels.clone(), log.clone(), stop.clone());
    let runs = if ctx.options.quick { 1 } else { SENTINEL_RUNS };
    let outcome = (1..=runs)
        .map(|run| sentinel_run(&project, &sentinels, &log, run))
        .collect::<Result<Vec<_>>>();
    stop.store(true, Ordering::Relaxed);
    client
        .join()
        .map_err(|_| Error::new("the INCR client panicked"))?;
    let (times, losses): (Vec<Duration>, Vec<f64>) = outcome?.into_iter().unzip();
    if let Some(s) = Spread::of_ms(&times) {
        report.also.push(format!(
            "Redis Sentinel (3 sentinels, 1 replica, down-after 1000 ms, failover timeout 2000 ms), master SIGKILLed under a Sentinel-aware INCR loop: first INCR acknowledged by the new master after **{:.0} ms** median, {:.0} ms worst; acknowledged INCRs lost: {} median, {} worst ({runs} run(s)).",
            s.median,
            s.max,
            Spread::of(&losses).map_or(0.0, |l| l.median),
            worst(&losses)
        ));
    }
    Ok(())
}

/// A Sentinel-aware client on a thread of its own: asks the sentinels for the master, INCRs
/// there until it stops answering, asks again; logs every acknowledged INCR until `stop`.
fn incr_loop(
    sentinels: Vec<u16>,
    log: Arc<Mutex<Vec<Incr>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some((port, mut conn)) =
                sentinel_master(&sentinels).and_then(|port| Some((port, redis(port)?)))
            else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                match redis::cmd("INCR").arg("counter").query::<i64>(&mut conn) {
                    Ok(value) => with(&log, |log| log.push((Instant::now(), port, value))),
                    Err(_) => break,
                }
            }
        }
    })
}

/// One Sentinel failover: SIGKILLs the current master once the client writes there, times
/// the first INCR a new master acknowledges, counts the acknowledged INCRs lost, then waits
/// for the killed node to be back as a replica that every sentinel sees up.
fn sentinel_run(
    project: &Project,
    sentinels: &[u16],
    log: &Mutex<Vec<Incr>>,
    run: usize,
) -> Result<(Duration, f64)> {
    let master =
        sentinel_master(sentinels).ok_or_else(|| Error::new("no sentinel names a master"))?;
    let last_port = || with(log, |log| log.last().map(|(_, port, _)| *port));
    wait(
        "the INCR client on the master",
        Duration::from_millis(10),
        || last_port() == Some(master),
    )?;
    let name = if master == project.redis_port {
        "redis"
    } else {
        "redis-replica-1"
    };
    let killed = sigkill(project, name)?;
    let on_new = || {
        with(log, |log| {
            log.iter()
                .find(|(at, port, _)| *at > killed && *port != master)
                .copied()
        })
    };
    wait(
        &format!("sentinel run {run}: a write on a new master"),
        Duration::from_millis(2),
        || on_new().is_some(),
    )?;
    let (at, _, first_new) = on_new().ok_or_else(|| Error::new("no write on a new master"))?;
    let last_on_old = with(log, |log| {
        log.iter()
            .filter(|(t, port, _)| *port == master && *t < at)
            .map(|(_, _, value)| *value)
            .max()
    })
    .unwrap_or(first_new - 1);
    // The new master carries on from the last value it had received: every value above it
    // that the old one acknowledged is gone. An answer read just after the kill was sent
    // before it, so the old master's acknowledgements count up to the new master's first.
    let lost = (last_on_old - (first_new - 1)).max(0);
    let took = at.duration_since(killed);
    eprintln!(
        "sentinel run {run}: failover {:.0} ms, {lost} acknowledged INCRs lost",
        took.as_secs_f64() * 1000.0
    );
    // Back after the hold that leaves the failover to Sentinel, as a replica.
    wait(
        &format!("sentinel run {run}: the old master back as a replica"),
        Duration::from_millis(100),
        || linked_replica(master),
    )?;
    wait(
        &format!("sentinel run {run}: every sentinel seeing the old master up"),
        Duration::from_millis(100),
        || sentinels.iter().all(|s| sees_up(*s, master)),
    )?;
    Ok((took, lost as f64))
}

/// Whether the sentinel on `sentinel` lists `replica` among the master's replicas, not down.
fn sees_up(sentinel: u16, replica: u16) -> bool {
    run(Command::new("redis-cli").args([
        "-p",
        &sentinel.to_string(),
        "SENTINEL",
        "REPLICAS",
        "nanika",
    ]))
    .is_ok_and(|text| text.contains(&replica.to_string()) && !text.contains("s_down"))
}

/// A SIGKILLed Cluster master (node timeout 1 s): the time until its replica says
/// `role:master`.
fn cluster(ctx: &Context, report: &mut Report) -> Result<()> {
    let first = free_ports(CLUSTER_NODES, Some(CLUSTER_BUS));
    let project = up(
        ctx,
        &format!(
            "[topology.redis]\nmode = \"cluster\"\nports_from = {first}\nnode_timeout_ms = 1000\n"
        ),
    )?;
    let nodes: Vec<u16> = (first..first + CLUSTER_NODES).collect();
    let runs = if ctx.options.quick { 1 } else { CLUSTER_RUNS };
    let times = (0..runs)
        .map(|run| cluster_run(&project, &nodes, run))
        .collect::<Result<Vec<_>>>()?;
    if let Some(s) = Spread::of_ms(&times) {
        report.also.push(format!(
            "Redis Cluster (6 nodes, node timeout 1000 ms), a master SIGKILLed → its replica says `role:master` after **{:.0} ms** median, {:.0} ms worst ({runs} run(s)).",
            s.median, s.max
        ));
    }
    Ok(())
}

/// One Cluster failover: SIGKILLs a master (another one each run), times its replica's
/// promotion, then waits for the killed node to be back as a replica and every node to say
/// `cluster_state:ok`.
fn cluster_run(project: &Project, nodes: &[u16], run: usize) -> Result<Duration> {
    let role = |port: u16| info(port, "replication").unwrap_or_default();
    let masters: Vec<u16> = nodes
        .iter()
        .copied()
        .filter(|port| role(*port).contains("role:master"))
        .collect();
    let victim = *masters
        .get(run % masters.len().max(1))
        .ok_or_else(|| Error::new("no Cluster node says role:master"))?;
    let replica = nodes
        .iter()
        .copied()
        .find(|port| {
            role(*port)
                .lines()
                .any(|line| line.trim() == format!("master_port:{victim}"))
        })
        .ok_or_else(|| Error::new(format!("no replica of the Cluster master on {victim}")))?;
    let name = format!("redis-cluster-{}", victim - nodes[0] + 1);
    let killed = sigkill(project, &name)?;
    wait(
        &format!("cluster run {}: the replica on {replica} promoted", run + 1),
        Duration::from_millis(2),
        || role(replica).contains("role:master"),
    )?;
    let took = killed.elapsed();
    eprintln!(
        "cluster run {}: promoted in {:.0} ms",
        run + 1,
        took.as_secs_f64() * 1000.0
    );
    wait(
        &format!("cluster run {}: {name} back, every node ok", run + 1),
        Duration::from_millis(100),
        || linked_replica(victim) && nodes.iter().all(|port| cluster_ok(*port)),
    )?;
    Ok(took)
}

/// Whether the Cluster node on `port` says `cluster_state:ok`.
fn cluster_ok(port: u16) -> bool {
    redis(port).is_some_and(|mut conn| {
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut conn)
            .is_ok_and(|i| i.contains("cluster_state:ok"))
    })
}
