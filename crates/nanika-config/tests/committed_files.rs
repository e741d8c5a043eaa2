//! The committed files are the model rendered: every spec value is in them, they parse back into
//! the same model, they pass their own checks, and compose.yaml is valid Compose.

use nanika_config::Infrastructure;
use nanika_config::compose::{self, COMPOSE_SCHEMA};
use nanika_config::model::{AppendFsync, LogStatement, MaxmemoryPolicy, WalCompression};
use nanika_config::project::{
    COMPOSE_FILE, ENV_EXAMPLE, POSTGRES_CONF, Project, REDIS_CONF, render_files,
};
use nanika_config::units::MemorySize;
use nanika_config::{dotenv, pgconf, redisconf};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}

#[test]
fn committed_files_are_exactly_what_the_model_renders() {
    for (path, rendered) in render_files(&Infrastructure::spec()) {
        let committed = fs_err::read_to_string(repo_root().join(path)).unwrap();
        assert!(
            committed == rendered,
            "{path} differs from what the model renders; run `nanika init --force` at the repository root and commit the result"
        );
    }
}

/// Each of the spec's values, as the line that must stand in the file.
const SPEC_POSTGRES_LINES: &[&str] = &[
    "listen_addresses = '*'",
    "port = 5432",
    "max_connections = 100",
    "shared_buffers = 256MB",
    "effective_cache_size = 1GB",
    "work_mem = 4MB",
    "maintenance_work_mem = 64MB",
    "random_page_cost = 1.1",
    "effective_io_concurrency = 200",
    "wal_compression = on",
    "checkpoint_completion_target = 0.9",
    "log_min_duration_statement = 1000",
    "log_connections = on",
    "log_disconnections = on",
    "log_lock_waits = on",
    "log_statement = 'mod'",
];

const SPEC_REDIS_LINES: &[&str] = &[
    "bind 0.0.0.0",
    "port 6379",
    "timeout 300",
    "tcp-keepalive 300",
    "tcp-backlog 511",
    "maxmemory 512mb",
    "maxmemory-policy allkeys-lru",
    "maxmemory-samples 5",
    "appendonly yes",
    "appendfilename \"appendonly.aof\"",
    "appendfsync everysec",
    "auto-aof-rewrite-percentage 100",
    "auto-aof-rewrite-min-size 64mb",
    "maxclients 1000",
];

const SPEC_ENV_LINES: &[&str] = &[
    "POSTGRES_DB=nanika_game",
    "POSTGRES_USER=nanika_user",
    "POSTGRES_PASSWORD=nanika_password",
    "DATABASE_URL=postgresql://nanika_user:nanika_password@localhost:5432/nanika_game?schema=public",
    "REDIS_URL=redis://localhost:6379",
    "SESSION_SECRET=your-secret-key-change-in-production",
    "NODE_ENV=development",
];

fn assert_lines(path: &str, expected: &[&str]) {
    let text = fs_err::read_to_string(repo_root().join(path)).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for line in expected {
        assert!(settings.contains(line), "{path} lacks the spec's `{line}`");
    }
}

#[test]
fn every_spec_value_is_in_the_committed_files() {
    assert_lines(POSTGRES_CONF, SPEC_POSTGRES_LINES);
    assert_lines(REDIS_CONF, SPEC_REDIS_LINES);
    assert_lines(ENV_EXAMPLE, SPEC_ENV_LINES);
}

