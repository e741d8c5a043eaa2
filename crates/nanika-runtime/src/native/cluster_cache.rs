//! The cached pristine cluster: `initdb` runs once per installation and server user, and a new
//! project's cluster is a copy of that one.
//!
//! `initdb` dominates a cold `up` (0.4–3 s on the machines measured for issue #16: bootstrapping
//! the catalogs and fsyncing them); a copy of the same 40 MB and ~1 000 files takes 0.1 s on an
//! idle disk (up to ~1 s on a busy one: creating the files is what costs), plus ~0.1 s for the
//! password (below).
//!
//! **What an entry is.** `<cache>/pg15-<hash>/` holds `data/`, the cluster exactly as `initdb`
//! left it, and `nanika-cache`, written last, holding the full key and a manifest (type, mode
//! and size of every file). The key is everything that changes `initdb`'s output: the `initdb`
//! and `postgres` binaries (path, device, inode, size, mtime: an upgrade in place changes them),
//! their version, the flags ([`super::postgres::INITDB_ARGS`]), the locale environment, the
//! superuser's name and the server user's uid. The directory name carries only a hash of it;
//! the marker must hold the key itself.
//!
//! **Trust.** The cache root is owner-only (root's, 0755 so the server user can reach its own
//! entries, when nanika runs as root; else the user's, 0700), and an entry belongs to the server
//! user with mode 0700, so no other local user can plant or change anything in it. Before each
//! use the entry is checked, without following any link: a real directory of the expected
//! owner, not group- or world-accessible, its marker naming this key, and its files matching
//! the manifest (a truncated or added file, a link, another owner: all differ). Anything else
//! is not trusted: it is moved aside and removed as names (never through a link), and rebuilt.
//!
//! **Concurrency.** `<cache>/lock` is held shared while a project copies an entry and exclusive
//! while one is built or removed, so parallel `up`s build once and `cache clear` never removes
//! an entry under a copy. An entry is built in a directory of its own (`.build-<random>`) and
//! renamed into place complete, so a killed build leaves nothing that looks like an entry.
//!
//! **The spare.** Copying still takes 0.1–2 s, all of it while the user waits. So after a cold
//! `up` took its copy, a background `nanika __refill-cache` makes the next one ahead of time:
//! `<entry>/spare`, made as the server user in `<entry>/.spare-<random>` and renamed complete.
//! The next new project on the same filesystem takes it with one rename (two projects racing
//! for it: one rename wins, the other copies) and checks it against the entry's manifest before
//! use, exactly as the entry is checked; anything else is removed and the entry copied instead.
//!
//! **Passwords.** The cache is built with a random superuser password that is thrown away at
//! once. Each copy is given the project's own password by a single-user `postgres --single`
//! on the copy *before* it is renamed into place and before any server on it listens, so no
//! server ever accepts a password shared between projects or known to anyone but this project.
//!
//! **`system_identifier`.** Every copy of an entry shares its `system_identifier` (PostgreSQL 15's
//! `pg_resetwal` cannot set a new one, and rewriting `pg_control` and the WAL headers by hand is
//! worse than the problem). PostgreSQL uses it only to keep WAL and base backups of *different*
//! clusters apart (streaming replication, `pg_rewind`, WAL archives): a dev cluster of nanika
//! archives no WAL, and replicas made with `pg_basebackup` share their primary's identifier
//! anyway. Two projects' clusters never exchange WAL, so the shared identifier is harmless here;
//! nanika proves whose server answers with its `nanika.project` setting, never with it.

