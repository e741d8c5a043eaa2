//! `nanika up | down | restart | ps | logs`, on the native or the docker runtime.

use crate::cli::RuntimeArg;
use crate::context;
use crate::error::{CliError, CliResult};
use crate::output::print_table;
use crate::progress::Spinners;
use nanika_config::settings::PostgresLog;
use nanika_config::{LoadedProject, ValidProject};
use nanika_runtime::compose::{self, Compose, RuntimeChoice, RuntimeKind};
use nanika_runtime::docker::{Docker, DockerState};
use nanika_runtime::native::control::{Native, NativeState, SupervisorCommand};
use nanika_runtime::runtime::{NativeRuntime, Runtime, RuntimeState};
use nanika_runtime::{RuntimeError, Service, ServiceStatus};
use std::io::IsTerminal;
use std::path::PathBuf;

mod json_logs;

/// Turns a runtime error into the CLI's, keeping its hint and showing a failed server's log.
pub fn runtime_error(error: RuntimeError) -> CliError {
    let hint = error.hint();
    let mut message = error.to_string();
    if let RuntimeError::StartFailed { log, log_tail, .. } = &error
        && !log_tail.is_empty()
    {
        message += &format!("\nlast lines of {}:\n", log.display());
        for line in log_tail {
            message += &format!("  | {line}\n");
        }
    }
    if let RuntimeError::Command { stderr, .. } = &error
        && !stderr.trim().is_empty()
    {
        message += &format!("\n{}", stderr.trim_end());
    }
    let cli = CliError::failure(message);
    match hint {
        Some(hint) => cli.hint(hint),
        None => cli,
    }
}

fn choice(arg: RuntimeArg) -> RuntimeChoice {
    match arg {
        RuntimeArg::Auto => RuntimeChoice::Auto,
        RuntimeArg::Native => RuntimeChoice::Explicit(RuntimeKind::Native),
        RuntimeArg::Docker => RuntimeChoice::Explicit(RuntimeKind::Docker),
    }
}

/// The runtime for a command. Only `up` may pick docker for a new project; the others use the
/// project's recorded runtime (native when there is none yet).
fn runtime_for(loaded: &LoadedProject, arg: RuntimeArg, starting: bool) -> CliResult<RuntimeKind> {
    let root = loaded.project.root();
    let recorded = compose::recorded_runtime(root);
    let compose = Compose::new(root, &loaded.infra.compose.project_name);
    let topology = !loaded.settings.topology.is_single();
    let monitoring = loaded.settings.monitoring.enabled;
    let jsonlog = loaded.settings.logging.postgres == PostgresLog::Jsonlog;
    // `auto` never picks docker for a topology, the monitoring stack or jsonlog: `nanika up`
    // under compose runs the spec's two servers only, as the spec's compose.yaml says.
    let (kind, note) = compose::choose(choice(arg), recorded, || {
        starting && !topology && !monitoring && !jsonlog && compose.available().is_ok()
    });
    if topology && kind == RuntimeKind::Docker {
        return Err(CliError::usage(
            "nanika.toml's [topology] (replicas, Sentinel, Cluster) runs with the native runtime only; nothing was done",
        )
        .hint("run with --runtime native (after `nanika down` of the docker runtime), or remove [topology] from nanika.toml"));
    }
    if monitoring && starting && kind == RuntimeKind::Docker {
        return Err(CliError::usage(
            "nanika.toml's [monitoring] runs with the native runtime only; nothing was done",
        )
        .hint("run with --runtime native (after `nanika down` of the docker runtime); or, with the servers under docker, set [monitoring] enabled = false and start compose.yaml's monitoring profile yourself: `docker compose --profile monitoring up -d` (nanika down stops it too)"));
    }
    // The container runs the spec's compose.yaml, which nanika does not rewrite: its
    // PostgreSQL logs to stderr, which `docker compose logs` reads.
    if jsonlog && starting && kind == RuntimeKind::Docker {
        return Err(CliError::usage(
            "nanika.toml's [logging] postgres = \"jsonlog\" runs with the native runtime only; nothing was done",
        )
        .hint("run with --runtime native (after `nanika down` of the docker runtime), or set [logging] postgres = \"stderr\" in nanika.toml"));
    }
    match (note, recorded) {
        // Only `up` switches (it records the runtime); the others just look elsewhere.
        (Some(note), _) if starting => eprintln!("note: {note}"),
        (Some(_), Some(old)) => eprintln!(
            "note: this project came up with the {} runtime; --runtime {} looks only at the {} runtime's services and data",
            old.as_str(),
            kind.as_str(),
            kind.as_str()
        ),
        _ => {}
    }
    if kind == RuntimeKind::Docker {
        compose
            .available()
            .map_err(|why| runtime_error(RuntimeError::DockerUnavailable(why)))?;
    }
    Ok(kind)
}

