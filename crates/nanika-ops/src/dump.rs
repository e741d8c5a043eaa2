//! Backups and restores with the real `pg_dump`, `pg_restore` and `psql`, from the same
//! installation as the server.
//!
//! A backup is written to `NAME.partial` and renamed only when `pg_dump` succeeded, so a failed or
//! interrupted backup never leaves a file that looks complete. A restore goes into a scratch
//! database first; only when that succeeded is it swapped in for the real one, so a corrupt or
//! truncated dump changes nothing.
//!
//! An interrupt (see [`crate::interrupt`]) stops the tool's whole process group and undoes what
//! was half done: a backup removes its `.partial`; a restore into an empty database leaves it
//! empty again; a restore through a scratch database drops the scratch database, leaving the
//! real one as it was. The tools run as in [`crate::tool`].

use crate::error::{OpsError, Result};
use crate::interrupt::{CLEANUP_LIMIT, Interrupt, race};
use crate::pg::{self, quote_ident};
use crate::tool::{self, Ran};
use fs_err as fs;
use nanika_config::urls::DatabaseUrl;
use nanika_runtime::native::binaries::PostgresBinaries;
use nanika_runtime::native::safe_fs::{self, Dir, Kind};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A backup's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `pg_dump -Fc`: compressed, restorable selectively and in parallel.
    Custom,
    /// Plain SQL, as the spec's `pg_dump > backup.sql`.
    Sql,
    /// `pg_dump -Fd`: a directory, dumpable and restorable in parallel.
    Directory,
}

impl Format {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Custom => "dump",
            Format::Sql => "sql",
            Format::Directory => "dir",
        }
    }
}

/// A finished backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Where it is.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
}

/// The name of a project's backup directory, the only directory nanika creates for backups.
pub const BACKUPS_DIR: &str = "backups";

/// A database name made safe to use in a file name: only `[A-Za-z0-9._-]`, no `..`, no leading
/// `.` (the name comes from `.env`, and must never lead a backup out of `backups/`).
pub fn file_name_part(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while safe.contains("..") {
        safe = safe.replace("..", "_");
    }
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    if safe.is_empty() {
        safe.push_str("database");
    }
    safe
}

/// `backups/DB-YYYYMMDD-HHMMSS.EXT` under `root`, with `-2`, `-3`… added when that name is taken
/// (two backups in one second). `DB` is the database name made safe by [`file_name_part`].
pub fn default_path(root: &Path, database: &str, format: Format, timestamp: &str) -> PathBuf {
    let dir = root.join(BACKUPS_DIR);
    let extension = format.extension();
    let stem = format!("{}-{}", file_name_part(database), file_name_part(timestamp));
    let mut path = dir.join(format!("{stem}.{extension}"));
    let mut n = 2;
    // A dangling link takes a name too.
    while std::fs::symlink_metadata(&path).is_ok() {
        path = dir.join(format!("{stem}-{n}.{extension}"));
        n += 1;
    }
    path
}

/// Whether `dir` is the `backups/` directory of a nanika project.
fn is_project_backups(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == BACKUPS_DIR)
        && nanika_config::project::Project::at(
            dir.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .is_ok()
}

/// Opens a project's `backups/` directory, creating it owner-only (0700) when it does not exist.
/// It must be a real directory: a link there (a clone may carry one) is refused, not followed.
/// An existing one is used as it is, its permissions unchanged.
pub fn open_project_backups(dir: &Path) -> Result<Dir> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (backups, _) = Dir::open(parent)?.make_dir(BACKUPS_DIR, 0o700)?;
    Ok(backups)
}

/// The directory a backup is written into, opened, and the file's name in it. The directory
/// must exist, except a project's own `backups/`, which is created (0700); it is never
/// created anywhere else and never has its permissions changed.
fn output_place(output: &Path) -> Result<(Dir, String)> {
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| OpsError::Refused {
            message: format!("{} does not name a file", output.display()),
            hint: "give -o a file name, such as backups/game.dump".into(),
        })?;
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if is_project_backups(parent) {
        return Ok((open_project_backups(parent)?, name.to_string()));
    }
    if !parent.is_dir() {
        return Err(OpsError::Refused {
            message: format!(
                "{} does not exist (or is not a directory); nothing was written",
                parent.display()
            ),
            hint: format!(
                "create it first (mkdir -p {}), or leave out -o to write to backups/",
                parent.display()
            ),
        });
    }
    // Any other directory is the user's choice, as typed: used, never changed.
    Ok((Dir::open(parent)?, name.to_string()))
}

fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        fs::metadata(path).map_or(0, |m| m.len())
    }
}

/// Removes nanika's own temporary `name` in `dir` (a link is removed, never followed); whether
/// it is gone.
fn remove_partial(dir: &Dir, name: &str) -> bool {
    match dir.kind(name) {
        Ok(Kind::Dir) => {
            let _ = safe_fs::remove_tree(&dir.join(name));
        }
        Ok(Kind::Missing) | Err(_) => {}
        Ok(_) => {
            let _ = dir.remove_file(name);
        }
    }
    matches!(dir.kind(name), Ok(Kind::Missing))
}

/// What stopping a tool did, for an interrupt's message.
fn stopped(tool: &str, gone: bool) -> String {
    if gone {
        format!("stopped {tool}")
    } else {
        format!("sent {tool} SIGKILL, but some of its processes are still there")
    }
}

/// Dumps the URL's database to exactly `output` in `format`, through a temporary name nanika
/// creates owner-only (a 0600 file, or a 0700 directory for the directory format). `output`'s
/// directory must exist, except a project's `backups/` (see [`open_project_backups`]). When
/// `interrupt` is raised before `pg_dump` is done, `pg_dump` is stopped and the temporary name
/// removed.
pub fn backup(
    bins: &PostgresBinaries,
    url: &DatabaseUrl,
    output: &Path,
    format: Format,
    jobs: u32,
    interrupt: &Interrupt,
) -> Result<BackupReport> {
    let (dir, name) = output_place(output)?;
    if dir.kind(&name)? != Kind::Missing {
        return Err(OpsError::Refused {
            message: format!("{} already exists", output.display()),
            hint: "choose another -o path, or remove the old backup first".into(),
        });
    }
    if interrupt.is_raised() {
        return Err(interrupt.error(Vec::new(), "no backup was written"));
    }
    let partial_name = format!("{name}.partial");
    let partial = dir.join(&partial_name);
    remove_partial(&dir, &partial_name);
    // Made by nanika, owner-only, before pg_dump writes into it: its mode is never anyone's
    // but nanika's to set.
    if format == Format::Directory {
        dir.make_dir(&partial_name, 0o700)?;
    } else {
        drop(dir.create_file(&partial_name, 0o600)?);
    }
    let started = Instant::now();
    let mut command = Command::new(bins.tool("pg_dump"));
    let flag = match format {
        Format::Custom => "-Fc",
        Format::Sql => "-Fp",
        Format::Directory => "-Fd",
    };
    command
        .arg(flag)
        // In a process group of its own, a password prompt would stop it for good (SIGTTIN).
        .arg("--no-password")
        .arg("-f")
        .arg(&partial);
    if format == Format::Directory && jobs > 1 {
        command.arg("-j").arg(jobs.to_string());
    }
    let shown = format!("pg_dump {flag} -f {} {}", partial.display(), url.database);
    match tool::run(command, "pg_dump", url, shown, interrupt) {
        Ok(Ran::Finished) => {}
        Ok(Ran::Stopped { gone }) => {
            let removed = if remove_partial(&dir, &partial_name) {
                format!("removed {}", partial.display())
            } else {
                format!("could not remove {}: remove it by hand", partial.display())
            };
            return Err(interrupt.error(
                vec![stopped("pg_dump", gone), removed],
                format!("no backup was written to {}", output.display()),
            ));
        }
        Err(error) => {
            remove_partial(&dir, &partial_name);
            return Err(error);
        }
    }
    // From here the backup is whole: an interrupt now is not acted on.
    if let Err(error) = dir.rename_new(&partial_name, &name) {
        remove_partial(&dir, &partial_name);
        return Err(error.into());
    }
    let path = dir.join(&name);
    Ok(BackupReport {
        bytes: size_of(&path),
        path: output.to_path_buf(),
        format,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a file to restore is.
pub fn detect(path: &Path) -> Result<Format> {
    if path.is_dir() {
        if path.join("toc.dat").is_file() {
            return Ok(Format::Directory);
        }
        return Err(not_a_dump(path, "a directory without toc.dat"));
    }
    let mut head = [0u8; 4096];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(OpsError::io(format!("cannot read {}", path.display())))?;
    let head = &head[..n];
    if head.starts_with(b"PGDMP") {
        return Ok(Format::Custom);
    }
    if String::from_utf8_lossy(head).contains("PostgreSQL database dump") {
        return Ok(Format::Sql);
    }
    Err(not_a_dump(
        path,
        "neither a pg_dump archive nor a pg_dump SQL script",
    ))
}

fn not_a_dump(path: &Path, what: &str) -> OpsError {
    OpsError::Refused {
        message: format!("{} is {what}", path.display()),
        hint: "give a file written by `nanika db backup` or pg_dump".into(),
    }
}

/// A plain SQL dump ends with pg_dump's trailer; one without it was cut short.
fn check_sql_complete(path: &Path) -> Result<()> {
    let text = fs::read(path).map_err(OpsError::io(format!("cannot read {}", path.display())))?;
    let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(512)..]).into_owned();
    if tail.contains("PostgreSQL database dump complete") {
        Ok(())
    } else {
        Err(OpsError::Refused {
            message: format!(
                "{} is incomplete: it lacks pg_dump's closing line",
                path.display()
            ),
            hint: "the file was truncated; nothing was restored. Use a complete backup".into(),
        })
    }
}

/// Per-table row counts of one database.
pub type RowCounts = Vec<(String, i64)>;

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The dump's format.
    pub format: Format,
    /// The restored tables (`schema.table`).
    pub tables: Vec<String>,
    /// With `verify`: their row counts (counting every row of a large dump takes a while, so
    /// only a verification does it).
    pub rows: Option<RowCounts>,
    /// With `verify`: the tables whose row count in the database differs from the dump's own
    /// (table, rows in the dump, rows in the database; -1 for a table one of them lacks)
    /// (table, restored, current).
    pub differences: Vec<(String, i64, i64)>,
    /// Whether the real database was replaced (false for a verification only).
    pub replaced: bool,
    /// How long it took.
    pub seconds: f64,
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The password of nanika's superuser, when the cluster has one (see [`pg::admin_url`]).
    pub admin_password: Option<nanika_config::Secret>,
    /// Replace a database that is not empty (the caller confirmed and took a safety backup).
    pub clean: bool,
    /// Compare the restored row counts with the current database's; without `clean`, a database
    /// that is not empty is only compared, not replaced.
    pub verify: bool,
    /// Parallel jobs for archive formats.
    pub jobs: u32,
}