use super::binaries::{POSTGRES_MAJOR, PostgresBinaries};
use super::layout::{EXTERNAL_STATE_ROOT, ServerUser};
use super::postgres::{ADMIN_ROLE, INITDB_ARGS};
use super::safe_fs::{self, Dir, Expect, Kind};
use crate::error::{Result, RuntimeError};
use crate::{Progress, Service};
use fs_err as fs;
use nix::unistd::Uid;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name of the marker in an entry, written last.
const MARKER: &str = "nanika-cache";
/// Bumped whenever what nanika does to a cached cluster changes, so old entries are not used.
const FORMAT: &str = "nanika pristine cluster v1";
/// The line between the key and the manifest in the marker.
const MANIFEST_START: &str = "--- manifest";
/// An entry's spare copy of `data`, ready to be moved into a new project.
const SPARE: &str = "spare";
/// The prefix of a spare copy being made.
const SPARE_SCRATCH: &str = ".spare-";

/// Where nanika keeps its pristine clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCache {
    root: PathBuf,
}

/// An entry of the cache, as `cache status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Its directory.
    pub path: PathBuf,
    /// `None` when it can be used; else why it would be rebuilt.
    pub problem: Option<String>,
    /// Whether its spare copy is ready (see [`ClusterCache::refill_spare`]).
    pub spare: bool,
}

/// The cluster to copy, and the lock that keeps it in place while it is copied.
pub struct Pristine {
    /// The entry's data directory.
    pub data: PathBuf,
    /// The entry's directory.
    pub entry: PathBuf,
    /// Set when this call had to build the entry: why (missing, or what was wrong with it).
    pub built: Option<String>,
    /// The entry, opened (never through a link) when it checked out.
    entry_dir: Option<Dir>,
    /// The manifest its files matched.
    manifest: String,
    /// The uid its files belong to.
    uid: u32,
    _lock: std::fs::File,
}

/// The key of an entry: its full text and the directory name derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    text: String,
    name: String,
}

