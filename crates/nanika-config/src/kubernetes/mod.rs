//! `nanika export kubernetes`: the project's PostgreSQL and Redis as manifests for the operators
//! that run them on a Kubernetes cluster: a CloudNativePG `Cluster` and the OT-Container-Kit
//! redis-operator's `RedisReplication`, `RedisSentinel` or `RedisCluster`, with a
//! `kustomization.yaml` tying them together.
//!
//! Every value comes from the validated project: the settings of the committed
//! `postgresql.conf` and `redis.conf` ([`crate::check::settings`], the one list of them), the app
//! database and role of `.env`, and `nanika.toml`'s topology and backups. A setting the operator
//! manages itself is never dropped in silence: it is listed in [`Export::managed`] with the
//! reason, and the manifests' comments say the same.
//!
//! Pure functions: they return the files' text and never write, print or read the environment.

mod postgres;
mod redis;
pub mod yaml;

use crate::model::Infrastructure;
use crate::settings::{RedisMode, Settings};
use crate::validate::ValidProject;
use serde_json::{Value, json};
use std::fmt;

pub use postgres::{CNPG_MANAGED, CnpgRule};
pub use redis::{LOOPBACK_TIMINGS, REDIS_OPERATOR_MANAGED, is_secret_directive};

/// CloudNativePG's API group and version.
pub const CNPG_API: &str = "postgresql.cnpg.io/v1";
/// The redis-operator's API group and version.
pub const REDIS_API: &str = "redis.redis.opstreelabs.in/v1beta2";
/// The Prometheus operator's API group and version (`PodMonitor`).
pub const MONITORING_API: &str = "monitoring.coreos.com/v1";
/// kustomize's API group and version.
pub const KUSTOMIZE_API: &str = "kustomize.config.k8s.io/v1beta1";

/// The most PostgreSQL instances an export asks for: CloudNativePG takes more, but past this a
/// typo (`--instances 30`) is likelier than a wish.
pub const MAX_INSTANCES: u32 = 9;

/// Every name an export's files can have. A directory's list of an earlier export's files is
/// trusted only for these: a name from elsewhere (`../x`, an absolute path) would have the
/// next export replace or remove a file outside the directory.
pub const FILE_NAMES: &[&str] = &[
    "namespace.yaml",
    "postgres-cluster.yaml",
    "postgres-scheduled-backup.yaml",
    "postgres-app-credentials.yaml",
    "postgres-podmonitor.yaml",
    "redis-config.yaml",
    "redis-replication.yaml",
    "redis-sentinel.yaml",
    "redis-cluster.yaml",
    "redis-password.yaml",
    "redis-podmonitor.yaml",
    "kustomization.yaml",
];

/// What a `kubectl create secret` command prints, and stops at, when a variable it reads is
/// unset or empty: an empty password is never stored.
pub const UNSET_HINT: &str = "set it, e.g. set -a; . ./.env; set +a";

/// How Redis runs on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisLayout {
    /// A master and its replica (`RedisReplication`); clients use the master's Service.
    Replication,
    /// The same, watched by three sentinels (`RedisSentinel`) that fail the master over.
    Sentinel,
    /// Three masters each with a replica (`RedisCluster`).
    Cluster,
}

impl RedisLayout {
    /// The layout matching the project's own `[topology.redis] mode`: the laptop's single
    /// server becomes a master with a replica, since a cluster is where failover is wanted.
    pub fn for_topology(mode: RedisMode) -> Self {
        match mode {
            RedisMode::Single => RedisLayout::Replication,
            RedisMode::Sentinel => RedisLayout::Sentinel,
            RedisMode::Cluster => RedisLayout::Cluster,
        }
    }

    /// The word the command line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisLayout::Replication => "replication",
            RedisLayout::Sentinel => "sentinel",
            RedisLayout::Cluster => "cluster",
        }
    }
}

