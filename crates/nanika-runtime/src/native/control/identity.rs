//! Identity before action: where a server runs now, and the proof that the server an app URL
//! reaches is this project's, before a command reads or changes its data.

use super::supervisor::Plan;
use super::{Native, postgres, procfs, supervisor};
use crate::Service;
use crate::error::{Result, RuntimeError};
use crate::health::{PostgresTarget, ProbeError, Prober};
use std::time::Duration;

impl Native<'_> {
    /// The port `service` runs on, as the supervisor's plan remembers it, when it runs.
    pub fn running_port(&self, service: Service) -> Option<u16> {
        if !supervisor::is_running(self.layout()) {
            return None;
        }
        let plan: Plan = supervisor::read_json(&supervisor::plan_file(self.layout()))?;
        plan.services
            .get(&service)
            .map(|p| p.port)
            .filter(|p| *p != 0)
    }

    /// Proves that the server the app's URL for `service` reaches is this project's, running
    /// under its supervisor, before a command reads or changes its data. The errors say what is
    /// wrong: not running (and what answers on the port instead), moved to another port, or a
    /// server of another project.
    pub fn verify(&self, service: Service) -> Result<()> {
        let configured = self.port(service);
        let supervised_pid = self
            .state
            .read_status()
            .filter(|_| supervisor::is_running(self.layout()))
            .and_then(|s| s.services.get(&service).and_then(|r| r.pid))
            .filter(|pid| procfs::is_alive(*pid));
        let Some(pid) = supervised_pid else {
            let other_listener = (!procfs::port_is_free(configured)).then(|| {
                match procfs::port_holder(configured) {
                    Some(holder) => format!("{holder} listens on port {configured}"),
                    None => format!("something else listens on port {configured}"),
                }
            });
            return Err(RuntimeError::NotRunning {
                service,
                other_listener,
            });
        };
        if let Some(running) = self.running_port(service)
            && running != configured
        {
            return Err(RuntimeError::PortMoved {
                service,
                running,
                configured,
            });
        }
        let env = &self.loaded.infra.env;
        let timeout = Duration::from_secs(5);
        let (address, answer) = match service {
            Service::Postgres => {
                let url = &env.database_url;
                let target = PostgresTarget {
                    host: url.host.clone(),
                    port: url.port,
                    ..self.postgres_target()
                };
                let prober =
                    Prober::new().map_err(RuntimeError::io("cannot start the identity check"))?;
                let answer = prober.postgres(&target, timeout).map(|marker| {
                    let ours = postgres::project_marker(self.layout());
                    match marker {
                        Some(m) if m == ours => None,
                        Some(m) => Some(Some(format!("the nanika project at {m}"))),
                        None => Some(None),
                    }
                });
                (format!("{}:{}", url.host, url.port), answer)
            }
            Service::Redis => {
                let url = &env.redis_url;
                let answer = crate::health::redis_server_pid(
                    &url.host,
                    url.port,
                    &url.user,
                    Some(&url.password),
                    timeout,
                )
                .map(|answering| {
                    (answering != pid).then(|| {
                        Some(format!("process {}", procfs::describe(answering)))
                            .filter(|_| procfs::is_alive(answering))
                    })
                });
                (format!("{}:{}", url.host, url.port), answer)
            }
            // No app URL names a topology node: it is proven through the supervisor's record.
            _ => return Ok(()),
        };
        match answer {
            Ok(None) => Ok(()),
            Ok(Some(whose)) => Err(RuntimeError::NotThisProject {
                service,
                address,
                whose,
            }),
            Err(ProbeError::Auth) => Err(RuntimeError::Other(format!(
                "{address} refused the app's password: it is not this project's {service}, or the password in the configuration is not the one the server was set up with"
            ))),
            Err(error) => Err(RuntimeError::Other(format!(
                "cannot check whose {service} answers on {address}: {error}"
            ))),
        }
    }
}
