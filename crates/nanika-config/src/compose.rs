//! `compose.yaml`: rendered from the model, validated against the Compose Specification's schema,
//! and read back into the model, with every finding on the line it concerns.

use crate::finding::Finding;
use crate::model::{ComposeService, ComposeSettings, Infrastructure};
use crate::parsed::Parsed;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

/// The Compose Specification's schema (draft-07), as shipped with nanika.
pub const COMPOSE_SCHEMA: &str = include_str!("../data/compose-spec.json");

/// Where the committed config files are mounted inside the containers.
pub const POSTGRES_CONF_IN_CONTAINER: &str = "/etc/postgresql/postgresql.conf";
/// Where the committed Redis config is mounted inside its container.
pub const REDIS_CONF_IN_CONTAINER: &str = "/usr/local/etc/redis/redis.conf";
/// The compose profile that adds the replicas and sentinels (`docker compose --profile ha up`).
pub const HA_PROFILE: &str = "ha";
/// The master name the sentinels watch, as in the native runtime.
pub const SENTINEL_MASTER: &str = "nanika";
/// Where the primary's init script for replication is mounted: the image runs it once, on the
/// first start of an empty volume.
pub const REPLICATION_SCRIPT_IN_CONTAINER: &str = "/docker-entrypoint-initdb.d/replication.sh";
/// The compose profile that adds the exporters and Prometheus
/// (`docker compose --profile monitoring up`), the docker runtime's counterpart of `[monitoring]`.
pub const MONITORING_PROFILE: &str = "monitoring";
/// The committed scrape configuration of the `monitoring` profile's Prometheus, relative to the
/// project root: it names the exporters by service name on the compose network.
pub const PROMETHEUS_COMPOSE_CONFIG: &str = "monitoring/prometheus/prometheus.compose.yml";
/// The official images of the `monitoring` profile, at the versions Debian 12 ships (which the
/// native stack runs). redis_exporter's `-alpine` variant, since the plain tag is built from
/// `scratch` and has nothing a healthcheck could run.
pub const PROMETHEUS_IMAGE: &str = "prom/prometheus:v2.42.0";
/// postgres_exporter's official image (see [`PROMETHEUS_IMAGE`]).
pub const POSTGRES_EXPORTER_IMAGE: &str = "quay.io/prometheuscommunity/postgres-exporter:v0.11.1";
/// redis_exporter's official image (see [`PROMETHEUS_IMAGE`]).
pub const REDIS_EXPORTER_IMAGE: &str = "oliver006/redis_exporter:v1.45.0-alpine";
/// The named volume of the `monitoring` profile's Prometheus.
pub const PROMETHEUS_VOLUME: &str = "prometheus_data";

