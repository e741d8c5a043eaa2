//! `nanika export kubernetes` as the cluster will read it: every custom resource against its
//! operator's CRD schema (vendored in tests/crds/, applied strictly), the kustomization against
//! SchemaStore's schema, the core objects against the Kubernetes API's own schemas (PyPI's
//! `kubernetes-validate`, from the venv `scripts/ci-client-deps` installs); every PostgreSQL and
//! Redis setting of the committed files is in the manifests or in the managed list; a changed
//! setting reaches the manifests; secrets stay out unless asked for; bad options are refused.

use nanika_config::check;
use nanika_config::kubernetes::{
    self, Export, ExportError, ExportOptions, ManifestFile, RedisLayout,
};
use nanika_config::project::{POSTGRES_CONF, REDIS_CONF, SETTINGS_FILE, render_files};
use nanika_config::{Infrastructure, Project, ValidProject};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}

/// The committed project's files (never a developer's `.env`) in a temporary directory, with
/// `nanika.toml` when given.
fn project(settings: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    let committed = render_files(&Infrastructure::spec())
        .into_iter()
        .map(|(path, _)| path);
    for path in committed {
        let target = dir.path().join(path);
        fs_err::create_dir_all(target.parent().unwrap()).unwrap();
        fs_err::copy(root.join(path), target).unwrap();
    }
    if let Some(text) = settings {
        fs_err::write(dir.path().join(SETTINGS_FILE), text).unwrap();
    }
    dir
}

fn valid(dir: &Path) -> ValidProject {
    Project::at(dir)
        .unwrap()
        .load(&BTreeMap::new())
        .unwrap()
        .validate()
        .unwrap_or_else(|rejected| {
            let errors: Vec<String> = rejected.errors().map(ToString::to_string).collect();
            panic!("{rejected}: {errors:#?}")
        })
}

fn export(dir: &Path, options: &ExportOptions) -> Export {
    kubernetes::export(&valid(dir), options).unwrap_or_else(|e| panic!("{e}: {}", e.hint()))
}

fn parse(file: &ManifestFile) -> Value {
    serde_saphyr::from_str(&file.text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{}", file.name, file.text))
}

fn file<'a>(export: &'a Export, name: &str) -> &'a ManifestFile {
    export
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name} among {:?}", names(export)))
}

fn names(export: &Export) -> Vec<&str> {
    export.files.iter().map(|f| f.name.as_str()).collect()
}

/// Makes a CRD schema strict: an object that lists its properties takes no other key unless
/// it says so, as `kubeconform --strict` reads CRDs.
fn strict(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(strict);
    }
    for keyword in ["items", "additionalProperties", "not"] {
        if let Some(inner) = map.get_mut(keyword) {
            strict(inner);
        }
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = map.get_mut(keyword) {
            branches.iter_mut().for_each(strict);
        }
    }
}

/// The vendored CRDs' validators, by (apiVersion, kind).
static CRDS: LazyLock<BTreeMap<(String, String), jsonschema::Validator>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crds");
    let mut validators = BTreeMap::new();
    for entry in fs_err::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let crd: Value = serde_saphyr::from_str(&fs_err::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            crd["kind"],
            "CustomResourceDefinition",
            "{}",
            path.display()
        );
        let group = crd["spec"]["group"].as_str().unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let mut schema = version["schema"]["openAPIV3Schema"].clone();
            strict(&mut schema);
            let validator = jsonschema::draft4::options()
                .should_validate_formats(false)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let api = format!("{group}/{}", version["name"].as_str().unwrap());
            validators.insert((api, kind.to_string()), validator);
        }
    }
    validators
});

static KUSTOMIZATION: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crds/kustomization.schema.json");
    let schema: Value = serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
});

/// The venv's `kubernetes-validate`, or `None` after saying why (a failure under CI).
fn kubernetes_validate() -> Option<PathBuf> {
    let path = repo_root().join("target/client-deps/venv/bin/kubernetes-validate");
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "kubernetes-validate is not installed ({} is missing): run scripts/ci-client-deps",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped core-object validation: {why}");
    None
}

/// The Kubernetes version whose API schemas the core objects are checked against: the oldest
/// that the operators' current releases support.
const KUBERNETES_VERSION: &str = "1.31.0";

