//! The topologies of `nanika.toml` [topology] with real processes: PostgreSQL streaming replicas
//! and `nanika failover postgres` under writers, Redis Sentinel failovers under an INCR loop,
//! Redis Cluster. Every figure a test measures is printed (`--nocapture` shows them) and kept in
//! docs/RELIABILITY.md.

mod common;

use common::{Stack, text};
use serde_json::Value;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The commits the writers had acknowledged: writer, number, the port that took it.
type Acked = Arc<Mutex<Vec<(i32, i32, u16)>>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// A project with `settings` as its nanika.toml, up.
fn topology(settings: &str) -> Stack {
    let stack = Stack::new();
    stack.project.write("nanika.toml", settings);
    stack.up();
    stack
}

/// `nanika env --format json --show-secrets`.
fn env(stack: &Stack) -> Value {
    let output = stack.run(&["env", "--format", "json", "--show-secrets"]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `ps --json`'s row of `service`.
fn node(stack: &Stack, service: &str) -> Value {
    stack.service(service)
}

/// SIGKILL to `pid`, as a crash would.
fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The last lines of each PostgreSQL node's log, for a failure message: a failover that goes
/// wrong on a loaded machine should say what the servers said.
fn postgres_logs(stack: &Stack) -> String {
    let logs = stack.root.join(".nanika/logs");
    ["postgres", "postgres-replica-1", "postgres-replica-2"]
        .iter()
        .filter_map(|node| {
            let text = std::fs::read_to_string(logs.join(format!("{node}.log"))).ok()?;
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            Some(format!("--- {node}.log (last lines) ---\n{tail}\n"))
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn app_options(port: u16) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("nanika_user")
        .password(common::PASSWORD)
        .database("nanika_game")
}

#[test]
fn replicas_receive_every_commit_and_ps_and_env_describe_them() {
    let first = nanika_testkit::free_port_run(2, None);
    let stack = topology(&format!(
        "[topology.postgres]\nreplicas = 2\nports_from = {first}\n"
    ));
    let replicas = [first, first + 1];
    for (name, port) in [
        ("postgres-replica-1", first),
        ("postgres-replica-2", first + 1),
    ] {
        let row = node(&stack, name);
        assert_eq!(row["state"], "healthy", "{row}");
        assert_eq!(row["port"], port, "{row}");
        assert_eq!(row["role"], "replica", "{row}");
        assert!(row["lag_bytes"].is_u64(), "{row}");
    }
    assert_eq!(node(&stack, "postgres")["role"], "primary");
    let vars = env(&stack);
    let urls = vars["DATABASE_REPLICA_URLS"].as_str().unwrap();
    assert_eq!(urls.split(',').count(), 2, "{urls}");
    assert!(urls.contains(&format!(":{first}/")), "{urls}");
    let failover = vars["DATABASE_FAILOVER_URL"].as_str().unwrap();
    assert!(
        failover.contains(&format!(
            "localhost:{},localhost:{first},localhost:{}/",
            stack.pg_port,
            first + 1
        )) && failover.ends_with("target_session_attrs=read-write"),
        "{failover}"
    );
    // The human form masks the password in every URL.
    let shown = text(&stack.run(&["env"]));
    assert!(!shown.contains(common::PASSWORD), "{shown}");

    // Replication as the app's role is refused: pg_hba lets only nanika's role replicate.
    let refused = std::process::Command::new(format!("{}/psql", common::PG_BIN))
        .arg(format!(
            "host=127.0.0.1 port={} user=nanika_user dbname=nanika_game replication=true",
            stack.pg_port
        ))
        .args(["-Xc", "IDENTIFY_SYSTEM"])
        .env("PGPASSWORD", common::PASSWORD)
        .output()
        .unwrap();
    assert!(
        text(&refused).contains("no pg_hba.conf entry for replication connection"),
        "{}",
        text(&refused)
    );
    // A slot a replica, so a stopped replica does not lose the WAL it has not received.
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_replication_slots WHERE active"),
        "2"
    );

    // Commit → visible on each replica, under a second writer's load.
    let rt = runtime();
    let pg_port = stack.pg_port;
    let mut lags: Vec<f64> = rt.block_on(async move {
        let mut primary = PgConnection::connect_with(&app_options(pg_port)).await.unwrap();
        for statement in [
            "CREATE TABLE marks (id int PRIMARY KEY)",
            "CREATE TABLE load (id serial, pad text)",
        ] {
            sqlx::query(statement).execute(&mut primary).await.unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut conn = PgConnection::connect_with(&app_options(pg_port)).await.unwrap();
                let mut rows = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sqlx::query("INSERT INTO load (pad) SELECT repeat('x', 200) FROM generate_series(1, 20)")
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    rows += 20;
                }
                rows
            })
        };
        let mut readers = Vec::new();
        for port in replicas {
            readers.push(PgConnection::connect_with(&app_options(port)).await.unwrap());
        }
        let mut lags = Vec::new();
        for id in 0..200 {
            sqlx::query("INSERT INTO marks VALUES ($1)")
                .bind(id)
                .execute(&mut primary)
                .await
                .unwrap();
            let committed = Instant::now();
            for reader in &mut readers {
                loop {
                    let seen: Option<i32> = sqlx::query_scalar("SELECT id FROM marks WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *reader)
                        .await
                        .unwrap();
                    if seen.is_some() {
                        break;
                    }
                    assert!(
                        committed.elapsed() < Duration::from_secs(10),
                        "row {id} not on a replica after 10 s"
                    );
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                lags.push(committed.elapsed().as_secs_f64() * 1000.0);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let rows = load.await.unwrap();
        eprintln!("load writer: {rows} rows meanwhile");
        // A replica takes no writes.
        let refused = sqlx::query("INSERT INTO marks VALUES (-1)")
            .execute(&mut readers[0])
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("read-only"), "{refused}");
        lags
    });
    let worst = lags.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "commit → visible on a replica: median {:.2} ms, worst {worst:.2} ms over {} reads",
        median(&mut lags),
        lags.len()
    );
}

/// 4 writers through `DATABASE_FAILOVER_URL`, the primary SIGKILLed, `nanika failover
/// postgres`: returns (acknowledged, lost) and checks the writers went on on the new primary
/// and the old one came back as a replica.
fn failover_under_writers(synchronous: bool) -> (usize, usize) {
    let first = nanika_testkit::free_port_run(1, None);
    let stack = topology(&format!(
        "[topology.postgres]\nreplicas = 1\nsynchronous = {synchronous}\nports_from = {first}\n"
    ));
    let url = env(&stack)["DATABASE_FAILOVER_URL"]
        .as_str()
        .unwrap()
        .to_string();
    // The hosts of the multi-host URL, tried in order for one that takes writes, as libpq does
    // with target_session_attrs=read-write.
    let hosts: Vec<u16> = url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .split(',')
        .map(|h| h.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(hosts, vec![stack.pg_port, first]);
    stack.psql("CREATE TABLE acked (writer int, n int, PRIMARY KEY (writer, n))");
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (acked, stop, hosts) = (acked.clone(), stop.clone(), hosts.clone());
            rt.spawn(async move {
                let mut n = 0;
                let mut conn: Option<(PgConnection, u16)> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        for port in &hosts {
                            let Ok(Ok(mut c)) = tokio::time::timeout(
                                Duration::from_secs(2),
                                PgConnection::connect_with(&app_options(*port)),
                            )
                            .await
                            else {
                                continue;
                            };
                            let read_only: Result<String, _> =
                                sqlx::query_scalar("SHOW transaction_read_only")
                                    .fetch_one(&mut c)
                                    .await;
                            if read_only.is_ok_and(|r| r == "off") {
                                conn = Some((c, *port));
                                break;
                            }
                        }
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                    let (c, port) = conn.as_mut().unwrap();
                    n += 1;
                    let insert = sqlx::query("INSERT INTO acked VALUES ($1, $2)")
                        .bind(writer)
                        .bind(n)
                        .execute(&mut *c);
                    match tokio::time::timeout(Duration::from_secs(5), insert).await {
                        Ok(Ok(_)) => acked.lock().unwrap().push((writer, n, *port)),
                        _ => conn = None,
                    }
                }
            })
        })
        .collect();
    let count = |acked: &Acked, port: Option<u16>| {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, p)| port.is_none_or(|port| *p == port))
            .count()
    };
    assert!(
        common::eventually(Duration::from_secs(30), || count(&acked, None) >= 400),
        "the writers did not get going"
    );
    let primary_pid = node(&stack, "postgres")["pid"].as_u64().unwrap();
    sigkill(primary_pid as i32);
    let killed = Instant::now();
    let failover = stack.run(&["failover", "postgres"]);
    assert!(
        failover.status.success(),
        "{}\n{}",
        text(&failover),
        postgres_logs(&stack)
    );
    let took = killed.elapsed();
    assert!(
        common::eventually(Duration::from_secs(30), || count(&acked, Some(first))
            >= 400),
        "the writers did not reach the new primary through DATABASE_FAILOVER_URL"
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        rt.block_on(writer).unwrap();
    }
    let present: BTreeSet<(i32, i32)> = rt.block_on(async {
        let mut conn = PgConnection::connect_with(&app_options(first))
            .await
            .unwrap();
        sqlx::query_as::<_, (i32, i32)>("SELECT writer, n FROM acked")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .collect()
    });
    let acked = acked.lock().unwrap().clone();
    let lost = acked
        .iter()
        .filter(|(w, n, _)| !present.contains(&(*w, *n)))
        .count();
    eprintln!(
        "failover ({}): {} commits acknowledged, {lost} lost; SIGKILL → `nanika failover postgres` done in {} ms",
        if synchronous {
            "synchronous"
        } else {
            "asynchronous"
        },
        acked.len(),
        took.as_millis()
    );
    assert_eq!(node(&stack, "postgres-replica-1")["role"], "primary");
    // The failover returned once the old primary streamed; a loaded machine may see its
    // connection start over (a timeline's end, a retry) before it settles as a healthy replica.
    let settled = common::eventually(Duration::from_secs(60), || {
        let old = node(&stack, "postgres");
        old["role"] == "replica" && old["state"] == "healthy"
    });
    let old = node(&stack, "postgres");
    assert!(
        settled,
        "the old primary did not settle as a streaming replica: {old}\n{}\n{}",
        text(&failover),
        postgres_logs(&stack)
    );
    // It streams: a row written now on the new primary reaches the old one.
    rt.block_on(async {
        let mut new = PgConnection::connect_with(&app_options(first))
            .await
            .unwrap();
        sqlx::query("INSERT INTO acked VALUES (99, 1)")
            .execute(&mut new)
            .await
            .unwrap();
    });
    assert!(common::eventually(Duration::from_secs(10), || {
        stack.psql("SELECT count(*) FROM acked WHERE writer = 99") == "1"
    }));
    (acked.len(), lost)
}