/// Renders the compose file: the spec's two services, volumes and network, host ports on
/// 127.0.0.1 only, and credentials taken from `.env` rather than written here.
pub fn render(infra: &Infrastructure) -> String {
    let c = &infra.compose;
    let pg_port = infra.postgres.port;
    let redis_port = infra.redis.port;
    format!(
        r#"# Docker Compose for nanika-game (spec: Docker Compose設定).
# Rendered by `nanika init`; `nanika config check` validates it against the Compose Specification.
# Credentials come from .env. Host ports are published on 127.0.0.1 only: a database or a Redis
# without a password must not be reachable from the network.
name: {project}

services:
  # PostgreSQLデータベース
  postgres:
    image: {pg_image}
    container_name: {pg_container}
    command: ["postgres", "-c", "config_file={pg_conf}"]
    environment:
      POSTGRES_DB: ${{POSTGRES_DB:?set POSTGRES_DB in .env}}
      POSTGRES_USER: ${{POSTGRES_USER:?set POSTGRES_USER in .env}}
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}}
    ports:
      - "127.0.0.1:${{POSTGRES_PORT:-{pg_port}}}:{pg_port}"
    volumes:
      - {pg_volume}:/var/lib/postgresql/data
      - ./docker/postgres/postgresql.conf:{pg_conf}:ro
      # Lets the `ha` profile's replica copy and follow this server (run on an empty volume only).
      - ./{replication_script}:{replication_script_in_container}:ro
    networks:
      - {network}
    # Over TCP, so the image's temporary initdb server (socket only) never counts as healthy.
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "{pg_port}", "-U", "${{POSTGRES_USER}}", "-d", "${{POSTGRES_DB}}"]
      interval: 1s
      timeout: 3s
      retries: 30
      start_period: 30s
    restart: unless-stopped

  # Redisキャッシュ
  redis:
    image: {redis_image}
    container_name: {redis_container}
    # The image's entrypoint runs Redis as its own `redis` user, from the committed config. A
    # password from .env (REDIS_PASSWORD) goes into a private copy inside the container only:
    # never onto a command line (every user of the host can read those) or into a committed file.
    # masterauth: after a failover of the `ha` profile's sentinels this server rejoins as a replica.
    command:
      - sh
      - -c
      - |
        conf={redis_conf}
        if [ -n "$$REDIS_PASSWORD" ]; then
          umask 077
          cp "$$conf" /tmp/redis.conf
          {quote}
          printf '\nrequirepass "%s"\nmasterauth "%s"\n' "$$quoted" "$$quoted" >> /tmp/redis.conf
          chown redis /tmp/redis.conf
          conf=/tmp/redis.conf
        fi
        exec docker-entrypoint.sh redis-server "$$conf"
    environment:
      REDIS_PASSWORD: ${{REDIS_PASSWORD:-}}
    ports:
      - "127.0.0.1:${{REDIS_PORT:-{redis_port}}}:{redis_port}"
    volumes:
      - {redis_volume}:/data
      - ./docker/redis/redis.conf:{redis_conf}:ro
    networks:
      - {network}
    healthcheck:
      test: ["CMD-SHELL", "[ -z \"$$REDIS_PASSWORD\" ] || export REDISCLI_AUTH=\"$$REDIS_PASSWORD\"; redis-cli -p {redis_port} ping | grep -q PONG"]
      interval: 1s
      timeout: 3s
      retries: 30
    restart: unless-stopped
{ha_services}{monitoring_services}
volumes:
  # PostgreSQLデータ永続化
  {pg_volume}:
  # Redisデータ永続化
  {redis_volume}:
  # Replicas of the `ha` profile
  {pg_volume_replica}:
  {redis_volume_replica}:
  # Prometheus's samples (profile: {monitoring_profile})
  {prometheus_volume}:

networks:
  {network}:
    driver: bridge
    ipam:
      config:
        - subnet: {subnet}
"#,
        project = c.project_name,
        pg_image = c.postgres.image,
        pg_container = c.postgres.container_name,
        pg_volume = c.postgres.volume,
        pg_conf = POSTGRES_CONF_IN_CONTAINER,
        redis_image = c.redis.image,
        redis_container = c.redis.container_name,
        redis_volume = c.redis.volume,
        redis_conf = REDIS_CONF_IN_CONTAINER,
        quote = QUOTE_REDIS_PASSWORD,
        network = c.network,
        subnet = c.subnet,
        replication_script = crate::project::POSTGRES_REPLICATION_SCRIPT,
        replication_script_in_container = REPLICATION_SCRIPT_IN_CONTAINER,
        ha_services = render_ha_services(infra),
        monitoring_services = render_monitoring_services(infra),
        monitoring_profile = MONITORING_PROFILE,
        prometheus_volume = PROMETHEUS_VOLUME,
        pg_volume_replica = replica_volume(&c.postgres.volume),
        redis_volume_replica = replica_volume(&c.redis.volume),
    )
}

/// The named volume of a service's first replica: `postgres_data` → `postgres_replica_1_data`.
fn replica_volume(volume: &str) -> String {
    match volume.strip_suffix("_data") {
        Some(stem) => format!("{stem}_replica_1_data"),
        None => format!("{volume}_replica_1"),
    }
}