/// Validates every file of an export: custom resources against their CRDs, the kustomization
/// against its schema, core objects with kubernetes-validate; and the kustomization lists
/// exactly the other files.
fn validate_all(export: &Export) {
    let mut core = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for manifest in &export.files {
        // The CLI trusts an earlier export's list of files only for these names.
        assert!(
            kubernetes::FILE_NAMES.contains(&manifest.name.as_str()),
            "{} is missing from FILE_NAMES",
            manifest.name
        );
        let value = parse(manifest);
        let api = value["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        if kind == "Kustomization" {
            let errors: Vec<String> = KUSTOMIZATION
                .iter_errors(&value)
                .map(|e| format!("{}: {e}", e.instance_path().as_str()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", manifest.name);
            let listed: BTreeSet<&str> = value["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let others: BTreeSet<&str> = export
                .files
                .iter()
                .map(|f| f.name.as_str())
                .filter(|n| *n != "kustomization.yaml")
                .collect();
            assert_eq!(listed, others);
            continue;
        }
        if !api.contains('/') {
            let path = dir.path().join(&manifest.name);
            fs_err::write(&path, &manifest.text).unwrap();
            core.push(path);
            continue;
        }
        let validator = CRDS
            .get(&(api.clone(), kind.clone()))
            .unwrap_or_else(|| panic!("no vendored CRD for {api} {kind} ({})", manifest.name));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path().as_str()))
            .collect();
        assert!(
            errors.is_empty(),
            "{} does not validate against the {kind} CRD: {errors:#?}\n{}",
            manifest.name,
            manifest.text
        );
    }
    assert!(!core.is_empty(), "a Namespace and a ConfigMap at least");
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let output = Command::new(tool)
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&core)
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{stdout}{stderr}"
    );
    for path in &core {
        let name = path.display().to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&name) && l.contains("passed")),
            "kubernetes-validate did not pass {name}:\n{stdout}{stderr}"
        );
    }
}

fn cluster(export: &Export) -> Value {
    parse(file(export, "postgres-cluster.yaml"))
}

fn redis_conf(export: &Export) -> String {
    parse(file(export, "redis-config.yaml"))["data"]["redis-additional.conf"]
        .as_str()
        .unwrap()
        .to_string()
}

fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim_matches('"').to_string())
}

#[test]
fn the_committed_project_exports_valid_manifests() {
    let dir = project(None);
    let export = export(dir.path(), &ExportOptions::new("nanika-game"));
    assert_eq!(
        names(&export),
        [
            "namespace.yaml",
            "postgres-cluster.yaml",
            "redis-config.yaml",
            "redis-replication.yaml",
            "kustomization.yaml"
        ]
    );
    assert_eq!(export.instances, 1);
    assert_eq!(export.redis, RedisLayout::Replication);
    validate_all(&export);

    let cluster = cluster(&export);
    assert_eq!(cluster["metadata"]["name"], "nanika-game-db");
    assert_eq!(cluster["metadata"]["namespace"], "nanika-game");
    assert_eq!(
        cluster["spec"]["imageName"],
        "ghcr.io/cloudnative-pg/postgresql:15"
    );
    let initdb = &cluster["spec"]["bootstrap"]["initdb"];
    assert_eq!(initdb["database"], "nanika_game");
    assert_eq!(initdb["owner"], "nanika_user");
    assert_eq!(initdb["secret"]["name"], "nanika-game-db-app-credentials");
    let parameters = &cluster["spec"]["postgresql"]["parameters"];
    assert_eq!(parameters["shared_buffers"], "256MB");
    assert_eq!(parameters["log_statement"], "mod");
    assert!(parameters.get("listen_addresses").is_none());

    let conf = redis_conf(&export);
    assert_eq!(conf_value(&conf, "maxmemory").as_deref(), Some("512mb"));
    assert_eq!(
        conf_value(&conf, "maxmemory-policy").as_deref(),
        Some("allkeys-lru")
    );
    assert_eq!(conf_value(&conf, "appendonly").as_deref(), Some("yes"));
    assert_eq!(
        conf_value(&conf, "appendfsync").as_deref(),
        Some("everysec")
    );
    assert!(
        conf.contains("appendfilename \"appendonly.aof\"\n"),
        "{conf}"
    );
    assert_eq!(conf_value(&conf, "bind"), None);
    let replication = parse(file(&export, "redis-replication.yaml"));
    assert_eq!(
        replication["spec"]["redisConfig"]["additionalRedisConfig"],
        "nanika-game-redis-config"
    );

    let connection: BTreeMap<&str, &str> = export
        .connection
        .iter()
        .map(|c| (c.variable, c.value.as_str()))
        .collect();
    assert_eq!(
        connection["DATABASE_URL"],
        "postgresql://nanika_user:PASSWORD@nanika-game-db-rw.nanika-game.svc:5432/nanika_game?schema=public"
    );
    assert_eq!(
        connection["REDIS_URL"],
        "redis://nanika-game-redis-master.nanika-game.svc:6379"
    );
}

