//! `nanika doctor`: the spec's troubleshooting (pg_isready, logs, permissions, redis ping,
//! INFO memory, CONFIG GET maxmemory, disk usage) and the known pains of such setups, each as a
//! finding with what was seen and the fix.

mod monitoring;
mod topology;
pub use monitoring::monitoring_checks;
pub use topology::topology_checks;

use crate::pg;
use crate::redis_admin::{self, info_field};
use nanika_config::LoadedProject;
use nanika_config::project::{POSTGRES_CONF, REDIS_CONF};
use nanika_runtime::Service;
use nanika_runtime::docker::ContainerReport;
use nanika_runtime::native::binaries::{self, BinarySearch};
use nanika_runtime::native::layout::StateLayout;
use nanika_runtime::native::postgres::{self, Postmaster};
use nanika_runtime::native::procfs;
use nanika_runtime::native::redis as native_redis;
use nanika_runtime::native::supervisor;
use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken.
    Fail,
}

/// One check's finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `postgres.reachable`.
    pub name: String,
    /// How it came out.
    pub verdict: Verdict,
    /// What was seen.
    pub seen: String,
    /// What to do, when it is not ok.
    pub fix: Option<String>,
}

fn ok(name: &str, seen: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        verdict: Verdict::Ok,
        seen: seen.into(),
        fix: None,
    }
}

fn warn(name: &str, seen: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        verdict: Verdict::Warn,
        seen: seen.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &str, seen: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        verdict: Verdict::Fail,
        seen: seen.into(),
        fix: Some(fix.into()),
    }
}

/// What doctor is told from outside.
pub struct DoctorInput<'a> {
    /// The project.
    pub loaded: &'a LoadedProject,
    /// The native runtime's state layout.
    pub layout: &'a StateLayout,
    /// Where the binaries are looked for.
    pub search: &'a BinarySearch,
    /// How to tell whether a server that answers is this project's.
    pub identity: Identity,
}

/// How doctor proves whose servers answer.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Native servers carry the project's marker (PostgreSQL) or the supervised pid (Redis).
    Native,
    /// Docker: the caller checked the compose project's own containers; each service's outcome,
    /// or why it is not this project's.
    Docker {
        /// PostgreSQL's container.
        postgres: Result<(), String>,
        /// Redis's container.
        redis: Result<(), String>,
        /// The engine's version, or why none answers.
        engine: Result<String, String>,
        /// The compose plugin's version, or why there is none.
        compose: Result<String, String>,
        /// The project's containers, or why they could not be read.
        containers: Result<Vec<ContainerReport>, String>,
        /// The last lines of the PostgreSQL container's log.
        postgres_log: Vec<String>,
    },
}

/// Runs every check.
pub async fn run(input: &DoctorInput<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    config_checks(input, &mut checks);
    binaries_checks(input, &mut checks);
    port_checks(input, &mut checks);
    match &input.identity {
        Identity::Native => state_checks(input, &mut checks),
        Identity::Docker {
            engine,
            compose,
            containers,
            ..
        } => docker_checks(engine, compose, containers, &mut checks),
    }
    postgres_checks(input, &mut checks).await;
    redis_checks(input, &mut checks);
    if matches!(input.identity, Identity::Native) && input.loaded.settings.backups.enabled {
        backup_checks(input, &mut checks);
    }
    disk_checks(input, &mut checks);
    checks
}

/// A backup older than this is worth a warning (until the supervisor takes them on a schedule).
const BACKUP_STALE_AFTER_SECS: i64 = 7 * 86_400;

