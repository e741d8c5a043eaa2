//! PostgreSQL as a CloudNativePG `Cluster`: the committed `postgresql.conf` in
//! `spec.postgresql.parameters`, the app database and its owner in `bootstrap.initdb`, and the
//! backup section when `nanika.toml` turns backups on.

use super::{
    CNPG_API, Connection, Export, ExportError, ExportOptions, ManagedSetting, Names, Operator,
    SecretNeeded, UNSET_HINT, managed_comment, manifest, secret_manifest,
};
use crate::check;
use crate::model::Infrastructure;
use crate::project::POSTGRES_CONF;
use crate::settings::{Settings, interval_secs};
use serde_json::{Map, Value, json};

/// How CloudNativePG treats a parameter a user may not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnpgRule {
    /// The operator sets it; a user's value is ignored.
    Fixed,
    /// The operator's admission webhook refuses a `Cluster` that sets it.
    Blocked,
}

/// The parameters CloudNativePG keeps for itself: its `FixedConfigurationParameters`
/// (`pkg/postgres/configuration.go` at the commit the vendored CRD comes from, see
/// `tests/crds/README.md`). A `Cluster` carrying one is refused or has it ignored, so the export
/// lists it as managed instead.
pub const CNPG_MANAGED: &[(&str, CnpgRule)] = &[
    ("allow_system_table_mods", CnpgRule::Blocked),
    ("archive_cleanup_command", CnpgRule::Blocked),
    ("archive_command", CnpgRule::Fixed),
    ("archive_mode", CnpgRule::Fixed),
    ("bonjour", CnpgRule::Blocked),
    ("bonjour_name", CnpgRule::Blocked),
    ("cluster_name", CnpgRule::Fixed),
    ("config_file", CnpgRule::Blocked),
    ("data_directory", CnpgRule::Blocked),
    ("data_sync_retry", CnpgRule::Blocked),
    ("event_source", CnpgRule::Blocked),
    ("external_pid_file", CnpgRule::Blocked),
    ("hba_file", CnpgRule::Blocked),
    ("hot_standby", CnpgRule::Blocked),
    ("ident_file", CnpgRule::Blocked),
    ("jit_provider", CnpgRule::Blocked),
    ("listen_addresses", CnpgRule::Blocked),
    ("log_destination", CnpgRule::Blocked),
    ("log_directory", CnpgRule::Blocked),
    ("log_file_mode", CnpgRule::Blocked),
    ("log_filename", CnpgRule::Blocked),
    ("log_rotation_age", CnpgRule::Blocked),
    ("log_rotation_size", CnpgRule::Blocked),
    ("log_truncate_on_rotation", CnpgRule::Blocked),
    ("logging_collector", CnpgRule::Blocked),
    ("pg_failover_slots.primary_dsn", CnpgRule::Fixed),
    ("pg_failover_slots.standby_slot_names", CnpgRule::Fixed),
    ("port", CnpgRule::Fixed),
    ("primary_conninfo", CnpgRule::Fixed),
    ("primary_slot_name", CnpgRule::Fixed),
    ("promote_trigger_file", CnpgRule::Blocked),
    ("recovery_end_command", CnpgRule::Blocked),
    ("recovery_min_apply_delay", CnpgRule::Blocked),
    ("recovery_target", CnpgRule::Fixed),
    ("recovery_target_action", CnpgRule::Fixed),
    ("recovery_target_inclusive", CnpgRule::Fixed),
    ("recovery_target_lsn", CnpgRule::Fixed),
    ("recovery_target_name", CnpgRule::Fixed),
    ("recovery_target_time", CnpgRule::Fixed),
    ("recovery_target_timeline", CnpgRule::Fixed),
    ("recovery_target_xid", CnpgRule::Fixed),
    ("restart_after_crash", CnpgRule::Blocked),
    ("restore_command", CnpgRule::Fixed),
    ("shared_preload_libraries", CnpgRule::Fixed),
    ("ssl", CnpgRule::Fixed),
    ("ssl_ca_file", CnpgRule::Fixed),
    ("ssl_cert_file", CnpgRule::Fixed),
    ("ssl_crl_file", CnpgRule::Fixed),
    ("ssl_dh_params_file", CnpgRule::Fixed),
    ("ssl_key_file", CnpgRule::Fixed),
    ("ssl_passphrase_command", CnpgRule::Fixed),
    ("ssl_passphrase_command_supports_reload", CnpgRule::Fixed),
    ("ssl_prefer_server_ciphers", CnpgRule::Fixed),
    ("stats_temp_directory", CnpgRule::Blocked),
    ("synchronized_standby_slots", CnpgRule::Fixed),
    ("synchronous_standby_names", CnpgRule::Fixed),
    ("syslog_facility", CnpgRule::Blocked),
    ("syslog_ident", CnpgRule::Blocked),
    ("syslog_sequence_numbers", CnpgRule::Blocked),
    ("syslog_split_messages", CnpgRule::Blocked),
    ("temp_tablespaces", CnpgRule::Fixed),
    ("unix_socket_directories", CnpgRule::Blocked),
    ("unix_socket_group", CnpgRule::Blocked),
    ("unix_socket_permissions", CnpgRule::Blocked),
];