impl ClusterCache {
    /// A cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        ClusterCache { root: root.into() }
    }

    /// The default place: `/var/lib/nanika/cache` as root (beside the external homes, where the
    /// server user can reach it); else `$XDG_CACHE_HOME/nanika`, else `~/.cache/nanika`. `None`
    /// when neither is known (no cache: every cluster gets its own `initdb`). The caller reads the
    /// environment.
    pub fn default_root(
        as_root: bool,
        xdg_cache_home: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> Option<PathBuf> {
        if as_root {
            return Some(Path::new(EXTERNAL_STATE_ROOT).join("cache"));
        }
        // The XDG spec says a relative value is to be ignored.
        xdg_cache_home
            .filter(|p| p.is_absolute())
            .map(|p| p.join("nanika"))
            .or_else(|| {
                home.filter(|p| p.is_absolute())
                    .map(|p| p.join(".cache").join("nanika"))
            })
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A cluster to copy for `bins` and `server_user`: the cached one when it checks out, else
    /// one built now (a missing, stale or corrupt entry is rebuilt, never used).
    pub fn pristine(
        &self,
        bins: &PostgresBinaries,
        server_user: Option<&ServerUser>,
        progress: &dyn Progress,
    ) -> Result<Pristine> {
        let key = Key::new(bins, server_user)?;
        let uid = server_uid(server_user);
        let root = self.open_root(server_user)?;
        let lock = self.lock_file(&root)?;
        let entry = root.join(&key.name);
        let pristine = |built, manifest, lock| -> Result<Pristine> {
            Ok(Pristine {
                data: entry.join("data"),
                entry: entry.clone(),
                built,
                entry_dir: root.open_dir(&key.name)?,
                manifest,
                uid,
                _lock: lock,
            })
        };
        lock.lock_shared().map_err(RuntimeError::io(format!(
            "cannot lock {}",
            root.join("lock").display()
        )))?;
        if let Ok(manifest) = check_entry(&root, &key, uid) {
            return pristine(None, manifest, lock);
        }
        // Another nanika may be building it right now: wait for it, then look again.
        let _ = lock.unlock();
        lock.lock().map_err(RuntimeError::io(format!(
            "cannot lock {}",
            root.join("lock").display()
        )))?;
        let problem = match check_entry(&root, &key, uid) {
            Ok(manifest) => return pristine(None, manifest, lock),
            Err(problem) => problem,
        };
        progress.step(
            Service::Postgres,
            &format!("building the cluster cache (initdb) in {}", entry.display()),
        );
        clear_leftovers(&root);
        remove_entry(&root, &key.name)?;
        build(&root, &key, bins, server_user)?;
        let manifest = check_entry(&root, &key, uid).map_err(|problem| {
            RuntimeError::Other(format!(
                "the cluster cache {} nanika just built does not check out ({problem}); nothing was copied",
                entry.display()
            ))
        })?;
        pristine(Some(problem), manifest, lock)
    }

    /// Makes the spare copy of the entry for `bins` and `server_user` when it has none:
    /// `<entry>/spare`, a copy of `data` that the next new project takes with one rename instead
    /// of copying ~1 000 files while its user waits (see [`Pristine::take_spare`]). Meant to run
    /// after a cold `up`, in the background (`nanika __refill-cache`). Returns whether it made one;
    /// nothing is made from an entry that does not check out, or while another refill runs.
    ///
    /// The copy is made as the server user in `<entry>/.spare-<random>` and renamed to `spare`
    /// complete; one a killed refill left is removed by the next. The cache lock is held shared
    /// throughout, so `cache clear` and rebuilds wait for it.
    pub fn refill_spare(
        &self,
        bins: &PostgresBinaries,
        server_user: Option<&ServerUser>,
    ) -> Result<bool> {
        let key = Key::new(bins, server_user)?;
        let uid = server_uid(server_user);
        let Some(root) = self.existing_root()? else {
            return Ok(false);
        };
        let lock = self.lock_file(&root)?;
        lock.lock_shared().map_err(RuntimeError::io(format!(
            "cannot lock {}",
            root.join("lock").display()
        )))?;
        if check_entry(&root, &key, uid).is_err() {
            return Ok(false);
        }
        let Some(entry) = root.open_dir(&key.name)? else {
            return Ok(false);
        };
        let Some(_refilling) = entry.try_lock() else {
            return Ok(false);
        };
        if !matches!(entry.kind(SPARE)?, Kind::Missing) {
            return Ok(false);
        }
        // Only a killed refill leaves these, and no other refill runs while this one holds the
        // entry's lock.
        for name in names(&entry) {
            if name.starts_with(SPARE_SCRATCH) {
                let _ = safe_fs::remove_tree(&entry.join(&name));
            }
        }
        let scratch = format!("{SPARE_SCRATCH}{}", safe_fs::random_hex(4)?);
        let mut command = Command::new("cp");
        command
            .args(["-a", "--sparse=always", "--no-target-directory", "data"])
            .arg(&scratch)
            .current_dir(entry.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(user) = server_user {
            command.uid(user.uid).gid(user.gid);
        }
        let output = command.output();
        let copied = match output {
            Ok(output) if output.status.success() => entry.rename_new(&scratch, SPARE),
            Ok(output) => Err(RuntimeError::Command {
                command: format!(
                    "cp -a --sparse=always data {scratch} (in {})",
                    entry.path().display()
                ),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }),
            Err(e) => Err(RuntimeError::io("cannot run cp")(e)),
        };
        if copied.is_err() {
            let _ = safe_fs::remove_tree(&entry.join(&scratch));
        }
        copied.map(|()| true)
    }

    /// Removes every entry (waiting for copies in progress). Returns the paths it removed.
    pub fn clear(&self) -> Result<Vec<PathBuf>> {
        let Some(root) = self.existing_root()? else {
            return Ok(Vec::new());
        };
        let lock = self.lock_file(&root)?;
        lock.lock().map_err(RuntimeError::io(format!(
            "cannot lock {}",
            root.join("lock").display()
        )))?;
        let mut removed = Vec::new();
        for name in names(&root) {
            if is_entry_name(&name) || is_leftover_name(&name) {
                remove_entry(&root, &name)?;
                removed.push(root.join(&name));
            }
        }
        Ok(removed)
    }

    /// The entries, each with whether it would be used as it is (for `server_user`'s uid).
    pub fn entries(&self, server_user: Option<&ServerUser>) -> Result<Vec<CacheEntry>> {
        let Some(root) = self.existing_root()? else {
            return Ok(Vec::new());
        };
        let uid = server_uid(server_user);
        Ok(names(&root)
            .into_iter()
            .filter(|name| is_entry_name(name))
            .map(|name| {
                let problem = match read_marker(&root, &name, uid) {
                    Ok(text) => key_of(&text)
                        .map(|key| Key {
                            text: key.to_string(),
                            name: name.clone(),
                        })
                        .ok_or_else(|| "its marker holds no key".to_string())
                        .and_then(|key| check_entry(&root, &key, uid))
                        .err(),
                    Err(problem) => Some(problem),
                };
                let spare = matches!(root.kind(&name), Ok(Kind::Dir))
                    && std::fs::symlink_metadata(root.join(&name).join(SPARE))
                        .is_ok_and(|meta| meta.is_dir());
                CacheEntry {
                    path: root.join(&name),
                    problem,
                    spare,
                }
            })
            .collect())
    }

    /// The cache root, created when missing, refused when it is not nanika's: a link, another
    /// owner's, or writable by others.
    fn open_root(&self, server_user: Option<&ServerUser>) -> Result<Dir> {
        let (parent, name) = self.split()?;
        let parent_dir = if parent == Path::new(EXTERNAL_STATE_ROOT) {
            // Shared with the external homes: made exactly as the layout makes it.
            let var_lib = parent.parent().unwrap_or(Path::new("/"));
            let (dir, _) = Dir::open(var_lib)?.make_dir_expecting(
                parent
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("nanika"),
                0o755,
                Expect {
                    owners: &[0],
                    mode: None,
                },
            )?;
            dir
        } else {
            // The user's own directories (or the ones NANIKA_CACHE_DIR names): trusted as a
            // whole, like the project directory.
            fs::create_dir_all(&parent).map_err(RuntimeError::io(format!(
                "cannot create {}",
                parent.display()
            )))?;
            Dir::open(&parent)?
        };
        let me = Uid::effective().as_raw();
        // The server user copies from its own entries in here: as root the root must let it
        // pass, and only that.
        let mode = if server_user.is_some() { 0o755 } else { 0o700 };
        let (root, _) = parent_dir.make_dir_expecting(
            &name,
            mode,
            Expect {
                owners: &[me],
                mode: None,
            },
        )?;
        if let Some(user) = server_user
            && !super::layout::traversable_by(&self.root, user.uid, user.gid)
        {
            return Err(safe_fs::untrusted(
                &self.root,
                format!(
                    "cannot be reached by {} (uid {}), the user PostgreSQL runs as, which copies the cached cluster",
                    user.name, user.uid
                ),
                format!(
                    "point NANIKA_CACHE_DIR at a directory {} can reach (the default as root is {}/cache)",
                    user.name, EXTERNAL_STATE_ROOT
                ),
            ));
        }
        Ok(root)
    }

    /// The cache root when it exists, checked as [`Self::open_root`] checks it.
    fn existing_root(&self) -> Result<Option<Dir>> {
        let (parent, name) = self.split()?;
        let Ok(parent_dir) = Dir::open(&parent) else {
            return Ok(None);
        };
        let Some(root) = parent_dir.open_dir(&name)? else {
            return Ok(None);
        };
        root.check(Expect {
            owners: &[Uid::effective().as_raw()],
            mode: None,
        })?;
        Ok(Some(root))
    }

    fn split(&self) -> Result<(PathBuf, String)> {
        let name = self
            .root
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| safe_fs::is_plain(&self.root));
        match (self.root.parent(), name) {
            (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_string())),
            _ => Err(RuntimeError::Other(format!(
                "the cluster cache directory must be an absolute path without `.` or `..`, not {}; set NANIKA_CACHE_DIR to one",
                self.root.display()
            ))),
        }
    }

    fn lock_file(&self, root: &Dir) -> Result<std::fs::File> {
        let path = root.join("lock");
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(RuntimeError::io(format!("cannot open {}", path.display())))
    }
}

