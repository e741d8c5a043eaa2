//! `nanika up | down | restart | ps | logs`, on the native or the docker runtime.

use crate::cli::RuntimeArg;
use crate::context;
use crate::error::{CliError, CliResult};
use crate::output::print_table;
use crate::progress::Spinners;
use nanika_config::{LoadedProject, ValidProject};
use nanika_runtime::compose::{self, Compose, RuntimeChoice, RuntimeKind};
use nanika_runtime::native::control::{Native, NativeState, SupervisorCommand};
use nanika_runtime::{RuntimeError, Service, ServiceStatus};
use std::io::{IsTerminal, Read, Seek};
use std::path::PathBuf;
use std::time::Duration;

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
    let compose = Compose::new(root);
    let (kind, note) = compose::choose(choice(arg), recorded, || {
        starting && compose.available().is_ok()
    });
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    if kind == RuntimeKind::Docker {
        compose
            .available()
            .map_err(|why| runtime_error(RuntimeError::DockerUnavailable(why)))?;
    }
    Ok(kind)
}

fn supervisor_command(loaded: &LoadedProject) -> CliResult<SupervisorCommand> {
    let program = std::env::current_exe()
        .map_err(|e| CliError::failure("cannot find the nanika binary").caused_by(e))?;
    let root = loaded.project.root().display().to_string();
    Ok(SupervisorCommand {
        program,
        args: vec!["--project-dir".into(), root, "__supervise".into()],
    })
}

/// Compose for this checkout, once the containers the compose file names are known not to be
/// another checkout's.
fn own_compose(loaded: &LoadedProject) -> CliResult<Compose> {
    let compose = Compose::new(loaded.project.root());
    let names = [
        loaded.infra.compose.postgres.container_name.as_str(),
        loaded.infra.compose.redis.container_name.as_str(),
    ];
    compose.check_ownership(&names).map_err(runtime_error)?;
    Ok(compose)
}

fn native(valid: &ValidProject) -> CliResult<Native<'_>> {
    Native::new(valid, context::binary_search()).map_err(runtime_error)
}

fn native_state(loaded: &LoadedProject) -> CliResult<NativeState> {
    NativeState::new(loaded.project.root()).map_err(runtime_error)
}

/// The validated project, once each of `services` is proven to be this project's server,
/// running where the configuration says: what every command that reads or changes data starts
/// from ("identity before action").
pub fn target(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    services: &[Service],
) -> CliResult<ValidProject> {
    let valid = context::valid(project_dir)?;
    match runtime_for(&valid, runtime, false)? {
        RuntimeKind::Docker => {
            let compose = own_compose(&valid)?;
            for service in services {
                let port = match service {
                    Service::Postgres => valid.infra.env.postgres_port,
                    Service::Redis => valid.infra.env.redis_port,
                };
                compose.verify(*service, port).map_err(runtime_error)?;
            }
        }
        RuntimeKind::Native => {
            let native = native(&valid)?;
            for service in services {
                native.verify(*service).map_err(runtime_error)?;
            }
        }
    }
    Ok(valid)
}

/// `nanika up`.
pub fn up(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
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
    if runtime_for(&loaded, runtime, true)? == RuntimeKind::Docker {
        let compose = own_compose(&loaded)?;
        compose.run(&compose.up(&services)).map_err(runtime_error)?;
        compose::record_runtime(loaded.project.root(), RuntimeKind::Docker)
            .map_err(runtime_error)?;
        if attach {
            return compose
                .run(&compose.logs(true, Some(0), None))
                .map_err(runtime_error);
        }
        return Ok(());
    }
    let native = native(&loaded)?;
    let spinners = Spinners::new();
    let result = native.up(&services, &supervisor_command(&loaded)?, &spinners);
    spinners.finish();
    let report = result.map_err(runtime_error)?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let env = &loaded.infra.env;
    for service in report.started.iter().chain(&report.already_up) {
        let port = native.port(*service);
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
        return attach_logs(&native);
    }
    Ok(())
}