#[test]
fn every_spec_value_is_in_the_model() {
    let spec = Infrastructure::spec();
    let pg = &spec.postgres;
    assert_eq!(
        (pg.listen_addresses.as_str(), pg.port, pg.max_connections),
        ("*", 5432, 100)
    );
    assert_eq!(pg.shared_buffers, MemorySize(256 * 1024 * 1024));
    assert_eq!(pg.effective_cache_size, MemorySize(1024 * 1024 * 1024));
    assert_eq!(
        (pg.work_mem, pg.maintenance_work_mem),
        (MemorySize(4 << 20), MemorySize(64 << 20))
    );
    assert_eq!(
        (
            pg.random_page_cost,
            pg.effective_io_concurrency,
            pg.checkpoint_completion_target
        ),
        (1.1, 200, 0.9)
    );
    assert_eq!(pg.wal_compression, WalCompression::On);
    assert_eq!(pg.log_min_duration_statement, Some(Duration::from_secs(1)));
    assert!(pg.log_connections && pg.log_disconnections && pg.log_lock_waits);
    assert_eq!(pg.log_statement, LogStatement::Mod);
    let redis = &spec.redis;
    assert_eq!(
        (redis.bind.as_slice(), redis.port),
        (&["0.0.0.0".to_string()][..], 6379)
    );
    assert_eq!(
        (redis.timeout, redis.tcp_keepalive, redis.tcp_backlog),
        (Duration::from_secs(300), Duration::from_secs(300), 511)
    );
    assert_eq!(redis.maxmemory.bytes(), 536_870_912);
    assert_eq!(
        (redis.maxmemory_policy, redis.maxmemory_samples),
        (MaxmemoryPolicy::AllkeysLru, 5)
    );
    assert_eq!(
        (
            redis.appendonly,
            redis.appendfilename.as_str(),
            redis.appendfsync
        ),
        (true, "appendonly.aof", AppendFsync::Everysec)
    );
    assert_eq!(
        (
            redis.auto_aof_rewrite_percentage,
            redis.auto_aof_rewrite_min_size
        ),
        (100, MemorySize(64 << 20))
    );
    assert_eq!(redis.maxclients, 1000);
    let c = &spec.compose;
    assert_eq!(
        (
            c.postgres.image.as_str(),
            c.postgres.container_name.as_str()
        ),
        ("postgres:15-alpine", "nanika-game-db")
    );
    assert_eq!(
        (c.redis.image.as_str(), c.redis.container_name.as_str()),
        ("redis:7-alpine", "nanika-game-redis")
    );
    assert_eq!(
        (c.postgres.volume.as_str(), c.redis.volume.as_str()),
        ("postgres_data", "redis_data")
    );
    assert_eq!(
        (c.network.as_str(), c.subnet.as_str()),
        ("nanika-network", "172.20.0.0/16")
    );
    assert_eq!(
        (c.postgres.major_version(), c.redis.major_version()),
        (Some(15), Some(7))
    );
}

#[test]
fn the_committed_project_has_no_findings() {
    // The committed files only: a developer's own .env (other ports, say) is not under test.
    let copy = tempfile::tempdir().unwrap();
    for (relative, _) in render_files(&Infrastructure::spec()) {
        let target = copy.path().join(relative);
        fs_err::create_dir_all(target.parent().unwrap()).unwrap();
        fs_err::copy(repo_root().join(relative), target).unwrap();
    }
    let loaded = Project::at(copy.path())
        .unwrap()
        .load(&BTreeMap::new())
        .unwrap();
    assert!(loaded.findings.is_empty(), "{:#?}", loaded.findings);
    assert_eq!(loaded.infra, Infrastructure::spec());
}

/// A model that differs from the spec in every section and in every kind of value.
fn changed_model() -> Infrastructure {
    let mut infra = Infrastructure::spec();
    infra.postgres.shared_buffers = MemorySize(128 * 1024 * 1024 + 8192);
    infra.postgres.log_min_duration_statement = None;
    infra.postgres.log_statement = LogStatement::None;
    infra.postgres.wal_compression = WalCompression::Lz4;
    infra.postgres.random_page_cost = 4.0;
    infra.postgres.listen_addresses = "localhost, 127.0.0.1".into();
    infra
        .postgres
        .other
        .push(("timezone".into(), "Asia/Tokyo".into()));
    infra
        .postgres
        .other
        .push(("auto_explain.log_min_duration".into(), "250ms".into()));
    infra.redis.bind = vec!["127.0.0.1".into(), "-::1".into()];
    infra.redis.maxmemory = MemorySize(1_000_000);
    infra.redis.maxmemory_policy = MaxmemoryPolicy::VolatileLru;
    infra.redis.appendfsync = AppendFsync::Always;
    infra.redis.appendfilename = "my file.aof".into();
    infra.redis.requirepass = Some(nanika_config::Secret::new("pa ss\"word"));
    infra
        .redis
        .other
        .push(("save".into(), vec!["900".into(), "1".into()]));
    infra.compose.project_name = "other-game".into();
    infra.compose.postgres.container_name = "other-db".into();
    infra.compose.subnet = "172.30.0.0/16".into();
    infra.env.postgres_db = "other".into();
    infra.env.postgres_port = 15432;
    infra
}

