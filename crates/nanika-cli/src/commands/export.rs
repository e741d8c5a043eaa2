//! `nanika export kubernetes`: writes the manifests nanika-config renders, then says what the
//! operators manage themselves, which Secrets to create, and how the app's variables map.
//!
//! The output directory is written only when it is new, empty, or holds nothing but what an
//! earlier export wrote (listed in its `.nanika-export`): exporting again replaces those files
//! and removes the ones the new export no longer has, and anything else in the directory makes
//! the command refuse before writing. No symbolic link is followed: the directory, an entry or
//! the list being one is refused.

use crate::cli::{KubernetesArgs, RedisLayoutArg};
use crate::context;
use crate::error::{CliError, CliResult};
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;
use nanika_config::kubernetes::{self, ExportOptions, ManifestFile, RedisLayout};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The directory written when `-o` is not given, under the project's root.
pub const DEFAULT_DIR: &str = "kubernetes";

/// The list of the files an export wrote, kept in the output directory.
pub const MARKER: &str = ".nanika-export";

/// Written beside the Secrets of `--include-secrets`, so that an output directory inside a
/// repository keeps them out of version control.
pub const GITIGNORE: &str = ".gitignore";

/// Whether an earlier export's list may name `name`: a plain file name (no `/`, not `.` or
/// `..`) among those an export writes. Anything else in the list (`../victim`, `/etc/x`) was
/// not written by nanika, and trusting it would have the next export remove that file.
fn exportable(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && name != "."
        && name != ".."
        && (name == GITIGNORE || kubernetes::FILE_NAMES.contains(&name))
}

impl From<RedisLayoutArg> for RedisLayout {
    fn from(arg: RedisLayoutArg) -> Self {
        match arg {
            RedisLayoutArg::Replication => RedisLayout::Replication,
            RedisLayoutArg::Sentinel => RedisLayout::Sentinel,
            RedisLayoutArg::Cluster => RedisLayout::Cluster,
        }
    }
}

/// Renders the validated project as manifests and writes them.
pub fn kubernetes(project_dir: Option<&PathBuf>, args: KubernetesArgs) -> CliResult {
    let loaded = context::load(project_dir)?;
    let root = loaded.project.root().to_path_buf();
    let project = loaded
        .validate()
        .map_err(|rejected| context::rejected_error(&rejected))?;
    let options = ExportOptions {
        namespace: args
            .namespace
            .unwrap_or_else(|| project.infra.compose.project_name.clone()),
        instances: args.instances,
        redis: args.redis.map(Into::into),
        // The cluster's Prometheus (operator) takes over what `[monitoring]` runs here.
        monitoring: project.settings.monitoring.enabled,
        include_secrets: args.include_secrets,
        backup_destination: args.backup_destination,
        backup_endpoint_url: args.backup_endpoint_url,
    };
    let export = kubernetes::export(&project, &options)
        .map_err(|error| CliError::usage(error.to_string()).hint(error.hint()))?;
    let dir = args.output.unwrap_or_else(|| root.join(DEFAULT_DIR));
    let mut files = export.files.clone();
    let secret_files: Vec<&str> = export
        .files
        .iter()
        .filter(|f| f.holds_secret)
        .map(|f| f.name.as_str())
        .collect();
    if !secret_files.is_empty() {
        let mut text = String::from(
            "# Written by `nanika export kubernetes --include-secrets`: these files hold passwords.\n",
        );
        for name in &secret_files {
            text += &format!("/{name}\n");
        }
        files.push(ManifestFile {
            name: GITIGNORE.to_string(),
            text,
            holds_secret: false,
        });
    }
    write_all(&dir, &files)?;

    for file in &files {
        let note = if file.holds_secret {
            " (mode 0600)"
        } else {
            ""
        };
        crate::say!("wrote {}{note}", dir.join(&file.name).display());
    }
    if !secret_files.is_empty() {
        eprintln!(
            "warning: --include-secrets wrote the passwords of {} into {} (listed in {}, which git then ignores): keep them out of version control, and prefer creating the Secrets in the cluster",
            project.env_file,
            secret_files.join(", "),
            dir.join(GITIGNORE).display()
        );
    }
    crate::say!(
        "\nPostgreSQL: {} instance{} (CloudNativePG); Redis: {} (redis-operator); namespace {}",
        export.instances,
        if export.instances == 1 { "" } else { "s" },
        export.redis.as_str(),
        options.namespace
    );
    if !export.managed.is_empty() {
        crate::say!("\nSettings the operators manage themselves (left out of the manifests):");
        for managed in &export.managed {
            crate::say!(
                "  {} {} = {} ({}): {}",
                managed.file,
                managed.key,
                managed.value,
                managed.operator,
                managed.reason
            );
        }
    }
    for note in &export.notes {
        crate::say!("\n{note}");
    }
    if !export.secrets_needed.is_empty() {
        crate::say!(
            "\nCreate the namespace, then these Secrets, before applying (the values come from your shell):"
        );
        // The Secrets go into the namespace, which a fresh cluster does not have yet.
        crate::say!(
            "  kubectl apply -f {}",
            dir.join("namespace.yaml").display()
        );
        for secret in &export.secrets_needed {
            crate::say!("  # {}: {}", secret.name, secret.purpose);
            crate::say!("  {}", secret.command);
        }
    }
    crate::say!("\nThe app's environment on the cluster:");
    for connection in &export.connection {
        crate::say!("  {}={}", connection.variable, connection.value);
    }
    crate::say!("\nnext: kubectl apply -k {}", dir.display());
    Ok(())
}