/// Follows both logs until Ctrl-C or SIGTERM, then stops everything.
fn attach_logs(native: &Native<'_>) -> CliResult {
    use nix::sys::signal::{SigSet, Signal};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block()
        .map_err(|e| CliError::failure(format!("cannot wait for Ctrl-C: {e}")))?;
    let paths: Vec<(Service, PathBuf)> = Service::ALL
        .iter()
        .map(|s| (*s, native.log_path(*s)))
        .collect();
    std::thread::spawn(move || follow(&paths, 0));
    let _ = mask.wait();
    eprintln!("stopping…");
    let spinners = Spinners::new();
    let result = native.state().down(&spinners);
    spinners.finish();
    result.map(|_| ()).map_err(runtime_error)
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
    runtime: RuntimeArg,
    volumes: bool,
    yes: bool,
) -> CliResult {
    let loaded = context::load_for_services(project_dir)?;
    if runtime_for(&loaded, runtime, false)? == RuntimeKind::Docker {
        if volumes {
            confirm(
                "delete the volumes postgres_data and redis_data with all their data?",
                yes,
            )?;
        }
        let compose = own_compose(&loaded)?;
        return compose.run(&compose.down(volumes)).map_err(runtime_error);
    }
    let native = native_state(&loaded)?;
    if volumes {
        let paths: Vec<String> = native
            .layout()
            .removable()
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if paths.is_empty() {
            let spinners = Spinners::new();
            let result = native.down(&spinners);
            spinners.finish();
            result.map_err(runtime_error)?;
            crate::say!("nothing to delete: the project has no state");
            return Ok(());
        }
        confirm(
            &format!(
                "delete all PostgreSQL and Redis data of this project ({})?",
                paths.join(", ")
            ),
            yes,
        )?;
        let spinners = Spinners::new();
        let result = native.remove_state(&spinners);
        spinners.finish();
        let removed = result.map_err(runtime_error)?;
        for note in &removed.notes {
            eprintln!("note: {note}");
        }
        for path in removed.paths {
            crate::say!("deleted {}", path.display());
        }
        return Ok(());
    }
    let spinners = Spinners::new();
    let result = native.down(&spinners);
    spinners.finish();
    for note in result.map_err(runtime_error)? {
        eprintln!("note: {note}");
    }
    Ok(())
}

/// `nanika restart`.
pub fn restart(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    services: Vec<Service>,
) -> CliResult {
    let loaded = context::valid(project_dir)?;
    if runtime_for(&loaded, runtime, false)? == RuntimeKind::Docker {
        let compose = own_compose(&loaded)?;
        return compose
            .run(&compose.restart(&services))
            .map_err(runtime_error);
    }
    let native = native(&loaded)?;
    let spinners = Spinners::new();
    let result = native.restart(&services, &supervisor_command(&loaded)?, &spinners);
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
pub fn ps(project_dir: Option<&PathBuf>, runtime: RuntimeArg, json: bool) -> CliResult {
    let loaded = context::valid(project_dir)?;
    if runtime_for(&loaded, runtime, false)? == RuntimeKind::Docker {
        let compose = own_compose(&loaded)?;
        return compose.run(&compose.ps()).map_err(runtime_error);
    }
    let statuses: Vec<ServiceStatus> = native(&loaded)?.status();
    if json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&statuses).expect("status serializes")
        );
        return Ok(());
    }
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            vec![
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
            ]
        })
        .collect();
    print_table(
        &[
            "SERVICE", "STATE", "PID", "PORT", "UPTIME", "VERSION", "RESTARTS",
        ],
        &rows,
    );
    for status in &statuses {
        if let Some(note) = &status.note {
            crate::say!("note: {}: {note}", status.service);
        }
    }
    Ok(())
}

/// `nanika logs`.
pub fn logs(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    service: Option<Service>,
    follow_logs: bool,
    tail: usize,
) -> CliResult {
    let loaded = context::load_for_services(project_dir)?;
    if runtime_for(&loaded, runtime, false)? == RuntimeKind::Docker {
        let compose = own_compose(&loaded)?;
        return compose
            .run(&compose.logs(follow_logs, Some(tail), service))
            .map_err(runtime_error);
    }
    let state = native_state(&loaded)?;
    let services: Vec<Service> = service.map_or_else(|| Service::ALL.to_vec(), |s| vec![s]);
    let paths: Vec<(Service, PathBuf)> = services
        .iter()
        .map(|s| (*s, state.layout().log(s.as_str())))
        .collect();
    for (service, path) in &paths {
        for line in nanika_runtime::native::logs::tail(path, tail) {
            print_log_line(*service, &line);
        }
    }
    if follow_logs {
        follow(&paths, usize::MAX);
    }
    Ok(())
}

fn print_log_line(service: Service, line: &str) {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let code = match service {
        Service::Postgres => "36",
        Service::Redis => "35",
    };
    if colour {
        crate::say!("\x1b[{code}m{:8}|\x1b[0m {line}", service.as_str());
    } else {
        crate::say!("{:8}| {line}", service.as_str());
    }
}

/// Prints lines as they are added to the logs, following rotations; never returns.
fn follow(paths: &[(Service, PathBuf)], _limit: usize) {
    let mut offsets: Vec<u64> = paths
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let mut partial: Vec<String> = vec![String::new(); paths.len()];
    loop {
        for (i, (service, path)) in paths.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(path) else {
                continue;
            };
            let len = file.metadata().map_or(0, |m| m.len());
            if len < offsets[i] {
                offsets[i] = 0; // rotated
            }
            if len == offsets[i] || file.seek(std::io::SeekFrom::Start(offsets[i])).is_err() {
                continue;
            }
            let mut chunk = String::new();
            if let Ok(n) = (&mut file)
                .take(len - offsets[i])
                .read_to_string(&mut chunk)
            {
                offsets[i] += n as u64;
                partial[i].push_str(&chunk);
                while let Some(end) = partial[i].find('\n') {
                    let line: String = partial[i].drain(..=end).collect();
                    print_log_line(*service, line.trim_end_matches('\n'));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
