//! PostgreSQL streaming replicas: the replication role and its passfile, `pg_basebackup` of a
//! new replica, each node's role and lag, `nanika failover postgres` (promote, repoint, rewind).

use super::super::{Native, random_password};
use super::{
    NodeRole, PROBE_TIMEOUT, REPLICATION_PASSFILE, REPLICATION_ROLE, TOPOLOGY_HBA,
    application_name, data_dir_name, slot_name, write_server_file,
};
use crate::error::{Result, RuntimeError};
use crate::health::{PostgresTarget, Prober, quote_ident};
use crate::native::binaries::PostgresBinaries;
use crate::native::postgres;
use crate::native::safe_fs::Dir;
use crate::native::supervisor::ServicePlan;
use crate::{Progress, Service};
use nanika_config::Secret;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    /// The settings every PostgreSQL node runs with beyond the committed file when there are
    /// replicas, each with the reason: nanika's `pg_hba.conf` (replication for its role only,
    /// on loopback), `wal_log_hints` (so `nanika failover` can rejoin an old primary with
    /// `pg_rewind`), and `synchronous_standby_names` when asked for.
    pub(in crate::native::control) fn replication_settings(&self) -> Result<String> {
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
    pub(in crate::native::control) fn superuser_on(&self, port: u16) -> PostgresTarget {
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
        self.postgres_nodes()
            .into_iter()
            .map(|node| (node, self.port(node)))
            .find(|(_, port)| self.is_postgres_primary_on(*port))
    }

    /// Makes a replica's data directory by `pg_basebackup` from the primary, when it has none,
    /// and returns how the supervisor runs it.
    pub(in crate::native::control) fn prepare_postgres_replica(
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
    pub(in crate::native::control) fn make_standby(
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
    pub(in crate::native::control) fn conninfo(
        &self,
        service: Service,
        primary_port: u16,
    ) -> String {
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
        if !super::super::supervisor::is_running(self.layout()) {
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
        let mut plan: super::super::Plan = super::super::supervisor::read_json(
            &super::super::supervisor::plan_file(self.layout()),
        )
        .unwrap_or_default();
        let old_plan = if old == Service::Postgres {
            let mut report = super::super::UpReport::default();
            self.prepare_postgres(&bins, progress, &mut report)?
        } else {
            self.prepare_postgres_replica(old, &bins, progress)?
        };
        plan.services.insert(old, old_plan);
        super::super::supervisor::write_json(
            &super::super::supervisor::plan_file(self.layout()),
            &plan,
        )?;
        self.state
            .signal_supervisor(nix::sys::signal::Signal::SIGHUP)?;
        self.wait_healthy(&[old], None, progress)?;
        // The slots it kept as the primary would pin WAL on it now that nobody streams from it.
        let _ = prober.execute_quietly(
            &self.superuser_on(self.port(old)),
            "postgres",
            &["SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'nanika\\_%' AND NOT active".into()],
            Duration::from_secs(10),
        );
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
        let deadline = std::time::Instant::now() + super::super::DOWN_TIMEOUT;
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
                    super::super::DOWN_TIMEOUT.as_secs()
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
                "pg_rewind of {old} failed; it is stopped, and {target_name} on port {new_port} is the primary{}. pg_rewind said:\n{}",
                if self.loaded.settings.topology.postgres.synchronous {
                    " (with synchronous = true its commits wait until a replica streams from it: with no other replica, until this one is back)"
                } else {
                    ""
                },
                said.trim()
            )));
        }
        let last = said.lines().last().unwrap_or_default().trim();
        Ok(last.strip_prefix("pg_rewind: ").unwrap_or(last).to_string())
    }

    /// Waits until every node but `primary` streams from it.
    fn wait_streaming(&self, primary: Service, nodes: &[Service]) -> Result<()> {
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let deadline = std::time::Instant::now() + super::super::READY_TIMEOUT;
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

    /// Whether the PostgreSQL node on `port` answers as a primary (not in recovery).
    pub(in crate::native::control) fn is_postgres_primary_on(&self, port: u16) -> bool {
        Prober::new().is_ok_and(|prober| {
            prober
                .text_rows(
                    &self.superuser_on(port),
                    "postgres",
                    "SELECT pg_is_in_recovery()::text",
                    PROBE_TIMEOUT,
                )
                .is_ok_and(|rows| {
                    rows.first()
                        .and_then(|r| r.first().cloned())
                        .flatten()
                        .as_deref()
                        == Some("false")
                })
        })
    }

    /// Drops the primary's slots of replicas `nanika.toml` no longer asks for, when no replica
    /// streams through them: a slot nobody uses would keep WAL without end. Returns what it did.
    pub(in crate::native::control) fn drop_retired_slots(&self) -> Vec<String> {
        let kept: Vec<String> = self.postgres_nodes().into_iter().map(slot_name).collect();
        let Some((_, port)) = self.postgres_primary() else {
            return Vec::new();
        };
        let Ok(prober) = Prober::new() else {
            return Vec::new();
        };
        self.replication_slots()
            .into_iter()
            .filter(|slot| !slot.active && !kept.contains(&slot.name))
            .filter_map(|slot| {
                prober
                    .execute_quietly(
                        &self.superuser_on(port),
                        "postgres",
                        &[format!("SELECT pg_drop_replication_slot('{}')", slot.name)],
                        PROBE_TIMEOUT,
                    )
                    .ok()
                    .map(|()| {
                        format!(
                            "dropped the replication slot {} of a replica nanika.toml no longer asks for, so the primary stops keeping WAL for it",
                            slot.name
                        )
                    })
            })
            .collect()
    }
}