/// Refuses while a `backup restore` of the project is unfinished (its cluster may be
/// half-restored, and the one from before is kept in the state).
fn refuse_if_restoring(loaded: &LoadedProject) -> CliResult {
    let user =
        nanika_runtime::native::layout::ServerUser::for_current_process().map_err(runtime_error)?;
    let layout = nanika_runtime::native::layout::StateLayout::new(loaded.project.root(), user);
    super::backup::refuse_if_unfinished_restore(&layout)
}

pub(crate) fn supervisor_command(loaded: &LoadedProject) -> CliResult<SupervisorCommand> {
    let program = std::env::current_exe()
        .map_err(|e| CliError::failure("cannot find the nanika binary").caused_by(e))?;
    let root = loaded.project.root().display().to_string();
    Ok(SupervisorCommand {
        program,
        args: vec!["--project-dir".into(), root.clone(), "__supervise".into()],
        refill_args: vec!["--project-dir".into(), root, "__refill-cache".into()],
    })
}

/// The runtime running a validated project's services; `starting` lets `auto` pick docker for
/// a project that has no runtime yet.
pub(crate) fn runtime<'a>(
    valid: &'a ValidProject,
    arg: RuntimeArg,
    starting: bool,
) -> CliResult<Box<dyn Runtime + 'a>> {
    Ok(match runtime_for(valid, arg, starting)? {
        RuntimeKind::Docker => Box::new(Docker::new(valid).map_err(runtime_error)?),
        RuntimeKind::Native => {
            let native = Native::new(valid, context::binary_search(), context::cluster_cache())
                .map_err(runtime_error)?;
            Box::new(NativeRuntime::new(native, supervisor_command(valid)?))
        }
    })
}

/// What the project's runtime can do whatever its configuration says (`down`, `logs`).
fn runtime_state(loaded: &LoadedProject, arg: RuntimeArg) -> CliResult<Box<dyn RuntimeState>> {
    Ok(match runtime_for(loaded, arg, false)? {
        RuntimeKind::Docker => Box::new(DockerState::new(loaded).map_err(runtime_error)?),
        RuntimeKind::Native => Box::new(
            NativeState::new(loaded.project.root())
                .map_err(runtime_error)?
                .with_postgres_log(loaded.settings.logging.postgres),
        ),
    })
}

/// The validated project, once each of `services` is proven to be this project's server,
/// running where the configuration says: what every command that reads or changes data starts
/// from ("identity before action").
pub fn target(
    project_dir: Option<&PathBuf>,
    runtime_arg: RuntimeArg,
    services: &[Service],
) -> CliResult<ValidProject> {
    let valid = context::valid(project_dir)?;
    {
        let runtime = runtime(&valid, runtime_arg, false)?;
        for service in services {
            runtime.verify(*service).map_err(runtime_error)?;
        }
    }
    Ok(valid)
}

/// `nanika up`.
pub fn up(
    project_dir: Option<&PathBuf>,
    runtime_arg: RuntimeArg,
    services: Vec<Service>,
    attach: bool,
) -> CliResult {
    let project = context::project(project_dir)?;
    let process_env = context::process_env();
    if super::init::ensure_dotenv(project.root(), &process_env)? {
        eprintln!("wrote .env from .env.example (mode 0600); edit it, not the example");
    }
    let loaded = project
        .load(&process_env)?
        .validate()
        .map_err(|rejected| context::rejected_error(&rejected))?;
    refuse_if_restoring(&loaded)?;
    let runtime = runtime(&loaded, runtime_arg, true)?;
    let spinners = Spinners::new();
    let result = runtime.up(&services, &spinners);
    spinners.finish();
    let report = result.map_err(runtime_error)?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let env = &loaded.infra.env;
    for service in report.started.iter().chain(&report.already_up) {
        let port = runtime.port(*service);
        let state = if report.started.contains(service) {
            "started"
        } else {
            "already up"
        };
        crate::say!("{service:8} {state} on 127.0.0.1:{port}");
    }
    // The URLs of the services that are up now, for the app (passwords masked).
    let up: Vec<&Service> = report.started.iter().chain(&report.already_up).collect();
    if up.contains(&&Service::Postgres) {
        crate::say!("DATABASE_URL={}", env.database_url);
    }
    if up.contains(&&Service::Redis) {
        crate::say!("REDIS_URL={}", env.redis_url);
    }
    if attach {
        attach_logs(runtime.state());
    }
    Ok(())
}