/// What to export, beyond the project itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The namespace every object goes into.
    pub namespace: String,
    /// PostgreSQL instances (a primary and its standbys); `None`: one more than the project's
    /// `[topology.postgres] replicas`.
    pub instances: Option<u32>,
    /// How Redis runs; `None`: as the project's `[topology.redis] mode` does.
    pub redis: Option<RedisLayout>,
    /// Whether to add a `PodMonitor` for each server (and Redis's exporter sidecar), for a
    /// cluster running the Prometheus operator. The caller decides from the project's
    /// monitoring setting.
    pub monitoring: bool,
    /// Whether to write the passwords of `.env` into `Secret` manifests.
    pub include_secrets: bool,
    /// Where CloudNativePG's barman-cloud puts base backups and WAL (`s3://BUCKET/PATH` or
    /// `gs://BUCKET/PATH`); needed exactly when `[backups] enabled`.
    pub backup_destination: Option<String>,
    /// The endpoint of an S3-compatible store that is not AWS (MinIO, Ceph, …), as
    /// `https://HOST[:PORT]`; only with an `s3://` destination.
    pub backup_endpoint_url: Option<String>,
}

impl ExportOptions {
    /// The options of a plain export into `namespace`: sizes from the project, no monitoring,
    /// no secrets, no backup destination.
    pub fn new(namespace: impl Into<String>) -> Self {
        ExportOptions {
            namespace: namespace.into(),
            instances: None,
            redis: None,
            monitoring: false,
            include_secrets: false,
            backup_destination: None,
            backup_endpoint_url: None,
        }
    }
}

/// Which operator manages a setting the export leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// CloudNativePG.
    CloudNativePg,
    /// The OT-Container-Kit redis-operator.
    RedisOperator,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::CloudNativePg => "CloudNativePG",
            Operator::RedisOperator => "redis-operator",
        })
    }
}

/// A setting of the committed files that the manifests leave to the operator, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSetting {
    /// The file that sets it (`docker/postgres/postgresql.conf`, `docker/redis/redis.conf`).
    pub file: &'static str,
    /// The key as that file spells it.
    pub key: String,
    /// The value as that file spells it (a secret masked).
    pub value: String,
    /// Who manages it on the cluster.
    pub operator: Operator,
    /// Why it is left out, and what takes its place.
    pub reason: String,
}

impl fmt::Display for ManagedSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} = {} ({}): {}",
            self.file, self.key, self.value, self.operator, self.reason
        )
    }
}

/// A Secret the manifests refer to and the export did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretNeeded {
    /// The Secret's name.
    pub name: String,
    /// What it is for.
    pub purpose: &'static str,
    /// A `kubectl create secret` command that makes it, reading the values from variables of
    /// the shell (never holding them) and failing when one is unset or empty.
    pub command: String,
}

/// One manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Its name in the output directory.
    pub name: String,
    /// Its text.
    pub text: String,
    /// Whether it holds a password (written only with `--include-secrets`, and then readable
    /// by its owner alone).
    pub holds_secret: bool,
}

/// What the app sets to reach the servers on the cluster, passwords left as placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The variable, e.g. `DATABASE_URL`.
    pub variable: &'static str,
    /// Its value in the cluster.
    pub value: String,
}

/// An export: the files and what the caller tells the user about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The manifests, `kustomization.yaml` last.
    pub files: Vec<ManifestFile>,
    /// The committed files' settings the operators manage themselves.
    pub managed: Vec<ManagedSetting>,
    /// The Secrets to create before applying.
    pub secrets_needed: Vec<SecretNeeded>,
    /// How the app's environment maps onto the operators' Services.
    pub connection: Vec<Connection>,
    /// Things said once about this export (what `nanika.toml` settings became).
    pub notes: Vec<String>,
    /// The PostgreSQL instances exported.
    pub instances: u32,
    /// The Redis layout exported.
    pub redis: RedisLayout,
}

