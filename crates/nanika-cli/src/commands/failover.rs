//! `nanika failover postgres|redis`: the topology's failovers, done the way an operator would
//! (promote, repoint, rejoin), so that an app's reconnect logic can be tried on a laptop.

use crate::cli::{FailoverCommand, RuntimeArg};
use crate::context;
use crate::error::{CliError, CliResult};
use crate::progress::Spinners;
use nanika_runtime::Service;
use nanika_runtime::native::control::Native;
use std::path::PathBuf;

/// Runs `nanika failover …`.
pub fn run(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    command: FailoverCommand,
) -> CliResult {
    let valid = context::valid(project_dir)?;
    if valid.settings.topology.is_single() {
        return Err(CliError::usage(
            "there is nothing to fail over to: nanika.toml has no [topology]; nothing was done",
        )
        .hint("add [topology.postgres] replicas = 1 or [topology.redis] mode = \"sentinel\" to nanika.toml, then `nanika up`"));
    }
    // Refuses the docker runtime with its reason.
    drop(super::services::runtime(&valid, runtime, false)?);
    let native = Native::new(&valid, context::binary_search(), context::cluster_cache())
        .map_err(super::services::runtime_error)?;
    match command {
        FailoverCommand::Postgres { to } => {
            let to = to
                .map(|name| {
                    Service::from_name(&name)
                        .filter(|s| s.kind() == Service::Postgres)
                        .ok_or_else(|| {
                            CliError::usage(format!("--to {name}: no such PostgreSQL node")).hint(
                                format!(
                                    "the nodes are {}",
                                    native
                                        .postgres_nodes()
                                        .iter()
                                        .map(|s| s.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })
                })
                .transpose()?;
            let spinners = Spinners::new();
            let result = native.failover_postgres(to, &spinners);
            spinners.finish();
            let done = result.map_err(super::services::runtime_error)?;
            crate::say!(
                "{} is the primary now, on port {}",
                done.new_primary,
                native.port(done.new_primary)
            );
            for node in &done.repointed {
                crate::say!("{node} follows it");
            }
            crate::say!(
                "{} follows it as a replica (pg_rewind: {})",
                done.old_primary,
                done.rewind
            );
            if done.new_primary != Service::Postgres {
                crate::say!(
                    "DATABASE_URL still names port {}, now a read-only replica: clients that must follow the primary use DATABASE_FAILOVER_URL (`nanika env`); `nanika failover postgres --to postgres` makes it the primary again",
                    native.port(Service::Postgres)
                );
            }
        }
        FailoverCommand::Redis => {
            let done = native
                .failover_redis()
                .map_err(super::services::runtime_error)?;
            crate::say!(
                "{} is the master now, on port {} (accepting writes {} ms after the request)",
                done.new_master,
                native.port(done.new_master),
                done.took_ms,
            );
            if done.new_master != Service::Redis {
                crate::say!(
                    "REDIS_URL still names port {}, a read-only replica now: clients that must follow the master ask the sentinels (REDIS_SENTINELS, `nanika env`); `nanika failover redis` again moves the master back",
                    native.port(Service::Redis)
                );
            }
            if done.old_follows {
                crate::say!("{} follows it", done.old_master);
            } else {
                crate::say!(
                    "{} does not follow it yet: the sentinels turn it into a replica when they next see it",
                    done.old_master
                );
            }
        }
    }
    Ok(())
}
