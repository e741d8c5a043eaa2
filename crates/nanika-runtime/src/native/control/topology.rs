//! The nodes `nanika.toml`'s `[topology]` asks for beyond the spec's two servers: PostgreSQL
//! streaming replicas, and Redis in Sentinel or Cluster mode. Each is one more supervised child
//! with its own port, state directory and log; they start once the spec's servers answer, since
//! a replica is copied from its primary.

use super::{Native, random_password};
use crate::error::{Result, RuntimeError};
use crate::health::{PostgresTarget, Prober, quote_ident};
use crate::native::binaries::{PostgresBinaries, RedisBinaries};
use crate::native::safe_fs::Dir;
use crate::native::supervisor::ServicePlan;
use crate::native::{postgres, redis};
use crate::{Progress, Service};
use nanika_config::Secret;
use nanika_config::settings::{RedisMode, TopologyPorts};
use std::process::{Command, Stdio};
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
            Service::Postgres | Service::Redis => None,
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

    /// The settings every PostgreSQL node runs with beyond the committed file when there are
    /// replicas, each with the reason: nanika's `pg_hba.conf` (replication for its role only,
    /// on loopback), `wal_log_hints` (so `nanika failover` can rejoin an old primary with
    /// `pg_rewind`), and `synchronous_standby_names` when asked for.
    pub(super) fn replication_settings(&self) -> Result<String> {
        if !self.has_postgres_replicas() {
            return Ok(String::new());
        }
        let layout = self.layout();
        let home = layout.open_postgres_home()?;
        write_server_file(self, &home, TOPOLOGY_HBA, &hba_text())?;
        let mut text = format!(
            "\n# Added by nanika for [topology.postgres] in nanika.toml (not in the committed file).\n\
             # pg_rewind, which `nanika failover postgres` uses to rejoin the old primary, needs wal_log_hints.\n\
             wal_log_hints = on\n\
             # Replication only for {REPLICATION_ROLE}, only on loopback.\n\
             hba_file = '{}'\n",
            home.join(TOPOLOGY_HBA).display()
        );
        if self.loaded.settings.topology.postgres.synchronous {
            let names: Vec<String> = self
                .postgres_nodes()
                .into_iter()
                .map(application_name)
                .collect();
            // Every node's name: whichever is primary, a commit waits for one of the others.
            text += &format!(
                "# [topology.postgres] synchronous = true: a commit returns once one replica has flushed it.\n\
                 synchronous_standby_names = 'ANY 1 ({})'\n",
                names.join(", ")
            );
        }
        Ok(text)
    }

    /// The replication role's password, made once and kept owner-only; also written for the
    /// server user as a passfile, which is how replicas and `pg_basebackup` read it.
    fn replication_password(&self) -> Result<Secret> {
        let layout = self.layout();
        let path = layout.run.join("postgres-replication.password");
        let password = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Secret::new(text.trim().to_string()),
            _ => {
                let password = random_password()?;
                layout.open_run()?.replace_file(
                    "postgres-replication.password",
                    password.expose().as_bytes(),
                    0o600,
                )?;
                password
            }
        };
        let home = layout.open_postgres_home()?;
        write_server_file(
            self,
            &home,
            REPLICATION_PASSFILE,
            &format!(
                "*:*:*:{REPLICATION_ROLE}:{}\n",
                pgpass_escape(password.expose())
            ),
        )?;
        Ok(password)
    }

    /// The cluster's superuser, for nanika's own statements on any node.
    pub(super) fn superuser_on(&self, port: u16) -> PostgresTarget {
        let target = self
            .admin_target()
            .unwrap_or_else(|| self.postgres_target());
        PostgresTarget {
            port,
            database: "postgres".into(),
            ..target
        }
    }

    /// The node that is PostgreSQL's primary now (not in recovery), with its port.
    pub fn postgres_primary(&self) -> Option<(Service, u16)> {
        let prober = Prober::new().ok()?;
        self.postgres_nodes().into_iter().find_map(|node| {
            let port = self.port(node);
            let rows = prober
                .text_rows(
                    &self.superuser_on(port),
                    "postgres",
                    "SELECT pg_is_in_recovery()::text",
                    PROBE_TIMEOUT,
                )
                .ok()?;
            (rows.first()?.first()?.as_deref() == Some("false")).then_some((node, port))
        })
    }

    /// Makes a replica's data directory by `pg_basebackup` from the primary, when it has none,
    /// and returns how the supervisor runs it.
    pub(super) fn prepare_postgres_replica(
        &self,
        service: Service,
        bins: &PostgresBinaries,
        progress: &dyn Progress,
    ) -> Result<ServicePlan> {
        let layout = self.layout();
        let dir_name = data_dir_name(service);
        let home = layout.open_postgres_home()?;
        if home.open_dir(&dir_name)?.is_none() {
            let (_, primary_port) = self.postgres_primary().ok_or_else(|| {
                self.start_failed(
                    service,
                    "no PostgreSQL node answers as the primary, so there is nothing to copy the replica from".into(),
                )
            })?;
            progress.step(service, "copying the primary (pg_basebackup)");
            self.copy_primary(service, bins, &home, &dir_name, primary_port)?;
        }
        let port = self.port(service);
        let (program, mut args) = postgres::node_args(bins, layout, &home.join(&dir_name), port);
        args.extend([
            "-c".into(),
            format!("cluster_name={}", application_name(service)),
        ]);
        Ok(ServicePlan {
            program,
            args,
            cwd: layout.postgres_home.clone(),
            run_as: layout.server_user.as_ref().map(|u| (u.uid, u.gid)),
            log: self.log_path(service),
            generation: 0,
            version: Some(bins.version.clone()),
            port,
            restart_hold_ms: 0,
        })
    }

    /// Makes sure the primary has the replication role (with the current password) and a slot
    /// for `service`, so that WAL the replica has not received is kept while it is stopped.
    fn prepare_primary_for(&self, service: Service, primary_port: u16) -> Result<()> {
        let password = self.replication_password()?;
        let role = quote_ident(REPLICATION_ROLE);
        let literal = password.expose().replace('\'', "''");
        let slot = slot_name(service);
        let statements = vec![
            format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{REPLICATION_ROLE}') THEN CREATE ROLE {role} REPLICATION LOGIN; END IF; END $$"
            ),
            format!("ALTER ROLE {role} WITH REPLICATION LOGIN PASSWORD '{literal}'"),
            format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
            ),
        ];
        Prober::new()
            .map_err(RuntimeError::io("cannot start the health checks"))?
            .execute_quietly(
                &self.superuser_on(primary_port),
                "postgres",
                &statements,
                Duration::from_secs(10),
            )
            .map_err(|e| {
                self.start_failed(
                    service,
                    format!(
                        "the primary (port {primary_port}) refused to prepare replication: {e}"
                    ),
                )
            })
    }

    fn copy_primary(
        &self,
        service: Service,
        bins: &PostgresBinaries,
        home: &Dir,
        dir_name: &str,
        primary_port: u16,
    ) -> Result<()> {
        self.prepare_primary_for(service, primary_port)?;
        let partial = format!("{dir_name}.partial");
        crate::native::safe_fs::remove_tree(&home.join(&partial))?;
        let mut command = Command::new(bins.tool("pg_basebackup"));
        command
            .args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
            .args(["-U", REPLICATION_ROLE, "--no-password"])
            .args(["-X", "stream", "-c", "fast", "-S", &slot_name(service)])
            .arg("-D")
            .arg(home.join(&partial))
            .env("PGPASSFILE", home.join(REPLICATION_PASSFILE))
            .env_remove("PGPASSWORD")
            .current_dir(&self.layout().postgres_home)
            .stdin(Stdio::null());
        postgres::as_server_user(&mut command, self.layout());
        let output = command.output().map_err(RuntimeError::io(format!(
            "cannot run {}",
            bins.tool("pg_basebackup").display()
        )))?;
        if !output.status.success() {
            let _ = crate::native::safe_fs::remove_tree(&home.join(&partial));
            return Err(self.start_failed(
                service,
                format!(
                    "pg_basebackup from port {primary_port} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        let data = home.open_dir(&partial)?.ok_or_else(|| {
            self.start_failed(service, "pg_basebackup left no data directory".into())
        })?;
        self.make_standby(service, &data, primary_port)?;
        home.rename_new(&partial, dir_name)
    }

    /// Makes the data directory `data` a standby of the primary on `primary_port`:
    /// `standby.signal`, and the connection and slot in `postgresql.auto.conf`.
    pub(super) fn make_standby(
        &self,
        service: Service,
        data: &Dir,
        primary_port: u16,
    ) -> Result<()> {
        let auto = data
            .read_small_file("postgresql.auto.conf", 1 << 20)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let kept: String = auto
            .lines()
            .filter(|l| {
                let key = l.split('=').next().unwrap_or_default().trim();
                key != "primary_conninfo" && key != "primary_slot_name"
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let text = format!(
            "{kept}primary_conninfo = '{}'\nprimary_slot_name = '{}'\n",
            self.conninfo(service, primary_port).replace('\'', "''"),
            slot_name(service)
        );
        write_server_file(self, data, "postgresql.auto.conf", &text)?;
        write_server_file(self, data, "standby.signal", "")
    }

    /// How `service` reaches the primary on `primary_port`.
    pub(super) fn conninfo(&self, service: Service, primary_port: u16) -> String {
        format!(
            "host=127.0.0.1 port={primary_port} user={REPLICATION_ROLE} passfile={} application_name={}",
            self.layout()
                .postgres_home
                .join(REPLICATION_PASSFILE)
                .display(),
            application_name(service)
        )
    }

    /// Each PostgreSQL node's role and lag, as the nodes say (for `ps`).
    pub fn postgres_roles(&self, ports: &[(Service, u16)]) -> Vec<(Service, NodeRole)> {
        let Ok(prober) = Prober::new() else {
            return Vec::new();
        };
        let mut roles = Vec::new();
        let mut replication: Vec<Vec<Option<String>>> = Vec::new();
        for &(node, port) in ports {
            let rows = prober.text_rows(
                &self.superuser_on(port),
                "postgres",
                "SELECT pg_is_in_recovery()::text",
                PROBE_TIMEOUT,
            );
            let Some(in_recovery) = rows
                .ok()
                .and_then(|r| r.first().and_then(|r| r.first().cloned()).flatten())
            else {
                continue;
            };
            let role = if in_recovery == "true" {
                "replica"
            } else {
                replication = prober
                    .text_rows(
                        &self.superuser_on(port),
                        "postgres",
                        "SELECT application_name, state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint::text, (COALESCE(EXTRACT(epoch FROM replay_lag), 0) * 1000)::bigint::text FROM pg_stat_replication",
                        PROBE_TIMEOUT,
                    )
                    .unwrap_or_default();
                "primary"
            };
            roles.push((
                node,
                NodeRole {
                    role: role.into(),
                    ..NodeRole::default()
                },
            ));
        }
        for (node, role) in &mut roles {
            if role.role != "replica" {
                continue;
            }
            let name = application_name(*node);
            match replication
                .iter()
                .find(|row| row.first().cloned().flatten().as_deref() == Some(name.as_str()))
            {
                Some(row) => {
                    let number =
                        |i: usize| row.get(i).cloned().flatten().and_then(|v| v.parse().ok());
                    role.lag_bytes = number(2);
                    role.lag_ms = number(3);
                    if row.get(1).cloned().flatten().as_deref() != Some("streaming") {
                        role.role = format!(
                            "replica ({})",
                            row.get(1).cloned().flatten().unwrap_or_default()
                        );
                    }
                }
                None => role.role = "replica (not streaming)".into(),
            }
        }
        roles
    }

    /// Each Redis node's role and lag (`INFO replication`), for `ps`.
    pub fn redis_roles(&self, ports: &[(Service, u16)]) -> Vec<(Service, NodeRole)> {
        let password = self.loaded.infra.redis_password();
        let mut master_offsets = std::collections::BTreeMap::new();
        let mut found = Vec::new();
        for &(node, port) in ports {
            if matches!(node, Service::Sentinel(_)) {
                if crate::health::redis_command(port, None, &["PING"], PROBE_TIMEOUT).is_ok() {
                    found.push((
                        node,
                        NodeRole {
                            role: "sentinel".into(),
                            ..NodeRole::default()
                        },
                        None,
                    ));
                }
                continue;
            }
            let Ok(info) = crate::health::redis_command(
                port,
                password,
                &["INFO", "replication"],
                PROBE_TIMEOUT,
            ) else {
                continue;
            };
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
            };
            let offset: Option<u64> = field("master_repl_offset").and_then(|v| v.parse().ok());
            if field("role").as_deref() == Some("master") {
                if let Some(offset) = offset {
                    master_offsets.insert(port, offset);
                }
                found.push((
                    node,
                    NodeRole {
                        role: "master".into(),
                        ..NodeRole::default()
                    },
                    None,
                ));
            } else {
                let master = field("master_port").and_then(|p| p.parse::<u16>().ok());
                let link = field("master_link_status").unwrap_or_default();
                let role = if link == "up" {
                    "replica".to_string()
                } else {
                    format!("replica (link {link})")
                };
                let replica_offset: Option<u64> = field("slave_repl_offset")
                    .and_then(|v| v.parse().ok())
                    .or(offset);
                found.push((
                    node,
                    NodeRole {
                        role,
                        ..NodeRole::default()
                    },
                    master.zip(replica_offset),
                ));
            }
        }
        found
            .into_iter()
            .map(|(node, mut role, upstream)| {
                if let Some((master, offset)) = upstream {
                    role.lag_bytes = master_offsets
                        .get(&master)
                        .map(|m| m.saturating_sub(offset));
                }
                (node, role)
            })
            .collect()
    }

    /// The Redis nodes whose role `ps` reports: the spec's and the topology's.
    pub fn redis_nodes(&self) -> Vec<Service> {
        std::iter::once(Service::Redis)
            .chain(
                self.topology_nodes()
                    .into_iter()
                    .filter(|s| s.kind() == Service::Redis),
            )
            .collect()
    }

    /// The Redis mode the settings ask for.
    pub fn redis_mode(&self) -> RedisMode {
        self.loaded.settings.topology.redis.mode
    }

    /// Makes a Redis topology node's directory and config, and returns how the supervisor runs
    /// it. Sentinel mode's replica follows the master the sentinels name (the spec's server
    /// until a failover); a sentinel keeps the config it rewrites itself; a cluster node keeps
    /// its `nodes.conf`.
    pub(super) fn prepare_redis_node(
        &self,
        service: Service,
        bins: &RedisBinaries,
    ) -> Result<ServicePlan> {
        let layout = self.layout();
        let topology = &self.loaded.settings.topology.redis;
        let port = self.port(service);
        let dir_name = data_dir_name(service);
        let redis_dir = layout.open_redis_dir()?;
        let (node_dir, _) = redis_dir.make_dir(&dir_name, 0o700)?;
        if let Some(user) = &layout.redis_user {
            node_dir.set_owner(user.uid, user.gid)?;
        }
        let password = self.loaded.infra.redis_password();
        let auth = replication_tuning(password);
        let mut restart_hold_ms = 0;
        let (config_name, extra_args): (&str, Vec<String>) = match service {
            Service::Sentinel(_) => {
                // Sentinel rewrites its file with what it learns (the current master, the other
                // sentinels, epochs); written once, then it is Sentinel's.
                if node_dir.kind("sentinel.conf")? == crate::native::safe_fs::Kind::Missing {
                    let (master, master_port) = self.sentinel_master();
                    // Each sentinel is told its own id, the other sentinels and the replica up
                    // front: found by themselves (hello messages every 2 s, the master's INFO
                    // every 10 s) they would take seconds to be ready for a failover.
                    let ids = self.sentinel_ids(&redis_dir)?;
                    let mut known = format!(
                        "sentinel myid {}\n",
                        ids[usize::from(sentinel_number(service)) - 1]
                    );
                    for (index, port) in self.topology_ports().sentinels.iter().enumerate() {
                        if index + 1 != usize::from(sentinel_number(service)) {
                            known += &format!(
                                "sentinel known-sentinel {SENTINEL_MASTER} 127.0.0.1 {port} {}\n",
                                ids[index]
                            );
                        }
                    }
                    for replica in self.redis_nodes() {
                        if replica != master && !matches!(replica, Service::Sentinel(_)) {
                            known += &format!(
                                "sentinel known-replica {SENTINEL_MASTER} 127.0.0.1 {}\n",
                                self.port(replica)
                            );
                        }
                    }
                    let auth = password
                        .map(|p| {
                            format!(
                                "sentinel auth-pass {SENTINEL_MASTER} {}\n",
                                nanika_config::redisconf::quote(p.expose())
                            )
                        })
                        .unwrap_or_default();
                    let text = format!(
                        "# Written by nanika for [topology.redis] mode = \"sentinel\"; Sentinel rewrites it.\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                         {auth}\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} {}\n\
                         sentinel failover-timeout {SENTINEL_MASTER} {}\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n\
                         {known}",
                        topology.down_after_ms, topology.failover_timeout_ms
                    );
                    write_redis_file(self, &node_dir, "sentinel.conf", &text)?;
                }
                ("sentinel.conf", vec!["--sentinel".into()])
            }
            Service::RedisReplica(_) => {
                let (master, master_port) = self.sentinel_master();
                let mut text = self.redis_base_config()?;
                text += "\n# Added by nanika for [topology.redis] mode = \"sentinel\".\n";
                if master != service {
                    text += &format!("replicaof 127.0.0.1 {master_port}\n");
                }
                text += &auth;
                write_redis_file(self, &node_dir, "redis.conf", &text)?;
                // A dead data node is left to Sentinel first, as a dead host would be: restarted
                // at once it would come back before Sentinel noticed, and never be failed over.
                restart_hold_ms =
                    u64::from(topology.down_after_ms) * 2 + u64::from(topology.failover_timeout_ms);
                ("redis.conf", Vec::new())
            }
            _ => {
                let mut text = self.redis_base_config()?;
                text += &format!(
                    "\n# Added by nanika for [topology.redis] mode = \"cluster\".\n\
                     cluster-enabled yes\n\
                     cluster-config-file nodes.conf\n\
                     cluster-node-timeout {}\n\
                     {auth}",
                    topology.node_timeout_ms
                );
                write_redis_file(self, &node_dir, "redis.conf", &text)?;
                restart_hold_ms = u64::from(topology.node_timeout_ms) * 3;
                ("redis.conf", Vec::new())
            }
        };
        let dir = layout.redis_dir.join(&dir_name);
        let mut args = vec![
            dir.join(config_name).display().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            String::new(),
            "--pidfile".into(),
            dir.join("redis.pid").display().to_string(),
            "--set-proc-title".into(),
            "no".into(),
        ];
        args.extend([
            "--unixsocket".into(),
            redis::SOCKET.into(),
            "--unixsocketperm".into(),
            "700".into(),
        ]);
        args.extend(extra_args);
        Ok(ServicePlan {
            program: bins.server.clone(),
            args,
            cwd: dir,
            run_as: layout.redis_user.as_ref().map(|u| (u.uid, u.gid)),
            log: self.log_path(service),
            generation: 0,
            version: Some(bins.version.clone()),
            port,
            restart_hold_ms,
        })
    }

    /// What the spec's Redis runs with beyond the committed file in Sentinel mode: replication
    /// that starts at once, the master's password for when it is a replica, and, after a
    /// failover, the master it follows.
    pub(super) fn redis_topology_settings(&self) -> String {
        if self.redis_mode() != RedisMode::Sentinel {
            return String::new();
        }
        let mut text = format!(
            "\n# Added by nanika for [topology.redis] mode = \"sentinel\" in nanika.toml.\n{}",
            replication_tuning(self.loaded.infra.redis_password())
        );
        let (master, master_port) = self.sentinel_master();
        if master != Service::Redis {
            text += &format!(
                "# The sentinels made {master} the master.\nreplicaof 127.0.0.1 {master_port}\n"
            );
        }
        text
    }

    /// The committed `redis.conf` as Redis runs it (with `.env`'s password), for the topology's
    /// data nodes: they behave like the spec's server.
    fn redis_base_config(&self) -> Result<String> {
        let committed = self.loaded.project.path(nanika_config::project::REDIS_CONF);
        let mut text = fs_err::read_to_string(&committed).map_err(RuntimeError::io(format!(
            "cannot read {}",
            committed.display()
        )))?;
        if let Some(password) = self
            .loaded
            .infra
            .redis_password()
            .filter(|_| self.loaded.infra.redis.requirepass.is_none())
        {
            text += &format!(
                "\nrequirepass {}\n",
                nanika_config::redisconf::quote(password.expose())
            );
        }
        Ok(text)
    }

    /// The sentinels' ids (`sentinel myid`), made once and kept in Redis's directory.
    fn sentinel_ids(&self, redis_dir: &Dir) -> Result<Vec<String>> {
        let count = usize::from(nanika_config::settings::SENTINELS);
        let kept = redis_dir
            .read_small_file("sentinel-ids", 4096)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let ids: Vec<String> = kept.lines().map(str::to_string).collect();
        if ids.len() == count && ids.iter().all(|id| id.len() == 40) {
            return Ok(ids);
        }
        let ids = (0..count)
            .map(|_| crate::native::safe_fs::random_hex(20))
            .collect::<Result<Vec<_>>>()?;
        redis_dir.replace_file("sentinel-ids", ids.join("\n").as_bytes(), 0o600)?;
        Ok(ids)
    }

    /// The master Sentinel mode runs with: what the first sentinel's own config says after a
    /// failover, else the spec's server.
    pub(super) fn sentinel_master(&self) -> (Service, u16) {
        let spec = (Service::Redis, self.port(Service::Redis));
        let Ok(redis_dir) = self.layout().open_redis_dir() else {
            return spec;
        };
        let text = redis_dir
            .open_dir(&data_dir_name(Service::Sentinel(1)))
            .ok()
            .flatten()
            .and_then(|d| d.read_small_file("sentinel.conf", 1 << 20).ok().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let port = text.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("sentinel")
                && words.next() == Some("monitor")
                && words.next() == Some(SENTINEL_MASTER))
            .then(|| words.nth(1).and_then(|p| p.parse::<u16>().ok()))
            .flatten()
        });
        match port {
            Some(port) if port == spec.1 => spec,
            Some(port) => self
                .redis_nodes()
                .into_iter()
                .find(|s| self.port(*s) == port)
                .map_or(spec, |s| (s, port)),
            None => spec,
        }
    }

    /// Whether a Redis topology node has bound its port, learnt as for the spec's Redis
    /// ([`redis::listening`]): its Unix socket, opened right after the port, accepts.
    pub(super) fn redis_node_listening(&self, service: Service) -> bool {
        self.layout()
            .open_redis_dir()
            .ok()
            .and_then(|dir| dir.open_dir(&data_dir_name(service)).ok().flatten())
            .is_some_and(|node| node.connect_unix(redis::SOCKET).is_ok())
    }

    /// After the nodes answer in Sentinel mode: waits until every replica has synced with the
    /// master and every sentinel knows the replica and the two other sentinels, so that a
    /// failover can happen as soon as `up` returns.
    pub(super) fn finish_sentinels(&self) -> Result<()> {
        let password = self.loaded.infra.redis_password();
        let nodes = self.topology_nodes();
        let deadline = std::time::Instant::now() + super::READY_TIMEOUT;
        loop {
            let mut waiting = None;
            for node in &nodes {
                let ready = match node {
                    Service::Sentinel(_) => {
                        let reply = crate::health::redis_command(
                            self.port(*node),
                            None,
                            &["SENTINEL", "MASTER", SENTINEL_MASTER],
                            PROBE_TIMEOUT,
                        )
                        .unwrap_or_default();
                        let lines: Vec<&str> = reply.lines().collect();
                        let value = |key: &str| {
                            lines
                                .chunks(2)
                                .find(|pair| pair[0] == key)
                                .and_then(|pair| pair.get(1))
                                .and_then(|v| v.parse::<u32>().ok())
                        };
                        value("num-slaves").is_some_and(|n| {
                            n >= u32::from(nanika_config::settings::SENTINEL_REPLICAS)
                        }) && value("num-other-sentinels")
                            .is_some_and(|n| n + 1 >= u32::from(nanika_config::settings::SENTINELS))
                    }
                    Service::RedisReplica(_) => {
                        let (master, _) = self.sentinel_master();
                        master == *node
                            || crate::health::redis_command(
                                self.port(*node),
                                password,
                                &["INFO", "replication"],
                                PROBE_TIMEOUT,
                            )
                            .is_ok_and(|info| info.contains("master_link_status:up"))
                    }
                    _ => true,
                };
                if !ready {
                    waiting = Some(*node);
                    break;
                }
            }
            let Some(node) = waiting else {
                return Ok(());
            };
            if std::time::Instant::now() > deadline {
                return Err(self.start_failed(
                    node,
                    "the sentinels did not come to know the master, its replica and each other"
                        .into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the nodes answer: a new cluster is created (`redis-cli --cluster create`, three
    /// masters with a replica each), and `up` waits until every slot is served.
    pub(super) fn finish_redis_cluster(
        &self,
        bins: &RedisBinaries,
        progress: &dyn Progress,
    ) -> Result<()> {
        let nodes: Vec<Service> = self
            .topology_nodes()
            .into_iter()
            .filter(|s| matches!(s, Service::ClusterNode(_)))
            .collect();
        let Some(&first) = nodes.first() else {
            return Ok(());
        };
        let password = self.loaded.infra.redis_password();
        let info = |service: Service| {
            crate::health::redis_command(
                self.port(service),
                password,
                &["CLUSTER", "INFO"],
                PROBE_TIMEOUT,
            )
            .unwrap_or_default()
        };
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
        };
        if field(&info(first), "cluster_known_nodes").as_deref() == Some("1") {
            progress.step(first, "creating the cluster (redis-cli --cluster create)");
            let mut command = Command::new(bins.cli());
            command.args(["--cluster", "create"]);
            for node in &nodes {
                command.arg(format!("127.0.0.1:{}", self.port(*node)));
            }
            command
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .env_remove("REDISCLI_AUTH")
                .stdin(Stdio::null());
            if let Some(password) = password {
                command.env("REDISCLI_AUTH", password.expose());
            }
            let output = command.output().map_err(RuntimeError::io(format!(
                "cannot run {}",
                bins.cli().display()
            )))?;
            if !output.status.success() {
                return Err(self.start_failed(
                    first,
                    format!(
                        "redis-cli --cluster create failed: {}",
                        String::from_utf8_lossy(&output.stdout).trim()
                    ),
                ));
            }
        }
        let deadline = std::time::Instant::now() + super::READY_TIMEOUT;
        loop {
            let pending: Vec<Service> = nodes
                .iter()
                .copied()
                .filter(|n| field(&info(*n), "cluster_state").as_deref() != Some("ok"))
                .collect();
            let Some(&waiting) = pending.first() else {
                return Ok(());
            };
            if std::time::Instant::now() > deadline {
                return Err(self.start_failed(
                    waiting,
                    "the cluster did not reach cluster_state:ok (every slot served)".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A sentinel's number (1 for anything else).
fn sentinel_number(service: Service) -> u8 {
    match service {
        Service::Sentinel(n) => n,
        _ => 1,
    }
}

/// A node's data directory, in PostgreSQL's home or Redis's directory.
pub fn data_dir_name(service: Service) -> String {
    match service {
        Service::Postgres => postgres::DATA_DIR.into(),
        Service::Redis => ".".into(),
        Service::PostgresReplica(n) => format!("replica-{n}"),
        Service::RedisReplica(n) => format!("replica-{n}"),
        Service::Sentinel(n) => format!("sentinel-{n}"),
        Service::ClusterNode(n) => format!("cluster-{n}"),
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

/// Replication settings of every Redis data node in a topology: a full sync starts at once
/// (Redis waits 5 s by default for more replicas to share it, which a laptop's one replica never
/// needs), and a replica authenticates with the master's password.
fn replication_tuning(password: Option<&Secret>) -> String {
    let auth = password
        .map(|p| {
            format!(
                "masterauth {}\n",
                nanika_config::redisconf::quote(p.expose())
            )
        })
        .unwrap_or_default();
    format!("repl-diskless-sync-delay 0\n{auth}")
}

/// `initdb`'s `pg_hba.conf` for scram-sha-256, with replication allowed to nanika's role only.
fn hba_text() -> String {
    format!(
        "# Written by nanika for [topology.postgres] in nanika.toml.\n\
         # TYPE  DATABASE     USER                ADDRESS        METHOD\n\
         local   all          all                                scram-sha-256\n\
         host    all          all                 127.0.0.1/32   scram-sha-256\n\
         host    all          all                 ::1/128        scram-sha-256\n\
         host    replication  {REPLICATION_ROLE}  127.0.0.1/32   scram-sha-256\n\
         host    replication  {REPLICATION_ROLE}  ::1/128        scram-sha-256\n"
    )
}

/// A `.pgpass` field: `:` and `\` escaped.
fn pgpass_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace(':', "\\:")
}

/// Writes `name` in `dir` as a new owner-only file given to the server user, renamed over the
/// old one: never through a link.
fn write_server_file(native: &Native<'_>, dir: &Dir, name: &str, text: &str) -> Result<()> {
    let temp = format!("{name}.nanika-tmp");
    dir.remove_file(&temp)?;
    let file = dir.create_file(&temp, 0o600)?;
    std::io::Write::write_all(&mut &file, text.as_bytes()).map_err(RuntimeError::io(format!(
        "cannot write {}",
        dir.join(&temp).display()
    )))?;
    native
        .layout()
        .give_file_to_server(&file, &dir.join(&temp))?;
    dir.rename_over(&temp, name)
}

/// [`write_server_file`] for Redis's user.
fn write_redis_file(native: &Native<'_>, dir: &Dir, name: &str, text: &str) -> Result<()> {
    let temp = format!("{name}.nanika-tmp");
    dir.remove_file(&temp)?;
    let file = dir.create_file(&temp, 0o600)?;
    std::io::Write::write_all(&mut &file, text.as_bytes()).map_err(RuntimeError::io(format!(
        "cannot write {}",
        dir.join(&temp).display()
    )))?;
    native
        .layout()
        .give_file_to_redis(&file, &dir.join(&temp))?;
    dir.rename_over(&temp, name)
}

/// What `nanika failover postgres` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresFailover {
    /// The node that was primary.
    pub old_primary: Service,
    /// The replica promoted in its place.
    pub new_primary: Service,
    /// The other replicas, now following the new primary.
    pub repointed: Vec<Service>,
    /// What `pg_rewind` said of the old primary, which now runs as a replica.
    pub rewind: String,
}

/// What `nanika failover redis` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisFailover {
    /// The node that was master.
    pub old_master: Service,
    /// The node Sentinel promoted.
    pub new_master: Service,
    /// From the command to the new master accepting writes, in milliseconds.
    pub took_ms: u64,
    /// Whether the old master follows the new one yet.
    pub old_follows: bool,
}

impl Native<'_> {
    /// Promotes a replica (`to`, else the one that has received the most WAL), repoints the
    /// other replicas at it, and rejoins the old primary as a replica with `pg_rewind`. The old
    /// primary is stopped first, whatever state it is in, so two primaries never run at once.
    pub fn failover_postgres(
        &self,
        to: Option<Service>,
        progress: &dyn Progress,
    ) -> Result<PostgresFailover> {
        if !self.has_postgres_replicas() {
            return Err(RuntimeError::Other(
                "PostgreSQL has no replica to fail over to: set [topology.postgres] replicas in nanika.toml and run `nanika up`".into(),
            ));
        }
        if !super::supervisor::is_running(self.layout()) {
            return Err(RuntimeError::NotRunning {
                service: Service::Postgres,
                other_listener: None,
            });
        }
        let _lock = self.state.lock(progress)?;
        let bins = crate::native::binaries::find_postgres(&self.search)?;
        let nodes = self.postgres_nodes();
        // The data directories say which node is the primary even when it is down: every
        // replica's has `standby.signal`.
        let home = self.layout().open_postgres_home()?;
        let is_standby = |node: Service| -> Result<bool> {
            Ok(home
                .open_dir(&data_dir_name(node))?
                .map(|d| d.kind("standby.signal"))
                .transpose()?
                .is_some_and(|k| k != crate::native::safe_fs::Kind::Missing))
        };
        let mut primaries = Vec::new();
        for node in &nodes {
            if !is_standby(*node)? {
                primaries.push(*node);
            }
        }
        let [old] = primaries[..] else {
            return Err(RuntimeError::Other(format!(
                "expected one PostgreSQL node without standby.signal, found {}: {}",
                primaries.len(),
                primaries
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let received = |node: Service| -> Option<u64> {
            let rows = prober
                .text_rows(
                    &self.superuser_on(self.port(node)),
                    "postgres",
                    "SELECT pg_wal_lsn_diff(COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint::text",
                    PROBE_TIMEOUT,
                )
                .ok()?;
            rows.first()?.first()?.as_deref()?.parse().ok()
        };
        let target = match to {
            Some(node) if node == old => {
                return Err(RuntimeError::Other(format!(
                    "{node} is the primary already"
                )));
            }
            Some(node) if !nodes.contains(&node) => {
                return Err(RuntimeError::Other(format!(
                    "{node} is not a PostgreSQL node of this project ({})",
                    nodes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(node) => {
                received(node).ok_or_else(|| {
                    RuntimeError::Other(format!(
                        "{node} does not answer; start it with `nanika up`"
                    ))
                })?;
                node
            }
            None => nodes
                .iter()
                .copied()
                .filter(|n| *n != old)
                .filter_map(|n| received(n).map(|lsn| (lsn, n)))
                .max_by_key(|(lsn, n)| (*lsn, std::cmp::Reverse(*n)))
                .map(|(_, n)| n)
                .ok_or_else(|| {
                    RuntimeError::Other("no replica answers, so none can be promoted".into())
                })?,
        };
        let new_port = self.port(target);

        progress.step(old, "stopping the old primary");
        match self.stop_locked(old, progress) {
            Ok(()) | Err(RuntimeError::NotRunning { .. }) => {}
            Err(error) => return Err(error),
        }
        self.wait_postmaster_gone(old)?;

        progress.step(target, "promoting (pg_promote)");
        let promoted = prober
            .text_rows(
                &self.superuser_on(new_port),
                "postgres",
                "SELECT pg_promote(true, 60)::text",
                Duration::from_secs(70),
            )
            .map_err(|e| RuntimeError::Other(format!("{target} could not be promoted: {e}")))?;
        if promoted
            .first()
            .and_then(|r| r.first().cloned())
            .flatten()
            .as_deref()
            != Some("true")
        {
            return Err(RuntimeError::Other(format!(
                "{target} did not finish its promotion within 60 s; see {}",
                self.log_path(target).display()
            )));
        }

        let others: Vec<Service> = nodes
            .iter()
            .copied()
            .filter(|n| *n != old && *n != target)
            .collect();
        // The passfile the repointed and rejoined nodes read.
        self.replication_password()?;
        for node in others.iter().chain(std::iter::once(&old)) {
            let slot = slot_name(*node);
            prober
                .execute_quietly(
                    &self.superuser_on(new_port),
                    "postgres",
                    &[format!(
                        "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
                    )],
                    Duration::from_secs(10),
                )
                .map_err(|e| RuntimeError::Other(format!("the new primary refused a replication slot for {node}: {e}")))?;
        }
        for node in &others {
            progress.step(*node, "following the new primary");
            let conninfo = self.conninfo(*node, new_port).replace('\'', "''");
            prober
                .execute_quietly(
                    &self.superuser_on(self.port(*node)),
                    "postgres",
                    &[
                        format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"),
                        format!(
                            "ALTER SYSTEM SET primary_slot_name = '{}'",
                            slot_name(*node)
                        ),
                        "SELECT pg_reload_conf()".into(),
                    ],
                    Duration::from_secs(10),
                )
                .map_err(|e| RuntimeError::Other(format!("{node} could not be repointed: {e}")))?;
        }

        progress.step(old, "rejoining as a replica (pg_rewind)");
        // pg_rewind reads the source's timeline from its control file, which a freshly
        // promoted server updates only at its next checkpoint: without one, pg_rewind sees the
        // old timeline and says "no rewind required" for an old primary that has diverged.
        prober
            .execute_quietly(
                &self.superuser_on(new_port),
                "postgres",
                &["CHECKPOINT".into()],
                Duration::from_secs(60),
            )
            .map_err(|e| RuntimeError::Other(format!("{target} could not checkpoint: {e}")))?;
        let rewind = self.rewind(old, &bins, new_port)?;
        let data = home
            .open_dir(&data_dir_name(old))?
            .ok_or_else(|| RuntimeError::Other(format!("{old}'s data directory is gone")))?;
        self.make_standby(old, &data, new_port)?;
        let mut plan: super::Plan =
            super::supervisor::read_json(&super::supervisor::plan_file(self.layout()))
                .unwrap_or_default();
        let old_plan = if old == Service::Postgres {
            let mut report = super::UpReport::default();
            self.prepare_postgres(&bins, progress, &mut report)?
        } else {
            self.prepare_postgres_replica(old, &bins, progress)?
        };
        plan.services.insert(old, old_plan);
        super::supervisor::write_json(&super::supervisor::plan_file(self.layout()), &plan)?;
        self.state
            .signal_supervisor(nix::sys::signal::Signal::SIGHUP)?;
        self.wait_healthy(&[old], None, progress)?;
        self.wait_streaming(target, &nodes)?;
        Ok(PostgresFailover {
            old_primary: old,
            new_primary: target,
            repointed: others,
            rewind,
        })
    }

    /// Waits until no postmaster runs on `node`'s data directory (the supervisor may have been
    /// restarting it when it was told to stop it).
    fn wait_postmaster_gone(&self, node: Service) -> Result<()> {
        let deadline = std::time::Instant::now() + super::DOWN_TIMEOUT;
        let lock = self
            .layout()
            .postgres_home
            .join(data_dir_name(node))
            .join("postmaster.pid");
        loop {
            let running = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| postgres::LockFile::parse(&t))
                .is_some_and(|l| crate::native::procfs::is_alive(l.pid));
            if !running {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(RuntimeError::Other(format!(
                    "{node} did not stop within {} s",
                    super::DOWN_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pg_rewind` of `old`'s data directory from the primary on `new_port`, as the server user;
    /// returns its last line.
    fn rewind(&self, old: Service, bins: &PostgresBinaries, new_port: u16) -> Result<String> {
        let target_name = self
            .postgres_nodes()
            .into_iter()
            .find(|n| self.port(*n) == new_port)
            .map_or("the new primary", |n| n.as_str());
        let source = self.superuser_on(new_port);
        let mut command = Command::new(bins.tool("pg_rewind"));
        command
            .arg("--target-pgdata")
            .arg(self.layout().postgres_home.join(data_dir_name(old)))
            .arg(format!(
                "--source-server=host=127.0.0.1 port={new_port} user={} dbname=postgres",
                source.user
            ))
            // The configuration the node runs with, for the single-user run that finishes the
            // crash recovery of an old primary that was killed.
            .arg(format!(
                "--config-file={}",
                self.layout().postgres_conf().display()
            ))
            .env("PGPASSWORD", source.password.expose())
            .env_remove("PGPASSFILE")
            .current_dir(&self.layout().postgres_home)
            .stdin(Stdio::null());
        postgres::as_server_user(&mut command, self.layout());
        let output = command.output().map_err(RuntimeError::io(format!(
            "cannot run {}",
            bins.tool("pg_rewind").display()
        )))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            return Err(RuntimeError::Other(format!(
                "pg_rewind of {old} failed; it is stopped, and {target_name} on port {new_port} is the primary. pg_rewind said:\n{}",
                said.trim()
            )));
        }
        let last = said.lines().last().unwrap_or_default().trim();
        Ok(last.strip_prefix("pg_rewind: ").unwrap_or(last).to_string())
    }

    /// Waits until every node but `primary` streams from it.
    fn wait_streaming(&self, primary: Service, nodes: &[Service]) -> Result<()> {
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let deadline = std::time::Instant::now() + super::READY_TIMEOUT;
        loop {
            let rows = prober
                .text_rows(
                    &self.superuser_on(self.port(primary)),
                    "postgres",
                    "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
                    PROBE_TIMEOUT,
                )
                .unwrap_or_default();
            let streaming: Vec<String> = rows
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            let missing: Vec<Service> = nodes
                .iter()
                .copied()
                .filter(|n| *n != primary && !streaming.contains(&application_name(*n)))
                .collect();
            let Some(first) = missing.first() else {
                return Ok(());
            };
            if std::time::Instant::now() > deadline {
                return Err(RuntimeError::Other(format!(
                    "{first} does not stream from the new primary {primary}; see {}",
                    self.log_path(*first).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the sentinels to fail the master over (`SENTINEL FAILOVER`) and waits until they
    /// name a new master that accepts writes.
    pub fn failover_redis(&self) -> Result<RedisFailover> {
        if self.redis_mode() != RedisMode::Sentinel {
            return Err(RuntimeError::Other(
                "Redis runs without Sentinel: set [topology.redis] mode = \"sentinel\" in nanika.toml and run `nanika up` (a cluster fails over by itself when a master dies)".into(),
            ));
        }
        let sentinels: Vec<u16> = self.topology_ports().sentinels;
        let ask = |args: &[&str]| {
            sentinels.iter().find_map(|port| {
                crate::health::redis_command(*port, None, args, PROBE_TIMEOUT).ok()
            })
        };
        let master_port = || -> Option<u16> {
            ask(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER])?
                .lines()
                .nth(1)?
                .parse()
                .ok()
        };
        let node_on = |port: u16| {
            self.redis_nodes()
                .into_iter()
                .find(|s| self.port(*s) == port)
                .unwrap_or(Service::Redis)
        };
        let old_port = master_port().ok_or_else(|| {
            RuntimeError::Other("no sentinel answers; start them with `nanika up`".into())
        })?;
        let started = std::time::Instant::now();
        let mut last_error = String::new();
        for port in &sentinels {
            match crate::health::redis_command(
                *port,
                None,
                &["SENTINEL", "FAILOVER", SENTINEL_MASTER],
                PROBE_TIMEOUT,
            ) {
                Ok(_) => {
                    last_error.clear();
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        if !last_error.is_empty() {
            return Err(RuntimeError::Other(format!(
                "the sentinels refused the failover: {last_error}"
            )));
        }
        let password = self.loaded.infra.redis_password();
        let deadline = started
            + Duration::from_millis(
                u64::from(self.loaded.settings.topology.redis.failover_timeout_ms) * 3,
            );
        loop {
            if let Some(port) = master_port().filter(|p| *p != old_port) {
                let role = crate::health::redis_command(port, password, &["ROLE"], PROBE_TIMEOUT)
                    .unwrap_or_default();
                if role.lines().next() == Some("master") {
                    let took_ms = started.elapsed().as_millis() as u64;
                    // The sentinels would turn the old master into a replica at their next
                    // look at it (every 10 s); told now, as they would tell it.
                    let _ = crate::health::redis_command(
                        old_port,
                        password,
                        &["REPLICAOF", "127.0.0.1", &port.to_string()],
                        PROBE_TIMEOUT,
                    )
                    .and_then(|_| {
                        crate::health::redis_command(
                            old_port,
                            password,
                            &["CONFIG", "REWRITE"],
                            PROBE_TIMEOUT,
                        )
                    });
                    let old_follows = loop {
                        let role = crate::health::redis_command(
                            old_port,
                            password,
                            &["ROLE"],
                            PROBE_TIMEOUT,
                        )
                        .unwrap_or_default();
                        if role.lines().next() == Some("slave") {
                            break true;
                        }
                        if std::time::Instant::now() > deadline {
                            break false;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    };
                    return Ok(RedisFailover {
                        old_master: node_on(old_port),
                        new_master: node_on(port),
                        took_ms,
                        old_follows,
                    });
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(RuntimeError::Other(format!(
                    "the sentinels did not name a new master within {} ms",
                    deadline.duration_since(started).as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sentinels' ports (empty unless Sentinel mode).
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.topology_ports().sentinels
    }
}

/// A cluster node's `cluster_state` and `cluster_slots_ok`, or why it did not answer.
pub type ClusterState = std::result::Result<(String, u32), String>;

/// A replication slot nanika keeps on the primary for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// The slot's name (`nanika_postgres_replica_1`).
    pub name: String,
    /// Whether a replica streams through it now.
    pub active: bool,
    /// WAL the primary keeps for it, in bytes.
    pub retained_bytes: Option<u64>,
}

impl Native<'_> {
    /// The primary's replication slots of nanika's nodes (empty when no primary answers).
    pub fn replication_slots(&self) -> Vec<SlotReport> {
        let Some((_, port)) = self.postgres_primary() else {
            return Vec::new();
        };
        let Ok(prober) = Prober::new() else {
            return Vec::new();
        };
        prober
            .text_rows(
                &self.superuser_on(port),
                "postgres",
                "SELECT slot_name::text, active::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text FROM pg_replication_slots WHERE slot_name LIKE 'nanika\\_%' ORDER BY 1",
                PROBE_TIMEOUT,
            )
            .unwrap_or_default()
            .into_iter()
            .map(|row| {
                let cell = |i: usize| row.get(i).cloned().flatten();
                SlotReport {
                    name: cell(0).unwrap_or_default(),
                    active: cell(1).as_deref() == Some("true"),
                    retained_bytes: cell(2).and_then(|v| v.parse().ok()),
                }
            })
            .collect()
    }

    /// What each sentinel says the master is: (the sentinel's port, the master's port or why
    /// it said none).
    pub fn sentinel_views(&self) -> Vec<(u16, std::result::Result<u16, String>)> {
        self.topology_ports()
            .sentinels
            .into_iter()
            .map(|port| {
                let view = crate::health::redis_command(
                    port,
                    None,
                    &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER],
                    PROBE_TIMEOUT,
                )
                .map_err(|e| e.to_string())
                .and_then(|reply| {
                    reply
                        .lines()
                        .nth(1)
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| format!("no master ({reply:?})"))
                });
                (port, view)
            })
            .collect()
    }

    /// Each cluster node's `CLUSTER INFO` `cluster_state` and `cluster_slots_ok`, or why it did
    /// not answer.
    pub fn cluster_states(&self) -> Vec<(Service, ClusterState)> {
        let password = self.loaded.infra.redis_password();
        self.topology_nodes()
            .into_iter()
            .filter(|s| matches!(s, Service::ClusterNode(_)))
            .map(|node| {
                let state = crate::health::redis_command(
                    self.port(node),
                    password,
                    &["CLUSTER", "INFO"],
                    PROBE_TIMEOUT,
                )
                .map_err(|e| e.to_string())
                .map(|info| {
                    let field = |name: &str| {
                        info.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}:")))
                            .map(|v| v.trim().to_string())
                            .unwrap_or_default()
                    };
                    (
                        field("cluster_state"),
                        field("cluster_slots_ok").parse().unwrap_or(0),
                    )
                });
                (node, state)
            })
            .collect()
    }
}