/// With `nanika.toml`'s backups on: the repository answers, has a backup, a recent one, and
/// every backup and archived WAL segment reads back intact (`pgbackrest verify`).
fn backup_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    const NAME: &str = "backups";
    if let Some(marker) = nanika_runtime::native::backups::unfinished_restore(input.layout) {
        checks.push(fail(
            NAME,
            nanika_runtime::native::backups::unfinished_restore_message(input.layout, &marker),
            "nanika backup restore --abandon",
        ));
        return;
    }
    let program = match binaries::find_pgbackrest(input.search) {
        Ok(program) => program,
        Err(error) => {
            checks.push(fail(
                NAME,
                error.to_string(),
                "sudo apt-get install -y pgbackrest",
            ));
            return;
        }
    };
    let password = input
        .layout
        .postgres_admin_password()
        .unwrap_or_else(|| input.loaded.infra.env.postgres_password.clone());
    let tool = crate::pgbackrest::PgBackRest::new(program, input.layout, password);
    if let Some(status) = nanika_runtime::native::backup_schedule::read_status(input.layout)
        && let Some(error) = status.last_error
    {
        checks.push(fail(
            NAME,
            format!("the last scheduled backup failed: {error}"),
            "`nanika backup now` shows the error as it happens; `nanika logs postgres` has the supervisor's remarks",
        ));
        return;
    }
    let backups = match tool.list() {
        Ok(backups) => backups,
        Err(error) => {
            checks.push(fail(
                NAME,
                format!("pgBackRest's repository does not answer: {error}"),
                "`nanika backup check` (it creates the stanza when PostgreSQL runs)",
            ));
            return;
        }
    };
    let Some(last) = backups.last() else {
        checks.push(warn(
            NAME,
            "no backup in the repository yet",
            "`nanika backup now --type full`",
        ));
        return;
    };
    let verification = match tool.verify() {
        Ok(verification) => verification,
        Err(error) => {
            checks.push(fail(
                NAME,
                format!("pgbackrest verify failed: {error}"),
                "look at the log in .nanika/postgres/pgbackrest/log",
            ));
            return;
        }
    };
    if !verification.all_valid() {
        checks.push(fail(
            NAME,
            format!(
                "pgbackrest verify found damage: {}",
                verification.problems.join("; ")
            ),
            "take a new full backup (`nanika backup now --type full`); the damaged ones leave with retention; look at the disk the repository is on",
        ));
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let age = now - last.stopped_at;
    let seen = format!(
        "{} backups, all verified; the last ({}, {}) ended {} ago",
        backups.len(),
        last.label,
        last.kind.as_str(),
        human_age(age)
    );
    if age > BACKUP_STALE_AFTER_SECS {
        checks.push(warn(NAME, seen, "`nanika backup now`"));
    } else {
        checks.push(ok(NAME, seen));
    }
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Every other command refuses a configuration with errors; doctor reports them and goes on.
fn config_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let errors: Vec<String> = input
        .loaded
        .findings
        .iter()
        .filter(|f| f.severity == nanika_config::Severity::Error)
        .map(|f| {
            format!(
                "{}: {}{}",
                f.location(),
                f.key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default(),
                f.message
            )
        })
        .collect();
    checks.push(if errors.is_empty() {
        ok("config.valid", "the project's files and environment have no error")
    } else {
        fail(
            "config.valid",
            format!("{} error(s): {}", errors.len(), errors.join("; ")),
            "fix them (`nanika config check` shows each with its hint); until then nanika refuses to act on the servers",
        )
    });
}

/// Whose PostgreSQL the app's URL reaches: this project's carries its marker.
async fn postgres_identity(
    input: &DoctorInput<'_>,
    conn: &mut sqlx::postgres::PgConnection,
) -> Result<(), String> {
    if let Identity::Docker { postgres, .. } = &input.identity {
        return postgres.clone();
    }
    let marker: Option<String> =
        sqlx::query_scalar("SELECT current_setting('nanika.project', true)")
            .fetch_one(&mut *conn)
            .await
            .ok()
            .flatten()
            .filter(|m: &String| !m.is_empty());
    let ours = postgres::project_marker(input.layout);
    match marker {
        Some(marker) if marker == ours => Ok(()),
        Some(other) => Err(format!("it belongs to the nanika project at {other}")),
        None => Err("it was not started by nanika for this project".into()),
    }
}

fn binaries_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    match binaries::find_postgres(input.search) {
        Ok(b) => checks.push(ok(
            "binaries.postgres",
            format!("PostgreSQL {} in {}", b.version, b.bin_dir.display()),
        )),
        Err(e) => checks.push(fail(
            "binaries.postgres",
            e.to_string(),
            e.hint().unwrap_or_default(),
        )),
    }
    match binaries::find_redis(input.search) {
        Ok(b) => checks.push(ok(
            "binaries.redis",
            format!("Redis {} at {}", b.version, b.server.display()),
        )),
        Err(e) => checks.push(fail(
            "binaries.redis",
            e.to_string(),
            e.hint().unwrap_or_default(),
        )),
    }
}

