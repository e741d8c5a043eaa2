//! `nanika init [DIR]`: a new project with the spec's files.

use crate::error::{CliError, CliResult};
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;
use nanika_config::Infrastructure;
use nanika_config::project::{ENV_EXAMPLE, ENV_FILE, GITIGNORE_ENTRIES, render_files};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes the rendered files, `.env` and `.gitignore` entries. Refuses, before writing anything,
/// when a config file exists and `force` is not given; never overwrites an existing `.env`.
pub fn run(dir: Option<&PathBuf>, force: bool) -> CliResult {
    let root = dir.cloned().unwrap_or_else(|| PathBuf::from("."));
    let files = render_files(&Infrastructure::spec());
    let existing: Vec<&str> = files
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| root.join(path).exists())
        .collect();
    if !existing.is_empty() && !force {
        return Err(CliError::failure(format!("{} already has {}", root.display(), existing.join(", ")))
            .hint("nothing was written; pass --force to overwrite them (an existing .env is kept either way)"));
    }
    for (path, contents) in &files {
        write_atomically(&root.join(path), contents.as_bytes(), 0o644)?;
        crate::say!("wrote {path}");
    }
    for (name, sql) in nanika_ops::migrate::INITIAL {
        // Migrations are the project's own once written: never overwritten, even with --force.
        let path = root.join("migrations").join(name);
        if !path.exists() {
            write_atomically(&path, sql.as_bytes(), 0o644)?;
            crate::say!("wrote migrations/{name}");
        }
    }
    let env = root.join(ENV_FILE);
    if env.exists() {
        crate::say!("kept {ENV_FILE} (it is yours; compare it with {ENV_EXAMPLE})");
    } else {
        let example = &files
            .iter()
            .find(|(path, _)| *path == ENV_EXAMPLE)
            .expect("the example is rendered")
            .1;
        write_atomically(&env, example.as_bytes(), 0o600)?;
        crate::say!("wrote {ENV_FILE} (mode 0600)");
    }
    let added = ensure_gitignore(&root.join(".gitignore"))?;
    if !added.is_empty() {
        crate::say!("added {} to .gitignore", added.join(" "));
    }
    crate::say!("next: nanika config check");
    Ok(())
}

/// Writes `contents` to a temporary file beside `path`, then renames it over `path`, so a crash
/// leaves either the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> CliResult {
    let fail = |e: std::io::Error| {
        CliError::failure(format!("cannot write {}", path.display())).caused_by(e)
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{file_name}.nanika-tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(fail)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    drop(file);
    fs::rename(&temp, path).map_err(fail)
}

/// Appends the entries `.gitignore` lacks; returns them.
fn ensure_gitignore(path: &Path) -> CliResult<Vec<&'static str>> {
    let current = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CliError::failure("cannot read .gitignore").caused_by(e)),
    };
    let present = |entry: &str| {
        current
            .lines()
            .any(|l| l.trim() == entry || l.trim() == entry.trim_start_matches('/'))
    };
    let missing: Vec<&'static str> = GITIGNORE_ENTRIES
        .iter()
        .copied()
        .filter(|e| !present(e))
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let mut text = current.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for entry in &missing {
        text.push_str(entry);
        text.push('\n');
    }
    write_atomically(path, text.as_bytes(), 0o644)?;
    Ok(missing)
}

/// Creates `.env` from `.env.example` (mode 0600) when the project has none yet, as the first
/// `nanika up` does. Returns whether it did.
/// The host ports exported in the process environment are written into the new `.env` (its
/// port variables and its URLs), so that the file agrees with the servers `up` starts.
pub fn ensure_dotenv(
    root: &Path,
    process_env: &std::collections::BTreeMap<String, String>,
) -> CliResult<bool> {
    let env = root.join(ENV_FILE);
    let example = root.join(ENV_EXAMPLE);
    if env.exists() || !example.exists() {
        return Ok(false);
    }
    let text = fs::read_to_string(&example)
        .map_err(|e| CliError::failure("cannot read .env.example").caused_by(e))?;
    let port = |var: &str| process_env.get(var).and_then(|v| v.parse::<u16>().ok());
    let text = nanika_config::dotenv::with_ports(
        &text,
        port(nanika_config::env_vars::POSTGRES_PORT),
        port(nanika_config::env_vars::REDIS_PORT),
    );
    write_atomically(&env, text.as_bytes(), 0o600)?;
    Ok(true)
}
