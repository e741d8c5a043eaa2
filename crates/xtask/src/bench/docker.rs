//! `nanika --runtime docker up`, cold and warm, against `docker compose up -d --wait`, with the
//! committed compose.yaml.
//!
//! compose.yaml fixes the project name (`nanika-game`), the container names and so the volume
//! names: one engine holds one such project at a time, whoever's checkout it comes from. So the
//! rows run only when nothing of that name exists, every preparation checks again that no other
//! checkout's containers have appeared (`down` by project name would remove them), and the end
//! removes only what this run made.

use super::Context;
use crate::error::{Error, Result};
use crate::nanika::{NOT_INHERITED, Project, Runtime};
use crate::pairing::{Step, measure};
use crate::process::{run, workspace};
use crate::report::{Report, Row, Target};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// compose.yaml's project name.
const PROJECT: &str = "nanika-game";
/// compose.yaml's container names.
const CONTAINERS: [&str; 2] = ["nanika-game-db", "nanika-game-redis"];
/// The volumes compose names after the project.
const VOLUMES: [&str; 2] = ["nanika-game_postgres_data", "nanika-game_redis_data"];
/// The images compose.yaml runs.
const IMAGES: [&str; 2] = ["postgres:15-alpine", "redis:7-alpine"];

/// Adds the two docker rows, or says in the report why they are not there.
pub fn run_all(ctx: &Context, report: &mut Report) -> Result<()> {
    let skip = |report: &mut Report, why: String| {
        eprintln!("docker rows skipped: {why}");
        report
            .skipped
            .push(format!("docker cold and warm `up`: {why}"));
    };
    if let Err(why) = engine_ready() {
        skip(report, why);
        return Ok(());
    }
    if let Some(why) = occupied(None)? {
        skip(report, why);
        return Ok(());
    }
    let project = Project::new(&ctx.nanika, Runtime::Docker)?;
    // Declared after the project, so dropped (and cleaned) before its directory goes.
    let compose = Compose::new(project.dir())?;
    match rows(ctx, &project, &compose) {
        Ok(rows) => report.rows.extend(rows),
        Err(e) => match compose.interrupted.borrow_mut().take() {
            Some(why) => skip(report, why),
            None => return Err(e),
        },
    }
    Ok(())
}

fn rows(ctx: &Context, project: &Project, compose: &Compose) -> Result<Vec<Row>> {
    let nanika_up = || project.run(&["up"]).map(drop);
    let raw_up = || run(&mut compose.plain(&["up", "-d", "--wait"])).map(drop);
    let cold = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => compose.down(Volumes::Remove),
            Step::Run => nanika_up(),
        },
        |step| match step {
            Step::Prepare => compose.down(Volumes::Remove),
            Step::Run => raw_up(),
        },
    )?;
    let cold = Row::paired(
        "docker cold `up`",
        "docker compose up -d --wait, after `docker compose down -v` (both sides: new volumes, initdb in the container)",
        Target::NONE,
        &cold,
    );
    // nanika labels the volumes it creates with its checkout and refuses unlabelled ones that
    // no container of its own mounts: let nanika make them, so both sides can start on them.
    compose.down(Volumes::Remove)?;
    nanika_up()?;
    let warm = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => compose.down(Volumes::Keep),
            Step::Run => nanika_up(),
        },
        |step| match step {
            Step::Prepare => compose.down(Volumes::Keep),
            Step::Run => raw_up(),
        },
    )?;
    let warm = Row::paired(
        "docker warm `up`",
        "docker compose up -d --wait on existing volumes, its containers removed by `docker compose down` before each run (both sides)",
        Target::NONE,
        &warm,
    );
    Ok(vec![cold, warm])
}

/// Whether an engine with compose and the images answers: `scripts/docker-testbed status`, or
/// else `docker info`, `docker compose version` and the images. `Err` says why not.
fn engine_ready() -> std::result::Result<(), String> {
    let testbed = workspace().join("scripts/docker-testbed");
    if quiet(Command::new(&testbed).arg("status")) {
        return Ok(());
    }
    if !quiet(Command::new("docker").arg("info")) {
        return Err("no Docker engine answers (`scripts/docker-testbed status` and `docker info` fail; `scripts/docker-testbed up` starts one)".into());
    }
    if !quiet(Command::new("docker").args(["compose", "version"])) {
        return Err("`docker compose` is missing".into());
    }
    for image in IMAGES {
        if !quiet(Command::new("docker").args(["image", "inspect", image])) {
            return Err(format!("the image {image} is missing"));
        }
    }
    Ok(())
}