#[test]
fn every_layout_with_monitoring_secrets_and_backups_validates() {
    let settings =
        "[backups]\nenabled = true\nfull_every = \"1d\"\n\n[topology.redis]\nmode = \"sentinel\"\n";
    let dir = project(Some(settings));
    // A Redis password, so that the Redis Secret and its references are exported too.
    let env = fs_err::read_to_string(dir.path().join(".env.example")).unwrap();
    let env = env
        .replace(
            "REDIS_URL=redis://localhost:6379",
            "REDIS_URL=redis://:redis-pw@localhost:6379",
        )
        .replace("# REDIS_PASSWORD=", "REDIS_PASSWORD=redis-pw");
    fs_err::write(dir.path().join(".env.example"), env).unwrap();
    for layout in [
        RedisLayout::Replication,
        RedisLayout::Sentinel,
        RedisLayout::Cluster,
    ] {
        for (monitoring, include_secrets) in [(true, true), (false, false)] {
            let options = ExportOptions {
                instances: Some(3),
                redis: Some(layout),
                monitoring,
                include_secrets,
                backup_destination: Some("s3://backups/nanika".into()),
                ..ExportOptions::new("games")
            };
            let export = export(dir.path(), &options);
            validate_all(&export);
            let has = |name: &str| export.files.iter().any(|f| f.name == name);
            assert_eq!(has("postgres-podmonitor.yaml"), monitoring);
            assert_eq!(has("redis-podmonitor.yaml"), monitoring);
            assert_eq!(has("postgres-app-credentials.yaml"), include_secrets);
            assert_eq!(has("redis-password.yaml"), include_secrets);
            assert!(has("postgres-scheduled-backup.yaml"));
            assert_eq!(has("redis-sentinel.yaml"), layout == RedisLayout::Sentinel);
            assert_eq!(has("redis-cluster.yaml"), layout == RedisLayout::Cluster);
            let cluster = cluster(&export);
            assert_eq!(cluster["spec"]["instances"], 3);
            assert_eq!(cluster["spec"]["backup"]["retentionPolicy"], "2d");
            assert_eq!(
                cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"],
                "s3://backups/nanika"
            );
            let backup = parse(file(&export, "postgres-scheduled-backup.yaml"));
            assert_eq!(backup["spec"]["schedule"], "0 0 0 * * *");
            // The backup credentials are never known to nanika: always a Secret to create.
            assert!(
                export
                    .secrets_needed
                    .iter()
                    .any(|s| s.name == "nanika-game-db-backup-credentials")
            );
        }
    }
}