/// Follows both logs until Ctrl-C or SIGTERM, then stops everything.
fn attach_logs(state: &dyn RuntimeState) -> ! {
    use nix::sys::signal::{SigSet, Signal};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    if let Err(e) = mask.thread_block() {
        eprintln!("error: cannot wait for Ctrl-C: {e}");
        std::process::exit(1);
    }
    std::thread::scope(|scope| {
        scope.spawn(|| state.follow_logs(&Service::ALL, &print_log_line));
        let _ = mask.wait();
        eprintln!("stopping…");
        let spinners = Spinners::new();
        let result = state.down(&spinners);
        spinners.finish();
        // The followers read until the process ends: end it here, reporting as `main` does.
        let code = match result.map_err(runtime_error) {
            Ok(_) => 0,
            Err(error) => {
                let code = if error.exit == crate::error::Exit::Usage {
                    2
                } else {
                    1
                };
                eprintln!("{:?}", miette::Report::new(error));
                code
            }
        };
        std::process::exit(code)
    })
}

/// Asks before deleting data; without a terminal, `--yes` is required.
pub fn confirm(question: &str, yes: bool) -> CliResult {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "{question}: refusing without confirmation (no terminal to ask on); nothing was deleted"
        ))
        .hint("pass --yes to confirm"));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::failure("cannot read the answer").caused_by(e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::failure("cancelled; nothing was deleted"))
    }
}

/// `nanika down`.
pub fn down(
    project_dir: Option<&PathBuf>,
    runtime_arg: RuntimeArg,
    volumes: bool,
    yes: bool,
) -> CliResult {
    let loaded = context::load_for_services(project_dir)?;
    let state = runtime_state(&loaded, runtime_arg)?;
    if volumes {
        // The cluster from before an unfinished restore lives in the state `--volumes` deletes.
        refuse_if_restoring(&loaded)?;
        let removable = state.removable().map_err(runtime_error)?;
        if removable.is_empty() {
            let spinners = Spinners::new();
            let result = state.down(&spinners);
            spinners.finish();
            result.map_err(runtime_error)?;
            crate::say!("nothing to delete: the project has no state");
            return Ok(());
        }
        confirm(
            &format!(
                "delete all PostgreSQL and Redis data of this project ({})?",
                removable.join(", ")
            ),
            yes,
        )?;
        let spinners = Spinners::new();
        let result = state.remove_state(&spinners);
        spinners.finish();
        let removed = result.map_err(runtime_error)?;
        for note in &removed.notes {
            eprintln!("note: {note}");
        }
        for what in removed.deleted {
            crate::say!("deleted {what}");
        }
        return Ok(());
    }
    let spinners = Spinners::new();
    let result = state.down(&spinners);
    spinners.finish();
    for note in result.map_err(runtime_error)? {
        eprintln!("note: {note}");
    }
    Ok(())
}

