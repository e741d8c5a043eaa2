//! What the commands call: `up`, `down`, `status`, `restart` for the native runtime.
//!
//! Every call that changes anything holds `.nanika/run/up.lock`, so two `nanika up` (or an `up`
//! and a `down`) never interleave: the second waits for the first, then finds the services up.

use super::binaries::{self, BinarySearch, PostgresBinaries, RedisBinaries};
use super::cluster_cache::ClusterCache;
use super::layout::{ServerUser, StateLayout};
use super::ownership;
use super::postgres::{self, DataDir};
use super::recovery::{self, Then};
use super::shutdown;
use super::supervisor::{self, Plan, ServicePlan, Status};
use super::{backup_schedule, backups, jsonlog, logs, procfs, redis, safe_fs};
use crate::error::{Result, RuntimeError};
use crate::health::{PostgresTarget, ProbeError, Prober};
use crate::{Progress, Service, ServiceState};
use fs_err as fs;
use nanika_config::project::{POSTGRES_CONF, REDIS_CONF};
use nanika_config::{LoadedProject, ValidProject};
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod identity;
mod monitoring;
mod status;
mod topology;
pub use monitoring::{AlertReport, PrometheusReport, TargetReport, http_ok};
pub use topology::{
    ClusterState, NodeRole, PostgresFailover, REPLICATION_ROLE, RedisFailover, SENTINEL_MASTER,
    SlotReport, application_name, data_dir_name, slot_name,
};

/// How long `up` waits for a service to answer before giving up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `restart` waits for the old servers to go.
const DOWN_TIMEOUT: Duration = Duration::from_secs(75);
/// The longest `down` takes, whatever the processes do: the supervisor's ladder (its servers'
/// ladders run inside it, in parallel), then — when the supervisor itself had to be killed —
/// its orphaned servers' ladders, in parallel, and a margin for the checks around them.
pub const DOWN_BOUND: Duration = Duration::from_secs(
    shutdown::SUPERVISOR.bound().as_secs() + shutdown::POSTGRES.bound().as_secs() + 1,
);
/// How many log lines a start failure shows.
pub const LOG_TAIL_LINES: usize = 15;

/// How to start the supervisor process: the `nanika` binary and the arguments that make it one.
#[derive(Debug, Clone)]
pub struct SupervisorCommand {
    /// The program (the running `nanika`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The arguments that make `program` refill the cluster cache's spare copy, which a cold
    /// `up` starts in the background once it took the spare (see `ClusterCache::refill_spare`).
    pub refill_args: Vec<String>,
}

/// The native runtime of one validated project: starting, checking and proving its servers.
pub struct Native<'a> {
    loaded: &'a LoadedProject,
    state: NativeState,
    search: BinarySearch,
    cache: Option<ClusterCache>,
}

/// What the native runtime can do from the project's state alone, whatever its configuration
/// says: stop what this project started, and remove its state. `down` works through this even
/// when the configuration has errors.
pub struct NativeState {
    layout: StateLayout,
    postgres_log: nanika_config::settings::PostgresLog,
}

/// What `down --volumes` did.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// Remarks for the user (servers found without their state, stops that needed more than
    /// the graceful signal).
    pub notes: Vec<String>,
    /// The directories it deleted.
    pub paths: Vec<PathBuf>,
}

/// The result of `up`.
#[derive(Debug, Clone, Default)]
pub struct UpReport {
    /// Services that were started by this call.
    pub started: Vec<Service>,
    /// Services that were already healthy.
    pub already_up: Vec<Service>,
    /// Remarks for the user (stale files cleaned, servers adopted...).
    pub notes: Vec<String>,
    /// Whether this call made the cluster from the cluster cache (which then wants a new spare).
    pub copied_from_cache: bool,
}

/// 32 random hex characters from the kernel's generator.
fn random_password() -> Result<nanika_config::Secret> {
    Ok(nanika_config::Secret::new(safe_fs::random_hex(16)?))
}

/// Writes a secret to a new owner-only file.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    fs_err::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(RuntimeError::io(format!("cannot write {}", path.display())))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(RuntimeError::io(format!("cannot write {}", path.display())))
}

