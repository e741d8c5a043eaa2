//! `doctor`'s checks of `nanika.toml`'s topology: the nodes, PostgreSQL's replication, the
//! sentinels, the cluster.

use super::{Check, fail, ok, warn};

/// A replica further behind than this is worth a warning: on loopback a healthy one is a few
/// kilobytes behind at most.
const REPLICA_LAG_WARN_BYTES: u64 = 16 * 1024 * 1024;

/// With `nanika.toml`'s topology (native runtime): every node answers; PostgreSQL has one
/// primary, every replica streams through its slot and is not far behind; the sentinels agree
/// on one master; every cluster node serves every slot.
pub fn topology_checks(native: &nanika_runtime::native::control::Native<'_>) -> Vec<Check> {
    use nanika_runtime::{Service, ServiceState};
    let mut checks = Vec::new();
    let statuses = native.status();
    let down: Vec<String> = statuses
        .iter()
        .filter(|s| s.state != ServiceState::Healthy)
        .map(|s| format!("{} ({})", s.service, s.state))
        .collect();
    checks.push(if down.is_empty() {
        ok(
            "topology.nodes",
            format!("all {} nodes answer", statuses.len()),
        )
    } else {
        fail(
            "topology.nodes",
            format!("not answering: {}", down.join(", ")),
            "`nanika up` starts them; `nanika logs` shows why one stopped",
        )
    });
    if native.has_postgres_replicas() {
        let nodes: Vec<_> = statuses
            .iter()
            .filter(|s| s.service.kind() == Service::Postgres && s.state == ServiceState::Healthy)
            .collect();
        let primaries: Vec<String> = nodes
            .iter()
            .filter(|s| s.role.as_deref() == Some("primary"))
            .map(|s| s.service.to_string())
            .collect();
        let troubled: Vec<String> = nodes
            .iter()
            .filter(|s| {
                s.role
                    .as_deref()
                    .is_some_and(|r| r.starts_with("replica ("))
            })
            .map(|s| format!("{} is a {}", s.service, s.role.clone().unwrap_or_default()))
            .collect();
        let behind: Vec<String> = nodes
            .iter()
            .filter(|s| s.lag_bytes.is_some_and(|b| b > REPLICA_LAG_WARN_BYTES))
            .map(|s| format!("{} is {} bytes behind", s.service, s.lag_bytes.unwrap_or(0)))
            .collect();
        let slots = native.replication_slots();
        let idle: Vec<String> = slots
            .iter()
            .filter(|s| !s.active)
            .map(|s| {
                format!(
                    "slot {} is inactive and keeps {} bytes of WAL",
                    s.name,
                    s.retained_bytes.unwrap_or(0)
                )
            })
            .collect();
        checks.push(if primaries.len() != 1 {
            fail(
                "topology.postgres",
                format!("{} primaries answer ({})", primaries.len(), primaries.join(", ")),
                "exactly one node must take writes: stop the extra one and rejoin it with `nanika failover postgres --to NODE`",
            )
        } else if !troubled.is_empty() {
            fail(
                "topology.postgres",
                troubled.join("; "),
                "see the replica's log (`nanika logs`); `nanika restart` restarts it",
            )
        } else if !behind.is_empty() || !idle.is_empty() {
            warn(
                "topology.postgres",
                behind.into_iter().chain(idle).collect::<Vec<_>>().join("; "),
                "a replica that stays behind or stopped makes the primary keep WAL: `nanika up` starts it",
            )
        } else {
            ok(
                "topology.postgres",
                format!(
                    "{} is the primary; {} replica(s) stream through their slots",
                    primaries[0],
                    nodes.len() - 1
                ),
            )
        });
    }
    let views = native.sentinel_views();
    if !views.is_empty() {
        let masters: std::collections::BTreeSet<String> = views
            .iter()
            .map(|(_, view)| match view {
                Ok(port) => format!("port {port}"),
                Err(why) => why.clone(),
            })
            .collect();
        checks.push(
            match (masters.len(), views.iter().all(|(_, v)| v.is_ok())) {
                (1, true) => ok(
                    "topology.sentinel",
                    format!(
                        "{} sentinels agree: the master is on {}",
                        views.len(),
                        masters.iter().next().cloned().unwrap_or_default()
                    ),
                ),
                _ => fail(
                    "topology.sentinel",
                    format!(
                        "the sentinels disagree: {}",
                        views
                            .iter()
                            .map(|(port, view)| match view {
                                Ok(master) => format!("{port} says {master}"),
                                Err(why) => format!("{port}: {why}"),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "`nanika up` starts stopped sentinels; they converge within seconds",
                ),
            },
        );
    }
    let cluster = native.cluster_states();
    if !cluster.is_empty() {
        let bad: Vec<String> = cluster
            .iter()
            .filter_map(|(node, state)| match state {
                Ok((state, slots)) if state == "ok" && *slots == 16_384 => None,
                Ok((state, slots)) => {
                    Some(format!("{node}: cluster_state {state}, {slots} slots ok"))
                }
                Err(why) => Some(format!("{node}: {why}")),
            })
            .collect();
        checks.push(if bad.is_empty() {
            ok(
                "topology.cluster",
                format!("{} nodes, every one of the 16384 slots served", cluster.len()),
            )
        } else {
            fail(
                "topology.cluster",
                bad.join("; "),
                "`nanika up` starts stopped nodes; a master's replica takes over after cluster-node-timeout",
            )
        });
    }
    checks
}