/// The `ha` profile's services, the docker runtime's counterpart of the native `[topology]`
/// (one PostgreSQL streaming replica; Redis Sentinel with one replica and three sentinels).
/// Behind `profiles:`, so a plain `docker compose up` runs the spec's two services only.
fn render_ha_services(infra: &Infrastructure) -> String {
    let mut text = postgres_replica(infra);
    text += &redis_replica(infra);
    for number in 1..=3 {
        text += &sentinel(infra, number);
    }
    text
}

/// The `monitoring` profile's services: the exporters, reachable on the compose network only,
/// and Prometheus, published on loopback, scraping them by service name with the committed
/// [`PROMETHEUS_COMPOSE_CONFIG`] and evaluating the committed alert rules.
fn render_monitoring_services(infra: &Infrastructure) -> String {
    let c = &infra.compose;
    format!(
        r#"
  # PostgreSQLエクスポーター (profile: {profile})
  postgres-exporter:
    image: {pg_exporter_image}
    profiles: ["{profile}"]
    # As POSTGRES_USER: the image's initdb has made no other role, and a volume initialised
    # earlier has none either. The password reaches it in its environment, never on a command
    # line. Not published: Prometheus reaches it on the compose network.
    environment:
      DATA_SOURCE_URI: "postgres:{pg_port}/${{POSTGRES_DB:?set POSTGRES_DB in .env}}?sslmode=disable"
      DATA_SOURCE_USER: ${{POSTGRES_USER:?set POSTGRES_USER in .env}}
      DATA_SOURCE_PASS: ${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}}
    networks:
      - {network}
    depends_on:
      postgres:
        condition: service_healthy
    # Healthy once it reaches PostgreSQL, not merely once it listens.
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O - http://127.0.0.1:9187/metrics | grep -q '^pg_up 1'"]
      interval: 2s
      timeout: 5s
      retries: 30
    restart: unless-stopped

  # Redisエクスポーター (profile: {profile})
  redis-exporter:
    image: {redis_exporter_image}
    profiles: ["{profile}"]
    # REDIS_PASSWORD from the environment (empty: no AUTH). Not published.
    environment:
      REDIS_ADDR: "redis://redis:{redis_port}"
      REDIS_PASSWORD: ${{REDIS_PASSWORD:-}}
    networks:
      - {network}
    depends_on:
      redis:
        condition: service_healthy
    # Healthy once it reaches Redis, not merely once it listens.
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O - http://127.0.0.1:9121/metrics | grep -q '^redis_up 1'"]
      interval: 2s
      timeout: 5s
      retries: 30
    restart: unless-stopped

  # Prometheus (profile: {profile})
  prometheus:
    image: {prometheus_image}
    profiles: ["{profile}"]
    # The committed scrape configuration and alert rules, read-only, where the image looks for
    # its configuration; the rules file sits next to it, as `rule_files` names it.
    command:
      - --config.file=/etc/prometheus/prometheus.yml
      - --storage.tsdb.path=/prometheus
      - --storage.tsdb.retention.time=7d
    ports:
      - "127.0.0.1:${{PROMETHEUS_PORT:-9090}}:9090"
    volumes:
      - {prometheus_volume}:/prometheus
      - ./{config}:/etc/prometheus/prometheus.yml:ro
      - ./{rules}:/etc/prometheus/alerts.yml:ro
    networks:
      - {network}
    depends_on:
      - postgres-exporter
      - redis-exporter
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
      interval: 2s
      timeout: 5s
      retries: 30
    restart: unless-stopped
"#,
        profile = MONITORING_PROFILE,
        pg_exporter_image = POSTGRES_EXPORTER_IMAGE,
        redis_exporter_image = REDIS_EXPORTER_IMAGE,
        prometheus_image = PROMETHEUS_IMAGE,
        pg_port = infra.postgres.port,
        redis_port = infra.redis.port,
        prometheus_volume = PROMETHEUS_VOLUME,
        config = PROMETHEUS_COMPOSE_CONFIG,
        rules = crate::monitoring::RULES_FILE,
        network = c.network,
    )
}

