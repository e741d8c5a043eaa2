//! Redis as the OT-Container-Kit redis-operator's resources: the committed `redis.conf` in a
//! ConfigMap the operator includes last in each node's configuration (so the file's values win
//! over the operator's defaults), and a `RedisReplication`, `RedisSentinel` or `RedisCluster`.

use super::{
    Connection, Export, ExportError, ExportOptions, ManagedSetting, Names, Operator, REDIS_API,
    RedisLayout, SecretNeeded, UNSET_HINT, managed_comment, manifest, quantity, secret_manifest,
};
use crate::check;
use crate::model::Infrastructure;
use crate::project::{REDIS_CONF, SETTINGS_FILE};
use crate::secret::MASK;
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
        "masteruser",
        "the redis-operator replicates with the password of kubernetesConfig.redisSecret; ACL users come from a Secret in spec.acl",
    ),
    (
        "user",
        "an ACL user holds a password: the redis-operator takes ACL users from a Secret in spec.acl, never from a ConfigMap",
    ),
    (
        "tls-key-file-pass",
        "a password: the redis-operator sets TLS from spec.TLS and its Secret",
    ),
    (
        "tls-client-key-file-pass",
        "a password: the redis-operator sets TLS from spec.TLS and its Secret",
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
        "the redis-operator keeps it on the node-conf volume (storage.nodeConfVolume, which the export turns on)",
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

/// Why a directive holding a password that [`REDIS_OPERATOR_MANAGED`] does not name is left out.
const PASSWORD_REASON: &str =
    "a password: the redis-operator's Secrets carry passwords, never a ConfigMap";

pub use crate::redisconf::is_secret_directive;

/// Why the redis-operator, rather than the ConfigMap, carries `key`, if it does.
fn managed_reason(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    REDIS_OPERATOR_MANAGED
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, reason)| *reason)
        .or_else(|| is_secret_directive(&key).then_some(PASSWORD_REASON))
}

/// The reason nanika's own failure-detection timings are left to the operator.
pub const LOOPBACK_TIMINGS: &str =
    "loopback timings for a laptop; the operator's defaults suit a network";

/// Pods run as the image's `redis` user (uid 1000) and the volume is made writable by its
/// group: on most storage classes a fresh volume belongs to root, and Redis could not write
/// its AOF or RDB there.
fn pod_security_context() -> serde_json::Value {
    json!({"runAsUser": 1000, "fsGroup": 1000})
}

/// The operator's images are its own builds (its entrypoint writes the configuration), one
/// tag per Redis release.
const REDIS_IMAGE: &str = "quay.io/opstree/redis:v7.0.15";
const SENTINEL_IMAGE: &str = "quay.io/opstree/redis-sentinel:v7.0.15";
const EXPORTER_IMAGE: &str = "quay.io/opstree/redis-exporter:v1.44.0";

/// Each node's volume: the AOF and its rewrite (which writes a new file beside the old one)
/// of a dataset bounded by the spec's maxmemory 512mb.
const STORAGE_SIZE: &str = "2Gi";

/// Each cluster node's `nodes.conf` volume: a few kilobytes, at the size most storage classes
/// provision at least.
const NODE_CONF_SIZE: &str = "1Gi";

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
        // A directive holding a secret anywhere in it (`sentinel auth-pass`) is left out too.
        let reason =
            managed_reason(&setting.key).or_else(|| setting.secret.then_some(PASSWORD_REASON));
        match reason {
            Some(reason) => managed.push(ManagedSetting {
                file: REDIS_CONF,
                value: if setting.secret || is_secret_directive(&setting.key) {
                    MASK.to_string()
                } else {
                    setting.value
                },
                key: setting.key,
                operator: Operator::RedisOperator,
                reason: reason.to_string(),
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
    // nanika.toml's failure-detection timings suit loopback, where a node answers within a
    // millisecond; between pods a network hiccup would look like a failure, so the operators'
    // defaults are kept and the timings listed as left out.
    let topology = &settings.topology.redis;
    let timing = |key: &str, value: u64| ManagedSetting {
        file: SETTINGS_FILE,
        key: format!("[topology.redis] {key}"),
        value: value.to_string(),
        operator: Operator::RedisOperator,
        reason: LOOPBACK_TIMINGS.to_string(),
    };
    let timings = match layout {
        RedisLayout::Replication => Vec::new(),
        RedisLayout::Sentinel => vec![
            timing("down_after_ms", topology.down_after_ms.into()),
            timing("failover_timeout_ms", topology.failover_timeout_ms.into()),
        ],
        RedisLayout::Cluster => vec![timing("node_timeout_ms", topology.node_timeout_ms.into())],
    };
    let timings_comment = managed_comment(
        &format!("Not exported from {SETTINGS_FILE}, so the redis-operator's defaults apply:"),
        &timings,
    );
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
    let claim = |size: &str| {
        json!({
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            },
        })
    };
    let storage = json!({"volumeClaimTemplate": claim(STORAGE_SIZE)});
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
                "podSecurityContext": pod_security_context(),
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
                let mut sentinel_config = json!({
                    "redisReplicationName": names.redis,
                    "masterGroupName": MASTER_GROUP,
                    "quorum": (SENTINELS / 2 + 1).to_string(),
                });
                if password.is_some() {
                    sentinel_config["redisReplicationPassword"] =
                        json!({"secretKeyRef": {"name": password_secret, "key": "password"}});
                }
                export.files.push(manifest(
                    "redis-sentinel.yaml",
                    &[
                        vec!["Three sentinels watching the master (quorum 2).".to_string()],
                        timings_comment.clone(),
                    ]
                    .concat(),
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
                            "podSecurityContext": pod_security_context(),
                        },
                    }),
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
                // nodes.conf on a volume of its own: a node restarted without it would come
                // back with a new identity, a stranger to the other nodes.
                "storage": {
                    "volumeClaimTemplate": claim(STORAGE_SIZE),
                    "nodeConfVolume": true,
                    "nodeConfVolumeClaimTemplate": claim(NODE_CONF_SIZE),
                },
                "podSecurityContext": pod_security_context(),
            });
            if options.monitoring {
                spec["redisExporter"] = exporter;
            }
            export.files.push(manifest(
                "redis-cluster.yaml",
                &[
                    vec!["Three masters (leaders) each with a replica (follower), as nanika's Cluster\ntopology runs them.".to_string()],
                    timings_comment,
                ]
                .concat(),
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
                    "kubectl create secret generic {password_secret} -n {namespace} --from-literal=password=\"${{REDIS_PASSWORD:?{UNSET_HINT}}}\""
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
    export.managed.extend(timings);
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
