//! Redis as the OT-Container-Kit redis-operator's resources: the committed `redis.conf` in a
//! ConfigMap the operator includes last in each node's configuration (so the file's values win
//! over the operator's defaults), and a `RedisReplication`, `RedisSentinel` or `RedisCluster`.

use super::{
    Connection, Export, ExportError, ExportOptions, ManagedSetting, Names, Operator, REDIS_API,
    RedisLayout, SecretNeeded, managed_comment, manifest, quantity, secret_manifest,
};
use crate::check;
use crate::model::Infrastructure;
use crate::project::REDIS_CONF;
use crate::settings::{CLUSTER_NODES, SENTINEL_REPLICAS, SENTINELS, Settings};
use serde_json::json;

/// The directives the redis-operator writes into each node's configuration itself, with why.
/// It includes the ConfigMap's file after them, so carrying one of these would override what
/// the operator needs for its pods, Services, replication or cluster bus.
pub const REDIS_OPERATOR_MANAGED: &[(&str, &str)] = &[
    (
        "bind",
        "the redis-operator binds every address of the pod (`bind 0.0.0.0 ::`); clients reach Redis through its Services",
    ),
    (
        "port",
        "the redis-operator runs Redis on 6379, the port of its Services",
    ),
    (
        "requirepass",
        "the redis-operator sets it from the Secret in kubernetesConfig.redisSecret",
    ),
    (
        "masterauth",
        "the redis-operator sets it from the Secret in kubernetesConfig.redisSecret",
    ),
    (
        "protected-mode",
        "the redis-operator turns it on exactly when a password is set",
    ),
    (
        "dir",
        "the redis-operator keeps the data on the pod's volume (/data)",
    ),
    ("daemonize", "Redis runs in the foreground of its container"),
    (
        "supervised",
        "Redis runs in the foreground of its container",
    ),
    ("pidfile", "the redis-operator sets it inside the container"),
    (
        "replicaof",
        "the redis-operator (or Sentinel) chooses the master",
    ),
    (
        "slaveof",
        "the redis-operator (or Sentinel) chooses the master",
    ),
    (
        "include",
        "the redis-operator includes this ConfigMap's file; a file inside the pod cannot be included",
    ),
    ("aclfile", "the redis-operator sets it from spec.acl"),
    (
        "cluster-enabled",
        "the redis-operator sets it for a RedisCluster",
    ),
    (
        "cluster-config-file",
        "the redis-operator keeps it on the node-conf volume",
    ),
    (
        "cluster-announce-ip",
        "the redis-operator announces the pod's address",
    ),
    (
        "cluster-announce-hostname",
        "the redis-operator announces the pod's hostname",
    ),
    ("cluster-announce-port", "the redis-operator sets it"),
    ("cluster-announce-bus-port", "the redis-operator sets it"),
    ("tls-port", "the redis-operator sets it from spec.TLS"),
    ("tls-cert-file", "the redis-operator sets it from spec.TLS"),
    ("tls-key-file", "the redis-operator sets it from spec.TLS"),
    (
        "tls-ca-cert-file",
        "the redis-operator sets it from spec.TLS",
    ),
];

/// The operator's images are its own builds (its entrypoint writes the configuration), one
/// tag per Redis release.
const REDIS_IMAGE: &str = "quay.io/opstree/redis:v7.0.15";
const SENTINEL_IMAGE: &str = "quay.io/opstree/redis-sentinel:v7.0.15";
const EXPORTER_IMAGE: &str = "quay.io/opstree/redis-exporter:v1.44.0";

/// Each node's volume: the AOF and its rewrite (which writes a new file beside the old one)
/// of a dataset bounded by the spec's maxmemory 512mb.
const STORAGE_SIZE: &str = "2Gi";

/// The key the operator reads its additional configuration from, inside the ConfigMap.
const ADDITIONAL_CONF_KEY: &str = "redis-additional.conf";

/// The master group the sentinels watch: the name Redis's documentation and the clients'
/// examples use.
pub const MASTER_GROUP: &str = "mymaster";