/// `postgres-replica-1`: `pg_basebackup` of the primary on an empty volume, then a hot standby.
fn postgres_replica(infra: &Infrastructure) -> String {
    let c = &infra.compose;
    format!(
        r#"
  # PostgreSQLストリーミングレプリカ (profile: {profile})
  postgres-replica-1:
    image: {pg_image}
    profiles: ["{profile}"]
    # On an empty volume: a copy of the primary by pg_basebackup as POSTGRES_USER (a superuser,
    # which docker/postgres/replication.sh lets replicate over this network), and -R makes it a
    # standby that streams from `postgres`. Then the image's entrypoint (which hands the files
    # to the postgres user) runs it as a hot standby with the committed config.
    command:
      - sh
      - -c
      - |
        if [ ! -s "$$PGDATA/PG_VERSION" ]; then
          tries=0
          until PGPASSWORD="$$POSTGRES_PASSWORD" pg_basebackup -h postgres -p {pg_port} -U "$$POSTGRES_USER" -D "$$PGDATA" -X stream -R; do
            tries=$$((tries + 1))
            if [ "$$tries" -ge 30 ]; then
              echo "pg_basebackup from postgres failed; a volume made before docker/postgres/replication.sh existed lacks its pg_hba.conf line: run that script in the postgres container, or start from new volumes" >&2
              exit 1
            fi
            find "$$PGDATA" -mindepth 1 -delete
            sleep 1
          done
        fi
        exec docker-entrypoint.sh postgres -c config_file={pg_conf}
    environment:
      POSTGRES_DB: ${{POSTGRES_DB:?set POSTGRES_DB in .env}}
      POSTGRES_USER: ${{POSTGRES_USER:?set POSTGRES_USER in .env}}
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}}
    ports:
      - "127.0.0.1:${{POSTGRES_REPLICA_PORT:-5433}}:{pg_port}"
    volumes:
      - {volume}:/var/lib/postgresql/data
      - ./docker/postgres/postgresql.conf:{pg_conf}:ro
    networks:
      - {network}
    depends_on:
      postgres:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "{pg_port}", "-U", "${{POSTGRES_USER}}", "-d", "${{POSTGRES_DB}}"]
      interval: 1s
      timeout: 3s
      retries: 30
      start_period: 60s
    restart: unless-stopped
"#,
        profile = HA_PROFILE,
        pg_image = c.postgres.image,
        pg_port = infra.postgres.port,
        pg_conf = POSTGRES_CONF_IN_CONTAINER,
        volume = replica_volume(&c.postgres.volume),
        network = c.network,
    )
}

/// The shell that puts `REDIS_PASSWORD` into `$$quoted`, escaped for a redis.conf string.
const QUOTE_REDIS_PASSWORD: &str =
    r#"quoted="$$(printf '%s' "$$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')""#;

/// The healthcheck of a Redis node on `port`: PONG, and for a replica a live link to its master.
fn redis_healthcheck(port: u16, replica: bool) -> String {
    let check = if replica {
        format!(
            "redis-cli -p {port} info replication | grep -Eq 'role:master|master_link_status:up'"
        )
    } else {
        format!("redis-cli -p {port} ping | grep -q PONG")
    };
    format!(
        r#"    healthcheck:
      test: ["CMD-SHELL", "[ -z \"$$REDIS_PASSWORD\" ] || export REDISCLI_AUTH=\"$$REDIS_PASSWORD\"; {check}"]
      interval: 1s
      timeout: 3s
      retries: 30
"#
    )
}