/// The CloudNativePG image of a PostgreSQL major version; the operator's images are published
/// per major version.
const CNPG_IMAGE: &str = "ghcr.io/cloudnative-pg/postgresql";

/// The majors CloudNativePG publishes images of.
const CNPG_MAJORS: std::ops::RangeInclusive<u32> = 13..=18;

/// Each instance's volume: room for the spec's 256MB of shared buffers many times over and
/// for WAL kept for standbys (CloudNativePG keeps `wal_keep_size` 512MB); CloudNativePG grows
/// it in place when the storage class allows.
const STORAGE_SIZE: &str = "10Gi";

/// Why CloudNativePG keeps `key` for itself, if it does.
fn managed_reason(key: &str) -> Option<String> {
    let rule = CNPG_MANAGED
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))?
        .1;
    Some(match key {
        "listen_addresses" => "CloudNativePG makes every instance listen on all of its pod's addresses ('*'); clients reach the primary through the Service <cluster>-rw".into(),
        "port" => "CloudNativePG runs every instance on 5432, the port of its Services".into(),
        "shared_preload_libraries" => "written as spec.postgresql.shared_preload_libraries, to which CloudNativePG adds the libraries of the extensions it manages".into(),
        "synchronous_standby_names" => "CloudNativePG sets it from spec.postgresql.synchronous".into(),
        _ => match rule {
            CnpgRule::Fixed => "CloudNativePG sets it itself and ignores a user's value".into(),
            CnpgRule::Blocked => "CloudNativePG refuses a Cluster that sets it".into(),
        },
    })
}

