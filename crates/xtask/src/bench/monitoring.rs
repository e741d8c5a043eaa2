//! The "Also measured" lines of `nanika.toml` [monitoring]: what the monitoring stack costs. Its
//! resident memory and CPU at rest (Prometheus scraping both exporters at the default 15 s), and
//! pgbench's TPS with and without the stack, in ABBA order so that the machine's drift falls on
//! both sides alike.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::{Project, Runtime};
use crate::poll::{self, Backoff};
use crate::process::{APP_PASSWORD, pg_tool, run};
use crate::report::Report;
use crate::stats::Spread;
use fs_err as fs;
use std::io::{Read, Write};
use std::time::Duration;

/// The programs of the stack, as nanika looks for them first.
const PROGRAMS: [&str; 3] = [
    "prometheus",
    "prometheus-postgres-exporter",
    "prometheus-redis-exporter",
];

/// The stack's services, as `nanika ps` names them.
const SERVICES: [&str; 3] = ["prometheus", "postgres-exporter", "redis-exporter"];

/// pgbench's scale, clients and seconds a run (full run; a quick run is smaller).
const SCALE: u32 = 10;
const CLIENTS: u32 = 4;
const SECONDS: u32 = 10;

/// How long the stack is watched at rest in a full run: two scrapes and a half.
const REST: Duration = Duration::from_secs(40);

/// Runs the group, or says why it cannot.
pub fn run_all(ctx: &Context, report: &mut Report) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(missing) = PROGRAMS
        .iter()
        .find(|p| !std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    {
        report.skipped.push(format!(
            "the monitoring stack's cost: `{missing}` is not installed (`scripts/install-deps --tests`)"
        ));
        return Ok(());
    }
    let project = Project::new(&ctx.nanika, Runtime::Native)?;
    let ports = [
        crate::process::free_port()?,
        crate::process::free_port()?,
        crate::process::free_port()?,
    ];
    let on = format!(
        "[monitoring]\nenabled = true\nprometheus_port = {}\npostgres_exporter_port = {}\nredis_exporter_port = {}\n",
        ports[0], ports[1], ports[2]
    );
    let off = on.replace("enabled = true", "enabled = false");
    fs::write(project.path("nanika.toml"), &on)?;
    eprintln!("nanika up (with [monitoring])…");
    project.run(&["up"])?;
    let prometheus = ports[0];
    poll::until(
        "every Prometheus target",
        Duration::from_secs(60),
        Backoff::every(Duration::from_millis(200)),
        || targets_up(prometheus) == Some(3),
        || None,
    )?;
    at_rest(ctx, &project, report)?;
    tps(ctx, &project, (&on, &off), report)
}

/// How many of Prometheus's targets are up, from its HTTP API.
fn targets_up(port: u16) -> Option<usize> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /api/v1/targets HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let body: serde_json::Value = serde_json::from_str(answer.split_once("\r\n\r\n")?.1).ok()?;
    Some(
        body["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["health"] == "up")
            .count(),
    )
}

/// A process's resident memory in KiB and its CPU time so far in clock ticks.
fn usage(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::new(format!("no VmRSS for pid {pid}")))?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    let cpu = ticks(11)
        .zip(ticks(12))
        .map(|(u, s)| u + s)
        .ok_or_else(|| Error::new(format!("no CPU times for pid {pid}")))?;
    Ok((rss, cpu))
}

/// Resident memory and CPU of each service of the stack, watched at rest.
fn at_rest(ctx: &Context, project: &Project, report: &mut Report) -> Result<()> {
    let rest = if ctx.options.quick {
        Duration::from_secs(3)
    } else {
        REST
    };
    let pids: Vec<u32> = SERVICES
        .iter()
        .map(|s| project.pid(s))
        .collect::<Result<_>>()?;
    let before: Vec<(u64, u64)> = pids.iter().map(|p| usage(*p)).collect::<Result<_>>()?;
    std::thread::sleep(rest);
    let after: Vec<(u64, u64)> = pids.iter().map(|p| usage(*p)).collect::<Result<_>>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut parts = Vec::new();
    let (mut total_rss, mut total_cpu) = (0.0, 0.0);
    for ((service, (_, cpu0)), (rss, cpu1)) in SERVICES.iter().zip(&before).zip(&after) {
        let mib = *rss as f64 / 1024.0;
        let percent = (cpu1 - cpu0) as f64 / hz / rest.as_secs_f64() * 100.0;
        total_rss += mib;
        total_cpu += percent;
        parts.push(format!("{service} {mib:.0} MiB, {percent:.2} %"));
    }
    report.also.push(format!(
        "The monitoring stack at rest (`[monitoring]`, scraping every 15 s): **{total_rss:.0} MiB** resident and **{total_cpu:.2} %** of one core together over {} s ({}).",
        rest.as_secs(),
        parts.join("; ")
    ));
    Ok(())
}

/// One pgbench run's TPS.
fn pgbench_tps(project: &Project, seconds: u32) -> Result<f64> {
    let out = run(pg_tool("pgbench")
        .args(["-n", "-c", &CLIENTS.to_string(), "-j", "2"])
        .args(["-T", &seconds.to_string()])
        .args(["-h", "127.0.0.1", "-p", &project.pg_port.to_string()])
        .args(["-U", "nanika_user", "nanika_game"])
        .env("PGPASSWORD", APP_PASSWORD))?;
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::new(format!("pgbench printed no tps:\n{out}")))
}

/// pgbench's TPS with the stack scraping and without it, in ABBA order.
fn tps(
    ctx: &Context,
    project: &Project,
    (on, off): (&str, &str),
    report: &mut Report,
) -> Result<()> {
    let (scale, seconds) = if ctx.options.quick {
        (1, 2)
    } else {
        (SCALE, SECONDS)
    };
    eprintln!("pgbench -i -s {scale}…");
    run(pg_tool("pgbench")
        .args(["-i", "-q", "-s", &scale.to_string()])
        .args(["-h", "127.0.0.1", "-p", &project.pg_port.to_string()])
        .args(["-U", "nanika_user", "nanika_game"])
        .env("PGPASSWORD", APP_PASSWORD))?;
    let set = |settings: &str| -> Result<()> {
        fs::write(project.path("nanika.toml"), settings)?;
        project.run(&["up"]).map(|_| ())
    };
    let pairs = ctx.options.slow_pairs();
    let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        // ABBA: the stack's side first in even pairs.
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut this = [0.0; 2];
        for stack in order {
            set(if stack { on } else { off })?;
            let tps = pgbench_tps(project, seconds)?;
            this[usize::from(!stack)] = tps;
        }
        with.push(this[0]);
        without.push(this[1]);
        ratios.push(this[0] / this[1]);
    }
    let (Some(w), Some(wo), Some(r)) =
        (Spread::of(&with), Spread::of(&without), Spread::of(&ratios))
    else {
        return Ok(());
    };
    report.also.push(format!(
        "pgbench TPS with the monitoring stack scraping every 15 s against without it (scale {scale}, {CLIENTS} clients, {seconds} s a run, {pairs} pair(s) in ABBA order): **{:.0}** ({:.0}–{:.0}) with, {:.0} ({:.0}–{:.0}) without, ratio {:.3} ({:.3}–{:.3}).",
        w.median, w.min, w.max, wo.median, wo.min, wo.max, r.median, r.min, r.max
    ));
    Ok(())
}