impl Pristine {
    /// Moves the entry's spare copy (see [`ClusterCache::refill_spare`]) to `to` in `target`
    /// and checks it against the entry's manifest, as the entry itself was checked. `false`,
    /// with nothing left at `to`, when there is none (another project took it, or the refill
    /// has not finished), it is on another filesystem than `target`, or it does not check out:
    /// the caller copies `data` then.
    pub fn take_spare(&self, target: &Dir, to: &str) -> bool {
        let Some(entry) = &self.entry_dir else {
            return false;
        };
        if entry.move_new_to(SPARE, target, to).is_err() {
            return false;
        }
        let moved = target.join(to);
        if manifest_of(&moved, self.uid).is_ok_and(|found| found == self.manifest) {
            return true;
        }
        let _ = safe_fs::remove_tree(&moved);
        false
    }
}

impl Key {
    fn new(bins: &PostgresBinaries, server_user: Option<&ServerUser>) -> Result<Key> {
        let mut text = format!("{FORMAT}\nversion {}\n", bins.version);
        for tool in ["initdb", "postgres"] {
            let path = bins.tool(tool);
            let real = fs::canonicalize(&path)
                .map_err(RuntimeError::io(format!("cannot read {}", path.display())))?;
            let meta = fs::metadata(&real)
                .map_err(RuntimeError::io(format!("cannot read {}", real.display())))?;
            text += &format!(
                "{tool} {} dev {} ino {} size {} mtime {}.{:09}\n",
                real.display(),
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec()
            );
        }
        text += &format!(
            "args --username {ADMIN_ROLE} {}\nenv LC_ALL=C\nserver uid {}\n",
            INITDB_ARGS.join(" "),
            server_uid(server_user)
        );
        let name = format!(
            "pg{POSTGRES_MAJOR}-{:016x}",
            super::layout::stable_hash(&text)
        );
        Ok(Key { text, name })
    }
}

