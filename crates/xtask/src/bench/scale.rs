//! Under load and at scale: `sessions backup`/`restore` at 100 k and 1 M sessions and
//! `redis ttl-audit` over 1 M keys (time and peak memory), and pgbench TPS through nanika's
//! supervised server against the same server started by hand, both with the spec's logging.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::Project;
use crate::process::{pg_tool, run};
use crate::raw::RawServers;
use crate::report::Report;
use crate::stats::Spread;
use fs_err as fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `sessions backup` must sustain.
const BACKUP_RATE_MIN: f64 = 50_000.0;
/// pgbench TPS through nanika against the hand-started server, at least.
const TPS_RATIO_MIN: f64 = 0.98;

/// Runs the scale measurements on `project`, which must be up and migrated.
pub fn run_all(ctx: &Context, project: &Project, report: &mut Report) -> Result<()> {
    let counts: &[usize] = if ctx.options.quick {
        &[2_000]
    } else {
        &[100_000, 1_000_000]
    };
    for &count in counts {
        sessions(project, count, report)?;
    }
    pgbench_tps(ctx, project, report)
}

/// Wall time and peak resident memory (KiB) of a checked run of `command`. The peak is read
/// from `/proc/PID/status` (`VmHWM`, a high-water mark) while it runs.
fn measured(command: &mut Command) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("cannot run {command:?}: {e}")))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(text) = fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = kib;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        return Err(Error::new(format!(
            "{command:?} failed ({status}):\n{stderr}"
        )));
    }
    Ok((elapsed, peak))
}

/// Loads `count` express-session-like sessions into Redis with `redis-cli --pipe`.
fn load_sessions(project: &Project, count: usize) -> Result<()> {
    let mut child = Command::new("redis-cli")
        .args(["-p", &project.redis_port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
        for i in 0..count {
            let key = format!("sess:{i:08}");
            let value = format!(
                r#"{{"cookie":{{"originalMaxAge":86400000,"httpOnly":true,"path":"/"}},"userId":{},"visits":{}}}"#,
                i % 5000 + 1,
                i % 17
            );
            write!(
                stdin,
                "*5\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n$2\r\nEX\r\n$5\r\n86400\r\n",
                key.len(),
                value.len()
            )?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(Error::new(format!("redis-cli --pipe failed ({status})")));
    }
    Ok(())
}

fn sessions(project: &Project, count: usize, report: &mut Report) -> Result<()> {
    eprintln!("sessions at {count}…");
    project.run(&["redis", "flush", "--yes"])?;
    load_sessions(project, count)?;
    let (backup, backup_kib) = measured(&mut project.command(&["sessions", "backup"]))?;
    let (audit, audit_kib) = measured(&mut project.command(&["redis", "ttl-audit"]))?;
    project.run(&["redis", "flush", "--yes"])?;
    let (restore, restore_kib) = measured(&mut project.command(&["sessions", "restore"]))?;
    let restored: usize =
        run(Command::new("redis-cli").args(["-p", &project.redis_port.to_string(), "DBSIZE"]))?
            .trim()
            .parse()
            .unwrap_or(0);
    if restored != count {
        return Err(Error::new(format!(
            "sessions restore brought back {restored} of {count} sessions"
        )));
    }
    let rate = count as f64 / backup.as_secs_f64();
    let met = if rate >= BACKUP_RATE_MIN {
        "met"
    } else {
        "**missed**"
    };
    report.also.push(format!(
        "`sessions backup` of {count} sessions: {:.2} s ({rate:.0} sessions/s; goal ≥ {BACKUP_RATE_MIN:.0}/s: {met}), peak {:.1} MiB resident. `sessions restore`: {:.2} s, peak {:.1} MiB resident.",
        backup.as_secs_f64(),
        backup_kib as f64 / 1024.0,
        restore.as_secs_f64(),
        restore_kib as f64 / 1024.0
    ));
    report.also.push(format!(
        "`redis ttl-audit` over {count} keys (a full scan): {:.2} s, peak {:.1} MiB resident.",
        audit.as_secs_f64(),
        audit_kib as f64 / 1024.0
    ));
    project.run(&["redis", "flush", "--yes"])?;
    project.psql("nanika_game", "TRUNCATE session_backups")?;
    Ok(())
}

/// One pgbench run's TPS against `port`.
fn tps(port: u16, password: &str, seconds: u64) -> Result<f64> {
    let out = run(pg_tool("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "nanika_user",
        ])
        .args([
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-n",
            "nanika_game",
        ])
        .env("PGPASSWORD", password))?;
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::new(format!("no tps in pgbench's output:\n{out}")))
}

/// pgbench through nanika's server (its log relayed by the supervisor) against the same
/// configuration started by hand with its log going straight to a file, in ABBA order.
fn pgbench_tps(ctx: &Context, project: &Project, report: &mut Report) -> Result<()> {
    let (seconds, pairs) = if ctx.options.quick { (2, 1) } else { (30, 4) };
    let scale = if ctx.options.quick { "1" } else { "10" };
    eprintln!("pgbench TPS, {pairs} pair(s) of {seconds} s…");
    let mut raw = RawServers::new()?;
    raw.cold_start()?;
    let result = (|| -> Result<Vec<(f64, f64)>> {
        let init = |port: u16, password: &str| {
            run(pg_tool("pgbench")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "nanika_user",
                ])
                .args(["-i", "-q", "-s", scale, "nanika_game"])
                .env("PGPASSWORD", password))
        };
        init(project.pg_port, crate::process::APP_PASSWORD)?;
        init(raw.pg_port, crate::process::APP_PASSWORD)?;
        let password = crate::process::APP_PASSWORD;
        let mut pairs_out = Vec::new();
        for pair in 0..pairs {
            // ABBA: the side that goes first alternates, so a drift favours neither.
            let (ours, theirs) = if pair % 2 == 0 {
                let ours = tps(project.pg_port, password, seconds)?;
                (ours, tps(raw.pg_port, password, seconds)?)
            } else {
                let theirs = tps(raw.pg_port, password, seconds)?;
                (tps(project.pg_port, password, seconds)?, theirs)
            };
            pairs_out.push((ours, theirs));
        }
        Ok(pairs_out)
    })();
    raw.stop()?;
    let pairs_out = result?;
    let spread =
        |values: Vec<f64>| Spread::of(&values).ok_or_else(|| Error::new("pgbench ran no pair"));
    let ratio = spread(pairs_out.iter().map(|(a, b)| a / b).collect())?;
    let ours = spread(pairs_out.iter().map(|(a, _)| *a).collect())?;
    let theirs = spread(pairs_out.iter().map(|(_, b)| *b).collect())?;
    let met = if ratio.median >= TPS_RATIO_MIN {
        "met"
    } else {
        "**missed**"
    };
    report.also.push(format!(
        "pgbench -c 8 -j 2 -T {seconds} (scale {scale}) with the spec's logging (`log_statement = 'mod'`): {:.0} TPS through nanika, {:.0} started by hand logging to a file (medians); per-pair ratio median {:.3} ({:.3}–{:.3}) over {pairs} ABBA pair(s) (goal ≥ {TPS_RATIO_MIN}: {met}).",
        ours.median, theirs.median, ratio.median, ratio.min, ratio.max,
    ));
    Ok(())
}
