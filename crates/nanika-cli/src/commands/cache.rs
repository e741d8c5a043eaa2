//! `nanika cache …`: where the pristine PostgreSQL clusters are, what they hold, removing them.

use super::services::runtime_error;
use crate::cli::CacheCommand;
use crate::context;
use crate::error::{CliError, CliResult};
use nanika_runtime::native::cluster_cache::ClusterCache;
use nanika_runtime::native::layout::ServerUser;

/// Runs a `cache` subcommand.
pub fn run(command: CacheCommand) -> CliResult {
    let cache = context::cluster_cache().ok_or_else(|| {
        let off = std::env::var_os(nanika_config::env_vars::NANIKA_CACHE_DIR)
            .is_some_and(|v| v == context::CACHE_OFF);
        let why = if off {
            "the cluster cache is off (NANIKA_CACHE_DIR=off)"
        } else {
            "nanika has no cache directory: neither HOME nor XDG_CACHE_HOME is set"
        };
        CliError::usage(why).hint(
            "set NANIKA_CACHE_DIR to a directory; without a cache every new project runs its own initdb",
        )
    })?;
    match command {
        CacheCommand::Path => {
            crate::say!("{}", cache.root().display());
            Ok(())
        }
        CacheCommand::Status { json } => status(&cache, json),
        CacheCommand::Clear => {
            let removed = cache.clear().map_err(runtime_error)?;
            if removed.is_empty() {
                crate::say!("the cache at {} holds nothing", cache.root().display());
            }
            for path in removed {
                crate::say!("removed {}", path.display());
            }
            Ok(())
        }
    }
}

/// `nanika __refill-cache`, started in the background by a cold `up`: makes the spare copy of
/// the project's cached cluster. Quiet: nobody reads its output, and `cache status` shows the
/// spare.
pub fn refill(project_dir: Option<&std::path::PathBuf>) -> CliResult {
    let valid = context::valid(project_dir)?;
    let native = nanika_runtime::native::control::Native::new(
        &valid,
        context::binary_search(),
        context::cluster_cache(),
    )
    .map_err(runtime_error)?;
    native.refill_cache().map_err(runtime_error)?;
    Ok(())
}

fn status(cache: &ClusterCache, json: bool) -> CliResult {
    let user = ServerUser::for_current_process().map_err(runtime_error)?;
    let entries = cache.entries(user.as_ref()).map_err(runtime_error)?;
    if json {
        let value: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": e.path,
                    "usable": e.problem.is_none(),
                    "problem": e.problem,
                    "spare": e.spare,
                })
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "root": cache.root(),
                "entries": value,
            }))
            .unwrap_or_default()
        );
        return Ok(());
    }
    crate::say!("cache: {}", cache.root().display());
    if entries.is_empty() {
        crate::say!("no cached cluster (the next new project's `up` runs initdb and keeps one)");
    }
    for entry in entries {
        match entry.problem {
            None if entry.spare => crate::say!(
                "ok    {} (a spare copy is ready for the next new project)",
                entry.path.display()
            ),
            None => crate::say!("ok    {}", entry.path.display()),
            Some(problem) => crate::say!(
                "stale {} ({problem}; the next `up` that needs it rebuilds it)",
                entry.path.display()
            ),
        }
    }
    Ok(())
}