fn server_uid(server_user: Option<&ServerUser>) -> u32 {
    server_user.map_or(Uid::effective().as_raw(), |u| u.uid)
}

fn is_entry_name(name: &str) -> bool {
    name.starts_with("pg") && name.contains('-')
}

fn is_leftover_name(name: &str) -> bool {
    name.starts_with(".build-") || name.starts_with(".stale-")
}

/// The names in the cache root.
fn names(root: &Dir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.path())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Removes what killed builds and earlier removals left (with the exclusive lock held, nothing
/// else uses them). Best effort: a leftover only takes space, and `cache clear` removes it too.
fn clear_leftovers(root: &Dir) {
    for name in names(root) {
        if is_leftover_name(&name) {
            let _ = remove_entry(root, &name);
        }
    }
}

/// Removes the entry `name`: first renamed aside (so a half-removed entry is never found under
/// its name), then removed without following any link; a link or file there is removed as a name.
fn remove_entry(root: &Dir, name: &str) -> Result<()> {
    match root.kind(name)? {
        Kind::Missing => Ok(()),
        Kind::Dir => {
            let aside = if is_leftover_name(name) {
                name.to_string()
            } else {
                let aside = format!(".stale-{}", safe_fs::random_hex(4)?);
                root.rename_new(name, &aside)?;
                aside
            };
            safe_fs::remove_tree(&root.join(&aside)).map(|_| ())
        }
        Kind::Symlink(_) | Kind::Other => root.remove_file(name).map(|_| ()),
    }
}

/// Reads an entry's marker, never through a link; the error says why the entry is not usable.
fn read_marker(root: &Dir, name: &str, uid: u32) -> std::result::Result<String, String> {
    let entry = root.join(name);
    let meta = std::fs::symlink_metadata(&entry).map_err(|_| "missing".to_string())?;
    if meta.file_type().is_symlink() {
        return Err("a symbolic link, which nanika never follows".into());
    }
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != uid {
        return Err(format!("owned by uid {}, not uid {uid}", meta.uid()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "open to others (permissions {:04o})",
            meta.permissions().mode() & 0o7777
        ));
    }
    let path = entry.join(MARKER);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|_| format!("incomplete (no readable {MARKER})"))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        return Err(format!("its {MARKER} is not a private file of uid {uid}"));
    }
    std::io::read_to_string(file).map_err(|e| format!("its {MARKER} cannot be read: {e}"))
}