#[test]
fn nothing_of_the_committed_files_is_dropped_silently() {
    // The committed settings, plus one passed through and one CloudNativePG keeps for itself.
    let dir = project(None);
    let conf = dir.path().join(POSTGRES_CONF);
    let text = fs_err::read_to_string(&conf).unwrap();
    fs_err::write(
        &conf,
        format!("{text}idle_in_transaction_session_timeout = 60000\nssl = on\n"),
    )
    .unwrap();
    let redis_path = dir.path().join(REDIS_CONF);
    let text = fs_err::read_to_string(&redis_path).unwrap();
    fs_err::write(
        &redis_path,
        format!("{text}slowlog-max-len 256\ndir /data\n"),
    )
    .unwrap();

    let project = valid(dir.path());
    let export = kubernetes::export(&project, &ExportOptions::new("nanika-game")).unwrap();
    let cluster = cluster(&export);
    let parameters = cluster["spec"]["postgresql"]["parameters"]
        .as_object()
        .unwrap();
    let conf = redis_conf(&export);
    let cluster_text = &file(&export, "postgres-cluster.yaml").text;
    let config_text = &file(&export, "redis-config.yaml").text;
    let mut checked = 0;
    for setting in check::settings(&project.infra) {
        let managed = export
            .managed
            .iter()
            .find(|m| m.file == setting.file && m.key == setting.key);
        let carried = match setting.file {
            POSTGRES_CONF => {
                parameters.get(&setting.key).and_then(Value::as_str) == Some(setting.value.as_str())
            }
            REDIS_CONF => {
                conf_value(&conf, &setting.key).as_deref() == Some(setting.value.as_str())
            }
            _ => continue,
        };
        checked += 1;
        match managed {
            Some(managed) => {
                assert!(!carried, "{} is both carried and managed", setting.key);
                assert!(!managed.reason.is_empty());
                // Said in the manifest's own comment too.
                let text = if setting.file == POSTGRES_CONF {
                    cluster_text
                } else {
                    config_text
                };
                let line = format!(
                    "#   {} = {}: {}",
                    managed.key, managed.value, managed.reason
                );
                assert!(text.contains(&line), "{line} missing from\n{text}");
            }
            None => assert!(
                carried,
                "{} = {} is neither in the manifests nor in the managed list",
                setting.key, setting.value
            ),
        }
    }
    assert!(checked > 30, "only {checked} settings checked");
    let managed: BTreeSet<&str> = export.managed.iter().map(|m| m.key.as_str()).collect();
    for key in ["listen_addresses", "port", "ssl", "bind", "dir"] {
        assert!(managed.contains(key), "{key} not managed: {managed:?}");
    }
    assert_eq!(parameters["idle_in_transaction_session_timeout"], "60000");
    assert_eq!(conf_value(&conf, "slowlog-max-len").as_deref(), Some("256"));
}

#[test]
fn a_changed_setting_in_postgresql_conf_reaches_the_cluster() {
    let dir = project(None);
    let conf = dir.path().join(POSTGRES_CONF);
    let text = fs_err::read_to_string(&conf).unwrap();
    assert!(text.contains("work_mem = 4MB"));
    fs_err::write(&conf, text.replace("work_mem = 4MB", "work_mem = 16MB")).unwrap();
    let export = export(dir.path(), &ExportOptions::new("nanika-game"));
    let cluster = cluster(&export);
    assert_eq!(
        cluster["spec"]["postgresql"]["parameters"]["work_mem"],
        "16MB"
    );
    validate_all(&export);
}

#[test]
fn passwords_are_written_only_when_asked_for() {
    let dir = project(None);
    let plain = export(dir.path(), &ExportOptions::new("nanika-game"));
    for manifest in &plain.files {
        assert!(
            !manifest.text.contains("nanika_password"),
            "{}",
            manifest.name
        );
        assert!(!manifest.holds_secret);
    }
    let needed = &plain.secrets_needed[0];
    assert_eq!(needed.name, "nanika-game-db-app-credentials");
    assert!(!needed.command.contains("nanika_password"));
    assert!(
        needed
            .command
            .contains("\"${POSTGRES_PASSWORD:?set it, e.g. set -a; . ./.env; set +a}\""),
        "{}",
        needed.command
    );

    let options = ExportOptions {
        include_secrets: true,
        ..ExportOptions::new("nanika-game")
    };
    let with = export(dir.path(), &options);
    let secret = file(&with, "postgres-app-credentials.yaml");
    assert!(secret.holds_secret);
    let value = parse(secret);
    assert_eq!(value["type"], "kubernetes.io/basic-auth");
    assert_eq!(value["stringData"]["password"], "nanika_password");
    assert_eq!(value["stringData"]["username"], "nanika_user");
    assert!(with.secrets_needed.is_empty());
    for manifest in with.files.iter().filter(|f| !f.holds_secret) {
        assert!(
            !manifest.text.contains("nanika_password"),
            "{}",
            manifest.name
        );
    }
}