/// Why `dir` may not be written, if it may not; else the files an earlier export left there.
fn earlier_export(dir: &Path) -> CliResult<BTreeSet<String>> {
    let refuse = |message: String| {
        CliError::usage(message).hint(
            "nothing was written; give -o a new or empty directory, or one an earlier `nanika export kubernetes` wrote",
        )
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(CliError::failure(format!("cannot read {}", dir.display())).caused_by(e));
        }
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(format!(
            "{} is a symbolic link; nanika writes into no directory it would have to follow a link to",
            dir.display()
        )));
    }
    if !meta.is_dir() {
        return Err(refuse(format!("{} is not a directory", dir.display())));
    }
    let read_error = |e: std::io::Error| {
        CliError::failure(format!("cannot read {}", dir.display())).caused_by(e)
    };
    let mut entries = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        entries.insert(entry.file_name().to_string_lossy().into_owned());
    }
    if entries.is_empty() {
        return Ok(BTreeSet::new());
    }
    let marker = dir.join(MARKER);
    let listed: BTreeSet<String> = match fs::symlink_metadata(&marker) {
        Ok(meta) if meta.is_file() => fs::read_to_string(&marker)
            .map_err(read_error)?
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Ok(_) => {
            return Err(refuse(format!(
                "{} is not a regular file",
                marker.display()
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(refuse(format!(
                "{} is not empty and holds no {MARKER}: it was not written by `nanika export kubernetes`",
                dir.display()
            )));
        }
        Err(e) => return Err(read_error(e)),
    };
    let untrusted: Vec<&String> = listed.iter().filter(|n| !exportable(n)).collect();
    if !untrusted.is_empty() {
        return Err(refuse(format!(
            "{} lists names an export never writes: {}; it was not written by `nanika export kubernetes`",
            marker.display(),
            untrusted
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let foreign: Vec<&String> = entries
        .iter()
        .filter(|name| *name != MARKER && !listed.contains(*name))
        .collect();
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "{} holds files an earlier export did not write: {}",
            dir.display(),
            foreign
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for name in entries.iter().filter(|n| *n != MARKER) {
        let meta = fs::symlink_metadata(dir.join(name)).map_err(read_error)?;
        if !meta.is_file() {
            return Err(refuse(format!(
                "{} is not a regular file (a link or a directory), though an earlier export listed it",
                dir.join(name).display()
            )));
        }
    }
    Ok(listed)
}

/// Writes every file (a new one beside each, renamed over it, so that a crash leaves the old
/// file or the new one), removes the earlier export's files this one no longer has, and lists
/// the files in the marker.
fn write_all(dir: &Path, files: &[ManifestFile]) -> CliResult {
    let earlier = earlier_export(dir)?;
    let fail = |path: &Path, e: std::io::Error| {
        CliError::failure(format!("cannot write {}", path.display())).caused_by(e)
    };
    if earlier.is_empty() && !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    }
    for file in files {
        let mode = if file.holds_secret { 0o600 } else { 0o644 };
        let path = dir.join(&file.name);
        write_new(&path, file.text.as_bytes(), mode).map_err(|e| fail(&path, e))?;
    }
    let written: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for stale in earlier.iter().filter(|n| !written.contains(n.as_str())) {
        let path = dir.join(stale);
        match fs::remove_file(&path) {
            Ok(()) => crate::say!("removed {} (no longer exported)", path.display()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&path, e)),
        }
    }
    let mut marker = String::from(
        "# Written by `nanika export kubernetes`: the files it may replace when run again.\n",
    );
    for name in &written {
        marker.push_str(name);
        marker.push('\n');
    }
    let path = dir.join(MARKER);
    write_new(&path, marker.as_bytes(), 0o644).map_err(|e| fail(&path, e))
}

/// Writes `contents` into a file that did not exist (so no link is followed), then renames it
/// over `path`, which replaces a file and never writes through a link.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)?;
    let result = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // The file this call created, and nothing else: `create_new` opened no existing path.
        let _ = fs::remove_file(&temp);
    }
    result
}
