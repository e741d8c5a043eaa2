//! Redis in Sentinel mode (a replica, three sentinels) and Cluster mode (six nodes): their
//! configs, roles, readiness, and `nanika failover redis`.

use super::super::Native;
use super::{NodeRole, PROBE_TIMEOUT, SENTINEL_MASTER, data_dir_name, write_redis_file};
use crate::error::{Result, RuntimeError};
use crate::native::binaries::RedisBinaries;
use crate::native::redis;
use crate::native::safe_fs::Dir;
use crate::native::supervisor::ServicePlan;
use crate::{Progress, Service};
use nanika_config::Secret;
use nanika_config::settings::RedisMode;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A sentinel's number (1 for anything else).
fn sentinel_number(service: Service) -> u8 {
    match service {
        Service::Sentinel(n) => n,
        _ => 1,
    }
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

/// A cluster node's `cluster_state` and `cluster_slots_ok`, or why it did not answer.
pub type ClusterState = std::result::Result<(String, u32), String>;

impl Native<'_> {
    /// Each Redis node's role and lag (`INFO replication`), for `ps`.
    pub fn redis_roles(&self, ports: &[(Service, u16)]) -> Vec<(Service, NodeRole)> {
        let password = self.loaded.infra.redis_password();
        let mut master_offsets = std::collections::BTreeMap::new();
        let mut found = Vec::new();
        for &(node, port) in ports {
            if matches!(node, Service::Sentinel(_)) {
                if crate::health::redis_command(
                    port,
                    self.loaded.infra.redis_password(),
                    &["PING"],
                    PROBE_TIMEOUT,
                )
                .is_ok()
                {
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
    pub(in crate::native::control) fn prepare_redis_node(
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
                    // With a Redis password the sentinels want it too, from clients and from
                    // each other: an open sentinel would let any local user point the app's
                    // clients at a "master" of their own.
                    let auth = password
                        .map(|p| {
                            let quoted = nanika_config::redisconf::quote(p.expose());
                            format!(
                                "sentinel auth-pass {SENTINEL_MASTER} {quoted}\nrequirepass {quoted}\nsentinel sentinel-pass {quoted}\n"
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
            env: Default::default(),
            clear_env: false,
        })
    }

    /// What the spec's Redis runs with beyond the committed file in Sentinel mode: replication
    /// that starts at once, the master's password for when it is a replica, and, after a
    /// failover, the master it follows.
    pub(in crate::native::control) fn redis_topology_settings(&self) -> String {
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

    /// The master Sentinel mode runs with: what the sentinel files with the highest config
    /// epoch say after a failover, else the spec's server.
    pub(in crate::native::control) fn sentinel_master(&self) -> (Service, u16) {
        let spec = (Service::Redis, self.port(Service::Redis));
        let Ok(redis_dir) = self.layout().open_redis_dir() else {
            return spec;
        };
        // Every sentinel's own file, the newest view winning: a sentinel that was down during a
        // failover keeps the old master and a lower config epoch. Trusting it alone would make
        // the real master a replica of the old one, and its full resync would wipe the newer
        // data.
        let newest = (1..=nanika_config::settings::SENTINELS)
            .filter_map(|n| {
                let text = redis_dir
                    .open_dir(&data_dir_name(Service::Sentinel(n)))
                    .ok()
                    .flatten()
                    .and_then(|d| d.read_small_file("sentinel.conf", 1 << 20).ok().flatten())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())?;
                let value = |key: &str, index: usize| {
                    text.lines().find_map(|line| {
                        let words: Vec<&str> = line.split_whitespace().collect();
                        (words.len() > index
                            && words[0] == "sentinel"
                            && words[1] == key
                            && words[2] == SENTINEL_MASTER)
                            .then(|| words[index].parse::<u64>().ok())
                            .flatten()
                    })
                };
                let port = value("monitor", 4).and_then(|p| u16::try_from(p).ok())?;
                Some((value("config-epoch", 3).unwrap_or(0), port))
            })
            .max();
        match newest {
            Some((_, port)) if port == spec.1 => spec,
            Some((_, port)) => self
                .redis_nodes()
                .into_iter()
                .find(|s| self.port(*s) == port)
                .map_or(spec, |s| (s, port)),
            None => spec,
        }
    }
    /// Whether a Redis topology node has bound its port, learnt as for the spec's Redis
    /// ([`redis::listening`]): its Unix socket, opened right after the port, accepts.
    pub(in crate::native::control) fn redis_node_listening(&self, service: Service) -> bool {
        self.layout()
            .open_redis_dir()
            .ok()
            .and_then(|dir| dir.open_dir(&data_dir_name(service)).ok().flatten())
            .is_some_and(|node| node.connect_unix(redis::SOCKET).is_ok())
    }

    /// After the nodes answer in Sentinel mode: waits until every replica has synced with the
    /// master and every sentinel knows the replica and the two other sentinels, so that a
    /// failover can happen as soon as `up` returns.
    pub(in crate::native::control) fn finish_sentinels(&self) -> Result<()> {
        let password = self.loaded.infra.redis_password();
        let nodes = self.topology_nodes();
        let deadline = std::time::Instant::now() + super::super::READY_TIMEOUT;
        loop {
            let mut waiting = None;
            for node in &nodes {
                let ready = match node {
                    Service::Sentinel(_) => {
                        let reply = crate::health::redis_command(
                            self.port(*node),
                            self.loaded.infra.redis_password(),
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
    pub(in crate::native::control) fn finish_redis_cluster(
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
                .stdin(Stdio::null());
            super::replication::clear_client_env(&mut command);
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
        let deadline = std::time::Instant::now() + super::super::READY_TIMEOUT;
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

    /// Asks the sentinels to fail the master over (`SENTINEL FAILOVER`) and waits until they
    /// name a new master that accepts writes.
    pub fn failover_redis(&self) -> Result<RedisFailover> {
        if self.redis_mode() != RedisMode::Sentinel {
            return Err(RuntimeError::Other(
                "Redis runs without Sentinel: set [topology.redis] mode = \"sentinel\" in nanika.toml and run `nanika up` (a cluster fails over by itself when a master dies)".into(),
            ));
        }
        if !super::super::supervisor::is_running(self.layout()) {
            return Err(RuntimeError::NotRunning {
                service: Service::Redis,
                other_listener: None,
            });
        }
        // Not while another nanika command starts or stops this project's servers.
        let _lock = self.state.lock(&crate::Quiet)?;
        let sentinels: Vec<u16> = self.topology_ports().sentinels;
        let ask = |args: &[&str]| {
            sentinels.iter().find_map(|port| {
                crate::health::redis_command(
                    *port,
                    self.loaded.infra.redis_password(),
                    args,
                    PROBE_TIMEOUT,
                )
                .ok()
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
                self.loaded.infra.redis_password(),
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

    /// What each sentinel says the master is: (the sentinel's port, the master's port or why
    /// it said none).
    pub fn sentinel_views(&self) -> Vec<(u16, std::result::Result<u16, String>)> {
        self.topology_ports()
            .sentinels
            .into_iter()
            .map(|port| {
                let view = crate::health::redis_command(
                    port,
                    self.loaded.infra.redis_password(),
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

    /// Whether the Redis node on `port` says it is a master (`ROLE`).
    pub(in crate::native::control) fn is_redis_master_on(&self, port: u16) -> bool {
        crate::health::redis_command(
            port,
            self.loaded.infra.redis_password(),
            &["ROLE"],
            PROBE_TIMEOUT,
        )
        .is_ok_and(|role| role.lines().next() == Some("master"))
    }
}
