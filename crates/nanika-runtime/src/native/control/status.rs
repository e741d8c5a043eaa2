//! `nanika ps` of the native runtime: each server's state from the supervisor's records and a
//! real query, with each topology node's role and lag.

use super::supervisor::Plan;
use super::{Native, binaries, ownership, procfs, supervisor};
use crate::health::Prober;
use crate::{Service, ServiceState, ServiceStatus};
use std::time::{SystemTime, UNIX_EPOCH};

impl Native<'_> {
    /// The state of each service, checked with a real query (both at once).
    pub fn status(&self) -> Vec<ServiceStatus> {
        let supervised = supervisor::is_running(&self.state.layout);
        let status = if supervised {
            self.state.read_status()
        } else {
            None
        };
        let plan: Plan = if supervised {
            supervisor::read_json(&supervisor::plan_file(&self.state.layout)).unwrap_or_default()
        } else {
            Plan::default()
        };
        // Without a supervisor holding the lock, this project's servers are found from the
        // processes themselves: its records may be gone with `.nanika/run`.
        let found = (!supervised).then(|| ownership::discover(&self.state.layout));
        let lost = !supervisor::status_file(&self.state.layout).exists();
        let unsupervised_note = || {
            let orphan = found
                .as_ref()
                .and_then(|f| f.supervisors.first())
                .map(|s| format!(" (its supervisor, pid {}, still runs without it)", s.pid))
                .unwrap_or_default();
            if lost {
                format!(
                    "running, but {} is gone{orphan}: `nanika up` restarts it cleanly under a new supervisor, `nanika down` stops it",
                    self.state.layout.run.display()
                )
            } else {
                "running without its supervisor: `nanika up` restarts it cleanly under a new one, `nanika down` stops it".into()
            }
        };
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (now, now_ms) = (since_epoch.as_secs(), since_epoch.as_millis() as u64);
        let services: Vec<Service> = Service::ALL
            .into_iter()
            .chain(self.topology_nodes())
            .chain(self.monitoring_nodes())
            .collect();
        let mut statuses: Vec<ServiceStatus> = std::thread::scope(|scope| {
            let handles: Vec<_> = services
                .iter()
                .map(|&service| {
                    let (status, plan, found) = (&status, &plan, &found);
                    let unsupervised_note = &unsupervised_note;
                    scope.spawn(move || {
                        let report = status.as_ref().and_then(|s| s.services.get(&service));
                        let planned = plan.services.get(&service);
                        // Where it really runs, which the configuration may no longer say.
                        let port = planned
                            .map(|p| p.port)
                            .filter(|p| *p != 0)
                            .unwrap_or_else(|| self.port(service));
                        let unsupervised_pid = found
                            .as_ref()
                            .and_then(|f| f.server(service))
                            .map(|r| r.pid);
                        let pid = report
                            .and_then(|r| r.pid)
                            .filter(|p| procfs::is_alive(*p))
                            .or(if supervised { None } else { unsupervised_pid });
                        let answers = pid.is_some()
                            && self.bound(service, port)
                            && Prober::new().is_ok_and(|p| self.status_probe(&p, service, port));
                        let state = match (planned.is_some(), pid, answers) {
                            (true, Some(_), true) => ServiceState::Healthy,
                            (true, Some(_), false) => ServiceState::Starting,
                            (true, None, _) => ServiceState::Crashed,
                            (false, Some(_), _) => ServiceState::Unsupervised,
                            (false, None, _) => ServiceState::Stopped,
                        };
                        let version = planned.and_then(|p| p.version.clone()).or_else(|| {
                            match service.kind() {
                                Service::Postgres => binaries::find_postgres(&self.search)
                                    .ok()
                                    .map(|b| b.version),
                                Service::Redis => {
                                    binaries::find_redis(&self.search).ok().map(|b| b.version)
                                }
                                monitor => binaries::find_monitor(&self.search, monitor)
                                    .ok()
                                    .and_then(|b| b.version),
                            }
                        });
                        ServiceStatus {
                            service,
                            state,
                            pid,
                            port,
                            uptime_secs: report
                                .filter(|_| pid.is_some())
                                .and_then(|r| r.started_at)
                                .map(|t| now.saturating_sub(t)),
                            version,
                            restarts: report.map_or(0, |r| r.restarts),
                            next_start_in_ms: report
                                .filter(|_| state == ServiceState::Crashed)
                                .and_then(|r| r.next_start_at_ms)
                                .map(|at| at.saturating_sub(now_ms)),
                            note: (state == ServiceState::Unsupervised).then(unsupervised_note),
                            role: None,
                            lag_bytes: None,
                            lag_ms: None,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a status check does not panic"))
                .collect()
        });
        self.add_roles(&mut statuses);
        statuses
    }

    /// Each node's role and lag, when the topology has more than one node of its kind.
    fn add_roles(&self, statuses: &mut [ServiceStatus]) {
        let healthy = |kind: Service| -> Vec<(Service, u16)> {
            statuses
                .iter()
                .filter(|s| s.service.kind() == kind && s.state == ServiceState::Healthy)
                .map(|s| (s.service, s.port))
                .collect()
        };
        let mut roles = Vec::new();
        if self.has_postgres_replicas() {
            roles.extend(self.postgres_roles(&healthy(Service::Postgres)));
        }
        if self.redis_mode() == nanika_config::settings::RedisMode::Sentinel {
            roles.extend(self.redis_roles(&healthy(Service::Redis)));
        } else if self.redis_mode() == nanika_config::settings::RedisMode::Cluster {
            let nodes: Vec<(Service, u16)> = healthy(Service::Redis)
                .into_iter()
                .filter(|(s, _)| matches!(s, Service::ClusterNode(_)))
                .collect();
            roles.extend(self.redis_roles(&nodes));
        }
        for (service, role) in roles {
            if let Some(status) = statuses.iter_mut().find(|s| s.service == service) {
                status.role = Some(role.role);
                status.lag_bytes = role.lag_bytes;
                status.lag_ms = role.lag_ms;
            }
        }
    }
}
