//! `nanika doctor`.

use super::db::block_on;
use crate::context;
use crate::error::{CliError, CliResult};
use nanika_ops::doctor::{self, DoctorInput, Identity, Verdict};
use nanika_runtime::Service;
use nanika_runtime::compose::{Compose, RuntimeKind};
use nanika_runtime::docker::DockerState;
use nanika_runtime::native::layout::{ServerUser, StateLayout};
use std::path::PathBuf;

/// Runs every check; fails when any check fails.
pub fn run(project_dir: Option<&PathBuf>, json: bool) -> CliResult {
    let loaded = context::load_for_services(project_dir)?;
    let user = ServerUser::for_current_process().map_err(super::services::runtime_error)?;
    let layout = StateLayout::new(loaded.project.root(), user);
    let search = context::binary_search();
    let identity = match nanika_runtime::compose::recorded_runtime(loaded.project.root()) {
        Some(RuntimeKind::Docker) => {
            // The compose project's own containers, publishing the configured ports.
            let compose = Compose::new(loaded.project.root(), &loaded.infra.compose.project_name);
            let engine = compose.engine_version();
            let state = engine
                .clone()
                .and_then(|_| DockerState::new(&loaded).map_err(|e| e.to_string()));
            let env = &loaded.infra.env;
            let service = |service: Service, port: u16| {
                state
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.compose().verify(service, port).map_err(|e| e.to_string()))
            };
            Identity::Docker {
                postgres: service(Service::Postgres, env.postgres_port),
                redis: service(Service::Redis, env.redis_port),
                containers: state
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.containers().map_err(|e| e.to_string())),
                compose: compose.compose_version(),
                postgres_log: state
                    .as_ref()
                    .ok()
                    .and_then(|s| {
                        nanika_runtime::runtime::RuntimeState::log_tail(s, Service::Postgres, 5000)
                            .ok()
                    })
                    .unwrap_or_default(),
                engine,
            }
        }
        _ => Identity::Native,
    };
    let native_runtime = matches!(identity, Identity::Native);
    let mut checks = block_on(doctor::run(&DoctorInput {
        loaded: &loaded,
        layout: &layout,
        search: &search,
        identity,
    }));
    // The topology's and the monitoring stack's checks need a project without errors (the
    // config checks above say what is wrong otherwise).
    let topology = !loaded.settings.topology.is_single();
    let monitoring = loaded.settings.monitoring.enabled;
    if native_runtime
        && (topology || monitoring)
        && let Ok(valid) = loaded.clone().validate()
        && let Ok(native) =
            nanika_runtime::native::control::Native::new(&valid, context::binary_search(), None)
    {
        if topology {
            checks.extend(doctor::topology_checks(&native));
        }
        if monitoring {
            checks.extend(doctor::monitoring_checks(&native));
        }
    }
    if json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("serializes")
        );
    } else {
        for check in &checks {
            let mark = match check.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            crate::say!("{mark} {:26} {}", check.name, check.seen);
            if let Some(fix) = &check.fix {
                crate::say!("     {:26} fix: {fix}", "");
            }
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        return Err(CliError::failure(format!("{failed} check(s) failed"))
            .hint("each FAIL line says how to fix it"));
    }
    Ok(())
}