fn port_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let env = &input.loaded.infra.env;
    // Ours only when this project's server runs on that very port, as its plan remembers it.
    let plan: Option<supervisor::Plan> =
        supervisor::read_json(&supervisor::plan_file(input.layout));
    let planned = |service: Service, port: u16| {
        plan.as_ref()
            .and_then(|p| p.services.get(&service))
            .is_some_and(|s| s.port == port || s.port == 0)
    };
    let (ours_pg, ours_redis) = match &input.identity {
        // `compose port` proved the project's own containers publish these very ports.
        Identity::Docker {
            postgres, redis, ..
        } => (postgres.is_ok(), redis.is_ok()),
        Identity::Native => (
            matches!(postgres::postmaster(input.layout), Postmaster::Running(_))
                && planned(Service::Postgres, env.postgres_port),
            native_redis::running(input.layout).is_some()
                && planned(Service::Redis, env.redis_port),
        ),
    };
    for (name, port, ours, var) in [
        (
            "ports.postgres",
            env.postgres_port,
            ours_pg,
            "POSTGRES_PORT",
        ),
        ("ports.redis", env.redis_port, ours_redis, "REDIS_PORT"),
    ] {
        checks.push(if procfs::port_is_free(port) {
            ok(name, format!("port {port} is free"))
        } else if ours {
            ok(name, format!("port {port} is this project's server"))
        } else {
            let holder = procfs::port_holder(port).unwrap_or_else(|| "another program".into());
            warn(
                name,
                format!("port {port} is held by {holder}, not by this project's server"),
                format!("if that is not the server you mean to use, stop it or set {var} in .env to a free port"),
            )
        });
    }
}

/// Under docker: the engine, the compose plugin, and each container's state, health and restarts
/// (what the native runtime's state checks are for its own processes).
fn docker_checks(
    engine: &Result<String, String>,
    compose: &Result<String, String>,
    containers: &Result<Vec<ContainerReport>, String>,
    checks: &mut Vec<Check>,
) {
    checks.push(match engine {
        Ok(version) => ok("docker.engine", format!("Docker engine {version} answers")),
        Err(why) => fail(
            "docker.engine",
            why.clone(),
            "start the Docker engine (Docker Desktop, or `sudo systemctl start docker`), or use the native runtime (`--runtime native`)",
        ),
    });
    checks.push(match compose {
        Ok(version) => ok("docker.compose", format!("docker compose {version}")),
        Err(why) => fail(
            "docker.compose",
            why.clone(),
            "install the Compose v2 plugin (`docker compose version` must answer)",
        ),
    });
    let containers = match containers {
        Ok(containers) => containers,
        Err(why) => {
            checks.push(fail(
                "docker.containers",
                why.clone(),
                "make sure the engine answers (`docker ps`)",
            ));
            return;
        }
    };
    for c in containers {
        let name = format!("docker.{}", c.service);
        let logs = format!("see `nanika logs {}`", c.service);
        checks.push(match (c.status.as_deref(), c.health.as_deref()) {
            (None, _) => fail(
                &name,
                format!("there is no container {}", c.container),
                format!("start it with `nanika up {}`", c.service),
            ),
            (Some("running"), Some("unhealthy")) => fail(
                &name,
                format!("{} runs, but its healthcheck fails", c.container),
                logs,
            ),
            (Some("running"), _) if c.restarts > 0 => warn(
                &name,
                format!(
                    "{} runs, after {} restart(s) by docker",
                    c.container, c.restarts
                ),
                format!("{logs} for why it stopped"),
            ),
            (Some("running"), health) => ok(
                &name,
                format!(
                    "{} runs{}, never restarted",
                    c.container,
                    health.map(|h| format!(" ({h})")).unwrap_or_default()
                ),
            ),
            (Some(status), _) => fail(
                &name,
                format!(
                    "{} is {status} (last exit code {})",
                    c.container, c.exit_code
                ),
                format!("{logs}; `nanika up {}` starts it again", c.service),
            ),
        });
    }
}