/// An exclusive lock held for the duration of a command.
struct CommandLock(#[allow(dead_code)] fs::File);

impl NativeState {
    /// The state of the project at `root`.
    pub fn new(root: &std::path::Path) -> Result<Self> {
        let layout = StateLayout::new(root, ServerUser::for_current_process()?);
        // Before anything reads, signals or writes through the state: a link nanika did not make
        // there is refused, whatever the command.
        layout.verify()?;
        Ok(NativeState {
            layout,
            postgres_log: Default::default(),
        })
    }

    /// This state, reading PostgreSQL's log from where `mode` (`[logging] postgres` in
    /// `nanika.toml`) has it written.
    pub fn with_postgres_log(mut self, mode: nanika_config::settings::PostgresLog) -> Self {
        self.postgres_log = mode;
        self
    }

    /// Where PostgreSQL's log is read from.
    pub fn postgres_log(&self) -> nanika_config::settings::PostgresLog {
        self.postgres_log
    }

    /// Where the state lives.
    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    fn lock(&self, progress: &dyn Progress) -> Result<CommandLock> {
        self.layout.create_state_dirs()?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.layout.run.join("up.lock"))
            .map_err(RuntimeError::io("cannot open the command lock"))?;
        if file.file().try_lock().is_err() {
            progress.note("another nanika command is starting or stopping this project; waiting for it to finish");
            file.file()
                .lock()
                .map_err(RuntimeError::io("cannot take the command lock"))?;
        }
        Ok(CommandLock(file))
    }

    fn spawn_supervisor(&self, command: &SupervisorCommand) -> Result<std::process::Child> {
        let log_path = self.layout.log("supervisor");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(RuntimeError::io("cannot open the supervisor log"))?;
        let err = log
            .file()
            .try_clone()
            .map_err(RuntimeError::io("cannot open the supervisor log"))?;
        Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(log.into_file())
            .stderr(err)
            .spawn()
            .map_err(RuntimeError::io(format!(
                "cannot start the supervisor ({})",
                command.program.display()
            )))
    }

    fn signal_supervisor(&self, signal: Signal) -> Result<()> {
        let (record, _) = recovery::supervisor_record(&self.layout)?;
        record
            .signal(signal)
            .map_err(|e| recovery::signal_error(format!("the supervisor (pid {})", record.pid), e))
    }

    fn read_status(&self) -> Option<Status> {
        recovery::read_status(&self.layout)
    }

    /// Stops everything, each process on its ladder (graceful, then forced, then SIGKILL),
    /// within [`DOWN_BOUND`]; nothing nanika started outlives it. Returns remarks for the user.
    pub fn down(&self, progress: &dyn Progress) -> Result<Vec<String>> {
        let _lock = self.lock(progress)?;
        self.stop_everything(progress)
    }

    fn stop_everything(&self, progress: &dyn Progress) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        // Every node the supervisor runs, the topology's included.
        let services: Vec<Service> =
            supervisor::read_json::<Plan>(&supervisor::plan_file(&self.layout))
                .map(|plan| plan.services.keys().copied().collect())
                .filter(|s: &Vec<Service>| !s.is_empty())
                .unwrap_or_else(|| Service::ALL.to_vec());
        if supervisor::is_running(&self.layout) {
            for service in &services {
                progress.step(*service, "stopping");
            }
            notes.extend(recovery::stop_supervisor(&self.layout)?);
        }
        notes.extend(recovery::stop_unsupervised(
            &self.layout,
            Then::StayStopped,
        )?);
        let _ = fs::remove_file(supervisor::plan_file(&self.layout));
        for service in &services {
            progress.step(*service, "stopped");
        }
        Ok(notes)
    }

    /// Removes the project's state (`down --volumes`, after the caller confirmed): `.nanika/`
    /// and, if PostgreSQL's state is external, that directory. Stops everything first, and
    /// deletes nothing while any process of this project still runs (it names them instead).
    pub fn remove_state(&self, progress: &dyn Progress) -> Result<Removed> {
        let _lock = self.lock(progress)?;
        let notes = self
            .stop_everything(progress)
            .map_err(|error| match error {
                RuntimeError::StillRunning { processes, details } => {
                    RuntimeError::InUse { processes, details }
                }
                error => error,
            })?;
        // Looked for once more right before deleting, from the processes themselves.
        let left = ownership::discover(&self.layout);
        if !left.is_empty() {
            return Err(RuntimeError::InUse {
                processes: left.describe(),
                details: Vec::new(),
            });
        }
        let mut paths = Vec::new();
        for path in self.layout.removable() {
            if safe_fs::remove_tree(&path)? {
                paths.push(path);
            }
        }
        Ok(Removed { notes, paths })
    }
}

impl<'a> Native<'a> {
    /// The native runtime for `valid`, finding binaries through `search`; a new cluster is a
    /// copy of `cache`'s pristine one, or made by its own `initdb` when there is no cache.
    pub fn new(
        valid: &'a ValidProject,
        search: BinarySearch,
        cache: Option<ClusterCache>,
    ) -> Result<Self> {
        let loaded: &'a LoadedProject = valid;
        Ok(Native {
            state: NativeState::new(loaded.project.root())?
                .with_postgres_log(loaded.settings.logging.postgres),
            loaded,
            search,
            cache,
        })
    }

    /// What can be done from the state alone (`down`, removing the state).
    pub fn state(&self) -> &NativeState {
        &self.state
    }

    /// Where the state lives.
    pub fn layout(&self) -> &StateLayout {
        &self.state.layout
    }

    /// The host port the configuration gives `service`.
    pub fn port(&self, service: Service) -> u16 {
        match service {
            Service::Postgres => self.loaded.infra.env.postgres_port,
            Service::Redis => self.loaded.infra.env.redis_port,
            monitor if monitor.is_monitor() => self.monitor_port(monitor),
            node => self.topology_port(node),
        }
    }

    /// The log file of `service`.
    pub fn log_path(&self, service: Service) -> PathBuf {
        self.state.layout.log(service.as_str())
    }