/// The key in a marker's text.
fn key_of(marker: &str) -> Option<&str> {
    marker
        .split_once(&format!("{MANIFEST_START}\n"))
        .map(|(key, _)| key)
}

/// Checks the entry of `key`; the error says what is wrong, for the note about the rebuild.
fn check_entry(root: &Dir, key: &Key, uid: u32) -> std::result::Result<String, String> {
    let marker = read_marker(root, &key.name, uid)?;
    let Some((found_key, manifest)) = marker.split_once(&format!("{MANIFEST_START}\n")) else {
        return Err(format!("its {MARKER} is damaged"));
    };
    if found_key != key.text {
        let differs = found_key
            .lines()
            .zip(key.text.lines())
            .find(|(was, now)| was != now)
            .map(|(was, now)| format!(": `{was}`, now `{now}`"))
            .unwrap_or_default();
        return Err(format!(
            "stale (made for another initdb, flags or server user{differs})"
        ));
    }
    let data = root.join(&key.name).join("data");
    let now = manifest_of(&data, uid)?;
    if now != manifest {
        let differs = now
            .lines()
            .zip(manifest.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!(": `{a}` where the manifest says `{b}`"))
            .unwrap_or_else(|| ": files were added or removed".into());
        return Err(format!("changed since it was built{differs}"));
    }
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    if version.trim() != POSTGRES_MAJOR.to_string() {
        return Err(format!(
            "its PG_VERSION says `{}`, not {POSTGRES_MAJOR}",
            version.trim()
        ));
    }
    Ok(manifest.to_string())
}

/// One line a file or directory under `data`, sorted: its type, mode, size (files) and path.
/// Links, special files and files of another owner are refused: `initdb` makes none.
fn manifest_of(data: &Path, uid: u32) -> std::result::Result<String, String> {
    fn walk(
        dir: &Path,
        relative: &str,
        uid: u32,
        lines: &mut Vec<String>,
    ) -> std::result::Result<(), String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = format!("{relative}{}", name.to_string_lossy());
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.uid() != uid {
                return Err(format!("{rel} is owned by uid {}, not {uid}", meta.uid()));
            }
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                lines.push(format!("d {mode:04o} {rel}"));
                walk(&path, &format!("{rel}/"), uid, lines)?;
            } else if meta.is_file() {
                lines.push(format!("f {mode:04o} {} {rel}", meta.size()));
            } else if meta.file_type().is_symlink() {
                return Err(format!(
                    "{rel} is a symbolic link, which initdb never makes"
                ));
            } else {
                return Err(format!("{rel} is a special file, which initdb never makes"));
            }
        }
        Ok(())
    }
    let meta =
        std::fs::symlink_metadata(data).map_err(|_| "it has no data directory".to_string())?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err("its data directory is not a private directory of the server user".into());
    }
    let mut lines = Vec::new();
    walk(data, "", uid, &mut lines)?;
    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
}

