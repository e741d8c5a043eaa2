//! `nanika config check | lint | show`.

use crate::context;
use crate::error::{CliError, CliResult};
use crate::output::{Summary, print_findings, print_table};
use nanika_config::check::{resolved_settings, spec_differences};
use nanika_config::lint::{LintOptions, lint};
use std::path::PathBuf;

/// Reports every problem in the files at once; fails when any is an error.
pub fn check(project_dir: Option<&PathBuf>, json: bool) -> CliResult {
    let loaded = context::load(project_dir)?;
    let mut findings = loaded.findings.clone();
    findings.extend(spec_differences(&loaded));
    print_findings(
        &findings,
        json,
        ("difference from the spec", "differences from the spec"),
    );
    fail_on_errors(&findings, "the configuration has errors")
}

/// Reports risks; fails when any is an error (always with --production for weak secrets).
pub fn lint_project(project_dir: Option<&PathBuf>, production: bool, json: bool) -> CliResult {
    let loaded = context::load(project_dir)?;
    let findings = lint(
        &loaded,
        LintOptions {
            production,
            machine_memory: context::machine_memory(),
            ephemeral_ports: context::ephemeral_ports(),
        },
    );
    print_findings(&findings, json, ("note", "notes"));
    fail_on_errors(&findings, "the configuration has risks that are errors")
}

/// Prints the resolved settings with their sources.
pub fn show(project_dir: Option<&PathBuf>, json: bool) -> CliResult {
    let loaded = context::load(project_dir)?;
    let settings = resolved_settings(&loaded);
    if json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&settings).expect("settings serialize")
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = settings
        .iter()
        .map(|s| {
            let section = match s.setting.file {
                nanika_config::project::POSTGRES_CONF => "postgres",
                nanika_config::project::REDIS_CONF => "redis",
                nanika_config::project::COMPOSE_FILE => "compose",
                nanika_config::project::SETTINGS_FILE => "nanika",
                _ => "env",
            };
            vec![
                format!("{section}.{}", s.setting.key),
                s.setting.value.clone(),
                s.source.to_string(),
            ]
        })
        .collect();
    print_table(&["SETTING", "VALUE", "SOURCE"], &rows);
    Ok(())
}

fn fail_on_errors(findings: &[nanika_config::Finding], message: &str) -> CliResult {
    let summary = Summary::of(findings);
    if summary.errors > 0 {
        return Err(
            CliError::failure(format!("{message} ({} found)", summary.errors))
                .hint("fix the lines named above; each finding has a hint"),
        );
    }
    Ok(())
}