    fn postgres_target(&self) -> PostgresTarget {
        let env = &self.loaded.infra.env;
        PostgresTarget {
            host: "127.0.0.1".into(),
            port: env.postgres_port,
            user: env.postgres_user.clone(),
            password: env.postgres_password.clone(),
            database: env.postgres_db.clone(),
        }
    }

    /// The cluster's superuser on the app database, when this cluster has nanika's own.
    fn admin_target(&self) -> Option<PostgresTarget> {
        let password = self.state.layout.postgres_admin_password()?;
        Some(PostgresTarget {
            user: postgres::ADMIN_ROLE.into(),
            password,
            ..self.postgres_target()
        })
    }

    /// Makes the cluster cache's spare copy for this project's PostgreSQL and server user when
    /// it has none (`nanika __refill-cache`). Returns whether it made one.
    pub fn refill_cache(&self) -> Result<bool> {
        let Some(cache) = &self.cache else {
            return Ok(false);
        };
        let bins = binaries::find_postgres(&self.search)?;
        cache.refill_spare(&bins, self.state.layout.server_user.as_ref())
    }

    /// Starts `nanika __refill-cache` in the background, in a process group of its own (a
    /// Ctrl-C in the terminal after `up` is not for it), and does not wait: the user never waits
    /// for the next project's copy. Best effort: without a spare, the next cold `up` copies.
    pub fn start_cache_refill(&self, command: &SupervisorCommand) {
        let _ = Command::new(&command.program)
            .args(&command.refill_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    /// Starts `services` (all when empty) and returns once each answers a real query.
    pub fn up(
        &self,
        services: &[Service],
        supervisor_command: &SupervisorCommand,
        progress: &dyn Progress,
    ) -> Result<UpReport> {
        let wanted: Vec<Service> = if services.is_empty() {
            Service::ALL
                .into_iter()
                .chain(self.topology_nodes())
                .chain(self.monitoring_nodes())
                .collect()
        } else {
            services.to_vec()
        };
        let _lock = self.state.lock(progress)?;
        let mut report = UpReport::default();
        // A node an interrupted failover left to be rewound stays down: started as it is it
        // would be a second primary. Everything else starts, so the failover can be finished.
        let (waiting, wanted): (Vec<Service>, Vec<Service>) = wanted.into_iter().partition(|s| {
            s.kind() == Service::Postgres
                && self.has_postgres_replicas()
                && matches!(self.awaiting_rejoin(*s), Ok(true))
        });
        for node in &waiting {
            report.notes.push(format!(
                "{node} stays stopped: it was the primary when a failover began and must be rewound first; `nanika failover postgres` finishes the failover"
            ));
        }
        // Each search runs the server's `--version` (~20 ms for postgres, which loads many
        // libraries): the two run side by side.
        let (pg_bins, redis_bins) = std::thread::scope(|scope| {
            let pg = scope.spawn(|| {
                wanted
                    .iter()
                    .any(|s| s.kind() == Service::Postgres)
                    .then(|| binaries::find_postgres(&self.search))
                    .transpose()
            });
            let redis = wanted
                .iter()
                .any(|s| s.kind() == Service::Redis)
                .then(|| binaries::find_redis(&self.search))
                .transpose();
            (pg.join().expect("the binary search does not panic"), redis)
        });
        let (pg_bins, redis_bins) = (pg_bins?, redis_bins?);

        let supervised = supervisor::is_running(&self.state.layout);
        let mut plan: Plan = if supervised {
            supervisor::read_json(&supervisor::plan_file(&self.state.layout)).unwrap_or_default()
        } else {
            Plan::default()
        };
        if !supervised {
            report.notes.extend(recovery::stop_unsupervised(
                &self.state.layout,
                Then::StartAgain,
            )?);
        }
        // A server already running on another port than the configuration now names: say so
        // rather than probe the configured port, where another project's server may answer.
        for service in &wanted {
            if let Some(planned) = plan.services.get(service)
                && planned.port != 0
                && planned.port != self.port(*service)
            {
                return Err(RuntimeError::PortMoved {
                    service: *service,
                    running: planned.port,
                    configured: self.port(*service),
                });
            }
        }
        // Nodes the supervisor runs that `nanika.toml` no longer asks for stop with this `up`
        // (their data stays until `down --volumes`).
        let retired: Vec<Service> = if services.is_empty() {
            plan.services
                .keys()
                .copied()
                .filter(|s| !s.is_primary_service() && !wanted.contains(s))
                .collect()
        } else {
            Vec::new()
        };
        // Never the node that holds the newest data: a PostgreSQL node without standby.signal
        // (running or not), or Sentinel mode's replica once it is the master.
        if let Some(primary) = retired.iter().copied().find(|node| match node.kind() {
            Service::Postgres => self.is_postgres_primary_by_data(*node),
            // Sentinel mode's replica may be the app's master now; a cluster node is data of
            // the cluster alone, retired with it.
            _ if !matches!(node, Service::RedisReplica(_)) => false,
            _ => plan
                .services
                .get(node)
                .is_some_and(|p| self.is_redis_master_on(p.port)),
        }) {
            let how = if primary.kind() == Service::Postgres {
                "`nanika failover postgres --to postgres`"
            } else {
                "`nanika failover redis`"
            };
            return Err(RuntimeError::Other(format!(
                "{primary} holds the newest data (it is the primary or master now), and nanika.toml no longer asks for it; nothing was done. Make a node you keep take over first: {how}"
            )));
        }
        for node in &retired {
            plan.services.remove(node);
            report.notes.push(format!(
                "stopped {node}: nanika.toml no longer asks for it (its data stays in .nanika until `nanika down --volumes`)"
            ));
        }
        // A changed `[logging] postgres` takes effect with this `up`, never silently later: the
        // running server gets the new command line, which the supervisor restarts it with.
        let mode = self.loaded.settings.logging.postgres;
        let relogged = wanted.contains(&Service::Postgres)
            && plan
                .services
                .get(&Service::Postgres)
                .is_some_and(|entry| jsonlog::mode_of(&entry.args) != mode);
        let relogged_pid = if relogged {
            if mode == nanika_config::settings::PostgresLog::Jsonlog {
                jsonlog::install(&self.state.layout)?;
            }
            if let Some(entry) = plan.services.get_mut(&Service::Postgres) {
                jsonlog::apply(&mut entry.args, &self.state.layout, mode);
            }
            report.notes.push(format!(
                "restarted postgres: [logging] postgres in nanika.toml is now \"{}\"",
                mode.as_str()
            ));
            self.state
                .read_status()
                .and_then(|s| s.services.get(&Service::Postgres).and_then(|r| r.pid))
        } else {
            None
        };
        let to_start: Vec<Service> = wanted
            .iter()
            .copied()
            .filter(|s| !plan.services.contains_key(s))
            .collect();
        for service in &to_start {
            // A cluster node also binds its port + 10000, the cluster bus.
            let bus = matches!(service, Service::ClusterNode(_))
                .then(|| {
                    self.port(*service)
                        .checked_add(nanika_config::validate::CLUSTER_BUS_OFFSET)
                })
                .flatten();
            for port in std::iter::once(self.port(*service)).chain(bus) {
                if !procfs::port_is_free(port) {
                    return Err(RuntimeError::PortInUse {
                        service: *service,
                        port,
                        holder: procfs::PortUser::of(port),
                        ephemeral: procfs::ephemeral_ports().filter(|range| range.contains(port)),
                    });
                }
            }
        }
        self.state.layout.create()?;
        // The monitoring stack last: it watches everything else.
        let (monitors_to_start, to_start): (Vec<Service>, Vec<Service>) =
            to_start.into_iter().partition(|s| s.is_monitor());
        let (monitors_wanted, wanted): (Vec<Service>, Vec<Service>) =
            wanted.into_iter().partition(|s| s.is_monitor());
        // The spec's servers first: the topology's nodes are copied from them or watch them.
        let (nodes_to_start, to_start): (Vec<Service>, Vec<Service>) =
            to_start.into_iter().partition(|s| !s.is_primary_service());
        let (nodes_wanted, wanted): (Vec<Service>, Vec<Service>) =
            wanted.into_iter().partition(|s| !s.is_primary_service());
        for service in &to_start {
            let service_plan = match service {
                Service::Postgres => self.prepare_postgres(
                    pg_bins.as_ref().expect("found above"),
                    progress,
                    &mut report,
                )?,
                _ => self.prepare_redis(redis_bins.as_ref().expect("found above"))?,
            };
            plan.services.insert(*service, service_plan);
        }
        report.already_up = wanted
            .iter()
            .copied()
            .filter(|s| !to_start.contains(s))
            .collect();
        report.started = to_start.clone();

        let backups = self.backup_plan()?;
        let metrics_port = self
            .loaded
            .settings
            .monitoring
            .backup_metrics(&self.loaded.settings.backups);
        if let Some(port) = metrics_port
            && plan.backup_metrics_port != Some(port)
            && !procfs::port_is_free(port)
        {
            let by = match procfs::PortUser::of(port) {
                procfs::PortUser::Program(program) => format!(" by {program}"),
                procfs::PortUser::TimeWait(time_wait) => format!(" by {time_wait}"),
                procfs::PortUser::Unknown => String::new(),
            };
            return Err(RuntimeError::Other(format!(
                "port {port} ([monitoring] backup_metrics_port in nanika.toml), where nanika is to serve the backup metrics, is in use{by}; nothing was started"
            )));
        }
        let schedule_changed = plan.backups != backups || plan.backup_metrics_port != metrics_port;
        plan.backups = backups;
        plan.backup_metrics_port = metrics_port;
        let mut spawned = None;
        if !to_start.is_empty()
            || !retired.is_empty()
            || relogged
            || (supervised && schedule_changed)
        {
            supervisor::write_json(&supervisor::plan_file(&self.state.layout), &plan)?;
            if supervised {
                self.state.signal_supervisor(Signal::SIGHUP)?;
            } else {
                spawned = Some(self.state.spawn_supervisor(supervisor_command)?);
            }
        }
        for service in &wanted {
            progress.step(
                *service,
                if to_start.contains(service) {
                    "starting"
                } else if relogged && *service == Service::Postgres {
                    "restarting (its log destination changed)"
                } else {
                    "checking"
                },
            );
        }
        // The supervisor restarts it asynchronously: the old server must be gone before the
        // health check, or it would answer for the new one.
        if let Some(pid) = relogged_pid {
            self.wait_replaced(Service::Postgres, pid)?;
        }
        let waited = self.wait_healthy(&wanted, spawned.as_mut(), progress);
        if let Err(error) = waited {
            // Leave nothing half-running: undo what this call started.
            if spawned.is_some() {
                let _ = recovery::stop_supervisor(&self.state.layout);
            } else if !to_start.is_empty() {
                plan.services.retain(|s, _| !to_start.contains(s));
                let _ = supervisor::write_json(&supervisor::plan_file(&self.state.layout), &plan);
                let _ = self.state.signal_supervisor(Signal::SIGHUP);
            }
            return Err(error);
        }
        if !retired.is_empty() {
            report.notes.extend(self.drop_retired_slots());
        }
        if !nodes_wanted.is_empty() {
            self.up_topology(
                &nodes_wanted,
                &nodes_to_start,
                &mut plan,
                (pg_bins.as_ref(), redis_bins.as_ref()),
                progress,
            )?;
            report.already_up.extend(
                nodes_wanted
                    .iter()
                    .copied()
                    .filter(|s| !nodes_to_start.contains(s)),
            );
            report.started.extend(nodes_to_start);
        }
        if !monitors_wanted.is_empty() {
            report.notes.extend(self.up_monitoring(
                &monitors_wanted,
                &monitors_to_start,
                &mut plan,
                progress,
            )?);
            report.already_up.extend(
                monitors_wanted
                    .iter()
                    .copied()
                    .filter(|s| !monitors_to_start.contains(s)),
            );
            report.started.extend(monitors_to_start);
        }
        crate::compose::record_runtime(
            &self.state.layout.project,
            crate::compose::RuntimeKind::Native,
        )?;
        Ok(report)
    }

    fn prepare_postgres(
        &self,
        bins: &PostgresBinaries,
        progress: &dyn Progress,
        report: &mut UpReport,
    ) -> Result<ServicePlan> {
        if self.has_postgres_replicas() {
            self.refuse_if_awaiting_rejoin(Service::Postgres)?;
        }
        if postgres::check_data_dir(&self.state.layout)? == DataDir::Missing {
            let env = &self.loaded.infra.env;
            let password = if env.postgres_user == postgres::ADMIN_ROLE {
                // The app asked to be the superuser itself: one role, as the postgres image does.
                let _ = fs::remove_file(self.state.layout.postgres_admin_password_file());
                env.postgres_password.clone()
            } else {
                let password = random_password()?;
                let file = self.state.layout.postgres_admin_password_file();
                write_private(&file, password.expose())?;
                password
            };
            // Either way the superuser is `postgres`, the one role the cached cluster has.
            let notes = match &self.cache {
                Some(cache) => {
                    report.copied_from_cache = true;
                    postgres::init_from_cache(
                        bins,
                        &self.state.layout,
                        cache,
                        &password,
                        &self.postgres_target(),
                        progress,
                    )?
                }
                None => {
                    progress.step(Service::Postgres, "initialising the cluster (initdb)");
                    postgres::initdb(bins, &self.state.layout, postgres::ADMIN_ROLE, &password)?
                }
            };
            report.notes.extend(notes);
        }
        if let Some(holder) = postgres::clear_foreign_lock(&self.state.layout) {
            report.notes.push(format!(
                "removed a stale postmaster.pid that named {holder}, which is not PostgreSQL"
            ));
        }
        let port = self.port(Service::Postgres);
        self.install_postgres_config(port)?;
        let (program, mut args) = postgres::server_args(bins, &self.state.layout, port);
        let mode = self.loaded.settings.logging.postgres;
        if mode == nanika_config::settings::PostgresLog::Jsonlog {
            jsonlog::install(&self.state.layout)?;
        }
        jsonlog::apply(&mut args, &self.state.layout, mode);
        if self.has_postgres_replicas() {
            // What the replicas and `synchronous_standby_names` call this node.
            args.extend([
                "-c".into(),
                format!("cluster_name={}", application_name(Service::Postgres)),
            ]);
        }
        Ok(ServicePlan {
            program,
            args,
            cwd: self.state.layout.postgres_home.clone(),
            run_as: self
                .state
                .layout
                .server_user
                .as_ref()
                .map(|u| (u.uid, u.gid)),
            log: self.log_path(Service::Postgres),
            generation: 0,
            version: Some(bins.version.clone()),
            port,
            restart_hold_ms: 0,
            env: Default::default(),
            clear_env: false,
        })
    }

    /// PostgreSQL's own copy of the committed `postgresql.conf`, plus, when `nanika.toml` turns
    /// backups on, pgBackRest's directories and config and the archive settings.
    fn install_postgres_config(&self, port: u16) -> Result<()> {
        let layout = &self.state.layout;
        let backups = &self.loaded.settings.backups;
        let mut extra = if backups.enabled {
            let pgbackrest = binaries::find_pgbackrest(&self.search)?;
            backups::install(layout, backups, port)?;
            backups::archive_settings(layout, &pgbackrest)
        } else {
            String::new()
        };
        extra += &self.replication_settings()?;
        postgres::install_config(&self.loaded.project.path(POSTGRES_CONF), layout, &extra)
    }

    /// The supervisor's backup schedule when `nanika.toml` asks for one, with the superuser's
    /// password written owner-only for its pgBackRest connections.
    fn backup_plan(&self) -> Result<Option<backup_schedule::BackupPlan>> {
        let settings = &self.loaded.settings.backups;
        if !settings.enabled || !settings.schedule {
            return Ok(None);
        }
        let layout = &self.state.layout;
        let password = layout
            .postgres_admin_password()
            .unwrap_or_else(|| self.loaded.infra.env.postgres_password.clone());
        layout.open_run()?.replace_file(
            "pgbackrest.password",
            password.expose().as_bytes(),
            0o600,
        )?;
        let program = binaries::find_pgbackrest(&self.search)?;
        Ok(backup_schedule::plan(layout, program, settings))
    }

    /// Redis's own copy of the committed `redis.conf`, with the password `.env` gives it.
    fn install_redis_config(&self) -> Result<()> {
        redis::install_config(
            &self.state.layout,
            &self.loaded.project.path(REDIS_CONF),
            self.loaded.infra.redis_password(),
            self.loaded.infra.redis.requirepass.is_some(),
            &(self.redis_topology_settings() + &self.redis_monitor_acl()?),
        )
    }

    fn prepare_redis(&self, bins: &RedisBinaries) -> Result<ServicePlan> {
        let stale = redis::pid_file(&self.state.layout);
        if stale.exists() && redis::running(&self.state.layout).is_none() {
            let _ = fs::remove_file(&stale);
        }
        self.install_redis_config()?;
        let (program, args) =
            redis::server_args(bins, &self.state.layout, self.port(Service::Redis));
        Ok(ServicePlan {
            program,
            args,
            cwd: self.state.layout.redis_dir.clone(),
            run_as: self
                .state
                .layout
                .redis_user
                .as_ref()
                .map(|u| (u.uid, u.gid)),
            log: self.log_path(Service::Redis),
            generation: 0,
            version: Some(bins.version.clone()),
            port: self.port(Service::Redis),
            // In Sentinel mode the master is a data node like the replica: left to Sentinel.
            restart_hold_ms: if self.redis_mode() == nanika_config::settings::RedisMode::Sentinel {
                let redis = &self.loaded.settings.topology.redis;
                u64::from(redis.down_after_ms) * 2 + u64::from(redis.failover_timeout_ms)
            } else {
                0
            },
            env: Default::default(),
            clear_env: false,
        })
    }

    /// One real query to `service` as the app. It creates nothing: `up` makes sure of the app
    /// database before its first probe, and `ps` must not change anything.
    /// A PostgreSQL answer counts only when the server carries this project's marker.
    fn probe(
        &self,
        prober: &Prober,
        service: Service,
        port: u16,
    ) -> std::result::Result<(), ProbeError> {
        let timeout = Duration::from_secs(2);
        match service {
            monitor if monitor.is_monitor() => {
                if self.monitor_answers(monitor, port) {
                    Ok(())
                } else {
                    Err(ProbeError::Starting)
                }
            }
            _ if service.kind() == Service::Postgres => {
                let target = PostgresTarget {
                    port,
                    ..self.postgres_target()
                };
                self.ours(prober.postgres(&target, timeout)?)
            }
            _ => crate::health::redis_ping(port, self.loaded.infra.redis_password(), timeout),
        }
    }

    /// Whether `service` has bound `port`, read from what the server itself writes. nanika
    /// connects to a port only after that: inside the kernel's ephemeral range, a connect to a
    /// port nobody has bound can connect to itself and leave a TIME-WAIT on the port that keeps
    /// the server from binding it for a minute.
    fn bound(&self, service: Service, port: u16) -> bool {
        match service {
            Service::Postgres => postgres::accepting(self.layout(), port),
            Service::Redis => redis::listening(self.layout()),
            Service::PostgresReplica(_) => {
                postgres::accepting_in(self.layout(), &data_dir_name(service), port)
            }
            // The listener must be the process the supervisor started: a program that took the
            // port while the service was down would answer its HTTP check as well.
            monitor if monitor.is_monitor() => self
                .state
                .read_status()
                .and_then(|status| status.services.get(&monitor)?.pid)
                .is_some_and(|pid| procfs::listens_on(pid, port)),
            node => self.redis_node_listening(node),
        }
    }

    /// Whether a PostgreSQL marker is this project's.
    fn ours(&self, marker: Option<String>) -> std::result::Result<(), ProbeError> {
        if marker.as_deref() == Some(postgres::project_marker(self.layout()).as_str()) {
            Ok(())
        } else {
            Err(ProbeError::Foreign(marker))
        }
    }

    /// Whether a service answers, for `ps`: PostgreSQL through nanika's superuser when there is
    /// one, so that a server whose app connections are exhausted still shows as healthy.
    fn status_probe(&self, prober: &Prober, service: Service, port: u16) -> bool {
        match (service.kind(), self.admin_target()) {
            (Service::Postgres, Some(admin)) => prober
                .postgres(&PostgresTarget { port, ..admin }, Duration::from_secs(2))
                .is_ok_and(|marker| self.ours(marker).is_ok()),
            _ => self.probe(prober, service, port).is_ok(),
        }
    }

    fn wait_healthy(
        &self,
        services: &[Service],
        mut spawned: Option<&mut std::process::Child>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<Service> = services.to_vec();
        let mut pause = Duration::from_millis(5);
        let restarts_before: std::collections::BTreeMap<Service, u32> = self
            .state
            .read_status()
            .map(|s| s.services.iter().map(|(k, r)| (*k, r.restarts)).collect())
            .unwrap_or_default();
        // The app database is made sure of first, through the `postgres` database: probing a
        // database that does not exist yet would write a FATAL line into the server's log.
        let mut database_checked = false;
        while !pending.is_empty() {
            let mut still = Vec::new();
            // No TCP connect to any of them until every one has bound its port: inside the
            // ephemeral range, a PING to a Redis that is up can take as its source port the
            // port PostgreSQL is about to bind, and PostgreSQL then fails with "Address
            // already in use".
            let all_bound = pending.iter().all(|s| self.bound(*s, self.port(*s)));
            for service in pending {
                if !all_bound {
                    still.push(service);
                    continue;
                }
                let answer = if service == Service::Postgres && !database_checked {
                    let timeout = Duration::from_secs(2);
                    let prepared = match self.admin_target() {
                        Some(admin) => prober.bootstrap(&admin, &self.postgres_target(), timeout),
                        None => prober
                            .ensure_database(&self.postgres_target(), timeout)
                            .map(|_| ()),
                    };
                    prepared
                        .map(|()| database_checked = true)
                        .and_then(|()| self.probe(&prober, service, self.port(service)))
                } else {
                    self.probe(&prober, service, self.port(service))
                };
                match answer {
                    Ok(()) => progress.step(service, "healthy"),
                    Err(ProbeError::Auth) => {
                        return Err(self.start_failed(service, "this project's server refused the password in the configuration: the role's password was set when the cluster was created, and POSTGRES_PASSWORD has changed since. Put the old password back, or change the role's with ALTER ROLE as the cluster's superuser (its password is in .nanika/run/postgres-admin.password)".into()));
                    }
                    Err(ProbeError::Refused(why)) => {
                        return Err(self.start_failed(
                            service,
                            format!(
                                "the server refused to set up the app's role or database: {why}"
                            ),
                        ));
                    }
                    Err(ProbeError::Foreign(whose)) => {
                        let port = self.port(service);
                        let whose = whose
                            .map(|w| format!(" (the nanika project at {w})"))
                            .unwrap_or_default();
                        return Err(self.start_failed(service, format!("the server answering on port {port} is not the one this command started{whose}")));
                    }
                    Err(_) => still.push(service),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if let Some(child) = spawned.as_deref_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let tail = logs::tail(&self.state.layout.log("supervisor"), LOG_TAIL_LINES);
                return Err(RuntimeError::StartFailed {
                    service: pending[0],
                    reason: format!("the supervisor exited ({status})"),
                    log: self.state.layout.log("supervisor"),
                    log_tail: tail,
                });
            }
            // A server that keeps dying while starting will not get healthy by waiting.
            if let Some(status) = self.state.read_status() {
                let restarts: u32 = status.services.values().map(|r| r.restarts).sum();
                if restarts >= restarts_before.values().sum::<u32>() + 3 {
                    // The one that keeps dying, not merely the first still waited for.
                    let service = status
                        .services
                        .iter()
                        .filter(|(s, _)| pending.contains(s))
                        .max_by_key(|(s, r)| {
                            r.restarts
                                .saturating_sub(restarts_before.get(*s).copied().unwrap_or(0))
                        })
                        .map_or(pending[0], |(s, _)| *s);
                    let how = status
                        .services
                        .get(&service)
                        .and_then(|r| r.last_exit.clone())
                        .unwrap_or_else(|| "it keeps exiting".into());
                    return Err(self.start_failed(service, how));
                }
            }
            if Instant::now() > deadline {
                return Err(self.start_failed(
                    pending[0],
                    format!("it did not answer within {} s", READY_TIMEOUT.as_secs()),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 3 / 2).min(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until `pid`, the process the supervisor ran `service` as before being told to
    /// restart it, is gone: until then the old process answers the health checks for the new
    /// one, and `up` would report settings as applied that are not yet.
    fn wait_replaced(&self, service: Service, pid: u32) -> Result<()> {
        let deadline = Instant::now() + DOWN_TIMEOUT;
        while procfs::is_alive(pid) {
            if Instant::now() > deadline {
                return Err(self.start_failed(
                    service,
                    format!(
                        "the supervisor did not replace it (pid {pid}) within {} s to apply its changed settings",
                        DOWN_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn start_failed(&self, service: Service, reason: String) -> RuntimeError {
        let log = self.log_path(service);
        RuntimeError::StartFailed {
            service,
            reason,
            log_tail: logs::tail(&log, LOG_TAIL_LINES),
            log,
        }
    }

    /// Restarts `services` (all running ones when empty) and waits until they are healthy again.
    pub fn restart(
        &self,
        services: &[Service],
        supervisor_command: &SupervisorCommand,
        progress: &dyn Progress,
    ) -> Result<()> {
        if !supervisor::is_running(&self.state.layout) {
            // Servers left without their supervisor are restarted cleanly by `up`; a project
            // with nothing running has nothing to restart ("all running ones" are none).
            let orphaned = self
                .status()
                .iter()
                .any(|s| s.state == ServiceState::Unsupervised);
            if !orphaned {
                return Err(match services.first() {
                    Some(service) => RuntimeError::NotRunning {
                        service: *service,
                        other_listener: None,
                    },
                    None => RuntimeError::Other(
                        "nothing of this project is running, so nothing was restarted; `nanika up` starts it".into(),
                    ),
                });
            }
            self.up(services, supervisor_command, progress)?;
            return Ok(());
        }
        let _lock = self.state.lock(progress)?;
        let mut plan: Plan =
            supervisor::read_json(&supervisor::plan_file(&self.state.layout)).unwrap_or_default();
        let targets: Vec<Service> = if services.is_empty() {
            plan.services.keys().copied().collect()
        } else {
            services.to_vec()
        };
        for service in &targets {
            match plan.services.get_mut(service) {
                Some(entry) => entry.generation += 1,
                None => {
                    return Err(RuntimeError::Other(format!(
                        "{service} is not running; start it with `nanika up {service}`"
                    )));
                }
            }
            progress.step(*service, "restarting");
        }
        if targets.contains(&Service::Redis) {
            self.install_redis_config()?;
        }
        if targets.contains(&Service::Postgres) {
            let port = plan
                .services
                .get(&Service::Postgres)
                .map_or(self.port(Service::Postgres), |p| p.port);
            self.install_postgres_config(port)?;
            // A restart starts the server with `nanika.toml`'s log destination, as `up` would.
            let mode = self.loaded.settings.logging.postgres;
            if mode == nanika_config::settings::PostgresLog::Jsonlog {
                jsonlog::install(&self.state.layout)?;
            }
            if let Some(entry) = plan.services.get_mut(&Service::Postgres) {
                jsonlog::apply(&mut entry.args, &self.state.layout, mode);
            }
        }
        plan.backups = self.backup_plan()?;
        supervisor::write_json(&supervisor::plan_file(&self.state.layout), &plan)?;
        self.state.signal_supervisor(Signal::SIGHUP)?;
        // The supervisor restarts asynchronously: wait until the old processes are gone first.
        let old: Vec<u32> = self
            .state
            .read_status()
            .map(|s| {
                targets
                    .iter()
                    .filter_map(|t| s.services.get(t).and_then(|r| r.pid))
                    .collect()
            })
            .unwrap_or_default();
        let deadline = Instant::now() + DOWN_TIMEOUT;
        while old.iter().any(|pid| procfs::is_alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.wait_healthy(&targets, None, progress)
    }

    /// Stops `service` alone, leaving the supervisor and the other service running, and
    /// returns once its process is gone (for work on its data while it is down, such as a
    /// physical restore). `up` starts it again.
    pub fn stop(&self, service: Service, progress: &dyn Progress) -> Result<()> {
        if !supervisor::is_running(&self.state.layout) {
            return Err(RuntimeError::NotRunning {
                service,
                other_listener: None,
            });
        }
        let _lock = self.state.lock(progress)?;
        self.stop_locked(service, progress)
    }

    /// [`Self::stop`] under the command lock the caller holds.
    fn stop_locked(&self, service: Service, progress: &dyn Progress) -> Result<()> {
        let plan_file = supervisor::plan_file(&self.state.layout);
        // An unreadable plan is not an empty one: written back, it would stop every server.
        let mut plan: Plan = supervisor::read_json(&plan_file).ok_or_else(|| {
            RuntimeError::Other(format!(
                "cannot read the supervisor's plan {}; nothing was stopped. `nanika down` stops everything",
                plan_file.display()
            ))
        })?;
        if plan.services.remove(&service).is_none() {
            return Err(RuntimeError::NotRunning {
                service,
                other_listener: None,
            });
        }
        let pid = self
            .state
            .read_status()
            .and_then(|s| s.services.get(&service).and_then(|r| r.pid));
        progress.step(service, "stopping");
        supervisor::write_json(&supervisor::plan_file(&self.state.layout), &plan)?;
        self.state.signal_supervisor(Signal::SIGHUP)?;
        // The supervisor stops it asynchronously, within its own bound (graceful, then forced).
        let deadline = Instant::now() + DOWN_TIMEOUT;
        while pid.is_some_and(procfs::is_alive) {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Other(format!(
                    "{service} (pid {}) did not stop within {} s",
                    pid.unwrap_or_default(),
                    DOWN_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        progress.step(service, "stopped");
        Ok(())
    }
}