#[test]
fn the_topology_sets_the_defaults_and_synchronous_needs_a_standby() {
    let dir = project(Some(
        "[topology.postgres]\nreplicas = 2\nsynchronous = true\n[topology.redis]\nmode = \"cluster\"\nnode_timeout_ms = 2000\n",
    ));
    let export = export(dir.path(), &ExportOptions::new("nanika-game"));
    assert_eq!(export.instances, 3);
    assert_eq!(export.redis, RedisLayout::Cluster);
    let cluster = cluster(&export);
    assert_eq!(cluster["spec"]["postgresql"]["synchronous"]["number"], 1);
    // nanika's failure-detection timings are the laptop's: left to the operator, and said.
    assert_eq!(
        conf_value(&redis_conf(&export), "cluster-node-timeout"),
        None
    );
    let timing = export
        .managed
        .iter()
        .find(|m| m.key == "[topology.redis] node_timeout_ms")
        .expect("node_timeout_ms listed as not exported");
    assert_eq!(timing.value, "2000");
    assert!(timing.reason.contains("loopback"), "{}", timing.reason);
    assert!(
        file(&export, "redis-cluster.yaml")
            .text
            .contains("#   [topology.redis] node_timeout_ms = 2000: loopback")
    );
    validate_all(&export);

    let options = ExportOptions {
        instances: Some(1),
        ..ExportOptions::new("nanika-game")
    };
    let error = kubernetes::export(&valid(dir.path()), &options).unwrap_err();
    assert_eq!(
        error,
        ExportError::SynchronousWithoutStandby { instances: 1 }
    );
    assert!(error.hint().contains("--instances 2"));
}

#[test]
fn bad_options_are_refused_by_name() {
    let dir = project(None);
    let loaded = valid(dir.path());
    let refuse = |options: ExportOptions| kubernetes::export(&loaded, &options).unwrap_err();
    let error = refuse(ExportOptions::new("Nanika_Game"));
    assert!(
        error.to_string().starts_with("--namespace `Nanika_Game`"),
        "{error}"
    );
    assert!(matches!(
        refuse(ExportOptions::new("")),
        ExportError::Namespace { .. }
    ));
    for instances in [0, 10] {
        let error = refuse(ExportOptions {
            instances: Some(instances),
            ..ExportOptions::new("ns")
        });
        assert_eq!(error, ExportError::Instances { value: instances });
        assert!(error.to_string().contains("--instances"));
    }
    let error = refuse(ExportOptions {
        backup_destination: Some("s3://bucket".into()),
        ..ExportOptions::new("ns")
    });
    assert_eq!(error, ExportError::BackupDestinationUnused);

    let dir = project(Some("[backups]\nenabled = true\n"));
    let loaded = valid(dir.path());
    let refuse = |options: ExportOptions| kubernetes::export(&loaded, &options).unwrap_err();
    assert_eq!(
        refuse(ExportOptions::new("ns")),
        ExportError::BackupDestinationMissing
    );
    for bad in [
        "bucket/path",
        "ftp://host/x",
        "s3://",
        "s3:///path",
        "s3://a b",
    ] {
        let error = refuse(ExportOptions {
            backup_destination: Some(bad.into()),
            ..ExportOptions::new("ns")
        });
        assert!(
            matches!(error, ExportError::BackupDestination { .. }),
            "{bad}: {error}"
        );
    }

    let dir = project(Some("[backups]\nenabled = true\nfull_every = \"5h\"\n"));
    let error = kubernetes::export(
        &valid(dir.path()),
        &ExportOptions {
            backup_destination: Some("gs://bucket/x".into()),
            ..ExportOptions::new("ns")
        },
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("backups.full_every = \"5h\""),
        "{error}"
    );
}

#[test]
fn the_scaling_guide_lists_what_the_operators_manage() {
    let dir = project(None);
    let export = export(dir.path(), &ExportOptions::new("nanika-game"));
    let guide = fs_err::read_to_string(repo_root().join("docs/SCALING.md")).unwrap();
    for managed in &export.managed {
        let file = Path::new(managed.file)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let row = format!("| `{file}` | `{}", managed.key);
        assert!(
            guide.contains(&row),
            "docs/SCALING.md lacks a row for {managed}"
        );
    }
}