/// `redis-replica-1`: the committed config, following `redis`; with a password, a private copy
/// that also has `masterauth`.
fn redis_replica(infra: &Infrastructure) -> String {
    let c = &infra.compose;
    let port = infra.redis.port;
    format!(
        r#"
  # Redisレプリカ (profile: {profile})
  redis-replica-1:
    image: {redis_image}
    profiles: ["{profile}"]
    # As `redis`, plus `--replicaof`; with REDIS_PASSWORD the private copy also gets masterauth.
    # It announces its service name, not its address, so that after a failover the sentinels
    # name the new master as they named the old one (`redis-replica-1 6379`).
    command:
      - sh
      - -c
      - |
        conf={redis_conf}
        if [ -n "$$REDIS_PASSWORD" ]; then
          umask 077
          cp "$$conf" /tmp/redis.conf
          {quote}
          printf '\nrequirepass "%s"\nmasterauth "%s"\n' "$$quoted" "$$quoted" >> /tmp/redis.conf
          chown redis /tmp/redis.conf
          conf=/tmp/redis.conf
        fi
        exec docker-entrypoint.sh redis-server "$$conf" --replicaof redis {port} --replica-announce-ip redis-replica-1
    environment:
      REDIS_PASSWORD: ${{REDIS_PASSWORD:-}}
    ports:
      - "127.0.0.1:${{REDIS_REPLICA_PORT:-6380}}:{port}"
    volumes:
      - {volume}:/data
      - ./docker/redis/redis.conf:{redis_conf}:ro
    networks:
      - {network}
    depends_on:
      redis:
        condition: service_healthy
{healthcheck}    restart: unless-stopped
"#,
        profile = HA_PROFILE,
        redis_image = c.redis.image,
        redis_conf = REDIS_CONF_IN_CONTAINER,
        quote = QUOTE_REDIS_PASSWORD,
        volume = replica_volume(&c.redis.volume),
        network = c.network,
        healthcheck = redis_healthcheck(port, true),
    )
}

/// `sentinel-N`: `redis-server --sentinel` on a config it writes itself on its first start, in
/// the container's own /tmp: Sentinel rewrites its file (what it learns, failovers), which the
/// read-only committed mounts could not take, and a restart keeps what it learnt.
fn sentinel(infra: &Infrastructure, number: u16) -> String {
    let c = &infra.compose;
    let settings = crate::settings::RedisTopology::default();
    format!(
        r#"
  # Redis Sentinel {number}/3 (profile: {profile})
  sentinel-{number}:
    image: {redis_image}
    profiles: ["{profile}"]
    # Service names, not addresses: resolve-hostnames lets `monitor` name `redis`, and
    # announce-hostnames makes the sentinels answer with that name too.
    command:
      - sh
      - -c
      - |
        conf=/tmp/sentinel.conf
        if [ ! -f "$$conf" ]; then
          umask 077
          cat > "$$conf" <<EOF
        port 26379
        sentinel resolve-hostnames yes
        sentinel announce-hostnames yes
        sentinel monitor {master} redis {port} 2
        sentinel down-after-milliseconds {master} {down_after}
        sentinel failover-timeout {master} {failover_timeout}
        sentinel parallel-syncs {master} 1
        EOF
          if [ -n "$$REDIS_PASSWORD" ]; then
            {quote}
            printf 'sentinel auth-pass {master} "%s"\nrequirepass "%s"\nsentinel sentinel-pass "%s"\n' "$$quoted" "$$quoted" "$$quoted" >> "$$conf"
          fi
          chown redis "$$conf"
        fi
        exec docker-entrypoint.sh redis-server "$$conf" --sentinel
    environment:
      REDIS_PASSWORD: ${{REDIS_PASSWORD:-}}
    ports:
      - "127.0.0.1:${{SENTINEL_PORT_{number}:-{host_port}}}:26379"
    # A sentinel keeps no data: without this the image's `VOLUME /data` would leave an anonymous
    # volume behind at every `docker compose down` without -v.
    tmpfs:
      - /data
    networks:
      - {network}
    depends_on:
      redis:
        condition: service_healthy
{healthcheck}    restart: unless-stopped
"#,
        profile = HA_PROFILE,
        redis_image = c.redis.image,
        master = SENTINEL_MASTER,
        port = infra.redis.port,
        down_after = settings.down_after_ms,
        failover_timeout = settings.failover_timeout_ms,
        quote = QUOTE_REDIS_PASSWORD,
        host_port = 26378 + number,
        network = c.network,
        healthcheck = redis_healthcheck(26379, false),
    )
}

