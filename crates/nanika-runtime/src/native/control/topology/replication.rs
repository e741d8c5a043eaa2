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

/// The passfile `pg_rewind` reads the superuser's password from, for one run.
const REWIND_PASSFILE: &str = "rewind.pgpass";

/// A value for a libpq connection string: single-quoted, `'` and `\` escaped.
fn conninfo_value(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Removes from a client tool's environment every variable libpq or redis-cli reads (an
/// exported `PGSERVICE`, `PGSSLMODE`, `PGOPTIONS` or `REDISCLI_AUTH` of the user's shell), so
/// that it connects exactly as nanika says.
pub(in crate::native::control) fn clear_client_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b"PG") || bytes.starts_with(b"REDISCLI") {
            command.env_remove(&name);
        }
    }
}

/// A `.pgpass` field: `:` and `\` escaped.
fn pgpass_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace(':', "\\:")
}

/// The file in a node's data directory that says it was the primary when a failover began and
/// must be rewound before it runs again.
pub const REJOIN_MARKER: &str = "nanika.rejoin";

/// Whether `node`'s data directory holds `name`.
fn data_has(home: &Dir, node: Service, name: &str) -> Result<bool> {
    Ok(home
        .open_dir(&data_dir_name(node))?
        .map(|d| d.kind(name))
        .transpose()?
        .is_some_and(|k| k != crate::native::safe_fs::Kind::Missing))
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
            home.join(TOPOLOGY_HBA)
                .display()
                .to_string()
                .replace('\'', "''")
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
    fn replication_password(&self) -> Result<(Secret, bool)> {
        let layout = self.layout();
        let run = layout.open_run()?;
        let name = "postgres-replication.password";
        // Only a missing file makes a new password: one that cannot be read is an error, not a
        // reason to change the role's password under the running replicas.
        let (password, new) = match run.read_small_file(name, 4096)? {
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                if text.is_empty() {
                    return Err(RuntimeError::Other(format!(
                        "{} is empty; remove it to have a new replication password made (then `nanika failover postgres` or a new replica sets it)",
                        run.join(name).display()
                    )));
                }
                (Secret::new(text), false)
            }
            None => {
                let password = random_password()?;
                run.replace_file(name, password.expose().as_bytes(), 0o600)?;
                (password, true)
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
        Ok((password, new))
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
        self.refuse_if_awaiting_rejoin(service)?;
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
            env: Default::default(),
            clear_env: false,
        })
    }

    /// Makes sure the primary has the replication role (with the current password) and a slot
    /// for `service`, so that WAL the replica has not received is kept while it is stopped.
    fn prepare_primary_for(&self, service: Service, primary_port: u16) -> Result<()> {
        let (password, _) = self.replication_password()?;
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
            .current_dir(&self.layout().postgres_home)
            .stdin(Stdio::null());
        clear_client_env(&mut command);
        command.env("PGPASSFILE", home.join(REPLICATION_PASSFILE));
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
            conninfo_value(
                &self
                    .layout()
                    .postgres_home
                    .join(REPLICATION_PASSFILE)
                    .display()
                    .to_string()
            ),
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
    /// primary is stopped first, whatever state it is in, and marked (`standby.signal` and
    /// [`REJOIN_MARKER`]) before anything is promoted, so two primaries never run at once: a
    /// failover interrupted after that is finished by running it again.
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
        let home = self.layout().open_postgres_home()?;
        // The data directories say which node is the primary even when it is down: every
        // replica's has `standby.signal`.
        let mut primaries = Vec::new();
        let mut unfinished = Vec::new();
        for node in &nodes {
            // A node marked for rejoining is no primary, with or without standby.signal (it is
            // taken away while pg_rewind runs).
            let marked = data_has(&home, *node, REJOIN_MARKER)?;
            if !marked && !data_has(&home, *node, "standby.signal")? {
                primaries.push(*node);
            }
            if marked {
                unfinished.push(*node);
            }
        }
        let [primary] = primaries[..] else {
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
        if let [old] = unfinished[..] {
            // An earlier failover stopped here: the promotion is done, the old primary waits
            // to be rewound.
            progress.note(&format!(
                "finishing the failover that made {primary} the primary: {old} rejoins as a replica"
            ));
            let others: Vec<Service> = nodes
                .iter()
                .copied()
                .filter(|n| *n != old && *n != primary)
                .collect();
            let rewind = self.follow_and_rejoin(primary, old, &others, &nodes, &bins, progress)?;
            return Ok(PostgresFailover {
                old_primary: old,
                new_primary: primary,
                repointed: others,
                rewind,
            });
        }
        let old = primary;
        if let Some(node) = to {
            if node == old {
                return Err(RuntimeError::Other(format!(
                    "{node} is the primary already"
                )));
            }
            if !nodes.contains(&node) {
                return Err(RuntimeError::Other(format!(
                    "{node} is not a PostgreSQL node of this project ({})",
                    nodes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
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
        let replicas: Vec<Service> = nodes.iter().copied().filter(|n| *n != old).collect();
        if replicas.iter().all(|n| received(*n).is_none()) {
            return Err(RuntimeError::Other(
                "no replica answers, so none can be promoted; start them with `nanika up`".into(),
            ));
        }

        progress.step(old, "stopping the old primary");
        match self.stop_locked(old, progress) {
            Ok(()) | Err(RuntimeError::NotRunning { .. }) => {}
            Err(error) => return Err(error),
        }
        self.wait_postmaster_gone(old)?;
        // With the old primary gone no more WAL arrives: the replicas' positions are final.
        let positions: Vec<(Service, u64)> = replicas
            .iter()
            .filter_map(|n| received(*n).map(|lsn| (*n, lsn)))
            .collect();
        let best = positions.iter().map(|(_, lsn)| *lsn).max().unwrap_or(0);
        let target = match to {
            Some(node) => match positions.iter().find(|(n, _)| *n == node) {
                Some((_, lsn)) if *lsn >= best => node,
                found => {
                    let why = match found {
                        Some((_, lsn)) => format!(
                            "it has received {} bytes less WAL than {}, which could then never follow it",
                            best - lsn,
                            positions
                                .iter()
                                .find(|(_, l)| *l == best)
                                .map_or("another replica", |(n, _)| n.as_str())
                        ),
                        None => "it does not answer; start it with `nanika up`".into(),
                    };
                    self.restart_node(old, &bins, progress)?;
                    return Err(RuntimeError::Other(format!(
                        "{node} cannot be promoted: {why}. Nothing was changed: {old} runs as the primary again"
                    )));
                }
            },
            None => positions
                .iter()
                .filter(|(_, lsn)| *lsn == best)
                .map(|(n, _)| *n)
                .min()
                .expect("one replica answered above"),
        };
        // From here the old primary must never start as a primary again.
        let data = home
            .open_dir(&data_dir_name(old))?
            .ok_or_else(|| RuntimeError::Other(format!("{old}'s data directory is gone")))?;
        write_server_file(self, &data, "standby.signal", "")?;
        write_server_file(
            self,
            &data,
            REJOIN_MARKER,
            "This node was the primary when `nanika failover postgres` began; it runs again once rewound (run `nanika failover postgres` to finish).\n",
        )?;

        progress.step(target, "promoting (pg_promote)");
        let promoted = prober
            .text_rows(
                &self.superuser_on(self.port(target)),
                "postgres",
                "SELECT pg_promote(true, 60)::text",
                Duration::from_secs(70),
            )
            .map_err(|e| {
                RuntimeError::Other(format!(
                    "{target} could not be promoted: {e}. {old} is stopped and marked for rejoining; when {target} takes writes, `nanika failover postgres` finishes the failover"
                ))
            })?;
        if promoted
            .first()
            .and_then(|r| r.first().cloned())
            .flatten()
            .as_deref()
            != Some("true")
        {
            return Err(RuntimeError::Other(format!(
                "{target} did not finish its promotion within 60 s (it goes on; see {}). {old} is stopped and marked for rejoining; once {target} takes writes, `nanika failover postgres` finishes the failover",
                self.log_path(target).display()
            )));
        }
        let others: Vec<Service> = replicas.iter().copied().filter(|n| *n != target).collect();
        let rewind = self.follow_and_rejoin(target, old, &others, &nodes, &bins, progress)?;
        Ok(PostgresFailover {
            old_primary: old,
            new_primary: target,
            repointed: others,
            rewind,
        })
    }

    /// After `primary`'s promotion: the replication role's password and the slots on it, the
    /// `others` repointed at it, `old` rewound, made its replica and started; then waits until
    /// every node streams. Each error says that running the failover again finishes it.
    fn follow_and_rejoin(
        &self,
        primary: Service,
        old: Service,
        others: &[Service],
        nodes: &[Service],
        bins: &PostgresBinaries,
        progress: &dyn Progress,
    ) -> Result<String> {
        let again = |what: String| {
            RuntimeError::Other(format!(
                "{what}. {primary} is the primary; {old} is stopped and marked for rejoining: `nanika failover postgres` finishes the failover"
            ))
        };
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let new_port = self.port(primary);
        // The role's password as nanika knows it, set on the new primary whatever happened to
        // the old one's.
        let (password, _) = self.replication_password()?;
        let literal = password.expose().replace('\'', "''");
        let mut statements = vec![format!(
            "ALTER ROLE {} WITH REPLICATION LOGIN PASSWORD '{literal}'",
            quote_ident(REPLICATION_ROLE)
        )];
        for node in others.iter().chain(std::iter::once(&old)) {
            let slot = slot_name(*node);
            statements.push(format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
            ));
        }
        prober
            .execute_quietly(
                &self.superuser_on(new_port),
                "postgres",
                &statements,
                Duration::from_secs(10),
            )
            .map_err(|e| {
                again(format!(
                    "the new primary refused the replication role or a slot: {e}"
                ))
            })?;
        for node in others {
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
                .map_err(|e| again(format!("{node} could not be repointed: {e}")))?;
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
            .map_err(|e| again(format!("{primary} could not checkpoint: {e}")))?;
        let home = self.layout().open_postgres_home()?;
        let data = home
            .open_dir(&data_dir_name(old))?
            .ok_or_else(|| RuntimeError::Other(format!("{old}'s data directory is gone")))?;
        // pg_rewind finishes a killed server's crash recovery in single-user mode (and so does
        // `rewind` first for one stopped during its crash recovery), which refuses to run with
        // standby.signal; the rejoin marker keeps `up` from starting the
        // node meanwhile, and make_standby writes the signal again.
        data.remove_file("standby.signal")?;
        let rewind = self
            .rewind(old, bins, new_port)
            .map_err(|e| again(e.to_string()))?;
        self.make_standby(old, &data, new_port)?;
        data.remove_file(REJOIN_MARKER)?;
        self.restart_node(old, bins, progress)?;
        // The slots it kept as the primary would pin WAL on it now that nobody streams from it.
        let _ = prober.execute_quietly(
            &self.superuser_on(self.port(old)),
            "postgres",
            &["SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'nanika\\_%' AND NOT active".into()],
            Duration::from_secs(10),
        );
        self.wait_streaming(primary, nodes)?;
        Ok(rewind)
    }

    /// Puts `node` back into the supervisor's plan and waits until it answers.
    fn restart_node(
        &self,
        node: Service,
        bins: &PostgresBinaries,
        progress: &dyn Progress,
    ) -> Result<()> {
        let plan_file = super::super::supervisor::plan_file(self.layout());
        let mut plan: super::super::Plan = super::super::supervisor::read_json(&plan_file)
            .ok_or_else(|| {
                RuntimeError::Other(format!(
                    "cannot read the supervisor's plan {}; `nanika down` then `nanika up` starts everything again",
                    plan_file.display()
                ))
            })?;
        let node_plan = if node == Service::Postgres {
            let mut report = super::super::UpReport::default();
            self.prepare_postgres(bins, progress, &mut report)?
        } else {
            self.prepare_postgres_replica(node, bins, progress)?
        };
        plan.services.insert(node, node_plan);
        super::super::supervisor::write_json(&plan_file, &plan)?;
        self.state
            .signal_supervisor(nix::sys::signal::Signal::SIGHUP)?;
        self.wait_healthy(&[node], None, progress)
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
        self.finish_interrupted_recovery(old, bins)?;
        let source = self.superuser_on(new_port);
        // The superuser's password in an owner-only passfile of the server user's, for this
        // run only: never in argv or the environment of a process others may read.
        let home = self.layout().open_postgres_home()?;
        write_server_file(
            self,
            &home,
            REWIND_PASSFILE,
            &format!(
                "*:*:*:{}:{}\n",
                pgpass_escape(&source.user),
                pgpass_escape(source.password.expose())
            ),
        )?;
        let mut command = Command::new(bins.tool("pg_rewind"));
        command
            .arg("--target-pgdata")
            .arg(self.layout().postgres_home.join(data_dir_name(old)))
            .arg(format!(
                "--source-server=host=127.0.0.1 port={new_port} user={} dbname=postgres",
                conninfo_value(&source.user)
            ))
            // The configuration the node runs with, for the single-user run that finishes the
            // crash recovery of an old primary that was killed.
            .arg(format!(
                "--config-file={}",
                self.layout().postgres_conf().display()
            ))
            .env("PGPASSFILE", home.join(REWIND_PASSFILE))
            .current_dir(&self.layout().postgres_home)
            .stdin(Stdio::null());
        clear_client_env(&mut command);
        command.env("PGPASSFILE", home.join(REWIND_PASSFILE));
        postgres::as_server_user(&mut command, self.layout());
        let output = command.output();
        home.remove_file(REWIND_PASSFILE)?;
        let output = output.map_err(RuntimeError::io(format!(
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

    /// Finishes the crash recovery of `old` when it was stopped in the middle of one (the
    /// supervisor restarted the killed primary, and the failover stopped it before it had
    /// replayed its WAL): its control file then says "shut down in recovery", which `pg_rewind`
    /// takes for a clean shutdown whose WAL ends at the last checkpoint, since crash recovery
    /// keeps no minimum recovery point. WAL written after that checkpoint and never received by
    /// the new primary would go unseen: "no rewind required", and the node, started as a
    /// replica, replays it past the point the new timeline forked off and never streams. A
    /// single-user run (as `pg_rewind` makes of a killed server) replays all of it and ends with
    /// a shutdown checkpoint, so that `pg_rewind` sees where its WAL really ends.
    fn finish_interrupted_recovery(&self, old: Service, bins: &PostgresBinaries) -> Result<()> {
        let data = self.layout().postgres_home.join(data_dir_name(old));
        let mut control = Command::new(bins.tool("pg_controldata"));
        control.arg(&data).stdin(Stdio::null());
        clear_client_env(&mut control);
        control.env("LC_ALL", "C");
        postgres::as_server_user(&mut control, self.layout());
        let output = control.output().map_err(RuntimeError::io(format!(
            "cannot run {}",
            bins.tool("pg_controldata").display()
        )))?;
        let control = String::from_utf8_lossy(&output.stdout);
        let field = |name: &str| {
            control
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        // A standby shut down cleanly says "shut down in recovery" too, but keeps a minimum
        // recovery point, which pg_rewind reads: a single-user run there would write a
        // checkpoint its primary never had. Only crash recovery leaves the point at 0/0.
        if field("Database cluster state:").as_deref() != Some("shut down in recovery")
            || field("Minimum recovery ending location:").as_deref() != Some("0/0")
        {
            return Ok(());
        }
        let mut single = Command::new(bins.tool("postgres"));
        single
            .arg("--single")
            .arg("-D")
            .arg(&data)
            .arg("-c")
            .arg(format!(
                "config_file={}",
                self.layout().postgres_conf().display()
            ))
            .arg("template1")
            .current_dir(&self.layout().postgres_home)
            .stdin(Stdio::null());
        clear_client_env(&mut single);
        postgres::as_server_user(&mut single, self.layout());
        let output = single.output().map_err(RuntimeError::io(format!(
            "cannot run {}",
            bins.tool("postgres").display()
        )))?;
        if !output.status.success() {
            return Err(RuntimeError::Other(format!(
                "{old} was stopped during its crash recovery, and finishing it (postgres --single) failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Waits until every node but `primary` streams from it. A node that is still catching up
    /// (its replay position moves) is waited for as long as it moves: under heavy writes a
    /// rejoined old primary may need longer than [`READY_TIMEOUT`](super::super::READY_TIMEOUT)
    /// to replay what the new primary wrote meanwhile. One that stands still that long is named,
    /// with what both sides say of the connection.
    fn wait_streaming(&self, primary: Service, nodes: &[Service]) -> Result<()> {
        let prober = Prober::new().map_err(RuntimeError::io("cannot start the health checks"))?;
        let patience = super::super::READY_TIMEOUT;
        let mut last_move = std::time::Instant::now();
        let mut replayed: std::collections::BTreeMap<Service, String> = Default::default();
        loop {
            let rows = prober
                .text_rows(
                    &self.superuser_on(self.port(primary)),
                    "postgres",
                    "SELECT application_name, state FROM pg_stat_replication",
                    PROBE_TIMEOUT,
                )
                .unwrap_or_default();
            let state_of = |node: Service| -> Option<String> {
                let name = application_name(node);
                rows.iter()
                    .find(|r| r.first().cloned().flatten().as_deref() == Some(name.as_str()))
                    .and_then(|r| r.get(1).cloned().flatten())
            };
            let missing: Vec<Service> = nodes
                .iter()
                .copied()
                .filter(|n| *n != primary && state_of(*n).as_deref() != Some("streaming"))
                .collect();
            let Some(&first) = missing.first() else {
                return Ok(());
            };
            for node in &missing {
                let position = self.receiver_status(&prober, *node).map(|(_, lsn)| lsn);
                if let Some(position) = position
                    && replayed.get(node) != Some(&position)
                {
                    replayed.insert(*node, position);
                    last_move = std::time::Instant::now();
                }
            }
            if last_move.elapsed() > patience {
                let receiver = self
                    .receiver_status(&prober, first)
                    .map_or("it does not answer".to_string(), |(status, lsn)| {
                        format!("its WAL receiver is {status}, replayed up to {lsn}")
                    });
                return Err(RuntimeError::Other(format!(
                    "{first} does not stream from the new primary {primary} and has replayed nothing for {} s (the primary sees its connection as {}; {receiver}); see {}",
                    patience.as_secs(),
                    state_of(first).unwrap_or_else(|| "absent".into()),
                    self.log_path(first).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `node` says of its replication: its WAL receiver's status (`none` without one) and
    /// the position it has replayed to; `None` when it does not answer.
    fn receiver_status(&self, prober: &Prober, node: Service) -> Option<(String, String)> {
        let rows = prober
            .text_rows(
                &self.superuser_on(self.port(node)),
                "postgres",
                "SELECT COALESCE((SELECT status FROM pg_stat_wal_receiver), 'none'), COALESCE(pg_last_wal_replay_lsn()::text, '')",
                PROBE_TIMEOUT,
            )
            .ok()?;
        let row = rows.into_iter().next()?;
        let mut values = row.into_iter().map(Option::unwrap_or_default);
        Some((values.next()?, values.next()?))
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

    /// Whether `node` waits to be rewound after a failover that stopped halfway (its data
    /// directory holds [`REJOIN_MARKER`]); false before PostgreSQL's home exists.
    pub(in crate::native::control) fn awaiting_rejoin(&self, node: Service) -> Result<bool> {
        if crate::native::safe_fs::kind(&self.layout().postgres_home)
            == crate::native::safe_fs::Kind::Missing
        {
            return Ok(false);
        }
        let home = self.layout().open_postgres_home()?;
        data_has(&home, node, REJOIN_MARKER)
    }

    /// Refuses to start `node` while it waits to be rewound after a failover that stopped
    /// halfway: started as it is, it would be a second primary, or a replica of nothing.
    pub(in crate::native::control) fn refuse_if_awaiting_rejoin(
        &self,
        node: Service,
    ) -> Result<()> {
        if self.awaiting_rejoin(node)? {
            return Err(RuntimeError::Other(format!(
                "{node} was the primary when a failover began, and has not been rewound to follow the new primary; nothing was started. `nanika failover postgres` finishes the failover"
            )));
        }
        Ok(())
    }

    /// Whether `node`'s data directory is a primary's (no `standby.signal`), whether or not it
    /// runs.
    pub(in crate::native::control) fn is_postgres_primary_by_data(&self, node: Service) -> bool {
        self.layout().open_postgres_home().is_ok_and(|home| {
            home.open_dir(&data_dir_name(node)).ok().flatten().is_some()
                && !data_has(&home, node, "standby.signal").unwrap_or(true)
        })
    }
}
