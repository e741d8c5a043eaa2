//! PostgreSQL under the native runtime: the data directory's checks, `initdb`, and the server's
//! command line (the committed config plus only the overrides native needs).

use super::binaries::{POSTGRES_MAJOR, PostgresBinaries};
use super::cluster_cache::{ClusterCache, Pristine};
use super::layout::{INITDB_SCRATCH, StateLayout};
use super::procfs;
use super::safe_fs::{self, Dir, Kind};
use crate::error::{Result, RuntimeError};
use crate::health::{PostgresTarget, quote_ident};
use crate::{Progress, Service};
use fs_err as fs;
use nanika_config::Secret;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Nothing yet: `initdb` must run.
    Missing,
    /// A PostgreSQL 15 cluster PostgreSQL will accept.
    Ready,
}

/// Checks the data directory: the right major version, the right owner and permissions.
/// Never changes it: a directory nanika did not expect is reported, not repaired or re-initialised.
pub fn check_data_dir(layout: &StateLayout) -> Result<DataDir> {
    let data = layout.postgres_data();
    let meta = match fs::metadata(&data) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Missing),
        Err(e) => {
            return Err(RuntimeError::io(format!("cannot read {}", data.display()))(
                e,
            ));
        }
    };
    let version = fs::read_to_string(data.join("PG_VERSION"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    if version.is_empty() {
        return Err(RuntimeError::DataDirPermissions {
            path: data.clone(),
            problem: "exists but holds no PostgreSQL cluster (no PG_VERSION)".into(),
            fix: format!(
                "mv {} {}.unknown  # keep it, then `nanika up` initialises a fresh one",
                data.display(),
                data.display()
            ),
        });
    }
    if version != POSTGRES_MAJOR.to_string() {
        return Err(RuntimeError::DataDirVersion {
            path: data,
            found: version,
            expected: POSTGRES_MAJOR,
        });
    }
    let (uid, name) = match &layout.server_user {
        Some(user) => (user.uid, user.name.clone()),
        None => (nix::unistd::Uid::effective().as_raw(), "you".to_string()),
    };
    if meta.uid() != uid {
        return Err(RuntimeError::DataDirPermissions {
            path: data.clone(),
            problem: format!(
                "is owned by uid {}, but PostgreSQL runs as {name} (uid {uid})",
                meta.uid()
            ),
            fix: format!("chown -R {uid} {}", data.display()),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode != 0o700 && mode != 0o750 {
        return Err(RuntimeError::DataDirPermissions {
            path: data.clone(),
            problem: format!("has permissions {mode:04o}; PostgreSQL accepts only 0700 or 0750"),
            fix: format!("chmod 700 {}", data.display()),
        });
    }
    Ok(DataDir::Ready)
}

pub(crate) fn as_server_user(command: &mut Command, layout: &StateLayout) {
    if let Some(user) = &layout.server_user {
        // std also drops root's supplementary groups when it sets the uid.
        command.uid(user.uid).gid(user.gid);
    }
}

/// The cluster's superuser, nanika's own: the app's role is an ordinary one.
pub const ADMIN_ROLE: &str = "postgres";

/// `initdb`'s flags besides the superuser and its password: UTF-8 without a host-dependent
/// locale, scram-sha-256 for every connection. Part of the cluster cache's key: changing them
/// changes the key, so no cluster made with the old ones is copied.
pub const INITDB_ARGS: &[&str] = &[
    "--auth",
    "scram-sha-256",
    "--encoding",
    "UTF8",
    "--no-locale",
    "--no-instructions",
];

/// Initialises the cluster: UTF-8 without a host-dependent locale, scram-sha-256 for every
/// connection, `user` with `password` as its superuser. Writes into
/// a scratch directory that is renamed into place only when complete, so an interrupted `initdb`
/// leaves nothing that could be mistaken for a cluster. Returns remarks for the user (a leftover
/// scratch directory that had to be moved aside).
pub fn initdb(
    binaries: &PostgresBinaries,
    layout: &StateLayout,
    user: &str,
    password: &Secret,
) -> Result<Vec<String>> {
    let home = layout.open_postgres_home()?;
    let notes = clear_scratch(layout, &home)?.into_iter().collect();
    let scratch = layout.postgres_data_in_progress();
    let pwfile_name = ".initdb-password";
    let pwfile = home.join(pwfile_name);
    home.remove_file(pwfile_name)?;
    {
        let mut file = home.create_file(pwfile_name, 0o600)?;
        layout.give_file_to_server(&file, &pwfile)?;
        std::io::Write::write_all(&mut file, password.expose().as_bytes())
            .map_err(RuntimeError::io("cannot write the initdb password file"))?;
    }
    let mut command = Command::new(binaries.tool("initdb"));
    command
        .arg("-D")
        .arg(&scratch)
        .args(["--username", user])
        .args(INITDB_ARGS)
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(&layout.postgres_home)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, recorded with its start time: if this nanika is killed, the
        // next `up` can prove the orphaned initdb (and the backend it runs) is nanika's own.
        .process_group(0);
    as_server_user(&mut command, layout);
    let output = command.spawn().and_then(|child| {
        record_initdb(layout, child.id());
        child.wait_with_output()
    });
    let _ = fs::remove_file(initdb_record(layout));
    let _ = home.remove_file(pwfile_name);
    let output = output.map_err(RuntimeError::io(format!(
        "cannot run {}",
        binaries.tool("initdb").display()
    )))?;
    if !output.status.success() {
        return Err(RuntimeError::Command {
            command: format!(
                "initdb -D {} --username {user} --auth scram-sha-256",
                scratch.display()
            ),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    home.rename_new(INITDB_SCRATCH, "data")?;
    Ok(notes)
}

/// Initialises the cluster as a copy of the cache's pristine one (built first when the cache has
/// none it can trust; see [`super::cluster_cache`]), with `password` for the superuser
/// ([`ADMIN_ROLE`], the only one the cache makes) and the app's role and database already in
/// it. The copy is the cache's spare one, moved into the scratch directory with one rename and
/// checked against the cache's manifest, when one is ready on this filesystem; else it is made
/// there by the server user (`cp --reflink=auto`: a reflink where the filesystem has them).
/// Either way it is completed there by one single-user session, and renamed into place only
/// then. Returns remarks for the user.
///
/// Unlike `initdb`, the copy is not fsynced: flushing its ~1 000 files took 0.2–3 s on this
/// machine's disk (fsync latency varies with the load), more than the copy saves. The kernel
/// writes it back within about 30 s; a power loss or kernel crash inside that window can leave
/// the new cluster unusable, and since it is at most seconds old, `nanika down --volumes` and
/// `up` recreate it. initdb's own output (the cache) is fsynced.
///
/// The copy is sparse (`--sparse=always`): the only all-zero blocks of a fresh cluster are the
/// unwritten tail of its first WAL segment (11 of its 16 MiB), which PostgreSQL reads as the end
/// of the WAL whether the blocks are zeros on disk or holes, and fills as it writes (as with its
/// own `wal_init_zero = off`). A third less to write, where writing is most of the cost.
pub fn init_from_cache(
    binaries: &PostgresBinaries,
    layout: &StateLayout,
    cache: &ClusterCache,
    password: &Secret,
    app: &PostgresTarget,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let home = layout.open_postgres_home()?;
    let mut notes: Vec<String> = clear_scratch(layout, &home)?.into_iter().collect();
    let pristine = cache.pristine(binaries, layout.server_user.as_ref(), progress)?;
    if let Some(why) = pristine.built.as_ref().filter(|why| *why != "missing") {
        notes.push(format!(
            "the cluster cache {} was {why}; nanika did not use it and built it again",
            pristine.entry.display()
        ));
    }
    let scratch = layout.postgres_data_in_progress();
    if pristine.take_spare(&home, INITDB_SCRATCH) {
        progress.step(
            Service::Postgres,
            &format!(
                "initialising the cluster (the spare copy of the cached cluster {})",
                pristine.entry.display()
            ),
        );
        drop(pristine);
    } else {
        progress.step(
            Service::Postgres,
            &format!(
                "initialising the cluster (copying the cached cluster {})",
                pristine.entry.display()
            ),
        );
        copy_pristine(layout, pristine, &scratch)?;
    }
    complete_copy(binaries, layout, &scratch, password, app)?;
    home.rename_new(INITDB_SCRATCH, "data")?;
    Ok(notes)
}

/// Copies the pristine cluster to `scratch` as the server user (every file it makes is the
/// server's, and it can write nowhere else), then lets the cache go.
fn copy_pristine(layout: &StateLayout, pristine: Pristine, scratch: &Path) -> Result<()> {
    let mut command = Command::new("cp");
    command
        .args([
            "-a",
            "--reflink=auto",
            "--sparse=always",
            "--no-target-directory",
        ])
        .arg(&pristine.data)
        .arg(scratch)
        .current_dir(&layout.postgres_home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_server_user(&mut command, layout);
    let output = command.output();
    let source = pristine.data.clone();
    // The copy is complete: `cache clear` and rebuilds may go on.
    drop(pristine);
    let output = output.map_err(RuntimeError::io("cannot run cp"))?;
    if !output.status.success() {
        return Err(RuntimeError::Command {
            command: format!(
                "cp -a --reflink=auto --sparse=always --no-target-directory {} {}",
                source.display(),
                scratch.display()
            ),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Completes the (stopped) copy in `data` through one single-user `postgres --single`: gives
/// [`ADMIN_ROLE`] its password, and creates the app's role (unless it is [`ADMIN_ROLE`]) and
/// database as the running server would (see `health::Prober::bootstrap`, which then finds them
/// made). A single-user session listens on nothing, so the cached cluster's throwaway password
/// is never accepted by a server anyone can reach, and it costs a fraction of the same work
/// through a started server: `CREATE DATABASE … STRATEGY FILE_COPY` copies `template1`'s files
/// once, where the server's default strategy also writes them all to the WAL and flushes it.
/// Passwords go through a pipe, never a command line, and no statement is ever logged
/// (`log_min_error_statement=panic`); PostgreSQL stores only their SCRAM verifiers
/// (`password_encryption` is scram-sha-256).
fn complete_copy(
    binaries: &PostgresBinaries,
    layout: &StateLayout,
    data: &Path,
    password: &Secret,
    app: &PostgresTarget,
) -> Result<()> {
    let script = single_user_script(password, app)?;
    let mut command = Command::new(binaries.tool("postgres"));
    command
        .args(["--single", "-j", "-D"])
        .arg(data)
        .args([
            "-c",
            "exit_on_error=on",
            "-c",
            "log_min_error_statement=panic",
            "-c",
            "log_statement=none",
            "-c",
            "log_checkpoints=off",
            // The copy around it is not fsynced either (see `init_from_cache`): waiting for
            // this session's files alone would buy nothing.
            "-c",
            "fsync=off",
            "postgres",
        ])
        .current_dir(&layout.postgres_home)
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_server_user(&mut command, layout);
    let tool = binaries.tool("postgres");
    let output = command
        .spawn()
        .and_then(|mut child| {
            // Waited for even when the write fails: its stdin closes, and it ends.
            let written = child.stdin.take().map_or(Ok(()), |mut stdin| {
                std::io::Write::write_all(&mut stdin, script.as_bytes())
            });
            let output = child.wait_with_output()?;
            written.map(|()| output)
        })
        .map_err(RuntimeError::io(format!("cannot run {}", tool.display())))?;
    if !output.status.success() {
        return Err(RuntimeError::Command {
            command: format!(
                "postgres --single -D {} (ALTER ROLE {ADMIN_ROLE} PASSWORD …, CREATE ROLE …, CREATE DATABASE …)",
                data.display()
            ),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// The databases `initdb` makes: the app's database is created only when it is none of them.
const INITDB_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// The statements of [`complete_copy`]'s session, each ended as `-j` wants: `;` and an empty line.
fn single_user_script(password: &Secret, app: &PostgresTarget) -> Result<String> {
    fn literal(secret: &Secret, variable: &str) -> Result<String> {
        // `-j` ends a statement at `;` and an empty line, so a line break in a password is no
        // end, but that sequence would be.
        if secret.expose().contains(";\n\n") {
            return Err(RuntimeError::Other(format!(
                "{variable} contains `;` followed by an empty line, which a single-user PostgreSQL reads as the end of the statement; choose another {variable}"
            )));
        }
        Ok(format!("'{}'", secret.expose().replace('\'', "''")))
    }
    let mut script = format!(
        "ALTER ROLE {ADMIN_ROLE} PASSWORD {};\n\n",
        literal(password, "POSTGRES_PASSWORD")?
    );
    let owner = if app.user == ADMIN_ROLE {
        String::new()
    } else {
        let user = quote_ident(&app.user);
        script += &format!(
            "CREATE ROLE {user} LOGIN CREATEDB PASSWORD {};\n\n",
            literal(&app.password, "POSTGRES_PASSWORD")?
        );
        format!(" OWNER {user}")
    };
    if !INITDB_DATABASES.contains(&app.database.as_str()) {
        script += &format!(
            "CREATE DATABASE {}{owner} STRATEGY FILE_COPY;\n\n",
            quote_ident(&app.database)
        );
    }
    Ok(script)
}

/// Where the pid and start time of a running `initdb` are kept.
fn initdb_record(layout: &StateLayout) -> std::path::PathBuf {
    layout.run.join("initdb.pid")
}

fn record_initdb(layout: &StateLayout, pid: u32) {
    if let Some(started) = procfs::start_time(pid) {
        let _ = fs::write(initdb_record(layout), format!("{pid} {started}\n"));
    }
}

/// Stops the `initdb` an earlier, killed `nanika up` started, when it still runs: only that
/// process group, and only when its leader has the recorded pid *and* start time (a pid reused
/// by another program has another start time).
fn stop_recorded_initdb(layout: &StateLayout) {
    let record = initdb_record(layout);
    let Ok(text) = std::fs::read_to_string(&record) else {
        return;
    };
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    if let (Some(Some(pid)), Some(Some(started))) = (fields.next(), fields.next())
        && let Ok(pid) = u32::try_from(pid)
        && procfs::start_time(pid) == Some(started)
        && procfs::process_group(pid) == Some(pid)
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !procfs::group_members(pid).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let _ = fs::remove_file(&record);
}

/// Clears the scratch directory an interrupted `initdb` left. It never holds user data, but
/// another program may have a file in it open: nanika signals only processes it can prove it
/// started, so a scratch directory still in use is moved aside under a fresh name instead of
/// being deleted under that program, and the returned remark names who uses it.
fn clear_scratch(layout: &StateLayout, home: &Dir) -> Result<Option<String>> {
    match home.kind(INITDB_SCRATCH)? {
        Kind::Missing => return Ok(None),
        Kind::Dir => {}
        // Not something initdb makes: removed as a name, never followed.
        Kind::Symlink(_) | Kind::Other => {
            home.remove_file(INITDB_SCRATCH)?;
            return Ok(None);
        }
    }
    stop_recorded_initdb(layout);
    let scratch = home.join(INITDB_SCRATCH);
    let real = std::fs::canonicalize(&scratch).unwrap_or_else(|_| scratch.clone());
    let users = procfs::users_of(&real);
    if users.is_empty() {
        safe_fs::remove_tree(&scratch)?;
        return Ok(None);
    }
    let aside = format!("{INITDB_SCRATCH}.{}", safe_fs::random_hex(4)?);
    home.rename_new(INITDB_SCRATCH, &aside)?;
    Ok(Some(format!(
        "{} was left by an interrupted initdb but is in use by {}; nanika stops only processes it started, so it moved it aside to {} (remove it once they are done)",
        scratch.display(),
        users
            .iter()
            .map(|pid| procfs::describe(*pid))
            .collect::<Vec<_>>()
            .join(", "),
        home.join(&aside).display()
    )))
}

/// Copies the committed `postgresql.conf`, followed by `extra` (settings nanika adds, each block
/// with a comment saying why), to where the server user can read it: into a new file nanika
/// creates (never through a link), renamed over the old copy.
pub fn install_config(project_conf: &Path, layout: &StateLayout, extra: &str) -> Result<()> {
    let home = layout.open_postgres_home()?;
    let mut text = fs::read(project_conf).map_err(RuntimeError::io(format!(
        "cannot read {}",
        project_conf.display()
    )))?;
    text.extend_from_slice(extra.as_bytes());
    let temp_name = "postgresql.conf.tmp";
    let temp = home.join(temp_name);
    home.remove_file(temp_name)?;
    {
        let mut file = home.create_file(temp_name, 0o600)?;
        std::io::Write::write_all(&mut file, &text)
            .map_err(RuntimeError::io(format!("cannot write {}", temp.display())))?;
        layout.give_file_to_server(&file, &temp)?;
    }
    home.rename_over(temp_name, "postgresql.conf")
}

/// The server's program and arguments: the committed config, plus data directory, port,
/// loopback-only listening and the socket directory.
pub fn server_args(
    binaries: &PostgresBinaries,
    layout: &StateLayout,
    port: u16,
) -> (std::path::PathBuf, Vec<String>) {
    node_args(binaries, layout, &layout.postgres_data(), port)
}

/// [`server_args`] for a node whose data directory is `data` (the primary's or a replica's).
pub fn node_args(
    binaries: &PostgresBinaries,
    layout: &StateLayout,
    data: &Path,
    port: u16,
) -> (std::path::PathBuf, Vec<String>) {
    let args = vec![
        "-D".into(),
        data.display().to_string(),
        "-c".into(),
        format!("config_file={}", layout.postgres_conf().display()),
        "-c".into(),
        format!("port={port}"),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        format!(
            "unix_socket_directories={}",
            layout.postgres_socket_dir().display()
        ),
        "-c".into(),
        format!("{PROJECT_SETTING}={}", project_marker(layout)),
    ];
    (binaries.tool("postgres"), args)
}

/// A custom setting every native server of nanika carries, readable by any role with `SHOW`: it
/// names the project the server belongs to, so a command can prove whose server it reached.
pub const PROJECT_SETTING: &str = "nanika.project";

/// The value of [`PROJECT_SETTING`] for this project: its directory. Two checkouts, or a copy of
/// one, differ in it; the message for a server of another project can name that project.
pub fn project_marker(layout: &StateLayout) -> String {
    layout.project.to_string_lossy().into_owned()
}

/// What `postmaster.pid` says about a server on this data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Postmaster {
    /// No lock file, or one whose process is gone.
    NotRunning,
    /// A postmaster of this data directory runs with this pid.
    Running(u32),
    /// The lock file names a live process that is not a postmaster of this data directory.
    Foreign(u32),
}

/// Reads `postmaster.pid` and checks the process it names.
pub fn postmaster(layout: &StateLayout) -> Postmaster {
    let data = layout.postgres_data();
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return Postmaster::NotRunning;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return Postmaster::NotRunning;
    };
    if !procfs::is_alive(pid) {
        return Postmaster::NotRunning;
    }
    if is_postmaster_of(pid, &data) {
        Postmaster::Running(pid)
    } else {
        Postmaster::Foreign(pid)
    }
}

/// What nanika reads of `postmaster.pid`, which the postmaster writes as it starts: its pid, then
/// (once it listens) its port and addresses, and last its status, `ready` once it accepts
/// connections (PostgreSQL's `LOCK_FILE_LINE_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFile {
    /// The postmaster's pid (line 1).
    pub pid: u32,
    /// Its port (line 4).
    pub port: Option<u16>,
    /// The addresses it listens on (line 6), once it has bound them.
    pub listen: Option<String>,
    /// Its status (line 8): `starting`, `ready`, `stopping`, `standby`.
    pub status: Option<String>,
}

impl LockFile {
    /// Reads the text of `postmaster.pid`; `None` when it does not even name a pid.
    pub fn parse(text: &str) -> Option<LockFile> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let line = |n: usize| lines.get(n - 1).copied().filter(|l| !l.is_empty());
        Some(LockFile {
            pid: line(1)?.parse().ok()?,
            port: line(4).and_then(|p| p.parse().ok()),
            listen: line(6).map(str::to_string),
            status: line(8).map(str::to_string),
        })
    }
}

/// Whether this project's PostgreSQL accepts connections on `port`, learnt without connecting to
/// it: `postmaster.pid` says `ready` for that port, and names a live postmaster of this data
/// directory (a killed server's file can say `ready` too). A connect to a port nobody has bound
/// yet, inside the kernel's ephemeral range, can connect to itself and then hold the port (in
/// TIME-WAIT) against the server's own bind; and the "starting up" refusals a premature
/// connection gets would only fill the server's log.
pub fn accepting(layout: &StateLayout, port: u16) -> bool {
    accepting_in(layout, DATA_DIR, port)
}

/// The data directory's name in PostgreSQL's home.
pub const DATA_DIR: &str = "data";

/// [`accepting`] for the node whose data directory is `data_dir` in PostgreSQL's home (a
/// replica's, `replica-1`).
pub fn accepting_in(layout: &StateLayout, data_dir: &str, port: u16) -> bool {
    // The data directory is the server user's: the file is read without following a link and
    // only as far as a lock file goes.
    let text = layout
        .open_postgres_home()
        .and_then(|home| {
            home.open_dir(data_dir)?
                .map(|data| data.read_small_file("postmaster.pid", 4096))
                .transpose()
        })
        .ok()
        .flatten()
        .flatten();
    let Some(lock) = text.and_then(|t| LockFile::parse(&String::from_utf8_lossy(&t))) else {
        return false;
    };
    lock.status.as_deref() == Some("ready")
        && lock.port == Some(port)
        && is_postmaster_of(lock.pid, &layout.postgres_home.join(data_dir))
}

/// Whether `pid` is a live postgres whose working directory is `data` (a postmaster runs in its
/// data directory).
fn is_postmaster_of(pid: u32, data: &Path) -> bool {
    procfs::is_alive(pid)
        && procfs::cmdline(pid).is_some_and(|c| c.first().is_some_and(|p| p.contains("postgres")))
        && procfs::cwd(pid).is_some_and(|cwd| std::fs::canonicalize(data).is_ok_and(|d| d == cwd))
}

/// Removes a `postmaster.pid` that names a live process which is not PostgreSQL (PostgreSQL itself
/// would refuse to start, thinking another server runs). Returns that process, described.
pub fn clear_foreign_lock(layout: &StateLayout) -> Option<String> {
    match postmaster(layout) {
        Postmaster::Foreign(pid) => {
            let _ = fs::remove_file(layout.postgres_data().join("postmaster.pid"));
            Some(procfs::describe(pid))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(user: &str, password: &str, database: &str) -> PostgresTarget {
        PostgresTarget {
            host: "127.0.0.1".into(),
            port: 5432,
            user: user.into(),
            password: Secret::new(password),
            database: database.into(),
        }
    }

    #[test]
    fn the_single_user_script_quotes_what_it_is_given() {
        let script =
            single_user_script(&Secret::new("a'b"), &app("o\"brien", "c'd\ne", "game\"db"))
                .unwrap();
        assert_eq!(
            script,
            "ALTER ROLE postgres PASSWORD 'a''b';\n\n\
             CREATE ROLE \"o\"\"brien\" LOGIN CREATEDB PASSWORD 'c''d\ne';\n\n\
             CREATE DATABASE \"game\"\"db\" OWNER \"o\"\"brien\" STRATEGY FILE_COPY;\n\n"
        );
    }

    #[test]
    fn the_superuser_as_the_app_gets_no_second_role_and_initdb_databases_are_not_made_again() {
        let script =
            single_user_script(&Secret::new("pw"), &app("postgres", "pw", "postgres")).unwrap();
        assert_eq!(script, "ALTER ROLE postgres PASSWORD 'pw';\n\n");
        let script =
            single_user_script(&Secret::new("pw"), &app("postgres", "pw", "game")).unwrap();
        assert!(script.ends_with("CREATE DATABASE \"game\" STRATEGY FILE_COPY;\n\n"));
    }

    #[test]
    fn a_password_that_would_end_a_statement_is_refused() {
        let refused = single_user_script(
            &Secret::new("pw"),
            &app("game", "x;\n\nDROP ROLE postgres", "game"),
        );
        assert!(refused.is_err());
    }

    #[test]
    fn the_lock_file_says_when_the_server_accepts_connections() {
        let starting = "4242\n/var/lib/nanika/x/data\n1700000000\n38432\n/tmp/s\n";
        assert_eq!(
            LockFile::parse(starting),
            Some(LockFile {
                pid: 4242,
                port: Some(38432),
                listen: None,
                status: None
            })
        );
        let ready = "4242\n/d\n1700000000\n38432\n/tmp/s\n127.0.0.1\n  5432001   0\nready   \n";
        let lock = LockFile::parse(ready).unwrap();
        assert_eq!(lock.listen.as_deref(), Some("127.0.0.1"));
        assert_eq!(lock.status.as_deref(), Some("ready"));
        assert_eq!(LockFile::parse(""), None);
        assert_eq!(LockFile::parse("not a pid\n"), None);
    }
}