/// `docker/postgres/replication.sh`, which the image runs once on the primary's empty volume:
/// physical replication for `POSTGRES_USER`, from the compose network only, with its password.
pub fn render_replication_script() -> String {
    r#"# Rendered by `nanika init` for compose.yaml's `ha` profile. The postgres image runs it once, when it
# initialises an empty volume. The image's own rule (`host all all all`) does not cover physical
# replication, which pg_basebackup and a standby need: this adds it for POSTGRES_USER only (the
# superuser, who can already read everything over the same network), from the compose network
# only (`samenet`), with its scram-sha-256 password. Running it again adds nothing.
rule="host replication \"$POSTGRES_USER\" samenet scram-sha-256"
if ! grep -qxF "$rule" "$PGDATA/pg_hba.conf"; then
    printf '\n# compose.yaml profile ha: the replica copies and follows this server.\n%s\n' "$rule" >>"$PGDATA/pg_hba.conf"
fi
"#
    .to_string()
}

/// A YAML document read into JSON, with the line of every node by its JSON pointer.
#[derive(Debug, Clone)]
pub struct YamlDocument {
    /// The document as JSON, as the schema sees it.
    pub value: Value,
    /// The 1-based line of each node, by JSON pointer (`/services/redis/image`).
    pub lines: BTreeMap<String, usize>,
}

impl YamlDocument {
    /// The line of the node at `pointer`, or of its nearest ancestor the document has.
    pub fn line_of(&self, pointer: &str) -> Option<usize> {
        let mut pointer = pointer;
        loop {
            if let Some(line) = self.lines.get(pointer) {
                return Some(*line);
            }
            pointer = &pointer[..pointer.rfind('/')?];
        }
    }
}