fn quiet(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the fixed names are not free for this run: containers of another project directory than
/// `ours` (`None`: any), or, before the run, volumes that another checkout's data may be in.
fn occupied(ours: Option<&Path>) -> Result<Option<String>> {
    let listing = run(Command::new("docker").args([
        "ps",
        "--all",
        "--format",
        "{{.Names}}\t{{.Label \"com.docker.compose.project.working_dir\"}}",
    ]))?;
    for line in listing.lines() {
        let (name, dir) = line.split_once('\t').unwrap_or((line, ""));
        if CONTAINERS.contains(&name) && ours.is_none_or(|ours| !same_dir(ours, Path::new(dir))) {
            return Ok(Some(format!(
                "the container {name} of another project directory ({}) exists; compose.yaml fixes its name, so it was left alone",
                if dir.is_empty() { "unknown" } else { dir }
            )));
        }
    }
    if ours.is_none() {
        let volumes = run(Command::new("docker").args([
            "volume",
            "ls",
            "--quiet",
            "--filter",
            &format!("name={PROJECT}_"),
        ]))?;
        if let Some(volume) = volumes.lines().find(|v| VOLUMES.contains(v)) {
            return Ok(Some(format!(
                "the volume {volume} exists (another checkout's data?); the benchmark's `down -v` would delete it, so it was left alone"
            )));
        }
    }
    Ok(None)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| fs_err::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

/// Whether `down` keeps the volumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Volumes {
    Keep,
    Remove,
}

/// `docker compose` in the benchmark's project directory; dropping it runs `down -v` unless
/// another checkout's containers now hold the fixed names.
struct Compose {
    dir: PathBuf,
    /// Why the measurement was stopped to leave another checkout's containers alone.
    interrupted: RefCell<Option<String>>,
}

impl Compose {
    fn new(dir: &Path) -> Result<Self> {
        Ok(Compose {
            dir: fs_err::canonicalize(dir)?,
            interrupted: RefCell::new(None),
        })
    }

    /// `docker compose ARGS` as a person types it in the project directory (compose reads the
    /// project name from compose.yaml and the ports from `.env`).
    fn plain(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command.arg("compose").args(args).current_dir(&self.dir);
        for var in NOT_INHERITED.iter().chain(&[
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "COMPOSE_PROFILES",
        ]) {
            command.env_remove(var);
        }
        command
    }

    /// `docker compose -p nanika-game --project-directory DIR -f DIR/compose.yaml ARGS`.
    fn explicit(&self, args: &[&str]) -> Command {
        let file = self.dir.join("compose.yaml");
        let mut command = self.plain(&["--project-name", PROJECT, "--project-directory"]);
        command.arg(&self.dir).arg("-f").arg(file).args(args);
        command
    }

    /// `down` (with `-v` for [`Volumes::Remove`]), once no other checkout's containers exist;
    /// if they do, records why and fails, which ends the measurement.
    fn down(&self, volumes: Volumes) -> Result<()> {
        if let Some(why) = occupied(Some(&self.dir))? {
            *self.interrupted.borrow_mut() = Some(why.clone());
            return Err(Error::new(why));
        }
        let mut args = vec!["down"];
        if volumes == Volumes::Remove {
            args.push("--volumes");
        }
        run(&mut self.explicit(&args)).map(drop)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        match occupied(Some(&self.dir)) {
            Ok(None) => {
                if let Err(e) = run(&mut self.explicit(&["down", "--volumes"])) {
                    eprintln!("docker clean-up failed: {e}");
                }
            }
            Ok(Some(why)) => eprintln!("docker clean-up skipped: {why}"),
            Err(e) => eprintln!("docker clean-up skipped: {e}"),
        }
    }
}
