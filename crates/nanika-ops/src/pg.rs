//! Connecting to PostgreSQL from the spec's `DATABASE_URL` (its `?schema=` becomes `search_path`),
//! retrying a refused connection for a bounded time, failing at once on anything else.

use crate::error::{OpsError, Result};
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