/// `nanika restart`.
pub fn restart(
    project_dir: Option<&PathBuf>,
    runtime_arg: RuntimeArg,
    services: Vec<Service>,
) -> CliResult {
    let loaded = context::valid(project_dir)?;
    let runtime = runtime(&loaded, runtime_arg, false)?;
    let spinners = Spinners::new();
    let result = runtime.restart(&services, &spinners);
    spinners.finish();
    result.map_err(runtime_error)
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// `nanika ps`.
pub fn ps(project_dir: Option<&PathBuf>, runtime_arg: RuntimeArg, json: bool) -> CliResult {
    let loaded = context::valid(project_dir)?;
    let runtime = runtime(&loaded, runtime_arg, false)?;
    let statuses: Vec<ServiceStatus> = runtime.status();
    if json {
        /// One service's status, saying which runtime runs it.
        #[derive(serde::Serialize)]
        struct Row<'a> {
            runtime: RuntimeKind,
            #[serde(flatten)]
            status: &'a ServiceStatus,
        }
        let kind = runtime.state().kind();
        let rows: Vec<Row> = statuses
            .iter()
            .map(|status| Row {
                runtime: kind,
                status,
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("status serializes")
        );
        return Ok(());
    }
    let dash = || "-".to_string();
    // The role and lag columns only when there is replication to speak of: the spec's own
    // setup keeps its table.
    let topology = !loaded.settings.topology.is_single();
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let mut row = vec![
                s.service.to_string(),
                match s.next_start_in_ms {
                    Some(ms) => format!("{} (next start in {:.1}s)", s.state, ms as f64 / 1000.0),
                    None => s.state.to_string(),
                },
                s.pid.map_or_else(dash, |p| p.to_string()),
                s.port.to_string(),
                s.uptime_secs.map_or_else(dash, uptime),
                s.version.clone().unwrap_or_else(dash),
                s.restarts.to_string(),
            ];
            if topology {
                row.push(s.role.clone().unwrap_or_else(dash));
                row.push(lag_text(s.lag_bytes, s.lag_ms));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "SERVICE", "STATE", "PID", "PORT", "UPTIME", "VERSION", "RESTARTS",
    ];
    if topology {
        headers.extend(["ROLE", "LAG"]);
    }
    print_table(&headers, &rows);
    for status in &statuses {
        if let Some(note) = &status.note {
            crate::say!("note: {}: {note}", status.service);
        }
    }
    if let Some(line) = super::backup::schedule_line(&loaded) {
        crate::say!("{line}");
    }
    Ok(())
}

/// A replica's lag as `ps` shows it: bytes, and time when PostgreSQL measures it.
fn lag_text(bytes: Option<u64>, ms: Option<u64>) -> String {
    match (bytes, ms) {
        (Some(bytes), Some(ms)) => format!("{bytes} B, {:.1} s", ms as f64 / 1000.0),
        (Some(bytes), None) => format!("{bytes} B"),
        (None, Some(ms)) => format!("{:.1} s", ms as f64 / 1000.0),
        (None, None) => "-".into(),
    }
}

/// What `nanika logs` was asked for.
pub struct LogsArgs {
    /// One service, or both.
    pub service: Option<Service>,
    /// Keep printing new lines.
    pub follow: bool,
    /// How many lines of each log first.
    pub tail: usize,
    /// One JSON record a line instead of the text.
    pub json: bool,
}

/// `nanika logs`.
pub fn logs(project_dir: Option<&PathBuf>, runtime_arg: RuntimeArg, args: LogsArgs) -> CliResult {
    let loaded = context::load_for_services(project_dir)?;
    let state = runtime_state(&loaded, runtime_arg)?;
    let services: Vec<Service> = args.service.map_or_else(
        || {
            Service::ALL
                .into_iter()
                .chain(Service::topology(&loaded.settings.topology))
                .collect()
        },
        |s| vec![s],
    );
    if args.json {
        return json_logs::run(state.as_ref(), &services, args.follow, args.tail);
    }
    for service in &services {
        for line in state.log_tail(*service, args.tail).map_err(runtime_error)? {
            print_log_line(*service, &line);
        }
    }
    if args.follow {
        state
            .follow_logs(&services, &print_log_line)
            .map_err(runtime_error)?;
    }
    Ok(())
}

fn print_log_line(service: Service, line: &str) {
    // A jsonlog record reads as PostgreSQL's own text lines would.
    if service.kind() == Service::Postgres
        && let Some(lines) = nanika_runtime::log_records::jsonlog_text(line)
    {
        for line in lines {
            print_text_line(service, &line);
        }
        return;
    }
    print_text_line(service, line);
}

fn print_text_line(service: Service, line: &str) {
    // A statement logged with a password (`log_statement`) shows it masked.
    let line = nanika_runtime::log_records::mask_passwords(line);
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let code = match service.kind() {
        Service::Postgres => "36",
        Service::Redis => "35",
        _ => "33",
    };
    if colour {
        crate::say!("\x1b[{code}m{:8}|\x1b[0m {line}", service.as_str());
    } else {
        crate::say!("{:8}| {line}", service.as_str());
    }
}