#[test]
fn synchronous_failover_loses_no_acknowledged_commit() {
    let (acked, lost) = failover_under_writers(true);
    assert!(acked > 800, "{acked}");
    assert_eq!(lost, 0, "synchronous replication lost acknowledged commits");
}

#[test]
fn asynchronous_failover_counts_what_it_loses() {
    let (acked, lost) = failover_under_writers(false);
    assert!(acked > 800, "{acked}");
    assert!(lost <= acked);
}

/// The master the sentinels name.
fn sentinel_master(sentinels: &[u16]) -> Option<u16> {
    sentinels.iter().find_map(|port| {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(300))
            .ok()?;
        let (_, master_port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("nanika")
            .query(&mut conn)
            .ok()?;
        Some(master_port)
    })
}

fn redis_info(port: u16, section: &str) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", section])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn sentinel_fails_the_master_over_and_the_losses_are_counted() {
    let replica = nanika_testkit::free_port_run(1, None);
    let sentinels_from = nanika_testkit::free_port_run(3, None);
    let stack = topology(&format!(
        "[topology.redis]\nmode = \"sentinel\"\nports_from = {replica}\nsentinel_ports_from = {sentinels_from}\ndown_after_ms = 1000\nfailover_timeout_ms = 2000\n"
    ));
    let sentinels: Vec<u16> = (sentinels_from..sentinels_from + 3).collect();
    let vars = env(&stack);
    assert_eq!(
        vars["REDIS_SENTINELS"],
        sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(vars["REDIS_SENTINEL_MASTER"], "nanika");
    assert_eq!(node(&stack, "redis")["role"], "master");
    assert_eq!(node(&stack, "redis-replica-1")["role"], "replica");

    // A Sentinel-aware client: asks the sentinels for the master, INCRs there, asks again when
    // the master stops answering.
    let acked: Arc<Mutex<Vec<(Instant, u16, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (acked, stop, sentinels) = (acked.clone(), stop.clone(), sentinels.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(port) = sentinel_master(&sentinels) else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection_with_timeout(Duration::from_millis(300))
                else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                while !stop.load(Ordering::Relaxed) {
                    match redis::cmd("INCR").arg("counter").query::<i64>(&mut conn) {
                        Ok(value) => acked.lock().unwrap().push((Instant::now(), port, value)),
                        Err(_) => break,
                    }
                }
            }
        })
    };
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for run in 1..=5 {
        let master = sentinel_master(&sentinels).unwrap();
        assert!(common::eventually(Duration::from_secs(10), || {
            acked
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(_, p, _)| *p == master)
        }));
        let name = if master == stack.redis_port {
            "redis"
        } else {
            "redis-replica-1"
        };
        let pid = node(&stack, name)["pid"].as_u64().unwrap();
        sigkill(pid as i32);
        let killed = Instant::now();
        assert!(
            common::eventually(Duration::from_secs(30), || {
                acked
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(t, p, _)| *t > killed && *p != master)
            }),
            "run {run}: no write reached a new master"
        );
        let log = acked.lock().unwrap().clone();
        // Every INCR the old master acknowledged counts, a reply still on its way at the kill
        // included.
        let last_on_old = log
            .iter()
            .filter(|(_, p, _)| *p == master)
            .map(|(_, _, v)| *v)
            .max()
            .unwrap();
        let (at, _, first_new) = *log
            .iter()
            .find(|(t, p, _)| *t > killed && *p != master)
            .unwrap();
        let took = at.duration_since(killed).as_secs_f64() * 1000.0;
        let lost = (last_on_old - (first_new - 1)).max(0);
        eprintln!("sentinel run {run}: failover {took:.0} ms, {lost} acknowledged INCRs lost");
        times.push(took);
        losses.push(lost as f64);
        // The killed node comes back (after the hold that leaves it to Sentinel) as a replica.
        assert!(
            common::eventually(Duration::from_secs(60), || {
                let info = redis_info(master, "replication");
                info.contains("role:slave") && info.contains("master_link_status:up")
            }),
            "run {run}: the old master did not come back as a replica"
        );
        assert!(common::eventually(Duration::from_secs(30), || {
            sentinels.iter().all(|p| {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "SENTINEL", "REPLICAS", "nanika"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.contains(&master.to_string()) && !text.contains("s_down")
            })
        }));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let worst_time = times.iter().cloned().fold(0.0, f64::max);
    let worst_loss = losses.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "sentinel over 5 runs: failover median {:.0} ms, worst {worst_time:.0} ms; lost INCRs median {}, worst {worst_loss}",
        median(&mut times),
        median(&mut losses)
    );
    // Within down-after + the election (a second or two on loopback), far under a minute.
    assert!(worst_time < 15_000.0, "{times:?}");

    // `nanika failover redis` on request.
    let before = sentinel_master(&sentinels).unwrap();
    let output = stack.run(&["failover", "redis"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_ne!(sentinel_master(&sentinels), Some(before));
}

#[test]
fn a_cluster_serves_every_slot_and_fails_a_dead_master_over() {
    let first = nanika_testkit::free_port_run(6, Some(10_000));
    let stack = topology(&format!(
        "[topology.redis]\nmode = \"cluster\"\nports_from = {first}\nnode_timeout_ms = 1000\n"
    ));
    let nodes: Vec<u16> = (first..first + 6).collect();
    assert_eq!(
        env(&stack)["REDIS_CLUSTER_NODES"],
        nodes
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let info = std::process::Command::new("redis-cli")
        .args(["-p", &first.to_string(), "CLUSTER", "INFO"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_ok:16384"), "{info}");
    // `redis-cli -c` follows the redirections: keys land on several masters.
    for key in 0..30 {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-c",
                "-p",
                &first.to_string(),
                "SET",
                &format!("key{key}"),
                "v",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    let masters: Vec<u16> = nodes
        .iter()
        .copied()
        .filter(|p| redis_info(*p, "replication").contains("role:master"))
        .collect();
    assert_eq!(masters.len(), 3);
    let holding = masters
        .iter()
        .filter(|p| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "DBSIZE"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() != "0"
        })
        .count();
    assert_eq!(holding, 3, "the keys did not spread over the masters");

    // SIGKILL a master: its replica takes over.
    let victim = masters[0];
    let replica = nodes
        .iter()
        .copied()
        .find(|p| redis_info(*p, "replication").contains(&format!("master_port:{victim}")))
        .unwrap();
    let name = format!("redis-cluster-{}", victim - first + 1);
    let pid = node(&stack, &name)["pid"].as_u64().unwrap();
    sigkill(pid as i32);
    let killed = Instant::now();
    assert!(
        common::eventually(Duration::from_secs(30), || {
            redis_info(replica, "replication").contains("role:master")
        }),
        "the replica of the killed master was not promoted"
    );
    let took = killed.elapsed();
    eprintln!(
        "cluster: a SIGKILLed master's replica promoted in {} ms (cluster-node-timeout 1000 ms)",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(common::eventually(Duration::from_secs(10), || {
        let info = std::process::Command::new("redis-cli")
            .args(["-p", &replica.to_string(), "CLUSTER", "INFO"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
    }));
    let ps = stack.run(&["ps"]);
    assert!(text(&ps).contains("ROLE"), "{}", text(&ps));
}

#[test]
fn topology_settings_are_checked_before_anything_runs() {
    let stack = Stack::new();
    stack
        .project
        .write("nanika.toml", "[topology.postgres]\nreplicas = 9\n");
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("topology.postgres.replicas = 9 is more than 5"),
        "{}",
        text(&output)
    );

    stack.project.write(
        "nanika.toml",
        &format!(
            "[topology.postgres]\nreplicas = 1\nports_from = {}\n",
            stack.redis_port
        ),
    );
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("which REDIS_PORT already uses"),
        "{}",
        text(&output)
    );

    stack
        .project
        .write("nanika.toml", "[topology.redis]\nmode = \"ring\"\n");
    let output = stack.run(&["up"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("nanika.toml:2"), "{}", text(&output));

    // Without a topology there is nothing to fail over to.
    stack.project.write("nanika.toml", "");
    let output = stack.run(&["failover", "postgres"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}

#[test]
fn a_killed_supervisors_nodes_are_found_restarted_and_stopped() {
    let first = nanika_testkit::free_port_run(1, None);
    let sentinels_from = nanika_testkit::free_port_run(4, None);
    let stack = topology(&format!(
        "[topology.postgres]\nreplicas = 1\nports_from = {first}\n[topology.redis]\nmode = \"sentinel\"\nports_from = {sentinels_from}\nsentinel_ports_from = {}\n",
        sentinels_from + 1
    ));
    let supervisor: i32 = std::fs::read_to_string(stack.root.join(".nanika/run/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sigkill(supervisor);
    assert!(common::eventually(Duration::from_secs(10), || {
        stack
            .status()
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "unsupervised")
    }));
    assert_eq!(stack.status().as_array().unwrap().len(), 7);
    stack.up();
    for row in stack.status().as_array().unwrap() {
        assert_eq!(row["state"], "healthy", "{row}");
    }
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(stack.own_processes(), Vec::<String>::new());
}

#[test]
fn a_failover_left_halfway_keeps_the_old_primary_down_until_it_is_finished() {
    let first = nanika_testkit::free_port_run(1, None);
    let stack = topology(&format!(
        "[topology.postgres]\nreplicas = 1\nports_from = {first}\n"
    ));
    stack.psql("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)");
    let output = stack.run(&["failover", "postgres"]);
    assert!(output.status.success(), "{}", text(&output));
    // As a failover interrupted after the promotion leaves it: the old primary marked, down.
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    std::fs::write(
        stack.root.join(".nanika/postgres/data/nanika.rejoin"),
        "interrupted\n",
    )
    .unwrap();
    let up = stack.run(&["up"]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        text(&up).contains("postgres stays stopped")
            && text(&up).contains("nanika failover postgres"),
        "{}",
        text(&up)
    );
    assert_eq!(node(&stack, "postgres")["state"], "stopped");
    assert_eq!(node(&stack, "postgres-replica-1")["role"], "primary");
    // Finishing it brings the old primary back as a replica, streaming.
    let output = stack.run(&["failover", "postgres"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("finishing the failover"),
        "{}",
        text(&output)
    );
    assert_eq!(node(&stack, "postgres")["role"], "replica");
    assert!(
        !stack
            .root
            .join(".nanika/postgres/data/nanika.rejoin")
            .exists()
    );
    assert_eq!(stack.psql("SELECT count(*) FROM kept"), "1");
}
