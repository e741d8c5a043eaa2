//! Connecting to PostgreSQL from the spec's `DATABASE_URL` (its `?schema=` becomes `search_path`),
//! retrying a refused connection for a bounded time, failing at once on anything else.

use crate::error::{OpsError, Result};
use crate::interrupt::{CLEANUP_LIMIT, Interrupt, race};
use nanika_config::urls::DatabaseUrl;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::time::{Duration, Instant};

/// How long a refused connection is retried: long enough for a server that is just starting.
pub const CONNECT_RETRY_FOR: Duration = Duration::from_secs(5);

/// The connection options for `url`, for `database` (the URL's when `None`).
pub fn options(url: &DatabaseUrl, database: Option<&str>) -> PgConnectOptions {
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&url.host)
        .port(url.port)
        .username(&url.user)
        .database(database.unwrap_or(&url.database))
        .application_name("nanika")
        .disable_statement_logging();
    if !url.password.is_empty() {
        options = options.password(url.password.expose());
    }
    if let Some(schema) = &url.schema {
        options = options.options([("search_path", schema.as_str())]);
    }
    options
}

fn transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
        ),
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

/// Connects to `database` (the URL's when `None`), retrying refused connections.
pub async fn connect(url: &DatabaseUrl, database: Option<&str>) -> Result<PgConnection> {
    let options = options(url, database);
    let deadline = Instant::now() + CONNECT_RETRY_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => return Ok(conn),
            Err(error) if transient(&error) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(error) => {
                let reason = match &error {
                    sqlx::Error::Database(db) => db.message().to_string(),
                    other => other.to_string(),
                };
                return Err(OpsError::Connect {
                    target: url.to_string(),
                    reason,
                });
            }
        }
    }
}

/// The URL for work on whole databases (create, drop, rename, end other sessions): the
/// cluster's superuser when nanika's native cluster has one (`admin_password`), else the app's
/// own role. Only a superuser may end the autovacuum worker that holds a freshly restored
/// database, so the app's role alone can fail there.
pub fn admin_url(url: &DatabaseUrl, admin_password: Option<&nanika_config::Secret>) -> DatabaseUrl {
    match admin_password {
        Some(password) => DatabaseUrl {
            user: nanika_runtime::native::postgres::ADMIN_ROLE.to_string(),
            password: password.clone(),
            ..url.clone()
        },
        None => url.clone(),
    }
}

/// Drops the URL's database, ending its sessions, and creates it again, empty and owned by the
/// URL's role (as nanika first created it), connected through `admin_url`.
pub async fn recreate_database(admin_url: &DatabaseUrl, url: &DatabaseUrl) -> Result<()> {
    let name = quote_ident(&url.database);
    let mut admin = connect(admin_url, Some("postgres")).await?;
    let mut result = Ok(());
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name} OWNER {}", quote_ident(&url.user)),
    ] {
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut admin)
            .await
        {
            result = Err(OpsError::sql(format!("`{sql}` failed"))(error));
            break;
        }
    }
    close(admin).await;
    result
}

/// Ends the server sessions whose `application_name` is `app_name` (those of a tool nanika
/// stopped), connected through `admin_url`, and waits until they are gone: their open
/// transactions are then rolled back. Whether none is left.
pub async fn end_sessions(admin_url: &DatabaseUrl, app_name: &str) -> bool {
    let ended = tokio::time::timeout(CLEANUP_LIMIT, async {
        let mut admin = connect(admin_url, Some("postgres")).await.ok()?;
        let limit_ms = i64::try_from(CLEANUP_LIMIT.as_millis() * 2 / 3).unwrap_or(i64::MAX);
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(app_name)
        .bind(limit_ms)
        .execute(&mut admin)
        .await;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(app_name)
        .fetch_one(&mut admin)
        .await
        .ok()?;
        close(admin).await;
        Some(left == 0)
    })
    .await;
    matches!(ended, Ok(Some(true)))
}

/// Closes a connection, ignoring errors (the work is done).
pub async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The user tables of the database, as (schema, table), in order.
pub async fn tables(conn: &mut PgConnection) -> Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(OpsError::sql("cannot list the tables"))
}

/// The user tables of the database with their exact row counts, by `schema.table`.
pub async fn table_row_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>> {
    let tables = tables(conn).await?;
    let mut counts = Vec::new();
    for (schema, table) in tables {
        let statement = sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        ));
        let count: i64 = sqlx::query_scalar(statement)
            .fetch_one(&mut *conn)
            .await
            .map_err(OpsError::sql(format!("cannot count {schema}.{table}")))?;
        counts.push((format!("{schema}.{table}"), count));
    }
    Ok(counts)
}

/// A connection whose work an interrupt may abandon mid-statement: it knows its server process,
/// so [`Session::abandon`] can end it and be sure the server rolled back what it had open.
pub struct Session {
    conn: PgConnection,
    pid: i32,
    url: DatabaseUrl,
}

/// What became of an abandoned session's server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It is gone: its open transaction was rolled back and its locks released.
    Yes,
    /// It was still there after [`CLEANUP_LIMIT`]; the server rolls back when it ends.
    NotYet,
}

impl Session {
    /// Connects to the URL's database; `None` when `interrupt` is raised first.
    pub async fn open(url: &DatabaseUrl, interrupt: &Interrupt) -> Result<Option<Session>> {
        let Some(conn) = race(interrupt, connect(url, None)).await else {
            return Ok(None);
        };
        let mut conn = conn?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(OpsError::sql("cannot read the session's process id"))?;
        Ok(Some(Session {
            conn,
            pid,
            url: url.clone(),
        }))
    }

    /// The connection.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Closes it after work that completed.
    pub async fn close(self) {
        close(self.conn).await;
    }

    /// Drops the connection wherever its work stood and ends its server process from another
    /// session, waiting (at most [`CLEANUP_LIMIT`]) until it is gone. Dropping alone is not
    /// enough: a server busy with a long statement notices its client is gone only when that
    /// statement ends.
    pub async fn abandon(self) -> Ended {
        let Session { conn, pid, url } = self;
        drop(conn);
        let ended = tokio::time::timeout(CLEANUP_LIMIT, async {
            let mut other = connect(&url, None).await.ok()?;
            // Leaves time for the check below within the step's limit.
            let limit_ms = i64::try_from(CLEANUP_LIMIT.as_millis() * 2 / 3).unwrap_or(i64::MAX);
            // A role may end its own sessions; with a timeout it waits until the process is gone.
            let _ = sqlx::query(
                "SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE pid = $1",
            )
            .bind(pid)
            .bind(limit_ms)
            .execute(&mut other)
            .await;
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_one(&mut other)
                    .await
                    .ok()?;
            close(other).await;
            Some(left == 0)
        })
        .await;
        match ended {
            Ok(Some(true)) => Ended::Yes,
            _ => Ended::NotYet,
        }
    }
}
