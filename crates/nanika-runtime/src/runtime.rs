//! One interface over both runtimes, so that each command is written once: [`Runtime`] for what
//! needs a validated project (starting, proving, reporting), [`RuntimeState`] for what works on
//! a project whatever its configuration says (stopping, deleting its data, reading its logs).

use crate::compose::RuntimeKind;
use crate::error::Result;
use crate::native::control::{Native, NativeState, SupervisorCommand, UpReport};
use crate::{Progress, Service, ServiceStatus};

/// Receives log lines as they are written, by service.
pub type LogSink = dyn Fn(Service, &str) + Sync;

/// What `down --volumes` deleted.
#[derive(Debug, Clone, Default)]
pub struct Deleted {
    /// Remarks for the user (servers found without their state, stops that needed more than
    /// the graceful signal).
    pub notes: Vec<String>,
    /// What was deleted, in words (a directory, a docker volume).
    pub deleted: Vec<String>,
}

/// What a runtime can do from the project's state alone: `down`, `down --volumes` and `logs`
/// work through this even when the configuration has errors.
pub trait RuntimeState: Sync {
    /// Which runtime this is.
    fn kind(&self) -> RuntimeKind;
    /// Stops the project's services, keeping their data; returns remarks for the user.
    fn down(&self, progress: &dyn Progress) -> Result<Vec<String>>;
    /// What `down --volumes` would delete, in words, for the question asked first.
    fn removable(&self) -> Result<Vec<String>>;
    /// Stops the services and deletes their data: this project's and nothing else.
    fn remove_state(&self, progress: &dyn Progress) -> Result<Deleted>;
    /// The last `lines` lines of `service`'s log.
    fn log_tail(&self, service: Service, lines: usize) -> Result<Vec<String>>;
    /// Passes each new line of the services' logs to `sink`, until they end or the process is
    /// stopped.
    fn follow_logs(&self, services: &[Service], sink: &LogSink) -> Result<()>;
}

/// A runtime running one validated project's services.
pub trait Runtime {
    /// What it can do from the state alone.
    fn state(&self) -> &dyn RuntimeState;
    /// The host port the configuration gives `service`.
    fn port(&self, service: Service) -> u16;
    /// Starts `services` (all when empty) and returns once each answers the app: `SELECT 1` as
    /// the app user on its database, Redis `PING`.
    fn up(&self, services: &[Service], progress: &dyn Progress) -> Result<UpReport>;
    /// Restarts `services` (all when empty) and waits until they answer again.
    fn restart(&self, services: &[Service], progress: &dyn Progress) -> Result<()>;
    /// The state of each service, checked with a real query.
    fn status(&self) -> Vec<ServiceStatus>;
    /// Proves that the server the app's URL for `service` reaches is this project's, running
    /// where the configuration says, before a command reads or changes its data.
    fn verify(&self, service: Service) -> Result<()>;
}

impl RuntimeState for NativeState {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Native
    }

    fn down(&self, progress: &dyn Progress) -> Result<Vec<String>> {
        NativeState::down(self, progress)
    }

    fn removable(&self) -> Result<Vec<String>> {
        Ok(self
            .layout()
            .removable()
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect())
    }

    fn remove_state(&self, progress: &dyn Progress) -> Result<Deleted> {
        let removed = NativeState::remove_state(self, progress)?;
        Ok(Deleted {
            notes: removed.notes,
            deleted: removed
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        })
    }

    fn log_tail(&self, service: Service, lines: usize) -> Result<Vec<String>> {
        let captured = crate::native::logs::tail(&self.layout().log(service.as_str()), lines);
        if !self.reads_jsonlog(service) {
            return Ok(captured);
        }
        // The jsonlog records as PostgreSQL wrote them (one JSON object a line), in time order
        // with what the supervisor captured from stderr: the early lines and its remarks.
        let json = crate::native::jsonlog::tail(self.layout(), lines);
        let mut merged = crate::native::jsonlog::merge(captured, json);
        Ok(merged.split_off(merged.len().saturating_sub(lines)))
    }

    fn follow_logs(&self, services: &[Service], sink: &LogSink) -> Result<()> {
        let paths: Vec<(Service, std::path::PathBuf)> = services
            .iter()
            .map(|s| (*s, self.layout().log(s.as_str())))
            .collect();
        let jsonlog = services
            .iter()
            .any(|s| self.reads_jsonlog(*s))
            .then_some(self.layout());
        crate::native::logs::follow(&paths, jsonlog, sink);
        Ok(())
    }
}

impl NativeState {
    /// Whether `service`'s log is PostgreSQL's jsonlog files (the spec's server with
    /// `[logging] postgres = "jsonlog"`; replicas keep logging to stderr).
    fn reads_jsonlog(&self, service: Service) -> bool {
        service == Service::Postgres
            && self.postgres_log() == nanika_config::settings::PostgresLog::Jsonlog
    }
}

/// The native runtime with the command that starts its supervisor.
pub struct NativeRuntime<'a> {
    native: Native<'a>,
    supervisor: SupervisorCommand,
}

impl<'a> NativeRuntime<'a> {
    /// `native`, whose `up` starts a supervisor with `supervisor`.
    pub fn new(native: Native<'a>, supervisor: SupervisorCommand) -> Self {
        NativeRuntime { native, supervisor }
    }

    /// The native runtime itself, for what only it has (its state layout).
    pub fn native(&self) -> &Native<'a> {
        &self.native
    }
}

impl Runtime for NativeRuntime<'_> {
    fn state(&self) -> &dyn RuntimeState {
        self.native.state()
    }

    fn port(&self, service: Service) -> u16 {
        self.native.port(service)
    }

    fn up(&self, services: &[Service], progress: &dyn Progress) -> Result<UpReport> {
        let report = self.native.up(services, &self.supervisor, progress)?;
        if report.copied_from_cache {
            self.native.start_cache_refill(&self.supervisor);
        }
        Ok(report)
    }

    fn restart(&self, services: &[Service], progress: &dyn Progress) -> Result<()> {
        self.native.restart(services, &self.supervisor, progress)
    }

    fn status(&self) -> Vec<ServiceStatus> {
        self.native.status()
    }

    fn verify(&self, service: Service) -> Result<()> {
        self.native.verify(service)
    }
}
