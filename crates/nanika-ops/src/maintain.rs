//! `nanika db maintain`: VACUUM ANALYZE (spec: VACUUM, ANALYZE), then advice read from the
//! statistics: tables read by sequential scans that an index would serve, and dead-tuple bloat.

use crate::error::{OpsError, Result};
use serde::Serialize;
use sqlx::postgres::PgConnection;

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// The table, `schema.table`.
    pub table: String,
    /// What was seen.
    pub seen: String,
    /// What to do.
    pub fix: String,
}

/// Tables smaller than this are cheap to scan whatever the plan.
const SMALL_TABLE_ROWS: i64 = 10_000;

/// Runs VACUUM ANALYZE on the whole database and returns advice.
pub async fn maintain(conn: &mut PgConnection) -> Result<Vec<Advice>> {
    sqlx::query("VACUUM (ANALYZE)")
        .execute(&mut *conn)
        .await
        .map_err(OpsError::sql("VACUUM ANALYZE failed"))?;
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT schemaname || '.' || relname, seq_scan, coalesce(idx_scan, 0), n_live_tup, n_dead_tup \
         FROM pg_stat_user_tables ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(OpsError::sql("cannot read pg_stat_user_tables"))?;
    let mut advice = Vec::new();
    for (table, seq_scan, idx_scan, live, dead) in rows {
        if live >= SMALL_TABLE_ROWS && seq_scan > 100 && seq_scan > idx_scan.saturating_mul(10) {
            advice.push(Advice {
                table: table.clone(),
                seen: format!("{seq_scan} sequential scans of {live} rows, {idx_scan} index scans"),
                fix: "add an index on the columns the frequent queries filter or sort by (EXPLAIN them to see which)".into(),
            });
        }
        if dead > 1000 && dead * 5 > live {
            advice.push(Advice {
                table,
                seen: format!("{dead} dead rows beside {live} live ones"),
                fix: "VACUUM has reclaimed them for reuse now; if it keeps growing, make autovacuum more aggressive for this table (autovacuum_vacuum_scale_factor)".into(),
            });
        }
    }
    Ok(advice)
}