/// A YAML node with the line it starts on.
struct Node(Value, Vec<(String, usize)>);

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node(Value::Bool(v), Vec::new()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node(Value::from(v), Vec::new()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node(Value::from(v), Vec::new()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node(Value::from(v), Vec::new()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node(Value::String(v.to_string()), Vec::new()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node(Value::Null, Vec::new()))
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node(Value::Null, Vec::new()))
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        let mut lines = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            let pointer = format!("/{}", items.len());
            lines.push((pointer.clone(), item.referenced.line() as usize));
            lines.extend(
                item.value
                    .1
                    .into_iter()
                    .map(|(p, l)| (format!("{pointer}{p}"), l)),
            );
            items.push(item.value.0);
        }
        Ok(Node(Value::Array(items), lines))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut object = Map::new();
        let mut lines = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Node>>()? {
            let name = match key.value.0 {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let value = map.next_value::<Spanned<Node>>()?;
            let pointer = format!("/{}", name.replace('~', "~0").replace('/', "~1"));
            lines.push((pointer.clone(), key.referenced.line() as usize));
            lines.extend(
                value
                    .value
                    .1
                    .into_iter()
                    .map(|(p, l)| (format!("{pointer}{p}"), l)),
            );
            object.insert(name, value.value.0);
        }
        Ok(Node(Value::Object(object), lines))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Reads YAML text into JSON with the line of each node; the error names the line.
pub fn read_yaml(text: &str) -> Result<YamlDocument, (Option<usize>, String)> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        let line = message
            .split("line ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok());
        (line, message.lines().next().unwrap_or_default().to_string())
    })?;
    let mut lines: BTreeMap<String, usize> = root.value.1.into_iter().collect();
    lines.insert(String::new(), root.referenced.line() as usize);
    Ok(YamlDocument {
        value: root.value.0,
        lines,
    })
}

/// A Go duration as compose reads it: `1s`, `1m30s`, `500ms`, `0`.
pub fn is_compose_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 || rest[..digits].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .filter(|u| rest.starts_with(*u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The compose fields that hold durations, as JSON pointers with `*` for any key.
const DURATION_FIELDS: &[&str] = &[
    "/services/*/healthcheck/interval",
    "/services/*/healthcheck/timeout",
    "/services/*/healthcheck/start_period",
    "/services/*/healthcheck/start_interval",
    "/services/*/stop_grace_period",
    "/services/*/deploy/restart_policy/delay",
    "/services/*/deploy/restart_policy/window",
    "/services/*/deploy/update_config/delay",
    "/services/*/deploy/update_config/monitor",
    "/services/*/deploy/rollback_config/delay",
    "/services/*/deploy/rollback_config/monitor",
];

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value =
        serde_json::from_str(COMPOSE_SCHEMA).expect("the bundled compose schema is JSON");
    jsonschema::draft7::options()
        .with_format("duration", is_compose_duration)
        .should_validate_formats(true)
        .build(&schema)
        .expect("the bundled compose schema compiles")
});

/// Validates a compose document against the Compose Specification, plus the duration fields the
/// draft-07 schema leaves unchecked.
pub fn validate(doc: &YamlDocument, file: &Path) -> Vec<Finding> {
    let mut findings: Vec<Finding> = VALIDATOR
        .iter_errors(&doc.value)
        .map(|error| {
            let mut pointer = error.instance_path().as_str().to_string();
            // Point at the unexpected key itself, not at the mapping that holds it.
            if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = error.kind()
                && let Some(first) = unexpected.first()
            {
                pointer = format!("{pointer}/{}", first.replace('~', "~0").replace('/', "~1"));
            }
            let key = pointer.trim_start_matches('/').replace('/', ".");
            let mut finding = Finding::error("schema", file, error.masked().to_string())
                .at_optional_line(doc.line_of(&pointer))
                .with_hint("see the Compose Specification: https://github.com/compose-spec/compose-spec/blob/main/spec.md");
            if !key.is_empty() {
                finding = finding.for_key(key);
            }
            finding
        })
        .collect();
    let mut durations = Vec::new();
    for pattern in DURATION_FIELDS {
        collect_matches(
            &doc.value,
            pattern
                .trim_start_matches('/')
                .split('/')
                .collect::<Vec<_>>()
                .as_slice(),
            String::new(),
            &mut durations,
        );
    }
    for (pointer, value) in durations {
        let valid = match value {
            Value::String(text) => is_compose_duration(text),
            _ => false,
        };
        if !valid {
            findings.push(
                Finding::error("schema", file, format!("{value} is not a duration"))
                    .at_optional_line(doc.line_of(&pointer))
                    .for_key(pointer.trim_start_matches('/').replace('/', "."))
                    .with_hint("write a duration such as 1s, 500ms or 1m30s"),
            );
        }
    }
    findings
}

fn collect_matches<'v>(
    value: &'v Value,
    pattern: &[&str],
    pointer: String,
    out: &mut Vec<(String, &'v Value)>,
) {
    let Some((first, rest)) = pattern.split_first() else {
        out.push((pointer, value));
        return;
    };
    let Value::Object(map) = value else { return };
    for (key, child) in map {
        if *first == "*" || first == key {
            collect_matches(child, rest, format!("{pointer}/{key}"), out);
        }
    }
}

/// Reads and validates a compose file, then reads the model's fields back out of it.
pub fn parse(text: &str, file: &Path) -> Parsed<ComposeSettings> {
    let mut settings = ComposeSettings::spec();
    let doc = match read_yaml(text) {
        Ok(doc) => doc,
        Err((line, message)) => {
            let finding = Finding::error("syntax", file, message)
                .at_optional_line(line)
                .with_hint("fix the YAML syntax (indentation, quotes, colons)");
            return Parsed {
                value: settings,
                lines: BTreeMap::new(),
                findings: vec![finding],
            };
        }
    };
    let mut findings = validate(&doc, file);
    let text_at = |pointer: &str| {
        doc.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut missing = |pointer: &str, what: &str| {
        if doc.value.pointer(pointer).is_some() {
            // Present but of the wrong type: the schema finding already names it.
            return;
        }
        findings.push(
            Finding::error("compose-structure", file, format!("has no {what}"))
                .at_optional_line(doc.line_of(pointer))
                .for_key(pointer.trim_start_matches('/').replace('/', "."))
                .with_hint("run `nanika init --force` to render the spec's compose file again, or add it by hand"),
        );
    };
    match text_at("/name") {
        Some(name) => settings.project_name = name,
        None => missing("/name", "project `name`"),
    }
    for (service, target) in [
        ("postgres", &mut settings.postgres),
        ("redis", &mut settings.redis),
    ] {
        let base = format!("/services/{service}");
        if doc.value.pointer(&base).is_none() {
            missing(&base, &format!("`{service}` service"));
            continue;
        }
        read_service(&doc, &base, target, &mut missing);
    }
    let networks = doc.value.pointer("/networks").and_then(Value::as_object);
    match networks.and_then(|n| n.keys().next()) {
        Some(name) => {
            settings.network = name.clone();
            let subnet = format!("/networks/{name}/ipam/config/0/subnet");
            match text_at(&subnet) {
                Some(value) => settings.subnet = value,
                None => missing(&subnet, "subnet for the network"),
            }
        }
        None => missing("/networks", "network"),
    }
    if let Some(services) = doc.value.pointer("/services").and_then(Value::as_object) {
        for (name, service) in services {
            let opt_in = service.get("profiles").is_some();
            if !matches!(name.as_str(), "postgres" | "redis") && !opt_in {
                findings.push(
                    Finding::error("compose-structure", file, format!("service `{name}` is not part of the base setup"))
                        .at_optional_line(doc.line_of(&format!("/services/{name}")))
                        .for_key(format!("services.{name}"))
                        .with_hint("the spec's base setup is postgres and redis only; put extras behind `profiles:`"),
                );
            }
            for port in service
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(published) = port.as_str().filter(|p| !is_loopback_publication(p)) {
                    findings.push(
                        Finding::warning(
                            "public-port",
                            file,
                            format!("`{published}` publishes the port on every interface"),
                        )
                        .at_optional_line(doc.line_of(&format!("/services/{name}/ports")))
                        .for_key(format!("services.{name}.ports"))
                        .with_hint("publish on loopback only: \"127.0.0.1:HOST:CONTAINER\""),
                    );
                }
            }
        }
    }
    let lines = doc
        .lines
        .iter()
        .map(|(k, v)| (k.trim_start_matches('/').replace('/', "."), *v))
        .collect();
    Parsed {
        value: settings,
        lines,
        findings,
    }
}

fn read_service(
    doc: &YamlDocument,
    base: &str,
    target: &mut ComposeService,
    missing: &mut dyn FnMut(&str, &str),
) {
    let text_at = |pointer: &str| {
        doc.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match text_at(&format!("{base}/image")) {
        Some(image) => target.image = image,
        None => missing(&format!("{base}/image"), "image"),
    }
    match text_at(&format!("{base}/container_name")) {
        Some(name) => target.container_name = name,
        None => missing(&format!("{base}/container_name"), "container_name"),
    }
    let volume = doc
        .value
        .pointer(&format!("{base}/volumes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|mount| mount.split(':').next())
        .find(|source| !source.starts_with(['.', '/', '~']));
    match volume {
        Some(volume) => target.volume = volume.to_string(),
        None => missing(&format!("{base}/volumes"), "named volume for its data"),
    }
    if doc
        .value
        .pointer(&format!("{base}/healthcheck/test"))
        .is_none()
    {
        missing(&format!("{base}/healthcheck"), "healthcheck");
    }
}

/// Whether a `ports:` entry publishes on loopback only (`127.0.0.1:5432:5432`, `[::1]:…`).
fn is_loopback_publication(port: &str) -> bool {
    port.starts_with("127.") || port.starts_with("[::1]") || port.starts_with("localhost:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go() {
        for good in ["1s", "500ms", "1m30s", "0", "1.5h", "2h45m"] {
            assert!(is_compose_duration(good), "{good}");
        }
        for bad in ["", "1", "5 s", "1sec", "s", "1d", "-1s"] {
            assert!(!is_compose_duration(bad), "{bad}");
        }
    }

    #[test]
    fn yaml_lines_are_kept_by_pointer() {
        let doc = read_yaml("a:\n  b:\n    - x\n    - y: 1\n").unwrap();
        assert_eq!(doc.line_of("/a"), Some(1));
        assert_eq!(doc.line_of("/a/b"), Some(2));
        assert_eq!(doc.line_of("/a/b/1/y"), Some(4));
        assert_eq!(doc.line_of("/a/b/1/zz"), Some(4));
    }
}
