//! The nodes `nanika.toml`'s `[topology]` asks for beyond the spec's two servers: PostgreSQL
//! streaming replicas, and Redis in Sentinel or Cluster mode. Each is one more supervised child
//! with its own port, state directory and log; they start once the spec's servers answer, since
//! a replica is copied from its primary.

mod redis_nodes;
mod replication;

pub use redis_nodes::{ClusterState, RedisFailover};
pub use replication::{PostgresFailover, SlotReport};

use super::Native;
use crate::error::{Result, RuntimeError};
use crate::native::binaries::{PostgresBinaries, RedisBinaries};
use crate::native::safe_fs::Dir;
use crate::native::supervisor::{self, Plan};
use crate::{Progress, Service};
use nanika_config::settings::TopologyPorts;
use nix::sys::signal::Signal;
use std::time::Duration;

/// The role replicas connect as: it may replicate and log in, nothing else.
pub const REPLICATION_ROLE: &str = "nanika_replication";

/// The file in PostgreSQL's home with the replication role's password, in `.pgpass` form, read
/// by the replicas and `pg_basebackup` (never on a command line).
const REPLICATION_PASSFILE: &str = "replication.pgpass";

/// The `pg_hba.conf` every node runs with when there are replicas, in PostgreSQL's home.
pub const TOPOLOGY_HBA: &str = "pg_hba.conf";

/// Sentinel's name for the master it watches: what clients ask Sentinel for.
pub const SENTINEL_MASTER: &str = "nanika";

/// How long a probe of one node may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A PostgreSQL node's place in replication, as the nodes themselves say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRole {
    /// `primary`, `replica`, `master`, `sentinel`.
    pub role: String,
    /// How far it is behind its primary or master, in bytes (replicas only).
    pub lag_bytes: Option<u64>,
    /// How far behind in time, in milliseconds (PostgreSQL replicas only).
    pub lag_ms: Option<u64>,
}

impl Native<'_> {
    /// The ports of every node; the settings were checked when the project was loaded.
    pub(super) fn topology_ports(&self) -> TopologyPorts {
        let env = &self.loaded.infra.env;
        self.loaded
            .settings
            .topology
            .ports(env.postgres_port, env.redis_port)
            .unwrap_or(TopologyPorts {
                postgres_replicas: Vec::new(),
                redis_replicas: Vec::new(),
                sentinels: Vec::new(),
                cluster_nodes: Vec::new(),
            })
    }

    /// The nodes `nanika.toml` asks for beyond the spec's two servers, in start order: replicas
    /// before the sentinels that watch them.
    pub fn topology_nodes(&self) -> Vec<Service> {
        Service::topology(&self.loaded.settings.topology)
    }

    /// The port the settings give a topology node (0 for a node they do not ask for).
    pub(super) fn topology_port(&self, service: Service) -> u16 {
        let ports = self.topology_ports();
        let pick = |list: &[u16], n: u8| list.get(usize::from(n).wrapping_sub(1)).copied();
        match service {
            Service::PostgresReplica(n) => pick(&ports.postgres_replicas, n),
            Service::RedisReplica(n) => pick(&ports.redis_replicas, n),
            Service::Sentinel(n) => pick(&ports.sentinels, n),
            Service::ClusterNode(n) => pick(&ports.cluster_nodes, n),
            _ => None,
        }
        .unwrap_or(0)
    }

    /// Whether PostgreSQL runs with replicas.
    pub fn has_postgres_replicas(&self) -> bool {
        self.loaded.settings.topology.postgres.replicas > 0
    }

    /// The PostgreSQL nodes, the spec's first.
    pub fn postgres_nodes(&self) -> Vec<Service> {
        std::iter::once(Service::Postgres)
            .chain(
                self.topology_nodes()
                    .into_iter()
                    .filter(|s| matches!(s, Service::PostgresReplica(_))),
            )
            .collect()
    }
}

/// A node's data directory, in PostgreSQL's home or Redis's directory.
pub fn data_dir_name(service: Service) -> String {
    match service {
        Service::Postgres => crate::native::postgres::DATA_DIR.into(),
        Service::Redis => ".".into(),
        Service::PostgresReplica(n) => format!("replica-{n}"),
        Service::RedisReplica(n) => format!("replica-{n}"),
        Service::Sentinel(n) => format!("sentinel-{n}"),
        Service::ClusterNode(n) => format!("cluster-{n}"),
        monitor => monitor.as_str().into(),
    }
}

/// The node's `application_name` (and `cluster_name`): what `pg_stat_replication` and
/// `synchronous_standby_names` call it.
pub fn application_name(service: Service) -> String {
    service.as_str().replace('-', "_")
}

