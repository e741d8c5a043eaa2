//! "Ready" as the app sees it: PostgreSQL answers a query as the app user on the app database
//! over TCP, and Redis answers `PING`. Not a log line, not a socket that accepts. The same probes
//! read whose server answers: PostgreSQL's `nanika.project` setting, Redis's process id.
//!
//! The native runtime probes a port only once its server says it has bound it
//! (`native::postgres::accepting`, `native::redis::listening`): a probe of an unbound port could
//! connect to itself and keep the server from binding it.

use nanika_config::Secret;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a probe did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens on the port.
    #[error("not listening")]
    NotListening,
    /// The server is up but not ready (recovery, loading the AOF).
    #[error("starting up")]
    Starting,
    /// The password was refused.
    #[error("the password was refused")]
    Auth,
    /// The app database does not exist.
    #[error("database does not exist")]
    NoDatabase,
    /// The server refused a statement for good (a name it reserves, a missing privilege): waiting
    /// will not help.
    #[error("the server refused: {0}")]
    Refused(String),
    /// A server answers, but not this project's (whose, when it says).
    #[error("the server that answers is not this project's")]
    Foreign(Option<String>),
    /// Anything else, in the server's or the system's words.
    #[error("{0}")]
    Other(String),
}

/// How to reach PostgreSQL as the app.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    /// Host (nanika's servers: 127.0.0.1).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The app's role.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// The app's database.
    pub database: String,
}

impl PostgresTarget {
    fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .password(self.password.expose())
            .database(database)
            .application_name("nanika")
    }
}

/// Runs PostgreSQL probes from synchronous code.
pub struct Prober {
    runtime: tokio::runtime::Runtime,
}

impl Prober {
    /// A prober with its own small runtime.
    pub fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Prober { runtime })
    }

    /// One real query on the app database, which also reads the server's project marker
    /// (`nanika.project`, `None` for a server started without one).
    pub fn postgres(
        &self,
        target: &PostgresTarget,
        timeout: Duration,
    ) -> Result<Option<String>, ProbeError> {
        self.run(timeout, async {
            let mut conn = PgConnection::connect_with(&target.options(&target.database))
                .await
                .map_err(classify)?;
            let marker: Option<String> =
                sqlx::query_scalar("SELECT current_setting('nanika.project', true)")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(classify)?;
            let _ = conn.close().await;
            Ok(marker.filter(|m| !m.is_empty()))
        })
    }

    /// The server's version (`15.14` of `SHOW server_version`), read as the app user: what
    /// `ps` shows for a server whose binaries are not the host's (a container's).
    pub fn postgres_version(
        &self,
        target: &PostgresTarget,
        timeout: Duration,
    ) -> Result<String, ProbeError> {
        self.run(timeout, async {
            let mut conn = PgConnection::connect_with(&target.options(&target.database))
                .await
                .map_err(classify)?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .map_err(classify)?;
            let _ = conn.close().await;
            // Distributions append their own build: `15.14 (Debian 15.14-0+deb12u1)`.
            Ok(version
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string())
        })
    }

    /// Creates the app database when it does not exist yet, connected as the app user to the
    /// `postgres` database (the app user is the cluster's owner, as in the postgres image).
    pub fn ensure_database(
        &self,
        target: &PostgresTarget,
        timeout: Duration,
    ) -> Result<bool, ProbeError> {
        self.run(timeout, async {
            let mut conn = PgConnection::connect_with(&target.options("postgres"))
                .await
                .map_err(classify)?;
            let created = create_database_if_missing(&mut conn, &target.database, None).await?;
            let _ = conn.close().await;
            Ok(created)
        })
    }

    /// As the cluster's superuser (`admin`, on the `postgres` database): creates the app's role
    /// (an ordinary one that may create databases) and its database when they do not exist yet.
    /// The statement that holds the password is kept out of the server log.
    pub fn bootstrap(
        &self,
        admin: &PostgresTarget,
        app: &PostgresTarget,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        self.run(timeout, async {
            let mut conn = PgConnection::connect_with(&admin.options("postgres"))
                .await
                .map_err(classify)?;
            quiet_session(&mut conn).await?;
            let role: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
                .bind(&app.user)
                .fetch_optional(&mut conn)
                .await
                .map_err(classify)?;
            let user = quote_ident(&app.user);
            if role.is_none() {
                let password = app.password.expose().replace('\'', "''");
                let statement = sqlx::AssertSqlSafe(format!(
                    "CREATE ROLE {user} LOGIN CREATEDB PASSWORD '{password}'"
                ));
                match sqlx::query(statement).execute(&mut conn).await {
                    // An earlier attempt of this bootstrap, timed out on our side, made it.
                    Err(sqlx::Error::Database(db))
                        if matches!(db.code().as_deref(), Some("42710") | Some("23505")) => {}
                    other => {
                        other.map_err(classify)?;
                    }
                }
            }
            create_database_if_missing(&mut conn, &app.database, Some(&user)).await?;
            let _ = conn.close().await;
            Ok(())
        })
    }

    /// Runs `statements` in one session on `database`, with nothing of them written to the
    /// server's log (one may hold a password).
    pub fn execute_quietly(
        &self,
        target: &PostgresTarget,
        database: &str,
        statements: &[String],
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        self.run(timeout, async {
            let mut conn = PgConnection::connect_with(&target.options(database))
                .await
                .map_err(classify)?;
            quiet_session(&mut conn).await?;
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&mut conn)
                    .await
                    .map_err(classify)?;
            }
            let _ = conn.close().await;
            Ok(())
        })
    }

    /// The rows of `query` on `database`, every column read as text (cast them in the query);
    /// NULL is `None`.
    pub fn text_rows(
        &self,
        target: &PostgresTarget,
        database: &str,
        query: &str,
        timeout: Duration,
    ) -> Result<Vec<Vec<Option<String>>>, ProbeError> {
        use sqlx::Row;
        self.run(timeout, async {
            let mut conn = PgConnection::connect_with(&target.options(database))
                .await
                .map_err(classify)?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
                .fetch_all(&mut conn)
                .await
                .map_err(classify)?;
            let _ = conn.close().await;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| row.try_get::<Option<String>, _>(i))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| ProbeError::Other(e.to_string()))
                })
                .collect()
        })
    }

    fn run<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, ProbeError>>,
    ) -> Result<T, ProbeError> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| Err(ProbeError::Other("timed out".into())))
        })
    }
}