/// Adds the `Cluster` (and its Secret, ScheduledBackup, PodMonitor) to `export`.
pub(super) fn export(
    infra: &Infrastructure,
    settings: &Settings,
    options: &ExportOptions,
    names: &Names,
    instances: u32,
    export: &mut Export,
) -> Result<(), ExportError> {
    let image = &infra.compose.postgres.image;
    let major = infra
        .compose
        .postgres
        .major_version()
        .filter(|m| CNPG_MAJORS.contains(m))
        .ok_or_else(|| ExportError::Version {
            service: "PostgreSQL",
            version: infra
                .compose
                .postgres
                .major_version()
                .map_or("with no version".into(), |m| m.to_string()),
            operator: Operator::CloudNativePg,
            image: image.clone(),
        })?;
    let synchronous = settings.topology.postgres.synchronous;
    if synchronous && instances < 2 {
        return Err(ExportError::SynchronousWithoutStandby { instances });
    }

    let mut parameters = Map::new();
    let mut managed = Vec::new();
    for setting in check::settings(infra)
        .into_iter()
        .filter(|s| s.file == POSTGRES_CONF)
    {
        // A setting holding a secret is shown masked, so it cannot go into a manifest as it
        // is: it is left out and listed, never written with the mask in its place.
        let reason = managed_reason(&setting.key).or_else(|| {
            setting.secret.then(|| {
                "it holds a secret, which a manifest never carries: set it through a Secret your cluster mounts".to_string()
            })
        });
        match reason {
            Some(reason) => managed.push(ManagedSetting {
                file: POSTGRES_CONF,
                key: setting.key,
                value: setting.value,
                operator: Operator::CloudNativePg,
                reason,
            }),
            None => {
                parameters.insert(setting.key, Value::String(setting.value));
            }
        }
    }
    // The libraries the project preloads (pg_stat_statements, …) are asked for in CloudNativePG's
    // own field, to which it adds those of the extensions it manages.
    let preload: Vec<String> = infra
        .postgres
        .other
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("shared_preload_libraries"))
        .flat_map(|(_, value)| {
            value
                .trim_matches('\'')
                .split(',')
                .map(|library| library.trim().trim_matches('"').to_string())
                .filter(|library| !library.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();

    let credentials = format!("{}-app-credentials", names.postgres);
    let env = &infra.env;
    let mut postgresql = json!({ "parameters": parameters });
    if !preload.is_empty() {
        postgresql["shared_preload_libraries"] = json!(preload);
    }
    if synchronous {
        // nanika's `synchronous = true` waits for one replica to flush: CloudNativePG's quorum
        // of one standby, any of them.
        postgresql["synchronous"] = json!({"method": "any", "number": 1});
    }
    let mut spec = json!({
        "instances": instances,
        "imageName": format!("{CNPG_IMAGE}:{major}"),
        "postgresql": postgresql,
        "bootstrap": {
            "initdb": {
                "database": env.postgres_db,
                "owner": env.postgres_user,
                "secret": {"name": credentials},
            },
        },
        "storage": {"size": STORAGE_SIZE},
    });
    let mut comments = managed_comment(
        &format!(
            "Settings of {POSTGRES_CONF} that CloudNativePG manages itself, so not in\nspec.postgresql.parameters:"
        ),
        &managed,
    );
    let mut scheduled = None;
    if settings.backups.enabled {
        let backup = backup_section(settings, options, names, export)?;
        spec["backup"] = backup.section;
        comments.push(backup.comment);
        scheduled = backup.scheduled;
    } else if options.backup_destination.is_some() || options.backup_endpoint_url.is_some() {
        return Err(ExportError::BackupDestinationUnused);
    }
    let cluster = json!({
        "apiVersion": CNPG_API,
        "kind": "Cluster",
        "metadata": names.metadata(&names.postgres),
        "spec": spec,
    });
    export
        .files
        .push(manifest("postgres-cluster.yaml", &comments, &cluster));
    export.files.extend(scheduled);

    if options.include_secrets {
        export.files.push(secret_manifest(
            names,
            "postgres-app-credentials.yaml",
            &credentials,
            // The type CloudNativePG requires of bootstrap.initdb.secret.
            "kubernetes.io/basic-auth",
            json!({
                "username": env.postgres_user,
                "password": env.postgres_password.expose(),
            }),
        ));
    } else {
        export.secrets_needed.push(SecretNeeded {
            name: credentials.clone(),
            purpose: "the app role's name and password (bootstrap.initdb.secret)",
            command: format!(
                "kubectl create secret generic {credentials} -n {} --type=kubernetes.io/basic-auth --from-literal=username={} --from-literal=password=\"${{POSTGRES_PASSWORD:?{UNSET_HINT}}}\"",
                names.namespace, env.postgres_user
            ),
        });
    }
    if options.monitoring {
        export.files.push(manifest(
            "postgres-podmonitor.yaml",
            &["Scrapes the metrics CloudNativePG's instance manager serves on each pod's `metrics`\nport (9187)."
                .to_string()],
            &json!({
                "apiVersion": super::MONITORING_API,
                "kind": "PodMonitor",
                "metadata": names.metadata(&names.postgres),
                "spec": {
                    "selector": {"matchLabels": {"cnpg.io/cluster": names.postgres}},
                    "podMetricsEndpoints": [{"port": "metrics"}],
                },
            }),
        ));
    }
    export.connection.push(Connection {
        variable: "DATABASE_URL",
        value: format!(
            "postgresql://{}:PASSWORD@{}-rw.{}.svc:5432/{}?schema=public",
            env.postgres_user, names.postgres, names.namespace, env.postgres_db
        ),
    });
    export.managed.extend(managed);
    Ok(())
}

/// The backup section, its comment, and the ScheduledBackup when backups are scheduled.
struct Backup {
    section: Value,
    comment: String,
    scheduled: Option<super::ManifestFile>,
}

/// `url` with whatever sits before an `@` in its authority masked, for an error message.
fn mask_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}****{}",
            scheme,
            if scheme.is_empty() { "" } else { "://" },
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// nanika's pgBackRest settings as CloudNativePG's barman-cloud backups to an object store:
/// WAL archived continuously, base backups on the full-backup schedule, retention as long as
/// nanika's full backups are kept.
fn backup_section(
    settings: &Settings,
    options: &ExportOptions,
    names: &Names,
    export: &mut Export,
) -> Result<Backup, ExportError> {
    let backups = &settings.backups;
    let destination = options
        .backup_destination
        .as_deref()
        .ok_or(ExportError::BackupDestinationMissing)?;
    let bad = || ExportError::BackupDestination {
        value: destination.to_string(),
    };
    let (scheme, rest) = destination.split_once("://").ok_or_else(bad)?;
    let bucket = rest.split('/').next().unwrap_or_default();
    if bucket.is_empty()
        || destination
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let secret = format!("{}-backup-credentials", names.postgres);
    let key = |k: &str| json!({"name": secret, "key": k});
    let mut store = json!({
        "destinationPath": destination,
        "wal": {"compression": "gzip"},
        "data": {"compression": "gzip"},
    });
    if let Some(endpoint) = &options.backup_endpoint_url {
        let refuse = |why| {
            Err(ExportError::BackupEndpoint {
                value: mask_userinfo(endpoint),
                why,
            })
        };
        let address = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"));
        match address {
            _ if scheme != "s3" => return refuse("needs an s3:// --backup-destination"),
            None => return refuse("is not an http:// or https:// URL"),
            Some(address)
                if address.is_empty()
                    || address.contains('@')
                    || endpoint
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control()) =>
            {
                return refuse("is not a plain address (no credentials, no spaces)");
            }
            Some(_) => store["endpointURL"] = json!(endpoint),
        }
    }
    let command = match scheme {
        "s3" => {
            store["s3Credentials"] = json!({
                "accessKeyId": key("ACCESS_KEY_ID"),
                "secretAccessKey": key("ACCESS_SECRET_KEY"),
            });
            format!(
                "kubectl create secret generic {secret} -n {} --from-literal=ACCESS_KEY_ID=\"${{AWS_ACCESS_KEY_ID:?set it to the object store key}}\" --from-literal=ACCESS_SECRET_KEY=\"${{AWS_SECRET_ACCESS_KEY:?set it to the object store secret}}\"",
                names.namespace
            )
        }
        "gs" => {
            store["googleCredentials"] = json!({"applicationCredentials": key("credentials.json")});
            format!(
                "kubectl create secret generic {secret} -n {} --from-file=credentials.json=\"${{GOOGLE_APPLICATION_CREDENTIALS:?set it to the service account key file}}\"",
                names.namespace
            )
        }
        _ => return Err(bad()),
    };
    export.secrets_needed.push(SecretNeeded {
        name: secret,
        purpose: "the object store's credentials for backups",
        command,
    });

    let schedule_error = || ExportError::Schedule {
        value: backups.full_every.clone(),
    };
    let full_secs = interval_secs(&backups.full_every).ok_or_else(schedule_error)?;
    let retention_days = (full_secs * u64::from(backups.retention_full)).div_ceil(86_400);
    let section = json!({
        "retentionPolicy": format!("{retention_days}d"),
        "barmanObjectStore": store,
    });
    if backups.schedule {
        export.notes.push(format!(
            "backups: WAL is archived continuously, a base backup is taken as soon as the ScheduledBackup is applied and then every {}, and base backups are kept {retention_days} days (retention_full = {} × full_every); barman-cloud takes full base backups only, so diff_every and incr_every have no counterpart (WAL replay covers the time between)",
            backups.full_every, backups.retention_full
        ));
    } else {
        // Without a base backup the archived WAL restores nothing: say so rather than promise
        // a retention no schedule fills.
        export.notes.push(format!(
            "backups: WAL is archived continuously, but nanika.toml sets [backups] schedule = false, so no ScheduledBackup is written and no base backup is taken until you take one: `kubectl cnpg backup {} -n {}` (or apply a Backup with spec.cluster.name {}); base backups older than {retention_days} days are removed",
            names.postgres, names.namespace, names.postgres
        ));
    }
    let scheduled = if backups.schedule {
        let schedule = cron(full_secs).ok_or_else(schedule_error)?;
        Some(manifest(
            "postgres-scheduled-backup.yaml",
            &[format!(
                "A base backup when applied, then every {} (nanika.toml backups.full_every).",
                backups.full_every
            )],
            &json!({
                "apiVersion": CNPG_API,
                "kind": "ScheduledBackup",
                "metadata": names.metadata(&names.postgres),
                "spec": {
                    "schedule": schedule,
                    // The first base backup now, not at the schedule's first turn (up to a
                    // week away): until one exists, the archived WAL restores nothing.
                    "immediate": true,
                    "cluster": {"name": names.postgres},
                    "method": "barmanObjectStore",
                    "backupOwnerReference": "self",
                },
            }),
        ))
    } else {
        None
    };
    Ok(Backup {
        section,
        comment: format!("Backups (nanika.toml [backups]) go to {destination} with barman-cloud."),
        scheduled,
    })
}