/// The replication slot the primary keeps for `service`.
pub fn slot_name(service: Service) -> String {
    format!("nanika_{}", application_name(service))
}

/// Whose a file written into a node's state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// PostgreSQL's server user.
    Postgres,
    /// Redis's user.
    Redis,
}

/// Writes `name` in `dir` as a new owner-only file given to `owner`, renamed over the old one:
/// never through a link.
fn write_owned_file(
    native: &Native<'_>,
    owner: Owner,
    dir: &Dir,
    name: &str,
    text: &str,
) -> Result<()> {
    let temp = format!("{name}.nanika-tmp");
    dir.remove_file(&temp)?;
    let file = dir.create_file(&temp, 0o600)?;
    std::io::Write::write_all(&mut &file, text.as_bytes()).map_err(RuntimeError::io(format!(
        "cannot write {}",
        dir.join(&temp).display()
    )))?;
    let layout = native.layout();
    match owner {
        Owner::Postgres => layout.give_file_to_server(&file, &dir.join(&temp))?,
        Owner::Redis => layout.give_file_to_redis(&file, &dir.join(&temp))?,
    }
    dir.rename_over(&temp, name)
}

/// [`write_owned_file`] for PostgreSQL's server user.
pub(super) fn write_server_file(
    native: &Native<'_>,
    dir: &Dir,
    name: &str,
    text: &str,
) -> Result<()> {
    write_owned_file(native, Owner::Postgres, dir, name, text)
}

/// [`write_owned_file`] for Redis's user.
fn write_redis_file(native: &Native<'_>, dir: &Dir, name: &str, text: &str) -> Result<()> {
    write_owned_file(native, Owner::Redis, dir, name, text)
}

impl Native<'_> {
    /// Starts the topology's `to_start` nodes under the running supervisor and waits until every
    /// one of `wanted` answers; a new cluster is created then. A failure stops what this call
    /// started.
    pub(super) fn up_topology(
        &self,
        wanted: &[Service],
        to_start: &[Service],
        plan: &mut Plan,
        (pg_bins, redis_bins): (Option<&PostgresBinaries>, Option<&RedisBinaries>),
        progress: &dyn Progress,
    ) -> Result<()> {
        let prepare = |service: Service| {
            if service.kind() == Service::Postgres {
                self.prepare_postgres_replica(service, pg_bins.expect("found above"), progress)
            } else {
                self.prepare_redis_node(service, redis_bins.expect("found above"))
            }
        };
        let finish = || {
            if wanted.iter().any(|s| matches!(s, Service::ClusterNode(_))) {
                self.finish_redis_cluster(redis_bins.expect("found above"), progress)
            } else if wanted.iter().any(|s| matches!(s, Service::Sentinel(_))) {
                self.finish_sentinels()
            } else {
                Ok(())
            }
        };
        self.start_under_supervisor(wanted, to_start, plan, progress, prepare, finish)
    }

    /// Adds `to_start` to the running supervisor's plan, each as `prepare` says, and waits until
    /// every one of `wanted` answers and `finish` is done. A failure takes what this call added
    /// out of the plan again, which stops it.
    pub(super) fn start_under_supervisor(
        &self,
        wanted: &[Service],
        to_start: &[Service],
        plan: &mut Plan,
        progress: &dyn Progress,
        prepare: impl Fn(Service) -> Result<supervisor::ServicePlan>,
        finish: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let undo = |plan: &mut Plan| {
            plan.services.retain(|s, _| !to_start.contains(s));
            let _ = supervisor::write_json(&supervisor::plan_file(&self.state.layout), &*plan);
            let _ = self.state.signal_supervisor(Signal::SIGHUP);
        };
        for service in to_start {
            progress.step(*service, "preparing");
            match prepare(*service) {
                Ok(service_plan) => {
                    plan.services.insert(*service, service_plan);
                }
                Err(error) => {
                    undo(plan);
                    return Err(error);
                }
            }
        }
        if !to_start.is_empty() {
            supervisor::write_json(&supervisor::plan_file(&self.state.layout), &*plan)?;
            self.state.signal_supervisor(Signal::SIGHUP)?;
        }
        for service in wanted {
            progress.step(
                *service,
                if to_start.contains(service) {
                    "starting"
                } else {
                    "checking"
                },
            );
        }
        if let Err(error) = self
            .wait_healthy(wanted, None, progress)
            .and_then(|()| finish())
        {
            undo(plan);
            return Err(error);
        }
        Ok(())
    }
}
