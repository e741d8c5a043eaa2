//! Native `up` (cold and warm), `down` and `ps --json` against the raw servers.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::{Project, Runtime};
use crate::pairing::{Plan, Step, measure};
use crate::process::{pg_isready, run};
use crate::raw::RawServers;
use crate::report::{Report, Row, Target};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const COLD_UP: Target = Target {
    text: "≤ 0.50",
    max_ratio: Some(0.50),
    under: None,
};

const NO_TARGET: Target = Target {
    text: "—",
    max_ratio: None,
    under: None,
};

const WARM_UP: Target = Target {
    text: "≤ 1.10, under 1 s",
    max_ratio: Some(1.10),
    under: Some(Duration::from_secs(1)),
};

const DOWN: Target = Target {
    text: "≤ 1.10",
    max_ratio: Some(1.10),
    under: None,
};

const STATUS: Target = Target {
    text: "≤ 1.00",
    max_ratio: Some(1.00),
    under: None,
};

/// Cold `up` in its own projects, then warm `up`, `down` and `ps --json` on `project`; leaves
/// `project` up.
pub fn run_all(ctx: &Context, project: &Project, report: &mut Report) -> Result<()> {
    report.rows.push(cold_up(ctx, true)?);
    report.rows.push(cold_up(ctx, false)?);
    // One full cycle each first, so that both clusters exist and the app's role is there.
    project.run(&["up"])?;
    project.run(&["down"])?;
    let mut raw = RawServers::new()?;
    raw.cold_start()?;
    raw.stop()?;

    let warm = measure(
        ctx.fast(),
        |step| nanika_step(project, step, "down", "up"),
        |step| match step {
            Step::Prepare => raw.ensure_stopped(),
            Step::Run => raw.start(),
        },
    )?;
    report.rows.push(Row::paired(
        "warm `up`",
        "postgres and redis-server started at once, each polled (pg_isready, PING) on nanika's schedule",
        WARM_UP,
        &warm,
    ));

    let down = measure(
        ctx.fast(),
        |step| nanika_step(project, step, "up", "down"),
        |step| match step {
            Step::Prepare if raw.started() => Ok(()),
            Step::Prepare => raw.ensure_stopped().and_then(|()| raw.start()),
            Step::Run => raw.stop(),
        },
    )?;
    report.rows.push(Row::paired(
        "`down`",
        "SIGINT to postgres and SIGTERM to redis-server at once, then a wait on each pid",
        DOWN,
        &down,
    ));

    let typed_up = measure(
        ctx.fast(),
        |step| nanika_step(project, step, "down", "up"),
        |step| match step {
            Step::Prepare => raw.ensure_stopped(),
            Step::Run => raw.pg_ctl_start().and_then(|()| raw.redis_daemon_start()),
        },
    )?;
    report.rows.push(Row::paired(
        "warm `up`, against what people usually type",
        "pg_ctl start -w, then redis-server --daemonize yes + PING",
        Target::NONE,
        &typed_up,
    ));

    let typed_down = measure(
        ctx.fast(),
        |step| nanika_step(project, step, "up", "down"),
        |step| match step {
            Step::Prepare => raw
                .ensure_stopped()
                .and_then(|()| raw.pg_ctl_start())
                .and_then(|()| raw.redis_daemon_start()),
            Step::Run => raw.pg_ctl_stop().and_then(|()| raw.redis_cli_shutdown()),
        },
    )?;
    report.rows.push(Row::paired(
        "`down`, against what people usually type",
        "pg_ctl stop -w -m fast, then redis-cli SHUTDOWN",
        Target::NONE,
        &typed_down,
    ));

    project.run(&["up"])?;
    raw.ensure_stopped()?;
    raw.start()?;
    let status = measure(
        Plan {
            pairs: ctx.options.fast_pairs() * 2,
            ..ctx.fast()
        },
        |step| match step {
            Step::Prepare => Ok(()),
            Step::Run => project.run(&["ps", "--json"]).map(drop),
        },
        |step| match step {
            Step::Prepare => Ok(()),
            Step::Run => both_answer(raw.pg_port, raw.redis_port),
        },
    )?;
    report.rows.push(Row::paired(
        "`status --json`",
        "pg_isready and redis-cli ping, at once",
        STATUS,
        &status,
    ));
    raw.ensure_stopped()
}

/// nanika's side of a start/stop row: `prepare` untimed, `timed` timed.
fn nanika_step(project: &Project, step: Step, prepare: &str, timed: &str) -> Result<()> {
    let args = match step {
        Step::Prepare => prepare,
        Step::Run => timed,
    };
    project.run(&[args]).map(drop)
}

/// Cold `up`: a new project each run, against initdb and the scripted start of both servers.
/// With `spare`, the cluster cache's spare copy is ready, as the background refill after the
/// previous cold `up` leaves it; without, it is removed first and the cached cluster is copied
/// while the user waits. Either way both sides start only once that refill has finished, so its
/// writing lands in no timed run.
fn cold_up(ctx: &Context, spare: bool) -> Result<Row> {
    let mut project: Option<Project> = None;
    let mut raw = RawServers::new()?;
    let paired = measure(
        ctx.fast(),
        |step| match step {
            Step::Prepare => {
                // Dropping the old project runs its `down --volumes` before the next is made.
                project = None;
                project = Some(Project::new(&ctx.nanika, Runtime::Native)?);
                settle_spare(ctx, spare)
            }
            Step::Run => match &project {
                Some(project) => project.run(&["up"]).map(drop),
                None => Err(Error::new("no project to bring up")),
            },
        },
        |step| match step {
            Step::Prepare => settle_spare(ctx, true)
                .and_then(|()| raw.ensure_stopped())
                .and_then(|()| raw.wipe()),
            Step::Run => raw.cold_start(),
        },
    )?;
    let (operation, target) = if spare {
        ("cold `up`", COLD_UP)
    } else {
        (
            "cold `up`, no spare copy ready (the cached cluster copied while waiting)",
            NO_TARGET,
        )
    };
    Ok(Row::paired(
        operation,
        "initdb, postgres polled with pg_isready, CREATE ROLE/DATABASE; redis-server polled with PING alongside (nanika's poll schedule)",
        target,
        &paired,
    ))
}

/// Waits, untimed, until the cluster cache's entry has its spare copy (the refill a cold `up`
/// starts in the background has finished); then, unless `keep`, removes the spare.
fn settle_spare(ctx: &Context, keep: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(Command::new(&ctx.nanika).args(["cache", "status", "--json"]))?;
        let status: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::new(format!("cache status --json: {e}")))?;
        let Some(entry) = status["entries"].as_array().and_then(|e| e.first()) else {
            return Ok(()); // no cache yet: the next cold `up` builds it
        };
        if entry["spare"] == true {
            if !keep && let Some(path) = entry["path"].as_str() {
                fs_err::remove_dir_all(std::path::Path::new(path).join("spare"))?;
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                "the cluster cache's spare copy was not ready 60 s after a cold `up`",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pg_isready` and `redis-cli ping`, started together; both must answer.
fn both_answer(pg_port: u16, redis_port: u16) -> Result<()> {
    let mut pg = pg_isready(pg_port)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::new(format!("cannot run pg_isready: {e}")))?;
    let redis = run(Command::new("redis-cli").args(["-p", &redis_port.to_string(), "ping"]));
    let pg = pg.wait()?;
    if !pg.success() {
        return Err(Error::new(format!("pg_isready failed ({pg})")));
    }
    if !redis?.starts_with("PONG") {
        return Err(Error::new("redis-cli ping did not answer PONG"));
    }
    Ok(())
}