fn state_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let layout = input.layout;
    if !layout.state.exists() {
        checks.push(ok("state", "no .nanika/ yet: `nanika up` creates it"));
        return;
    }
    match postgres::check_data_dir(layout) {
        Ok(_) => checks.push(ok(
            "state.postgres-data",
            format!(
                "{} owner and permissions are right",
                layout.postgres_data().display()
            ),
        )),
        Err(e) => checks.push(fail(
            "state.postgres-data",
            e.to_string(),
            e.hint().unwrap_or_default(),
        )),
    }
    match postgres::postmaster(layout) {
        Postmaster::Foreign(pid) => checks.push(warn(
            "state.postmaster-pid",
            format!(
                "postmaster.pid names {}, which is not this project's PostgreSQL",
                procfs::describe(pid)
            ),
            "`nanika up` removes the stale lock file; nothing else needs doing",
        )),
        _ => checks.push(ok("state.postmaster-pid", "no stale lock file")),
    }
    let redis_pid = native_redis::pid_file(layout);
    if redis_pid.exists() && native_redis::running(layout).is_none() {
        checks.push(warn(
            "state.redis-pid",
            format!(
                "{} names no running Redis of this project",
                redis_pid.display()
            ),
            "`nanika up` replaces it",
        ));
    }
}

async fn postgres_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let env = &input.loaded.infra.env;
    let url = &env.database_url;
    let port = env.postgres_port;
    match pg::connect(url, None).await {
        Ok(mut conn) => {
            if let Err(whose) = postgres_identity(input, &mut conn).await {
                checks.push(fail(
                    "postgres.identity",
                    format!("{}:{} answers, but it is not this project's PostgreSQL: {whose}", url.host, url.port),
                    "check POSTGRES_PORT and DATABASE_URL (`nanika config show`), and start this project's with `nanika up`",
                ));
                pg::close(conn).await;
                return;
            }
            checks.push(ok(
                "postgres.reachable",
                format!("{} answers as {}, and it is this project's", url, url.user),
            ));
            let can_create: Option<bool> =
                sqlx::query_scalar("SELECT has_schema_privilege(current_user, 'public', 'CREATE')")
                    .fetch_one(&mut conn)
                    .await
                    .ok();
            checks.push(match can_create {
                Some(true) => ok("postgres.create-in-public", format!("{} may create in schema public", url.user)),
                _ => fail(
                    "postgres.create-in-public",
                    format!("{} may not create in schema public (PostgreSQL 15 no longer grants it to everyone)", url.user),
                    format!("as the database owner: GRANT CREATE ON SCHEMA public TO {}", url.user),
                ),
            });
            drift_postgres(input, &mut conn, checks).await;
            pg::close(conn).await;
        }
        Err(error) => {
            let reason = error.to_string();
            let (seen, fix) = if reason.contains("too many clients")
                || reason.contains("connection slots are reserved")
            {
                (
                    format!("every connection the app may open is in use: {reason}"),
                    "find who holds them (see postgres.connections), close idle ones or pool them; max_connections is the spec's 100".to_string(),
                )
            } else if reason.contains("password authentication failed") {
                (format!("the server refused {}'s password", url.user), "make POSTGRES_PASSWORD and DATABASE_URL in .env match the role's password (ALTER ROLE … PASSWORD), or recreate the state with `nanika down --volumes`".to_string())
            } else if reason.contains("does not exist") {
                (
                    reason.clone(),
                    "`nanika up` creates the app database".to_string(),
                )
            } else if !procfs::port_is_free(port)
                || matches!(postgres::postmaster(input.layout), Postmaster::Running(_))
            {
                (reason.clone(), "see `nanika logs postgres`".to_string())
            } else {
                (
                    format!("nothing answers on port {port}"),
                    "start it with `nanika up`".to_string(),
                )
            };
            checks.push(fail("postgres.reachable", seen, fix));
        }
    }
    connection_checks(input, checks).await;
    match &input.identity {
        Identity::Docker { postgres_log, .. } => postgres_log_checks(postgres_log, checks),
        Identity::Native => postgres_log_checks(
            &nanika_runtime::native::logs::tail(&input.layout.log("postgres"), 5000),
            checks,
        ),
    }
}