#[test]
fn render_then_parse_gives_the_same_model() {
    for infra in [Infrastructure::spec(), changed_model()] {
        let pg = pgconf::parse(&pgconf::render(&infra.postgres), Path::new(POSTGRES_CONF));
        assert!(pg.findings.is_empty(), "{:#?}", pg.findings);
        assert_eq!(pg.value, infra.postgres);
        let redis = redisconf::parse(&redisconf::render(&infra.redis), Path::new(REDIS_CONF));
        assert!(redis.findings.is_empty(), "{:#?}", redis.findings);
        assert_eq!(redis.value, infra.redis);
        let compose = compose::parse(&compose::render(&infra), Path::new(COMPOSE_FILE));
        assert!(compose.findings.is_empty(), "{:#?}", compose.findings);
        assert_eq!(compose.value, infra.compose);
        let env = dotenv::resolve(
            &dotenv::render_example(&infra.env),
            Path::new(ENV_EXAMPLE),
            &BTreeMap::new(),
        );
        assert!(env.findings.is_empty(), "{:#?}", env.findings);
        assert_eq!(env.value.settings.postgres_db, infra.env.postgres_db);
        assert_eq!(env.value.settings.postgres_port, infra.env.postgres_port);
    }
}

fn shared_schema() -> Option<String> {
    let path = repo_root()
        .parent()?
        .join("shared/schemas/compose-spec.json");
    fs_err::read_to_string(path).ok()
}

#[test]
fn the_bundled_schema_is_the_official_one() {
    match shared_schema() {
        Some(official) => assert_eq!(
            official, COMPOSE_SCHEMA,
            "data/compose-spec.json differs from shared/schemas"
        ),
        None => eprintln!(
            "shared/schemas/compose-spec.json is not beside this checkout; compared nothing"
        ),
    }
}

