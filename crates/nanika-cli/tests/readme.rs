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

/// The commands of the README's `sh` blocks in the section `## {title}`, trailing comments off.
fn section_commands(readme: &str, title: &str) -> Vec<String> {
    let heading = format!("\n## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no section `## {title}`"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut fence: Option<&str> = None;
    let mut commands = Vec::new();
    for line in section.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(info.trim()),
            };
        } else if fence == Some("sh") {
            let command = line.split("  #").next().unwrap().trim();
            if !command.is_empty() && !command.starts_with('#') {
                commands.push(command.to_string());
            }
        }
    }
    commands
}

#[test]
fn the_app_section_shows_the_commands_the_examples_test_runs() {
    let test = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples.rs");
    let test = fs_err::read_to_string(test).unwrap();
    let commands = section_commands(&readme(), "Using nanika from your app");
    assert!(commands.len() >= 5, "too few commands: {commands:?}");
    for command in commands {
        // A whole string literal of tests/examples.rs: each is a `const` there that the test runs
        // with bash (an unused one fails clippy's `-D warnings` as dead code).
        assert!(
            test.contains(&format!("\"{command}\"")),
            "tests/examples.rs does not run the README's `{command}`"
        );
    }
}

#[test]
fn the_quick_start_says_how_to_get_rust_when_cargo_is_missing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let output = std::process::Command::new("/bin/bash")
        .arg(root.join("scripts/up"))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Rust is not installed"), "{stderr}");
    assert!(stderr.contains("https://sh.rustup.rs"), "{stderr}");
}

#[test]
fn the_quick_start_puts_nanika_where_the_readme_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let script = fs_err::read_to_string(root.join("scripts/up")).unwrap();
    let readme = readme();
    for place in ["/usr/local/bin", "~/.cargo/bin"] {
        assert!(readme.contains(place), "README.md does not say {place}");
    }
    assert!(script.contains("bin_dir=/usr/local/bin"));
    assert!(script.contains("${CARGO_HOME:-$HOME/.cargo}/bin"));
}