/// Whether the URL's database has any user table.
pub async fn table_count(url: &DatabaseUrl) -> Result<i64> {
    let mut conn = pg::connect(url, None).await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(OpsError::sql("cannot count tables"))?;
    pg::close(conn).await;
    Ok(count)
}

async fn admin(url: &DatabaseUrl, sql: String) -> Result<()> {
    let mut conn = pg::connect(url, Some("postgres")).await?;
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await;
    pg::close(conn).await;
    result
        .map(|_| ())
        .map_err(OpsError::sql(format!("`{sql}` failed")))
}

/// Restores `path` into the URL's database. An empty database is restored into directly (in one
/// transaction, or emptied again if parallel jobs fail); a database with tables is restored into a
/// scratch database first, which is swapped in only when that succeeded (other connections to
/// the database are ended).
///
/// When `interrupt` is raised before the restore is complete, the tool is stopped and the
/// target left as it was: an empty database empty again (its transaction rolled back, or, after
/// parallel jobs, the database dropped and created again, owned by the URL's role), and with a
/// scratch database, the scratch database dropped and the real one untouched. The swap itself is
/// not interrupted.
pub async fn restore(
    bins: &PostgresBinaries,
    url: &DatabaseUrl,
    path: &Path,
    options: RestoreOptions,
    interrupt: &Interrupt,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let format = detect(path)?;
    if format == Format::Sql {
        check_sql_complete(path)?;
    }
    let unchanged = format!("nothing was restored; {} is unchanged", url.database);
    if interrupt.is_raised() {
        return Err(interrupt.error(Vec::new(), unchanged));
    }
    let admin_url = pg::admin_url(url, options.admin_password.as_ref());
    let owner = quote_ident(&url.user);
    let existing_tables = table_count(url).await?;
    if existing_tables > 0 && !options.clean && !options.verify {
        return Err(OpsError::Refused {
            message: format!("database {} is not empty ({existing_tables} tables); nothing was restored", url.database),
            hint: "to restore into an empty database, run `nanika db reset --empty --yes` first (it drops everything in it; a plain `db reset` migrates and seeds, so its database is not empty); `restore --clean` replaces it instead (it asks first and takes a safety backup); `restore --verify` only compares".into(),
        });
    }
    if existing_tables > 0 && !options.clean {
        // `--verify` alone: does the database hold what the dump holds? Nothing is restored.
        let expected = dump_row_counts(bins, path, format)?;
        let (tables, rows) = describe(url, true).await?;
        let differences = differences(&expected, rows.as_deref().unwrap_or_default());
        return Ok(RestoreReport {
            format,
            tables,
            rows,
            differences,
            replaced: false,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let single_transaction = format == Format::Sql || options.jobs <= 1;
    if existing_tables == 0 {
        // Nothing to lose: restore straight into the database, as pg_restore alone would.
        match restore_into(bins, url, path, format, options.jobs, interrupt).await {
            Ok(Ran::Finished) => {}
            Ok(Ran::Stopped { gone }) => {
                let tool = tool_of(format);
                let mut cleaned = vec![stopped(tool, gone)];
                let (state, hint) =
                    empty_again(url, &admin_url, tool, single_transaction, &mut cleaned).await;
                return Err(interrupt.error_hinted(cleaned, state, hint));
            }
            Err(error) => {
                if !single_transaction {
                    // Parallel jobs cannot share one transaction: make the database empty again.
                    pg::recreate_database(&admin_url, url).await?;
                }
                return Err(error);
            }
        }
        // From here the restore is complete: an interrupt now is not acted on.
        let (tables, rows) = describe(url, options.verify).await?;
        let differences = match &rows {
            Some(rows) => differences(&dump_row_counts(bins, path, format)?, rows),
            None => Vec::new(),
        };
        return Ok(RestoreReport {
            format,
            tables,
            rows,
            differences,
            replaced: true,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let scratch = format!("{}__nanika_restore", url.database);
    admin(
        &admin_url,
        format!("DROP DATABASE IF EXISTS {}", quote_ident(&scratch)),
    )
    .await?;
    admin(
        &admin_url,
        format!("CREATE DATABASE {} OWNER {owner}", quote_ident(&scratch)),
    )
    .await?;
    let mut scratch_url = url.clone();
    scratch_url.database = scratch.clone();
    let interrupted = |cleaned: Vec<String>| Err(interrupt.error(cleaned, unchanged.clone()));
    match restore_into(bins, &scratch_url, path, format, options.jobs, interrupt).await {
        Ok(Ran::Finished) => {}
        Ok(Ran::Stopped { gone }) => {
            let dropped = drop_scratch(&admin_url, &scratch).await;
            return interrupted(vec![stopped(tool_of(format), gone), dropped]);
        }
        Err(error) => {
            let _ = drop_scratch(&admin_url, &scratch).await;
            return Err(error);
        }
    }
    // Counting every row of a large restore takes a while: an interrupt ends it too.
    let compared = match race(interrupt, compare(url, &scratch_url, false)).await {
        Some(Ok(compared)) if !interrupt.is_raised() => compared,
        Some(Err(error)) => {
            let _ = drop_scratch(&admin_url, &scratch).await;
            return Err(error);
        }
        // Interrupted while comparing, or before the swap: the real database is still untouched.
        Some(Ok(_)) | None => {
            let dropped = drop_scratch(&admin_url, &scratch).await;
            return interrupted(vec![dropped]);
        }
    };
    let (tables, _, _) = compared;
    let replace = existing_tables == 0 || options.clean;
    if replace {
        // Not interrupted: a swap stopped half-way would leave the database renamed away.
        swap_in(url, &admin_url, &scratch).await?;
    } else {
        admin(
            &admin_url,
            format!("DROP DATABASE IF EXISTS {}", quote_ident(&scratch)),
        )
        .await?;
    }
    // The database as it is now against the dump's own contents, never against the database it
    // replaced.
    let (rows, differences) = if options.verify {
        let (_, rows) = describe(url, true).await?;
        let rows = rows.unwrap_or_default();
        let differences = differences(&dump_row_counts(bins, path, format)?, &rows);
        (Some(rows), differences)
    } else {
        (None, Vec::new())
    };
    Ok(RestoreReport {
        format,
        tables,
        rows,
        differences,
        replaced: replace,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The tool that restores `format`.
fn tool_of(format: Format) -> &'static str {
    match format {
        Format::Sql => "psql",
        Format::Custom | Format::Directory => "pg_restore",
    }
}

/// After a restore into an empty database was stopped: makes it empty again, adding what was
/// done to `cleaned`; returns the state and, when that failed, what to do.
async fn empty_again(
    url: &DatabaseUrl,
    admin_url: &DatabaseUrl,
    tool: &str,
    single_transaction: bool,
    cleaned: &mut Vec<String>,
) -> (String, Option<String>) {
    let empty = format!("{} is empty again, as before the restore", url.database);
    if single_transaction && pg::end_sessions(admin_url, &tool::app_name(tool)).await {
        // Its one transaction ended with its session: the server has rolled it back.
        if matches!(
            tokio::time::timeout(CLEANUP_LIMIT, table_count(url)).await,
            Ok(Ok(0))
        ) {
            cleaned.push(format!(
                "ended {tool}'s session, so the server rolled back its transaction"
            ));
            return (empty, None);
        }
    }
    // Parallel jobs commit as they go: only a new database is surely as empty as the old one.
    match tokio::time::timeout(CLEANUP_LIMIT, pg::recreate_database(admin_url, url)).await {
        Ok(Ok(())) => {
            cleaned.push(format!(
                "dropped {} and created it again, empty, owned by {}",
                url.database, url.user
            ));
            (empty, None)
        }
        Ok(Err(error)) => (
            format!("{} may hold part of the restore: {error}", url.database),
            Some("empty it with `nanika db reset --yes`, then restore again".into()),
        ),
        Err(_) => (
            format!(
                "{} may hold part of the restore: dropping it took longer than {} s",
                url.database,
                CLEANUP_LIMIT.as_secs()
            ),
            Some("empty it with `nanika db reset --yes`, then restore again".into()),
        ),
    }
}

/// Drops the scratch database, ending its sessions; what was done, for a message.
async fn drop_scratch(admin_url: &DatabaseUrl, scratch: &str) -> String {
    let sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(scratch)
    );
    match tokio::time::timeout(CLEANUP_LIMIT, admin(admin_url, sql.clone())).await {
        Ok(Ok(())) => format!("dropped the scratch database {scratch}"),
        Ok(Err(error)) => {
            format!("could not drop the scratch database {scratch} ({error}); drop it with `{sql}`")
        }
        Err(_) => format!(
            "could not drop the scratch database {scratch} within {} s; drop it with `{sql}`",
            CLEANUP_LIMIT.as_secs()
        ),
    }
}

/// The restored (scratch) database's tables and, when `verify`, their row counts and the tables
/// whose count differs from the real database's.
async fn compare(
    url: &DatabaseUrl,
    scratch_url: &DatabaseUrl,
    verify: bool,
) -> Result<(Vec<String>, Option<RowCounts>, Vec<(String, i64, i64)>)> {
    let (tables, rows) = describe(scratch_url, verify).await?;
    let mut differences = Vec::new();
    if let Some(tables) = &rows {
        let mut conn = pg::connect(url, None).await?;
        let current = pg::table_row_counts(&mut conn).await?;
        pg::close(conn).await;
        for (table, count) in tables {
            let now = current
                .iter()
                .find(|(t, _)| t == table)
                .map_or(-1, |(_, c)| *c);
            if now != *count {
                differences.push((table.clone(), *count, now));
            }
        }
        for (table, count) in &current {
            if !tables.iter().any(|(t, _)| t == table) {
                differences.push((table.clone(), -1, *count));
            }
        }
    }
    Ok((tables, rows, differences))
}

/// Each table's row count as the dump itself holds it: the lines of its `COPY … FROM stdin`
/// block (or its `INSERT` statements), read from the SQL file or from `pg_restore --data-only -f -`
/// for the archive formats, streaming. Independent of any database.
pub fn dump_row_counts(bins: &PostgresBinaries, path: &Path, format: Format) -> Result<RowCounts> {
    use std::io::BufRead;
    let count = |reader: &mut dyn BufRead| -> std::io::Result<RowCounts> {
        let mut counts: Vec<(String, i64)> = Vec::new();
        let mut current: Option<usize> = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if let Some(index) = current {
                if text == "\\." {
                    current = None;
                } else {
                    counts[index].1 += 1;
                }
            } else if let Some(rest) = text.strip_prefix("COPY ")
                && text.ends_with("FROM stdin;")
            {
                let name = table_name(rest);
                current = Some(slot(&mut counts, name));
            } else if let Some(rest) = text.strip_prefix("INSERT INTO ") {
                let index = slot(&mut counts, table_name(rest));
                counts[index].1 += 1;
            }
        }
        Ok(counts)
    };
    let failed =
        |e: std::io::Error| OpsError::io(format!("cannot read the rows of {}", path.display()))(e);
    match format {
        Format::Sql => {
            let file = fs_err::File::open(path).map_err(failed)?;
            count(&mut std::io::BufReader::new(file)).map_err(failed)
        }
        Format::Custom | Format::Directory => {
            let mut child = std::process::Command::new(bins.tool("pg_restore"))
                .args(["--data-only", "-f", "-"])
                .arg(path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(failed)?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| failed(std::io::Error::other("pg_restore gave no output")))?;
            let counts = count(&mut std::io::BufReader::new(stdout));
            let status = child.wait().map_err(failed)?;
            let counts = counts.map_err(failed)?;
            if !status.success() {
                return Err(failed(std::io::Error::other(format!(
                    "pg_restore --data-only failed ({status})"
                ))));
            }
            Ok(counts)
        }
    }
}

/// `schema.table` from the start of a `COPY`/`INSERT INTO` target, quotes removed.
fn table_name(rest: &str) -> String {
    let mut name = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '(' if !quoted => break,
            c => name.push(c),
        }
    }
    name
}

fn slot(counts: &mut Vec<(String, i64)>, name: String) -> usize {
    match counts.iter().position(|(n, _)| *n == name) {
        Some(index) => index,
        None => {
            counts.push((name, 0));
            counts.len() - 1
        }
    }
}

/// The tables whose counts differ between the dump and the database: (table, in the dump, in the
/// database), -1 where one side lacks the table. Tables the dump holds no data for count 0.
fn differences(dump: &[(String, i64)], database: &[(String, i64)]) -> Vec<(String, i64, i64)> {
    let mut found = Vec::new();
    for (table, rows) in database {
        let expected = dump.iter().find(|(t, _)| t == table).map_or(0, |(_, n)| *n);
        if expected != *rows {
            found.push((table.clone(), expected, *rows));
        }
    }
    for (table, rows) in dump {
        if !database.iter().any(|(t, _)| t == table) {
            found.push((table.clone(), *rows, -1));
        }
    }
    found
}

/// The restored database's tables and, when `count`, their row counts.
async fn describe(url: &DatabaseUrl, count: bool) -> Result<(Vec<String>, Option<RowCounts>)> {
    let mut conn = pg::connect(url, None).await?;
    let tables = pg::tables(&mut conn)
        .await?
        .into_iter()
        .map(|(schema, table)| format!("{schema}.{table}"))
        .collect();
    let rows = if count {
        Some(pg::table_row_counts(&mut conn).await?)
    } else {
        None
    };
    pg::close(conn).await;
    Ok((tables, rows))
}

async fn restore_into(
    bins: &PostgresBinaries,
    url: &DatabaseUrl,
    path: &Path,
    format: Format,
    jobs: u32,
    interrupt: &Interrupt,
) -> Result<Ran> {
    // `--no-password`: in a process group of its own, a password prompt would stop the tool
    // for good (SIGTTIN) instead of failing.
    let (command, shown) = match format {
        Format::Sql => {
            let mut command = Command::new(bins.tool("psql"));
            command
                .args([
                    "-X",
                    "-q",
                    "--no-password",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    "-f",
                ])
                .arg(path);
            (
                command,
                format!("psql --single-transaction -f {}", path.display()),
            )
        }
        Format::Custom | Format::Directory => {
            let mut command = Command::new(bins.tool("pg_restore"));
            command.args([
                "--exit-on-error",
                "--no-owner",
                "--no-password",
                "-d",
                &url.database,
            ]);
            if jobs > 1 {
                command.arg("-j").arg(jobs.to_string());
            } else {
                command.arg("--single-transaction");
            }
            command.arg(path);
            (
                command,
                format!("pg_restore --exit-on-error {}", path.display()),
            )
        }
    };
    tool::run_async(command, tool_of(format), url, shown, interrupt).await
}

/// Replaces `url`'s database with `scratch`: ends other connections, renames, drops the old one.
async fn swap_in(url: &DatabaseUrl, admin_url: &DatabaseUrl, scratch: &str) -> Result<()> {
    let old = format!("{}__nanika_old", url.database);
    let mut conn = pg::connect(admin_url, Some("postgres")).await?;
    let run = |sql: String| sqlx::AssertSqlSafe(sql);
    let mut result = Ok(());
    for sql in [
        format!("DROP DATABASE IF EXISTS {}", quote_ident(&old)),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            url.database.replace('\'', "''")
        ),
        format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&url.database),
            quote_ident(&old)
        ),
        format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(scratch),
            quote_ident(&url.database)
        ),
        format!("DROP DATABASE {}", quote_ident(&old)),
    ] {
        // A connection that was ending may still hold the database for a moment.
        let mut attempt = 0;
        loop {
            match sqlx::query(run(sql.clone())).execute(&mut conn).await {
                Ok(_) => break,
                Err(sqlx::Error::Database(db))
                    if db.code().as_deref() == Some("55006") && attempt < 50 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => {
                    result = Err(OpsError::sql(format!("`{sql}` failed"))(error));
                    break;
                }
            }
        }
        if result.is_err() {
            break;
        }
    }
    pg::close(conn).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn database_names_never_lead_out_of_backups() {
        for (name, safe) in [
            ("nanika_game", "nanika_game"),
            ("../escape", "__escape"),
            ("../../etc/cron.d/x", "____etc_cron.d_x"),
            ("a/b", "a_b"),
            ("..", "_"),
            ("...", "_."),
            (".hidden", "_hidden"),
            ("ゲーム", "___"),
            ("", "database"),
        ] {
            let got = file_name_part(name);
            assert_eq!(got, safe, "{name}");
            assert!(
                !got.contains('/') && !got.contains("..") && !got.starts_with('.'),
                "{got}"
            );
        }
        let root = Path::new("/home/dev/game");
        let path = default_path(root, "../../escape", Format::Custom, "20250101-000000");
        assert_eq!(path.parent(), Some(root.join("backups").as_path()));
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("escape-20250101-000000.dump")
        );
    }

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
        dir
    }

    #[test]
    fn only_a_projects_backups_directory_is_created_and_it_is_owner_only() {
        let dir = project();
        let (opened, name) = output_place(&dir.path().join("backups/x.dump")).unwrap();
        assert_eq!(name, "x.dump");
        let mode = std::fs::metadata(opened.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);

        let missing = dir.path().join("exports/deeper/x.dump");
        let refused = output_place(&missing).unwrap_err();
        assert!(refused.to_string().contains("exports/deeper"), "{refused}");
        assert!(!dir.path().join("exports").exists(), "never created");

        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        output_place(&shared.join("x.dump")).unwrap();
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "an existing directory keeps its mode");
    }

    #[test]
    fn a_backups_link_in_a_project_is_not_followed() {
        let dir = project();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("backups")).unwrap();
        let refused = output_place(&dir.path().join("backups/x.dump")).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert!(open_project_backups(&dir.path().join("backups")).is_err());
    }
}
