//! `nanika db reset`: the app's database dropped, created again (owned by the app's role),
//! migrated and seeded; or, with `--empty`, left empty for a restore.

use crate::error::{OpsError, Result};
use crate::interrupt::Interrupt;
use crate::{migrate, pg, seed};
use nanika_config::urls::DatabaseUrl;
use std::path::Path;

/// What a reset leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The migrations applied and the development data seeded.
    Seeded,
    /// An empty database, without even the migrations' table: what a restore of a whole dump
    /// (schema and data) wants, since `db restore` refuses a database with tables.
    Empty,
}

/// Drops the URL's database (ending its sessions), creates it again owned by the URL's role
/// through `admin_url`, and, for [`ResetTo::Seeded`], applies the migrations in `migrations` and
/// seeds it.
///
/// An interrupt is acted on before the drop (nothing changes), after the create, and inside the
/// migration and the seed (the step in progress rolled back); never between the drop and the
/// create, so the database always exists. The error says which state the database is in.
pub async fn reset(
    url: &DatabaseUrl,
    admin_url: &DatabaseUrl,
    migrations: &Path,
    to: ResetTo,
    interrupt: &Interrupt,
) -> Result<()> {
    let name = &url.database;
    if interrupt.is_raised() {
        return Err(interrupt.error(
            Vec::new(),
            format!("nothing changed: database {name} is as it was"),
        ));
    }
    // A second or two, and the one step that must not stop half-way: not raced.
    pg::recreate_database(admin_url, url).await?;
    if to == ResetTo::Empty {
        // Done: an interrupt now finds nothing left to do.
        return Ok(());
    }
    let again = || Some("run `nanika db reset --yes` again to finish the reset".to_string());
    let recreated = format!("database {name} was dropped and created again");
    if interrupt.is_raised() {
        return Err(interrupt.error_hinted(
            Vec::new(),
            format!("{recreated}, empty: no migration was applied and it is not seeded"),
            again(),
        ));
    }
    match migrate::run_interruptible(url, migrations, false, interrupt).await {
        Ok(_) => {}
        Err(OpsError::Interrupted {
            signal,
            cleaned,
            state,
            ..
        }) => {
            return Err(OpsError::Interrupted {
                signal,
                cleaned,
                state: format!("{recreated}; {state}; it is not seeded"),
                hint: again(),
            });
        }
        Err(error) => return Err(error),
    }
    match seed::run(url, 0, 0, &mut |_, _| {}, interrupt).await {
        Ok(_) => Ok(()),
        Err(OpsError::Interrupted {
            signal, cleaned, ..
        }) => Err(OpsError::Interrupted {
            signal,
            cleaned,
            state: format!(
                "{recreated} and migrated, but the seed was rolled back: it has the schema and no rows"
            ),
            hint: Some("run `nanika db seed` to add the development data".into()),
        }),
        Err(error) => Err(error),
    }
}