/// How many of `max_connections` are in use, and by whom: through nanika's superuser when the
/// cluster has one, which still gets a reserved slot when the app's are all taken.
async fn connection_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let env = &input.loaded.infra.env;
    let mut url = env.database_url.clone();
    if let Some(password) = input.layout.postgres_admin_password() {
        url.user = nanika_runtime::native::postgres::ADMIN_ROLE.into();
        url.password = password;
        url.host = "127.0.0.1".into();
        url.port = env.postgres_port;
    }
    let Ok(mut conn) = pg::connect(&url, None).await else {
        return;
    };
    let usage: Option<(i64, i32, i32)> = sqlx::query_as(
        "SELECT count(*), current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int          FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .fetch_one(&mut conn)
    .await
    .ok();
    let holders: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(usename, '?') || '/' || coalesce(nullif(application_name, ''), '-'), count(*)          FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    pg::close(conn).await;
    let Some((used, max, reserved)) = usage else {
        return;
    };
    let by = holders
        .iter()
        .map(|(who, n)| format!("{who}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let seen = format!("{used} of {max} connections in use ({by})");
    let fix = "close idle connections or pool them in the app; raise max_connections only with the memory to match";
    checks.push(if used >= i64::from(max - reserved) {
        fail("postgres.connections", seen, fix)
    } else if used * 5 >= i64::from(max) * 4 {
        warn("postgres.connections", seen, fix)
    } else {
        ok("postgres.connections", seen)
    });
}

/// Settings that differ between the running server and the committed file (the native runtime's
/// own overrides excepted).
async fn drift_postgres(
    input: &DoctorInput<'_>,
    conn: &mut sqlx::postgres::PgConnection,
    checks: &mut Vec<Check>,
) {
    let committed = nanika_config::check::settings(&input.loaded.infra);
    let spec = nanika_config::check::settings(&nanika_config::Infrastructure::spec());
    let mut drifted = Vec::new();
    let mut off_spec = Vec::new();
    // A secret setting is known only masked, and the running value would show the secret.
    for setting in committed
        .iter()
        .filter(|s| s.file == POSTGRES_CONF && !s.secret)
    {
        if matches!(setting.key.as_str(), "listen_addresses" | "port") {
            continue;
        }
        let running: Option<String> = sqlx::query_scalar("SELECT current_setting($1, true)")
            .bind(&setting.key)
            .fetch_one(&mut *conn)
            .await
            .ok()
            .flatten();
        let Some(running) = running else { continue };
        if !same_postgres_value(&setting.key, &setting.value, &running) {
            drifted.push(format!(
                "{} is {running}, the file says {}",
                setting.key, setting.value
            ));
        }
        if let Some(wanted) = spec
            .iter()
            .find(|s| s.file == POSTGRES_CONF && s.key == setting.key)
            && !same_postgres_value(&setting.key, &wanted.value, &running)
        {
            off_spec.push(format!(
                "{} is {running}, the spec says {}",
                setting.key, wanted.value
            ));
        }
    }
    checks.push(spec_check("postgres.spec", &off_spec, "PostgreSQL"));
    checks.push(if drifted.is_empty() {
        ok(
            "postgres.drift",
            "the running settings match docker/postgres/postgresql.conf",
        )
    } else {
        warn(
            "postgres.drift",
            drifted.join("; "),
            "restart PostgreSQL to apply the file: `nanika restart postgres`",
        )
    });
}

/// Compares a file value with what `current_setting` shows (units and spellings differ).
fn same_postgres_value(key: &str, file: &str, running: &str) -> bool {
    let normal = |v: &str| v.trim().trim_matches('\'').to_ascii_lowercase();
    if normal(file) == normal(running) {
        return true;
    }
    if key == "wal_compression" && normal(file) == "on" && normal(running) == "pglz" {
        return true;
    }
    let in_base = |v: &str| {
        let unit = nanika_config::pgconf::PG15_SETTINGS
            .get(key)
            .map_or("", |s| s.unit);
        nanika_config::units::parse_postgres_int(v, unit).ok()
    };
    in_base(file).is_some() && in_base(file) == in_base(running)
}

fn postgres_log_checks(lines: &[String], checks: &mut Vec<Check>) {
    if lines.is_empty() {
        return;
    }
    let serious: Vec<&String> = lines
        .iter()
        .filter(|l| {
            (l.contains("FATAL:") || l.contains("PANIC:"))
                && !l.contains("the database system is starting up")
                && !l.contains("not yet accepting connections")
                && !l.contains("password authentication failed")
                && !l.contains("terminating connection due to administrator command")
        })
        .collect();
    checks.push(match serious.last() {
        None => ok("postgres.log", "no FATAL or PANIC lines in the recent log"),
        Some(last) => warn(
            "postgres.log",
            format!(
                "{} FATAL/PANIC lines recently; the last: {last}",
                serious.len()
            ),
            "read them with `nanika logs postgres`",
        ),
    });
    let refused = lines
        .iter()
        .filter(|l| l.contains("password authentication failed"))
        .count();
    checks.push(if refused == 0 {
        ok("postgres.auth-failures", "no failed password attempts in the recent log")
    } else {
        warn(
            "postgres.auth-failures",
            format!("{refused} failed password attempts in the recent log"),
            "a client uses a wrong password, or someone is guessing: check the app's DATABASE_URL, and who can reach the port",
        )
    });
}

fn redis_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let url = &input.loaded.infra.env.redis_url;
    let mut con = match redis_admin::connect(url) {
        Ok(con) => con,
        Err(error) => {
            let text = error.to_string();
            let fix = if text.contains("NOAUTH") || text.contains("WRONGPASS") {
                "make REDIS_URL's password match requirepass in docker/redis/redis.conf"
            } else {
                "start it with `nanika up redis`"
            };
            checks.push(fail("redis.reachable", text, fix));
            return;
        }
    };
    // Redis answers even PING with MISCONF while it cannot persist: it is reachable, and broken.
    let refusing_writes = match redis::cmd("PING").query::<String>(&mut con) {
        Ok(_) => None,
        Err(error) if error.to_string().contains("MISCONF") => Some(error.to_string()),
        Err(error) => {
            checks.push(fail(
                "redis.reachable",
                error.to_string(),
                "see `nanika logs redis`",
            ));
            return;
        }
    };
    let foreign = match &input.identity {
        Identity::Docker { redis, .. } => redis.clone().err(),
        Identity::Native => {
            let answering: Option<u32> = redis_admin::info(&mut con, url, Some("server"))
                .ok()
                .and_then(|info| info_field(&info, "process_id").and_then(|p| p.parse().ok()));
            (answering.is_none() || answering != native_redis::running(input.layout)).then(|| {
                format!(
                    "its process is {}",
                    answering.map_or_else(|| "unknown".to_string(), |p| p.to_string())
                )
            })
        }
    };
    if let Some(whose) = foreign {
        checks.push(fail(
            "redis.identity",
            format!(
                "{}:{} answers, but it is not this project's Redis ({whose})",
                url.host, url.port
            ),
            "check REDIS_PORT and REDIS_URL (`nanika config show`), and start this project's with `nanika up`",
        ));
        return;
    }
    checks.push(ok(
        "redis.reachable",
        format!("{url} answers, and it is this project's"),
    ));
    let info = redis_admin::info(&mut con, url, None).unwrap_or_default();
    let number = |field: &str| {
        info_field(&info, field)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (used, max) = (number("used_memory"), number("maxmemory"));
    checks.push(if max > 0 && used * 10 > max * 9 {
        warn("redis.memory", format!("{used} of {max} bytes used"), "Redis evicts keys soon: raise maxmemory or give cache keys TTLs (`nanika redis ttl-audit`)")
    } else {
        ok("redis.memory", format!("{used} of {max} bytes used (maxmemory)"))
    });
    let evicted = number("evicted_keys");
    checks.push(if evicted > 0 {
        warn(
            "redis.evicted-keys",
            format!("{evicted} keys were evicted since the start"),
            "with allkeys-lru sessions can be among them: see `nanika config lint`",
        )
    } else {
        ok("redis.evicted-keys", "no key was evicted")
    });
    let running_max: u64 = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query::<Vec<String>>(&mut con)
        .ok()
        .and_then(|v| v.get(1)?.parse().ok())
        .unwrap_or(0);
    let wanted = u64::from(input.loaded.infra.redis.maxclients);
    checks.push(if running_max < wanted {
        warn(
            "redis.maxclients",
            format!("maxclients is {running_max}, not {wanted}: the open-files limit is too low"),
            "raise it (`ulimit -n 10032`, or LimitNOFILE for a service) and restart Redis",
        )
    } else {
        ok("redis.maxclients", format!("maxclients {running_max}"))
    });
    let aof = info_field(&info, "aof_last_write_status")
        .unwrap_or("ok")
        .to_string();
    let disk_fix = "free disk space where Redis writes (.nanika/redis for the native runtime), then `nanika restart redis`";
    checks.push(match (&refusing_writes, aof.as_str()) {
        (None, "ok") => ok("redis.aof", "the last AOF write succeeded"),
        (Some(reply), _) => fail(
            "redis.aof",
            format!("Redis refuses writes: {reply}"),
            disk_fix,
        ),
        (None, status) => fail(
            "redis.aof",
            format!("the last AOF write failed ({status}): Redis refuses writes"),
            disk_fix,
        ),
    });
    let mut drifted = Vec::new();
    let mut off_spec = Vec::new();
    let spec = nanika_config::check::settings(&nanika_config::Infrastructure::spec());
    for setting in nanika_config::check::settings(&input.loaded.infra)
        .iter()
        .filter(|s| s.file == REDIS_CONF && !s.secret)
    {
        if matches!(setting.key.as_str(), "bind" | "port") {
            continue;
        }
        let Ok(pair) = redis::cmd("CONFIG")
            .arg("GET")
            .arg(&setting.key)
            .query::<Vec<String>>(&mut con)
        else {
            continue;
        };
        let Some(running) = pair.get(1) else { continue };
        let differs = |value: &str| {
            let bytes = nanika_config::units::parse_redis_memory(value)
                .ok()
                .map(|m| m.bytes().to_string());
            running != value
                && Some(running.clone()) != bytes
                && !(setting.key == "maxclients" && running_max < wanted)
        };
        if differs(&setting.value) {
            drifted.push(format!(
                "{} is {running}, the file says {}",
                setting.key, setting.value
            ));
        }
        if let Some(wanted) = spec
            .iter()
            .find(|s| s.file == REDIS_CONF && s.key == setting.key)
            && differs(&wanted.value)
        {
            off_spec.push(format!(
                "{} is {running}, the spec says {}",
                setting.key, wanted.value
            ));
        }
    }
    checks.push(spec_check("redis.spec", &off_spec, "Redis"));
    checks.push(if drifted.is_empty() {
        ok(
            "redis.drift",
            "the running settings match docker/redis/redis.conf",
        )
    } else {
        warn(
            "redis.drift",
            drifted.join("; "),
            "restart Redis to apply the file: `nanika restart redis`",
        )
    });
}

/// The running server against the spec's values (not only against the file, which may itself
/// have drifted from the spec).
fn spec_check(name: &str, off_spec: &[String], server: &str) -> Check {
    if off_spec.is_empty() {
        ok(name, format!("the running {server} has the spec's values"))
    } else {
        warn(
            name,
            off_spec.join("; "),
            "if that is not on purpose, write the spec's value in the file (`nanika config check` lists the differences) and restart",
        )
    }
}

fn disk_checks(input: &DoctorInput<'_>, checks: &mut Vec<Check>) {
    let root = input.loaded.project.root();
    for (name, path) in [
        ("disk.state", input.layout.state.clone()),
        ("disk.backups", root.join("backups")),
    ] {
        // Under docker the data is in the engine's volumes, not in `.nanika/`.
        if name == "disk.state" && matches!(input.identity, Identity::Docker { .. }) {
            continue;
        }
        let probe = if path.exists() {
            path.clone()
        } else {
            root.to_path_buf()
        };
        let Ok(stats) = nix::sys::statvfs::statvfs(&probe) else {
            continue;
        };
        let free = stats.blocks_available() * stats.fragment_size();
        let mib = free / (1024 * 1024);
        let seen = format!("{mib} MiB free for {}", path.display());
        checks.push(match mib {
            0..100 => fail(name, seen, "free disk space: old backups in backups/, `nanika down --volumes` for state you no longer need"),
            100..1024 => warn(name, seen, "less than 1 GiB left: free some space before it runs out"),
            _ => ok(name, seen),
        });
    }
}
