//! `nanika doctor`.

use super::db::block_on;
use crate::context;
use crate::error::{CliError, CliResult};
use nanika_ops::doctor::{self, DoctorInput, Verdict};
use nanika_runtime::native::layout::{ServerUser, StateLayout};
use std::path::PathBuf;

/// Runs every check; fails when any check fails.
pub fn run(project_dir: Option<&PathBuf>, json: bool) -> CliResult {
    let loaded = context::load_for_services(project_dir)?;
    let user = ServerUser::for_current_process().map_err(super::services::runtime_error)?;
    let layout = StateLayout::new(loaded.project.root(), user);
    let search = context::binary_search();
    let checks = block_on(doctor::run(&DoctorInput {
        loaded: &loaded,
        layout: &layout,
        search: &search,
    }));
    if json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("serializes")
        );
    } else {
        for check in &checks {
            let mark = match check.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            crate::say!("{mark} {:26} {}", check.name, check.seen);
            if let Some(fix) = &check.fix {
                crate::say!("     {:26} fix: {fix}", "");
            }
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        return Err(CliError::failure(format!("{failed} check(s) failed"))
            .hint("each FAIL line says how to fix it"));
    }
    Ok(())
}
