//! The README documents every environment variable nanika reads, and the test command CI runs.

use std::path::Path;

fn readme() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    fs_err::read_to_string(root.join("README.md")).unwrap()
}

#[test]
fn every_environment_variable_is_in_the_readme_table() {
    let readme = readme();
    for var in nanika_config::env_vars::ALL {
        let row = format!("| `{}` | {} |", var.name, var.meaning);
        assert!(readme.contains(&row), "README.md lacks the row: {row}");
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let ci = fs_err::read_to_string(root.join(".ci/run")).unwrap();
    let command = "cargo test --workspace";
    assert!(readme().contains(&format!("{command}     # runs the tests")));
    // Run as it is, or with its output kept for the closing totals.
    let runs = |line: &str| {
        line.trim() == command || line.trim().starts_with(&format!("{command} 2>&1 |"))
    };
    assert!(ci.lines().any(runs), ".ci/run must run `{command}`");
}