/// A six-field cron schedule (seconds first, as CloudNativePG reads them) repeating every
/// `secs` seconds, when a clock repeats that interval exactly.
fn cron(secs: u64) -> Option<String> {
    let divides = |n: u64, whole: u64| n > 0 && whole.is_multiple_of(n);
    match secs {
        604_800 => Some("0 0 0 * * 0".into()),
        86_400 => Some("0 0 0 * * *".into()),
        s if s.is_multiple_of(3600) && divides(s / 3600, 24) => Some(match s / 3600 {
            1 => "0 0 * * * *".into(),
            h => format!("0 0 */{h} * * *"),
        }),
        s if s.is_multiple_of(60) && divides(s / 60, 60) => Some(match s / 60 {
            1 => "0 * * * * *".into(),
            m => format!("0 */{m} * * * *"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_a_clock_repeats() {
        assert_eq!(cron(604_800).as_deref(), Some("0 0 0 * * 0"));
        assert_eq!(cron(86_400).as_deref(), Some("0 0 0 * * *"));
        assert_eq!(cron(6 * 3600).as_deref(), Some("0 0 */6 * * *"));
        assert_eq!(cron(3600).as_deref(), Some("0 0 * * * *"));
        assert_eq!(cron(900).as_deref(), Some("0 */15 * * * *"));
        for never in [90, 7 * 60, 5 * 3600, 3 * 86_400, 0] {
            assert_eq!(cron(never), None, "{never}");
        }
    }

    #[test]
    fn the_spec_connection_settings_are_managed_with_reasons() {
        assert!(managed_reason("listen_addresses").unwrap().contains("-rw"));
        assert!(managed_reason("port").unwrap().contains("5432"));
        assert!(managed_reason("archive_mode").is_some());
        assert!(managed_reason("shared_buffers").is_none());
    }
}