/// Adds the Redis resources to `export`.
pub(super) fn export(
    infra: &Infrastructure,
    settings: &Settings,
    options: &ExportOptions,
    names: &Names,
    layout: RedisLayout,
    export: &mut Export,
) -> Result<(), ExportError> {
    let compose = &infra.compose.redis;
    if compose.major_version() != Some(7) {
        return Err(ExportError::Version {
            service: "Redis",
            version: compose
                .major_version()
                .map_or("with no version".into(), |m| m.to_string()),
            operator: Operator::RedisOperator,
            image: compose.image.clone(),
        });
    }
    let redis = &infra.redis;

    let mut conf = String::new();
    let mut managed = Vec::new();
    for setting in check::settings(infra)
        .into_iter()
        .filter(|s| s.file == REDIS_CONF)
    {
        let key = setting.key.to_ascii_lowercase();
        match REDIS_OPERATOR_MANAGED.iter().find(|(name, _)| *name == key) {
            Some((_, reason)) => managed.push(ManagedSetting {
                file: REDIS_CONF,
                key: setting.key,
                value: setting.value,
                operator: Operator::RedisOperator,
                reason: (*reason).to_string(),
            }),
            None => {
                conf += &format!(
                    "{} {}\n",
                    setting.key,
                    conf_args(&setting.key, &setting.value)
                );
            }
        }
    }
    if layout == RedisLayout::Cluster {
        // nanika.toml's node timeout; the operator's own default (15 s) is replaced by it, as
        // this file is included last.
        conf += &format!(
            "cluster-node-timeout {}\n",
            settings.topology.redis.node_timeout_ms
        );
    }
    let config_name = format!("{}-config", names.redis);
    export.files.push(manifest(
        "redis-config.yaml",
        &managed_comment(
            &format!(
                "{REDIS_CONF}, included last in each Redis node's configuration. Directives the\nredis-operator manages itself, so not here:"
            ),
            &managed,
        ),
        &json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": names.metadata(&config_name),
            "data": {ADDITIONAL_CONF_KEY: conf},
        }),
    ));

    let password_secret = format!("{}-password", names.redis);
    let password = infra.redis_password();
    let mut kubernetes_config = json!({
        "image": REDIS_IMAGE,
        "imagePullPolicy": "IfNotPresent",
    });
    if redis.maxmemory.bytes() > 0 {
        // Requested, not limited: an AOF rewrite forks, and a limit at maxmemory would have
        // the kernel kill Redis for the copy-on-write pages of the fork.
        kubernetes_config["resources"] =
            json!({"requests": {"memory": quantity(redis.maxmemory.bytes())}});
    }
    if password.is_some() {
        kubernetes_config["redisSecret"] = json!({"name": password_secret, "key": "password"});
    }
    let storage = json!({
        "volumeClaimTemplate": {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": STORAGE_SIZE}},
            },
        },
    });
    let exporter = json!({"enabled": true, "image": EXPORTER_IMAGE});
    let redis_config = json!({"additionalRedisConfig": config_name});
    let namespace = &names.namespace;

    match layout {
        RedisLayout::Replication | RedisLayout::Sentinel => {
            let mut spec = json!({
                "clusterSize": 1 + u32::from(SENTINEL_REPLICAS),
                "kubernetesConfig": kubernetes_config,
                "redisConfig": redis_config,
                "storage": storage,
            });
            if options.monitoring {
                spec["redisExporter"] = exporter;
            }
            export.files.push(manifest(
                "redis-replication.yaml",
                &[
                    "A master and its replica, as nanika's Sentinel topology runs them."
                        .to_string(),
                ],
                &json!({
                    "apiVersion": REDIS_API,
                    "kind": "RedisReplication",
                    "metadata": names.metadata(&names.redis),
                    "spec": spec,
                }),
            ));
            if layout == RedisLayout::Sentinel {
                let topology = &settings.topology.redis;
                let mut sentinel_config = json!({
                    "redisReplicationName": names.redis,
                    "masterGroupName": MASTER_GROUP,
                    "quorum": (SENTINELS / 2 + 1).to_string(),
                    "downAfterMilliseconds": topology.down_after_ms.to_string(),
                    "failoverTimeout": topology.failover_timeout_ms.to_string(),
                });
                if password.is_some() {
                    sentinel_config["redisReplicationPassword"] =
                        json!({"secretKeyRef": {"name": password_secret, "key": "password"}});
                }
                export.files.push(manifest(
                    "redis-sentinel.yaml",
                    &["Three sentinels watching the master (quorum 2), with nanika.toml's\n[topology.redis] down_after_ms and failover_timeout_ms.".to_string()],
                    &json!({
                        "apiVersion": REDIS_API,
                        "kind": "RedisSentinel",
                        "metadata": names.metadata(&names.redis),
                        "spec": {
                            "clusterSize": u32::from(SENTINELS),
                            "kubernetesConfig": {
                                "image": SENTINEL_IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                            },
                            "redisSentinelConfig": sentinel_config,
                        },
                    }),
                ));
                export.notes.push(format!(
                    "Sentinel: down-after-milliseconds {} and failover-timeout {} come from nanika.toml, whose defaults suit loopback; between nodes, a few seconds keeps a network hiccup from causing a failover",
                    topology.down_after_ms, topology.failover_timeout_ms
                ));
                export.connection.push(Connection {
                    variable: "REDIS_SENTINELS",
                    value: format!("{}-sentinel.{namespace}.svc:26379", names.redis),
                });
                export.connection.push(Connection {
                    variable: "REDIS_SENTINEL_MASTER",
                    value: MASTER_GROUP.into(),
                });
            } else {
                export.connection.push(Connection {
                    variable: "REDIS_URL",
                    value: format!(
                        "redis://{}{}-master.{namespace}.svc:6379",
                        if password.is_some() { ":PASSWORD@" } else { "" },
                        names.redis
                    ),
                });
            }
        }
        RedisLayout::Cluster => {
            let per_role = u32::from(CLUSTER_NODES) / 2;
            let mut spec = json!({
                "clusterSize": per_role,
                "clusterVersion": "v7",
                "persistenceEnabled": redis.appendonly,
                "kubernetesConfig": kubernetes_config,
                "redisLeader": {"redisConfig": redis_config.clone()},
                "redisFollower": {"redisConfig": redis_config},
                "storage": storage,
            });
            if options.monitoring {
                spec["redisExporter"] = exporter;
            }
            export.files.push(manifest(
                "redis-cluster.yaml",
                &["Three masters (leaders) each with a replica (follower), as nanika's Cluster\ntopology runs them.".to_string()],
                &json!({
                    "apiVersion": REDIS_API,
                    "kind": "RedisCluster",
                    "metadata": names.metadata(&names.redis),
                    "spec": spec,
                }),
            ));
            export.connection.push(Connection {
                variable: "REDIS_URL",
                value: format!(
                    "redis://{}{}-leader.{namespace}.svc:6379 (a cluster client: it follows MOVED to the other masters)",
                    if password.is_some() { ":PASSWORD@" } else { "" },
                    names.redis
                ),
            });
        }
    }

    if password.is_none() {
        export.notes.push(format!(
            "Redis: the project sets no password (REDIS_PASSWORD), as the spec; the operator then runs Redis with protected-mode off, open to every pod of the cluster that can reach {}: on a shared cluster set REDIS_PASSWORD and export again",
            names.redis
        ));
    }
    if let Some(password) = password {
        if options.include_secrets {
            export.files.push(secret_manifest(
                names,
                "redis-password.yaml",
                &password_secret,
                "Opaque",
                json!({"password": password.expose()}),
            ));
        } else {
            export.secrets_needed.push(SecretNeeded {
                name: password_secret.clone(),
                purpose: "the Redis password (kubernetesConfig.redisSecret)",
                command: format!(
                    "kubectl create secret generic {password_secret} -n {namespace} --from-literal=password=\"$REDIS_PASSWORD\""
                ),
            });
        }
    }
    if options.monitoring {
        let apps: Vec<String> = match layout {
            RedisLayout::Cluster => vec![
                format!("{}-leader", names.redis),
                format!("{}-follower", names.redis),
            ],
            _ => vec![names.redis.clone()],
        };
        export.files.push(manifest(
            "redis-podmonitor.yaml",
            &["Scrapes the redis-exporter sidecar the operator adds to each Redis pod (port 9121).".to_string()],
            &json!({
                "apiVersion": super::MONITORING_API,
                "kind": "PodMonitor",
                "metadata": names.metadata(&names.redis),
                "spec": {
                    "selector": {
                        "matchExpressions": [{"key": "app", "operator": "In", "values": apps}],
                    },
                    "podMetricsEndpoints": [{"port": "redis-exporter"}],
                },
            }),
        ));
    }
    export.managed.extend(managed);
    Ok(())
}

/// A directive's arguments as `redis.conf` spells them: a file name is quoted as the spec
/// writes `appendfilename "appendonly.aof"`, so that a name with a space stays one argument.
fn conf_args(key: &str, value: &str) -> String {
    if key.eq_ignore_ascii_case("appendfilename") {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value.to_string()
    }
}