/// Why an export was refused. Each names the option or setting to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// `--namespace` is not a DNS label.
    #[error("--namespace `{value}` is not a Kubernetes namespace name: {why}")]
    Namespace {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--instances` is out of range.
    #[error("--instances {value} is outside 1..={max}", max = MAX_INSTANCES)]
    Instances {
        /// The value given.
        value: u32,
    },
    /// Synchronous replication asked for without a standby to wait for.
    #[error(
        "nanika.toml sets [topology.postgres] synchronous = true, which needs a standby, but the export has {instances} PostgreSQL instance"
    )]
    SynchronousWithoutStandby {
        /// The instances exported.
        instances: u32,
    },
    /// Backups are on, and nowhere to put them was given.
    #[error(
        "nanika.toml sets [backups] enabled = true, and the cluster's backups need an object store: --backup-destination is missing"
    )]
    BackupDestinationMissing,
    /// A backup destination with backups off.
    #[error("--backup-destination is given, but nanika.toml does not set [backups] enabled = true")]
    BackupDestinationUnused,
    /// A destination barman-cloud cannot write to.
    #[error("--backup-destination `{value}` is not an s3:// or gs:// URL with a bucket")]
    BackupDestination {
        /// The value given.
        value: String,
    },
    /// An endpoint URL that is not a plain http(s) address, or one without an s3:// destination.
    #[error("--backup-endpoint-url `{value}` {why}")]
    BackupEndpoint {
        /// The value given (credentials in it masked).
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A backup interval cron cannot say.
    #[error(
        "nanika.toml sets backups.full_every = {value:?}, which a CloudNativePG schedule cannot repeat exactly"
    )]
    Schedule {
        /// The interval.
        value: String,
    },
    /// A server version the operators' images do not cover.
    #[error("{service} {version} has no image for {operator}: compose.yaml's image is `{image}`")]
    Version {
        /// `PostgreSQL` or `Redis`.
        service: &'static str,
        /// The major version, or `no version` when the tag has none.
        version: String,
        /// The operator.
        operator: Operator,
        /// The compose image.
        image: String,
    },
    /// A `postgresql.conf` setting a CloudNativePG cluster cannot run with.
    #[error("{file}{} sets {key} = {value}, which a CloudNativePG cluster cannot run with: {why}", line.map_or(String::new(), |l| format!(":{l}")))]
    WalSetting {
        /// The file (`docker/postgres/postgresql.conf`).
        file: &'static str,
        /// The line that sets it, when known.
        line: Option<usize>,
        /// The key.
        key: &'static str,
        /// The value as the file spells it.
        value: String,
        /// Why the cluster cannot have it.
        why: &'static str,
    },
    /// A compose name that cannot name a Kubernetes object.
    #[error("compose.yaml's container_name `{value}` cannot name a Kubernetes object: {why}")]
    Name {
        /// The name.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl ExportError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ExportError::Namespace { .. } => "use at most 63 lower-case letters, digits and `-`, starting and ending with a letter or digit, e.g. --namespace nanika-game".into(),
            ExportError::Instances { .. } => format!("give --instances from 1 (a primary alone) to {MAX_INSTANCES}"),
            ExportError::SynchronousWithoutStandby { .. } => "give --instances 2 or more, or set synchronous = false in [topology.postgres]".into(),
            ExportError::BackupDestinationMissing => "give --backup-destination s3://BUCKET/PATH (or gs://BUCKET/PATH); the credentials go into a Secret the output names".into(),
            ExportError::BackupDestinationUnused => "leave --backup-destination out, or turn backups on in nanika.toml ([backups] enabled = true)".into(),
            ExportError::BackupDestination { .. } => "write it as s3://BUCKET/PATH or gs://BUCKET/PATH".into(),
            ExportError::BackupEndpoint { .. } => "give the store's address as https://HOST[:PORT] with an s3://BUCKET/PATH --backup-destination; its keys go into the Secret the output names, never into the URL".into(),
            ExportError::Schedule { .. } => "use an interval a clock repeats: minutes dividing an hour (15m), hours dividing a day (6h), 1d or 7d".into(),
            ExportError::Version { .. } => "use PostgreSQL 13 to 18 and Redis 7 in compose.yaml, as the spec's postgres:15-alpine and redis:7-alpine".into(),
            ExportError::WalSetting { key, .. } => format!("remove the {key} line (or set it to {}) in postgresql.conf and export again", if *key == "wal_level" { "replica, as CloudNativePG does" } else { "10, PostgreSQL's default" }),
            ExportError::Name { .. } => "set container_name in compose.yaml to lower-case letters, digits and `-` (at most 50 characters)".into(),
        }
    }
}

/// Why `name` is not a DNS label (RFC 1123) of at most `max` characters, if it is not.
pub fn dns_label_error(name: &str, max: usize) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > max {
        return Some("it is too long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("only lower-case letters, digits and `-` are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("it must start and end with a letter or digit");
    }
    None
}

/// Names shared by the manifests.
pub(crate) struct Names {
    /// The namespace.
    pub namespace: String,
    /// The CloudNativePG cluster (the compose container name, `nanika-game-db`).
    pub postgres: String,
    /// The Redis resources (`nanika-game-redis`).
    pub redis: String,
    /// `app.kubernetes.io/part-of`.
    pub part_of: String,
}

impl Names {
    /// An object's `metadata`.
    pub fn metadata(&self, name: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/part-of": self.part_of},
        })
    }
}

/// The header every manifest starts with.
pub(crate) const HEADER: &str = "# Rendered by `nanika export kubernetes` from the project's committed files: change those\n# and export again rather than editing this file.\n";

/// A manifest's file from its value, with comment lines after the header.
pub(crate) fn manifest(name: &str, comments: &[String], value: &Value) -> ManifestFile {
    let mut text = String::from(HEADER);
    for comment in comments {
        for line in comment.lines() {
            text += &format!("# {line}\n").replace("# \n", "#\n");
        }
    }
    text += &yaml::render(value);
    ManifestFile {
        name: name.to_string(),
        text,
        holds_secret: false,
    }
}

/// The comment lines listing managed settings, for a manifest's header.
pub(crate) fn managed_comment(intro: &str, managed: &[ManagedSetting]) -> Vec<String> {
    if managed.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![intro.to_string()];
    lines.extend(
        managed
            .iter()
            .map(|m| format!("  {} = {}: {}", m.key, m.value, m.reason)),
    );
    lines
}

/// Exports `project` as manifests. Refuses an option or project setting it cannot carry,
/// naming it; never substitutes a default for a value it was given.
pub fn export(project: &ValidProject, options: &ExportOptions) -> Result<Export, ExportError> {
    refuse_without_wal_streaming(project)?;
    export_parts(&project.infra, &project.settings, options)
}

/// Refuses a `postgresql.conf` whose WAL a CloudNativePG cluster cannot stream or archive:
/// `wal_level = minimal` (the operator always turns `archive_mode` on, which needs `replica`
/// at least, and its webhook refuses the Cluster) and `max_wal_senders = 0` (standbys and
/// backups read WAL through senders). Refused rather than replaced: the file says otherwise.
fn refuse_without_wal_streaming(project: &ValidProject) -> Result<(), ExportError> {
    for setting in crate::check::settings(&project.infra)
        .into_iter()
        .filter(|s| s.file == crate::project::POSTGRES_CONF)
    {
        let value = setting.value.trim().trim_matches('\'').trim();
        let refused = match setting.key.to_ascii_lowercase().as_str() {
            "wal_level" if value.eq_ignore_ascii_case("minimal") => Some((
                "wal_level",
                "CloudNativePG always archives WAL, which needs wal_level replica or logical, and its webhook refuses minimal",
            )),
            "max_wal_senders" if value.parse::<u64>() == Ok(0) => Some((
                "max_wal_senders",
                "standbys and backups receive WAL through WAL senders",
            )),
            _ => None,
        };
        if let Some((key, why)) = refused {
            return Err(ExportError::WalSetting {
                file: crate::project::POSTGRES_CONF,
                line: project.line_of(crate::project::POSTGRES_CONF, &setting.key),
                key,
                value: setting.value,
                why,
            });
        }
    }
    Ok(())
}

fn export_parts(
    infra: &Infrastructure,
    settings: &Settings,
    options: &ExportOptions,
) -> Result<Export, ExportError> {
    if let Some(why) = dns_label_error(&options.namespace, 63) {
        return Err(ExportError::Namespace {
            value: options.namespace.clone(),
            why,
        });
    }
    let instances = options
        .instances
        .unwrap_or(1 + u32::from(settings.topology.postgres.replicas));
    if !(1..=MAX_INSTANCES).contains(&instances) {
        return Err(ExportError::Instances { value: instances });
    }
    let layout = options
        .redis
        .unwrap_or_else(|| RedisLayout::for_topology(settings.topology.redis.mode));
    // CloudNativePG derives longer names from the cluster's (`-rw`, `-1`, jobs' `-initdb`), so
    // it takes at most 50 characters.
    for name in [
        &infra.compose.postgres.container_name,
        &infra.compose.redis.container_name,
    ] {
        if let Some(why) = dns_label_error(name, 50) {
            return Err(ExportError::Name {
                value: name.clone(),
                why,
            });
        }
    }
    let names = Names {
        namespace: options.namespace.clone(),
        postgres: infra.compose.postgres.container_name.clone(),
        redis: infra.compose.redis.container_name.clone(),
        part_of: infra.compose.project_name.clone(),
    };

    let mut export = Export {
        files: Vec::new(),
        managed: Vec::new(),
        secrets_needed: Vec::new(),
        connection: Vec::new(),
        notes: Vec::new(),
        instances,
        redis: layout,
    };
    export.files.push(manifest(
        "namespace.yaml",
        &[],
        &json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": names.namespace,
                "labels": {"app.kubernetes.io/part-of": names.part_of},
            },
        }),
    ));
    postgres::export(infra, settings, options, &names, instances, &mut export)?;
    redis::export(infra, settings, options, &names, layout, &mut export)?;

    let resources: Vec<Value> = export
        .files
        .iter()
        .map(|f| Value::String(f.name.clone()))
        .collect();
    export.files.push(manifest(
        "kustomization.yaml",
        &["`kubectl apply -k DIR` applies everything below; the Secrets named in the output of\n`nanika export kubernetes` must exist first.".to_string()],
        &json!({
            "apiVersion": KUSTOMIZE_API,
            "kind": "Kustomization",
            "namespace": names.namespace,
            "resources": resources,
        }),
    ));
    Ok(export)
}

/// A Kubernetes quantity for a size: the largest binary unit that divides it (`512Mi`).
pub(crate) fn quantity(bytes: u64) -> String {
    for (unit, factor) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// A `Secret` manifest holding `data` as plain strings, for `--include-secrets`.
pub(crate) fn secret_manifest(
    names: &Names,
    file: &str,
    name: &str,
    kind: &str,
    data: Value,
) -> ManifestFile {
    let mut file = manifest(
        file,
        &["Holds a password: written because --include-secrets was given. Keep it out of version\ncontrol."
            .to_string()],
        &json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": names.metadata(name),
            "type": kind,
            "stringData": data,
        }),
    );
    file.holds_secret = true;
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_quantities() {
        assert_eq!(dns_label_error("nanika-game", 63), None);
        assert!(dns_label_error("Nanika", 63).is_some());
        assert!(dns_label_error("-a", 63).is_some());
        assert!(dns_label_error("", 63).is_some());
        assert!(dns_label_error(&"a".repeat(64), 63).is_some());
        assert_eq!(quantity(512 << 20), "512Mi");
        assert_eq!(quantity(1 << 30), "1Gi");
        assert_eq!(quantity(1000), "1000");
    }
}