#[test]
fn redis_pods_can_write_their_volumes_and_cluster_nodes_keep_their_identity() {
    let dir = project(None);
    for (layout, kinds) in [
        (RedisLayout::Replication, &["redis-replication.yaml"][..]),
        (
            RedisLayout::Sentinel,
            &["redis-replication.yaml", "redis-sentinel.yaml"][..],
        ),
        (RedisLayout::Cluster, &["redis-cluster.yaml"][..]),
    ] {
        let options = ExportOptions {
            redis: Some(layout),
            ..ExportOptions::new("nanika-game")
        };
        let export = export(dir.path(), &options);
        validate_all(&export);
        for name in kinds {
            let spec = &parse(file(&export, name))["spec"];
            assert_eq!(spec["podSecurityContext"]["runAsUser"], 1000, "{name}");
            assert_eq!(spec["podSecurityContext"]["fsGroup"], 1000, "{name}");
        }
        if layout == RedisLayout::Cluster {
            let storage = &parse(file(&export, "redis-cluster.yaml"))["spec"]["storage"];
            assert_eq!(storage["nodeConfVolume"], true);
            assert!(
                storage["nodeConfVolumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
                    .is_string()
            );
        }
        if layout == RedisLayout::Sentinel {
            let sentinel = parse(file(&export, "redis-sentinel.yaml"));
            let config = &sentinel["spec"]["redisSentinelConfig"];
            assert!(config.get("downAfterMilliseconds").is_none(), "{config}");
            assert!(config.get("failoverTimeout").is_none(), "{config}");
            for key in ["down_after_ms", "failover_timeout_ms"] {
                assert!(
                    export
                        .managed
                        .iter()
                        .any(|m| m.key == format!("[topology.redis] {key}")
                            && m.reason.contains("loopback")),
                    "{key} not listed"
                );
            }
        }
    }
}

#[test]
fn redis_conf_secrets_are_managed_and_masked() {
    let dir = project(None);
    let path = dir.path().join(REDIS_CONF);
    let text = fs_err::read_to_string(&path).unwrap();
    fs_err::write(
        &path,
        format!(
            "{text}masterauth repl-secret\nmasteruser repl-user\nuser game on >acl-secret ~* +@all\ntls-key-file-pass tls-secret\n"
        ),
    )
    .unwrap();
    let export = export(dir.path(), &ExportOptions::new("nanika-game"));
    let conf = redis_conf(&export);
    for key in ["masterauth", "masteruser", "user", "tls-key-file-pass"] {
        assert_eq!(conf_value(&conf, key), None, "{key} carried:\n{conf}");
        let managed = export
            .managed
            .iter()
            .find(|m| m.key == key)
            .unwrap_or_else(|| panic!("{key} not managed"));
        assert_eq!(managed.value, "****");
    }
    for manifest in &export.files {
        for secret in ["repl-secret", "repl-user", "acl-secret", "tls-secret"] {
            assert!(
                !manifest.text.contains(secret),
                "{secret} in {}",
                manifest.name
            );
        }
    }
    for note in &export.notes {
        assert!(!note.contains("secret"), "{note}");
    }
    assert!(kubernetes::is_secret_directive("tls-client-key-file-pass"));
    assert!(kubernetes::is_secret_directive("REQUIREPASS"));
    assert!(!kubernetes::is_secret_directive("maxmemory"));
}

#[test]
fn the_first_base_backup_is_taken_at_once_and_an_unscheduled_one_is_not_promised() {
    let dir = project(Some("[backups]\nenabled = true\n"));
    let options = ExportOptions {
        backup_destination: Some("s3://backups/nanika".into()),
        ..ExportOptions::new("nanika-game")
    };
    let scheduled = export(dir.path(), &options);
    let backup = parse(file(&scheduled, "postgres-scheduled-backup.yaml"));
    assert_eq!(backup["spec"]["immediate"], true);
    validate_all(&scheduled);
    let command = &scheduled
        .secrets_needed
        .iter()
        .find(|s| s.name == "nanika-game-db-backup-credentials")
        .unwrap()
        .command;
    assert!(command.contains("${AWS_ACCESS_KEY_ID:?"), "{command}");

    let dir = project(Some("[backups]\nenabled = true\nschedule = false\n"));
    let unscheduled = export(dir.path(), &options);
    assert!(
        !unscheduled
            .files
            .iter()
            .any(|f| f.name == "postgres-scheduled-backup.yaml")
    );
    let note = unscheduled
        .notes
        .iter()
        .find(|n| n.starts_with("backups:"))
        .unwrap();
    assert!(note.contains("no ScheduledBackup is written"), "{note}");
    assert!(
        note.contains("kubectl cnpg backup nanika-game-db -n nanika-game"),
        "{note}"
    );
    assert!(!note.contains("kept"), "{note}");
    validate_all(&unscheduled);
}

#[test]
fn postgresql_conf_without_wal_streaming_is_refused_with_its_line() {
    for (line, key) in [
        ("wal_level = minimal\nmax_wal_senders = 0\n", "wal_level"),
        ("max_wal_senders = 0\n", "max_wal_senders"),
    ] {
        let dir = project(None);
        let conf = dir.path().join(POSTGRES_CONF);
        let text = fs_err::read_to_string(&conf).unwrap();
        let number = text.lines().count() + 1;
        fs_err::write(&conf, format!("{text}{line}")).unwrap();
        let error =
            kubernetes::export(&valid(dir.path()), &ExportOptions::new("nanika-game")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{POSTGRES_CONF}:{number} sets {key} = ")),
            "{message}"
        );
        assert!(error.hint().contains(key), "{}", error.hint());
    }
}

#[test]
fn an_s3_compatible_endpoint_reaches_the_store_and_a_bad_one_is_refused() {
    let dir = project(Some("[backups]\nenabled = true\nfull_every = \"1d\"\n"));
    let with = |destination: &str, endpoint: &str| ExportOptions {
        backup_destination: Some(destination.into()),
        backup_endpoint_url: Some(endpoint.into()),
        ..ExportOptions::new("ns")
    };
    let export = export(
        dir.path(),
        &with("s3://backups/nanika", "https://minio.example:9000"),
    );
    validate_all(&export);
    assert_eq!(
        cluster(&export)["spec"]["backup"]["barmanObjectStore"]["endpointURL"],
        "https://minio.example:9000"
    );
    let loaded = valid(dir.path());
    for (destination, endpoint, why) in [
        ("gs://bucket/x", "https://minio.example", "needs an s3://"),
        ("s3://bucket/x", "ftp://minio.example", "not an http://"),
        ("s3://bucket/x", "https://", "not a plain address"),
        (
            "s3://bucket/x",
            "https://key:SecretKey9@minio.example",
            "not a plain address",
        ),
    ] {
        let error = kubernetes::export(&loaded, &with(destination, endpoint)).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ExportError::BackupEndpoint { .. }) && message.contains(why),
            "{endpoint}: {message}"
        );
        assert!(!message.contains("SecretKey9"), "{message}");
    }
    // Without backups the endpoint has nothing to serve.
    let plain = project(None);
    let error = kubernetes::export(
        &valid(plain.path()),
        &ExportOptions {
            backup_endpoint_url: Some("https://minio.example".into()),
            ..ExportOptions::new("ns")
        },
    )
    .unwrap_err();
    assert_eq!(error, ExportError::BackupDestinationUnused);
}

#[test]
fn preloaded_libraries_go_into_cloudnativepgs_own_field() {
    let dir = project(None);
    let conf = dir.path().join(POSTGRES_CONF);
    let text = fs_err::read_to_string(&conf).unwrap();
    fs_err::write(
        &conf,
        format!("{text}shared_preload_libraries = 'pg_stat_statements, auto_explain'\n"),
    )
    .unwrap();
    let export = export(dir.path(), &ExportOptions::new("ns"));
    validate_all(&export);
    let postgresql = &cluster(&export)["spec"]["postgresql"];
    assert_eq!(
        postgresql["shared_preload_libraries"],
        serde_json::json!(["pg_stat_statements", "auto_explain"])
    );
    assert!(postgresql["parameters"]["shared_preload_libraries"].is_null());
}
