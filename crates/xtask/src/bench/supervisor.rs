//! The "Also measured" lines: the supervisor at rest, the binary's start-up, and recovery of a
//! SIGKILLed server.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::Project;
use crate::poll::{self, Backoff};
use crate::process::{redis_pong, run, succeeds};
use crate::report::Report;
use crate::stats::Spread;
use fs_err as fs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs of `nanika --version`.
const VERSION_RUNS: usize = 20;

/// Measures on `project`, which must be up.
pub fn run_all(ctx: &Context, project: &Project, report: &mut Report) -> Result<()> {
    let idle = if ctx.options.quick { 2 } else { 10 };
    let (rss_kib, cpu) = at_rest(project, Duration::from_secs(idle))?;
    report.also.push(format!(
        "The supervisor at rest for {idle} s: **{:.1} MiB** resident, **{cpu:.2} %** CPU (goal: under 15 MB, ~0 %).",
        rss_kib as f64 / 1024.0
    ));

    let version = (0..VERSION_RUNS)
        .map(|_| {
            let start = Instant::now();
            run(Command::new(&ctx.nanika).arg("--version")).map(|_| start.elapsed())
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(s) = Spread::of_ms(&version) {
        report.also.push(format!(
            "`nanika --version`: {:.1} ms median ({:.1}–{:.1}) over {VERSION_RUNS} runs.",
            s.median, s.min, s.max
        ));
    }

    let runs = if ctx.options.quick { 1 } else { 3 };
    for service in ["postgres", "redis"] {
        let samples = (0..runs)
            .map(|_| recovery(project, service))
            .collect::<Result<Vec<_>>>()?;
        if let Some(s) = Spread::of_ms(&samples) {
            report.also.push(format!(
                "{service} SIGKILLed → answering again under supervision: {:.1} ms median ({:.1}–{:.1}) over {runs} run(s).",
                s.median, s.min, s.max
            ));
        }
    }
    Ok(())
}

/// The supervisor's resident memory (KiB) and CPU share (%) over `idle`.
fn at_rest(project: &Project, idle: Duration) -> Result<(u64, f64)> {
    let pid: u32 = fs::read_to_string(project.path(".nanika/run/supervisor.pid"))?
        .trim()
        .parse()
        .map_err(|e| Error::new(format!("supervisor.pid: {e}")))?;
    // utime + stime, fields 14 and 15 of /proc/PID/stat, counted after the command's ")".
    let ticks = || -> Result<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        match fields[..] {
            [user, system] => Ok(user + system),
            _ => Err(Error::new(format!("cannot read the CPU times in {stat}"))),
        }
    };
    let before = ticks()?;
    std::thread::sleep(idle);
    let used = ticks()? - before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = used as f64 / hz / idle.as_secs_f64() * 100.0;
    let rss_kib = fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((rss_kib, cpu))
}

/// From SIGKILL of `service` to its answering again as the app sees it.
fn recovery(project: &Project, service: &str) -> Result<Duration> {
    project.run(&["restart", service])?;
    let pid = project.pid(service)?;
    let start = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .map_err(|e| Error::new(format!("cannot SIGKILL {service} ({pid}): {e}")))?;
    let answers = || match service {
        "postgres" => succeeds(project.app_psql("nanika_game").args(["-c", "SELECT 1"])),
        _ => redis_pong(project.redis_port),
    };
    // The first few milliseconds would catch the killed server's last breath.
    poll::until(
        service,
        Duration::from_secs(60),
        Backoff::every(Duration::from_millis(2)),
        || start.elapsed() > Duration::from_millis(5) && answers(),
        || None,
    )?;
    Ok(start.elapsed())
}