/// Makes a session of nanika's own statements quiet and local: `log_statement = 'mod'` would
/// write `CREATE ROLE … PASSWORD '…'` into the log, and `log_min_error_statement` would write it
/// there too if it failed (and `log_min_duration_statement` if slow); and they commit without
/// waiting for a synchronous replica, since the first replica is made by them.
async fn quiet_session(conn: &mut PgConnection) -> Result<(), ProbeError> {
    for setting in [
        "SET log_statement = 'none'",
        "SET log_min_error_statement = 'panic'",
        "SET log_min_duration_statement = -1",
        "SET synchronous_commit = 'local'",
    ] {
        sqlx::query(setting)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// Creates `database` (owned by the quoted role `owner`, else by the connected one) unless it
/// exists; returns whether it did.
async fn create_database_if_missing(
    conn: &mut PgConnection,
    database: &str,
    owner: Option<&str>,
) -> Result<bool, ProbeError> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    if exists.is_some() {
        return Ok(false);
    }
    // Identifiers cannot be bound as parameters; the name is quoted as an identifier.
    let owner = owner.map(|o| format!(" OWNER {o}")).unwrap_or_default();
    let statement =
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {}{owner}", quote_ident(database)));
    match sqlx::query(statement).execute(&mut *conn).await {
        Ok(_) => Ok(true),
        // An earlier attempt whose answer timed out may still have made it meanwhile: the
        // database exists, which is all that was asked.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(false)
        }
        Err(e) => Err(classify(e)),
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn classify(error: sqlx::Error) -> ProbeError {
    match &error {
        sqlx::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            ProbeError::NotListening
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("57P03") => ProbeError::Starting,
            Some("28P01") | Some("28000") => ProbeError::Auth,
            Some("3D000") => ProbeError::NoDatabase,
            // Out of connections, or shutting down: it may pass.
            Some("53300") | Some("57P01") | Some("57P02") => {
                ProbeError::Other(db.message().to_string())
            }
            _ => ProbeError::Refused(db.message().to_string()),
        },
        _ => ProbeError::Other(error.to_string()),
    }
}

/// A connection to Redis speaking just enough RESP for probes.
struct RedisProbe {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RedisProbe {
    /// Connects to the first of `host:port`'s addresses that accepts, as a client would.
    fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self, ProbeError> {
        let addresses: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| ProbeError::Other(format!("cannot resolve {host}: {e}")))?
            .collect();
        let mut refused = ProbeError::NotListening;
        for address in addresses {
            match TcpStream::connect_timeout(&address, timeout) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(timeout))
                        .and_then(|()| stream.set_write_timeout(Some(timeout)))
                        .map_err(|e| ProbeError::Other(e.to_string()))?;
                    let reader = BufReader::new(
                        stream
                            .try_clone()
                            .map_err(|e| ProbeError::Other(e.to_string()))?,
                    );
                    return Ok(RedisProbe {
                        reader,
                        writer: stream,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => refused = ProbeError::Other(e.to_string()),
            }
        }
        Err(refused)
    }

    /// Sends one command; returns a simple or error reply as its line, a bulk reply as its text,
    /// an array as its elements' texts, a line each.
    fn ask(&mut self, args: &[&str]) -> Result<String, ProbeError> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request += &format!("${}\r\n{arg}\r\n", arg.len());
        }
        self.writer
            .write_all(request.as_bytes())
            .map_err(|e| ProbeError::Other(e.to_string()))?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> Result<String, ProbeError> {
        let mut reply = String::new();
        self.reader
            .read_line(&mut reply)
            .map_err(|e| ProbeError::Other(e.to_string()))?;
        let reply = reply.trim_end().to_string();
        if let Some(count) = reply.strip_prefix('*') {
            // An array (SENTINEL's answers): its elements' texts, a line each.
            let count: i64 = count
                .parse()
                .map_err(|_| ProbeError::Other(format!("unexpected reply `{reply}`")))?;
            let mut items = Vec::new();
            for _ in 0..count.max(0) {
                items.push(self.read_reply()?);
            }
            return Ok(items.join("\n"));
        }
        let Some(length) = reply.strip_prefix('$') else {
            return Ok(reply);
        };
        if length == "-1" {
            return Ok(String::new());
        }
        let length: usize = length
            .parse()
            .map_err(|_| ProbeError::Other(format!("unexpected reply `{reply}`")))?;
        let mut body = vec![0u8; length + 2];
        std::io::Read::read_exact(&mut self.reader, &mut body)
            .map_err(|e| ProbeError::Other(e.to_string()))?;
        body.truncate(length);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn auth(&mut self, user: &str, password: Option<&Secret>) -> Result<(), ProbeError> {
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let reply = if user.is_empty() {
            self.ask(&["AUTH", password.expose()])?
        } else {
            self.ask(&["AUTH", user, password.expose()])?
        };
        if reply == "+OK" {
            Ok(())
        } else {
            Err(ProbeError::Auth)
        }
    }
}

/// One command to the Redis server (or sentinel) on loopback `port`, authenticating first when a
/// password is given; the reply as [`RedisProbe::ask`] reads it. An error reply is `Err`.
pub fn redis_command(
    port: u16,
    password: Option<&Secret>,
    args: &[&str],
    timeout: Duration,
) -> Result<String, ProbeError> {
    let mut probe = RedisProbe::connect("127.0.0.1", port, timeout)?;
    probe.auth("", password)?;
    let reply = probe.ask(args)?;
    match reply.strip_prefix('-') {
        Some(error) if error.starts_with("NOAUTH") || error.starts_with("WRONGPASS") => {
            Err(ProbeError::Auth)
        }
        Some(error) => Err(ProbeError::Refused(error.to_string())),
        None => Ok(reply),
    }
}

/// One `PING` to Redis on loopback, authenticating first when a password is set.
pub fn redis_ping(
    port: u16,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut probe = RedisProbe::connect("127.0.0.1", port, timeout)?;
    probe.auth("", password)?;
    match probe.ask(&["PING"])?.as_str() {
        "+PONG" => Ok(()),
        reply if reply.starts_with("-LOADING") => Err(ProbeError::Starting),
        reply if reply.starts_with("-NOAUTH") || reply.starts_with("-WRONGPASS") => {
            Err(ProbeError::Auth)
        }
        reply => Err(ProbeError::Other(reply.to_string())),
    }
}

/// The pid of the Redis server that answers on `host:port` (`INFO server`'s `process_id`): the
/// proof of whose server a URL reaches.
pub fn redis_server_pid(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<u32, ProbeError> {
    let mut probe = RedisProbe::connect(host, port, timeout)?;
    probe.auth(user, password)?;
    let info = probe.ask(&["INFO", "server"])?;
    if info.starts_with("-NOAUTH") || info.starts_with("-WRONGPASS") {
        return Err(ProbeError::Auth);
    }
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| ProbeError::Other(format!("no process_id in INFO server ({info:.40})")))
}

/// The version of the Redis server on `host:port` (`INFO server`'s `redis_version`).
pub fn redis_version(
    host: &str,
    port: u16,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let mut probe = RedisProbe::connect(host, port, timeout)?;
    probe.auth("", password)?;
    let info = probe.ask(&["INFO", "server"])?;
    if info.starts_with("-NOAUTH") || info.starts_with("-WRONGPASS") {
        return Err(ProbeError::Auth);
    }
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| ProbeError::Other(format!("no redis_version in INFO server ({info:.40})")))
}