/// Runs `initdb` into a new build directory, writes the marker last and renames the whole into
/// place. Called with the exclusive lock held and no entry of that name left.
fn build(
    root: &Dir,
    key: &Key,
    bins: &PostgresBinaries,
    server_user: Option<&ServerUser>,
) -> Result<()> {
    let build_name = format!(".build-{}", safe_fs::random_hex(6)?);
    let (dir, _) = root.make_dir(&build_name, 0o700)?;
    let built = build_in(&dir, key, bins, server_user)
        .and_then(|()| root.rename_new(&build_name, &key.name));
    if built.is_err() {
        let _ = remove_entry(root, &build_name);
    }
    built
}

fn build_in(
    dir: &Dir,
    key: &Key,
    bins: &PostgresBinaries,
    server_user: Option<&ServerUser>,
) -> Result<()> {
    if let Some(user) = server_user {
        dir.set_owner(user.uid, user.gid)?;
    }
    let give = |file: &std::fs::File, name: &str| match server_user {
        Some(user) => safe_fs::set_file_owner(file, &dir.join(name), user.uid, user.gid),
        None => Ok(()),
    };
    // A superuser password nobody keeps: each copy gets its project's own before it is used.
    let pwfile = "initdb-password";
    {
        let mut file = dir.create_file(pwfile, 0o600)?;
        give(&file, pwfile)?;
        std::io::Write::write_all(&mut file, safe_fs::random_hex(16)?.as_bytes()).map_err(
            RuntimeError::io(format!("cannot write {}", dir.join(pwfile).display())),
        )?;
    }
    let data = dir.join("data");
    let mut command = Command::new(bins.tool("initdb"));
    command
        .arg("-D")
        .arg(&data)
        .args(["--username", ADMIN_ROLE])
        .args(INITDB_ARGS)
        .arg(format!("--pwfile={}", dir.join(pwfile).display()))
        .current_dir(dir.path())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(user) = server_user {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command.output();
    dir.remove_file(pwfile)?;
    let output = output.map_err(RuntimeError::io(format!(
        "cannot run {}",
        bins.tool("initdb").display()
    )))?;
    if !output.status.success() {
        return Err(RuntimeError::Command {
            command: format!(
                "initdb -D {} --username {ADMIN_ROLE} {}",
                data.display(),
                INITDB_ARGS.join(" ")
            ),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let uid = server_uid(server_user);
    let manifest = manifest_of(&data, uid).map_err(|problem| {
        RuntimeError::Other(format!(
            "initdb left {} in an unexpected shape: {problem}",
            data.display()
        ))
    })?;
    let mut file = dir.create_file(MARKER, 0o600)?;
    give(&file, MARKER)?;
    let text = format!("{}{MANIFEST_START}\n{manifest}", key.text);
    let path = dir.join(MARKER);
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(RuntimeError::io(format!("cannot write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_place_mirrors_the_external_homes() {
        assert_eq!(
            ClusterCache::default_root(true, Some("/x".into()), Some("/root".into())),
            Some(PathBuf::from("/var/lib/nanika/cache"))
        );
        assert_eq!(
            ClusterCache::default_root(false, Some("/x".into()), Some("/home/a".into())),
            Some(PathBuf::from("/x/nanika"))
        );
        assert_eq!(
            ClusterCache::default_root(false, Some("rel".into()), Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.cache/nanika"))
        );
        assert_eq!(ClusterCache::default_root(false, None, None), None);
    }

    /// A cache root holding one entry as [`build_in`] leaves it, with a fake cluster.
    fn fake_entry() -> (tempfile::TempDir, Dir, Key) {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open(dir.path()).unwrap();
        let key = Key {
            text: format!("{FORMAT}\nversion 15.99\n"),
            name: "pg15-0123456789abcdef".into(),
        };
        let (entry, _) = root.make_dir(&key.name, 0o700).unwrap();
        let (data, _) = entry.make_dir("data", 0o700).unwrap();
        data.replace_file("PG_VERSION", b"15\n", 0o600).unwrap();
        let (global, _) = data.make_dir("global", 0o700).unwrap();
        global
            .replace_file("pg_control", &[7; 8192], 0o600)
            .unwrap();
        let uid = Uid::effective().as_raw();
        let manifest = manifest_of(&entry.join("data"), uid).unwrap();
        let text = format!("{}{MANIFEST_START}\n{manifest}", key.text);
        entry.replace_file(MARKER, text.as_bytes(), 0o600).unwrap();
        (dir, root, key)
    }

    #[test]
    fn an_entry_is_used_only_as_it_was_built() {
        let uid = Uid::effective().as_raw();
        type Damage = (&'static str, fn(&Path));
        let damages: [Damage; 7] = [
            ("incomplete", |e| {
                std::fs::remove_file(e.join(MARKER)).unwrap()
            }),
            ("stale", |e| {
                let text = std::fs::read_to_string(e.join(MARKER)).unwrap();
                std::fs::write(e.join(MARKER), text.replace("15.99", "15.98")).unwrap();
            }),
            ("open to others", |e| {
                std::fs::set_permissions(e, std::fs::Permissions::from_mode(0o750)).unwrap()
            }),
            ("changed since it was built", |e| {
                std::fs::write(e.join("data/global/pg_control"), [7; 100]).unwrap()
            }),
            ("changed since it was built", |e| {
                std::fs::write(e.join("data/global/extra"), "").unwrap()
            }),
            ("symbolic link", |e| {
                std::os::unix::fs::symlink("/etc/passwd", e.join("data/global/1262")).unwrap()
            }),
            ("not a private file", |e| {
                let marker = e.join(MARKER);
                let text = std::fs::read(&marker).unwrap();
                std::fs::remove_file(&marker).unwrap();
                std::fs::write(e.join("elsewhere"), text).unwrap();
                std::os::unix::fs::symlink(e.join("elsewhere"), &marker).unwrap();
            }),
        ];
        for (expected, damage) in damages {
            let (_dir, root, key) = fake_entry();
            assert!(check_entry(&root, &key, uid).is_ok());
            damage(&root.join(&key.name));
            let problem = check_entry(&root, &key, uid).unwrap_err();
            assert!(
                problem.contains(expected)
                    || (expected == "not a private file" && problem.contains("incomplete")),
                "{expected}: {problem}"
            );
        }
        // Another owner, and a link in place of the entry itself.
        let (_dir, root, key) = fake_entry();
        assert!(
            check_entry(&root, &key, uid + 1)
                .unwrap_err()
                .contains("owned by uid")
        );
        let aside = root.join("aside");
        std::fs::rename(root.join(&key.name), &aside).unwrap();
        std::os::unix::fs::symlink(&aside, root.join(&key.name)).unwrap();
        assert!(
            check_entry(&root, &key, uid)
                .unwrap_err()
                .contains("symbolic link")
        );
        // Removed as a name: the link goes, what it points to stays.
        remove_entry(&root, &key.name).unwrap();
        assert_eq!(root.kind(&key.name).unwrap(), Kind::Missing);
        assert!(aside.join(MARKER).is_file());
    }

    #[test]
    fn a_manifest_notices_truncation_links_and_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        let uid = Uid::effective().as_raw();
        let before = manifest_of(&data, uid).unwrap();
        std::fs::write(data.join("PG_VERSION"), "1").unwrap();
        assert_ne!(manifest_of(&data, uid).unwrap(), before);
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(manifest_of(&data, uid).unwrap(), before);
        std::os::unix::fs::symlink("/etc", data.join("base")).unwrap();
        assert!(
            manifest_of(&data, uid)
                .unwrap_err()
                .contains("symbolic link")
        );
        std::fs::remove_file(data.join("base")).unwrap();
        assert!(manifest_of(&data, uid + 1).is_err());
    }
}