#[test]
fn committed_compose_is_valid_against_the_compose_specification() {
    let schema_text = shared_schema().unwrap_or_else(|| COMPOSE_SCHEMA.to_string());
    let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::draft7::new(&schema).unwrap();
    let text = fs_err::read_to_string(repo_root().join(COMPOSE_FILE)).unwrap();
    let doc = compose::read_yaml(&text).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc.value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let value = &doc.value;
    // `docker compose up` runs the spec's two services; the rest are the `ha` and `monitoring`
    // profiles'.
    let services = value["services"].as_object().unwrap();
    let (base, profiled): (Vec<&String>, Vec<&String>) = services
        .keys()
        .partition(|name| services[*name].get("profiles").is_none());
    assert_eq!(base, ["postgres", "redis"]);
    assert_eq!(
        profiled,
        [
            "postgres-exporter",
            "postgres-replica-1",
            "prometheus",
            "redis-exporter",
            "redis-replica-1",
            "sentinel-1",
            "sentinel-2",
            "sentinel-3"
        ]
    );
    for name in profiled {
        let service = &services[name];
        let monitoring =
            ["postgres-exporter", "redis-exporter", "prometheus"].contains(&name.as_str());
        let profile = if monitoring { "monitoring" } else { "ha" };
        assert_eq!(service["profiles"], serde_json::json!([profile]), "{name}");
        assert_eq!(service["restart"], "unless-stopped", "{name}");
        assert_eq!(service["networks"][0], "nanika-network", "{name}");
        assert!(service.get("healthcheck").is_some(), "{name}");
        // The exporters are reached on the compose network only; everything else on loopback.
        if name.ends_with("-exporter") {
            assert!(service.get("ports").is_none(), "{name}");
        } else {
            assert_eq!(service["ports"].as_array().unwrap().len(), 1, "{name}");
            assert!(
                service["ports"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:${"),
                "{name}"
            );
        }
        // No fixed container_name: the compose project's name keeps two projects apart.
        assert!(service.get("container_name").is_none(), "{name}");
    }
    assert_eq!(value["services"]["postgres"]["image"], "postgres:15-alpine");
    assert_eq!(
        value["services"]["postgres"]["container_name"],
        "nanika-game-db"
    );
    assert_eq!(value["services"]["redis"]["image"], "redis:7-alpine");
    assert_eq!(
        value["services"]["redis"]["container_name"],
        "nanika-game-redis"
    );
    assert!(
        value["volumes"].get("postgres_data").is_some()
            && value["volumes"].get("redis_data").is_some()
    );
    assert_eq!(
        value["networks"]["nanika-network"]["ipam"]["config"][0]["subnet"],
        "172.20.0.0/16"
    );
    assert_eq!(
        value["services"]["postgres"]["ports"][0],
        "127.0.0.1:${POSTGRES_PORT:-5432}:5432"
    );
    assert_eq!(
        value["services"]["redis"]["ports"][0],
        "127.0.0.1:${REDIS_PORT:-6379}:6379"
    );
    let pg_test: Vec<&str> = value["services"]["postgres"]["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        pg_test.starts_with(&["CMD", "pg_isready"])
            && pg_test.contains(&"-U")
            && pg_test.contains(&"-d"),
        "{pg_test:?}"
    );
    let redis_test = value["services"]["redis"]["healthcheck"]["test"]
        .as_array()
        .unwrap();
    // `redis-cli ping` (spec S12), in a shell that authenticates first when REDIS_PASSWORD is set.
    let redis_test: Vec<&str> = redis_test.iter().map(|v| v.as_str().unwrap()).collect();
    let line = redis_test.join(" ");
    assert!(
        redis_test[0] == "CMD-SHELL" && line.contains("redis-cli -p 6379 ping"),
        "{line}"
    );
    for service in ["postgres", "redis"] {
        let mounts: Vec<&str> = value["services"][service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            mounts
                .iter()
                .any(|m| m.starts_with("./docker/") && m.ends_with(":ro")),
            "{service}: {mounts:?}"
        );
        let interval = value["services"][service]["healthcheck"]["interval"]
            .as_str()
            .unwrap();
        assert_eq!(
            interval, "1s",
            "a short interval lets `up --wait` return soon after readiness"
        );
    }
    // Credentials are interpolated from .env, never written into the file.
    assert!(!text.contains("nanika_password"));
    assert_eq!(
        value["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"],
        "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"
    );
}

#[test]
fn the_duration_check_catches_what_draft_07_lets_through() {
    let text =
        compose::render(&Infrastructure::spec()).replacen("interval: 1s", "interval: 1 second", 1);
    let doc = compose::read_yaml(&text).unwrap();
    let schema: serde_json::Value = serde_json::from_str(COMPOSE_SCHEMA).unwrap();
    assert!(
        jsonschema::draft7::new(&schema)
            .unwrap()
            .is_valid(&doc.value),
        "the schema alone accepts any string"
    );
    let findings = compose::validate(&doc, Path::new(COMPOSE_FILE));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(
        findings[0].key.as_deref(),
        Some("services.postgres.healthcheck.interval")
    );
    assert_eq!(
        findings[0].line,
        text.lines()
            .position(|l| l.contains("1 second"))
            .map(|i| i + 1)
    );
}
