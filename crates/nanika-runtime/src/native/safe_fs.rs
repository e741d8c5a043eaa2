//! Paths nanika creates, hands over, changes or deletes, resolved without following a symlink it
//! did not make.
//!
//! nanika runs as root in projects cloned from elsewhere and next to directories other local users
//! can write (`/tmp`). A symlink there — committed with `git add -f`, or planted in `/tmp` by
//! another user — must never turn root's `mkdir`, `chown`, `chmod`, write or delete into one on
//! somebody else's file. So those operations go through a [`Dir`]: a directory opened once, then
//! walked one name at a time with `O_NOFOLLOW`, and changed through its file descriptor, so what
//! was checked is what is changed (no window in which a name can be swapped for a link).
//!
//! A walk starts at a directory the caller trusts as a whole (the project root the user chose,
//! `/var/lib`, the temp directory): links in *its* path are the user's or the system's own. Names
//! are single components; `..` is never one of them.

use crate::error::{Result, RuntimeError};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// A directory opened without following a link below the trusted start of its walk.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What an existing directory must be before nanika uses it.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The uids it may belong to.
    pub owners: &'a [u32],
    /// Its exact permissions (`None`: anything not writable by group or others).
    pub mode: Option<u32>,
}

/// What a name in a directory is, looked at without following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Nothing has that name.
    Missing,
    /// A real directory.
    Dir,
    /// A symbolic link, and where it points.
    Symlink(PathBuf),
    /// Anything else (a file, a socket…).
    Other,
}

/// Ownership and permission bits of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Its permission bits (`0o7777` part of the mode).
    pub mode: u32,
}

impl From<FileStat> for Stat {
    fn from(stat: FileStat) -> Self {
        Stat {
            uid: stat.st_uid,
            gid: stat.st_gid,
            mode: stat.st_mode & 0o7777,
        }
    }
}

fn os_error(context: String) -> impl FnOnce(Errno) -> RuntimeError {
    move |errno| RuntimeError::io(context)(std::io::Error::from(errno))
}

/// The error for a path nanika will not use, with the command that fixes it.
pub fn untrusted(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> RuntimeError {
    RuntimeError::Untrusted {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Refuses a name that is not one plain path component (`..`, `a/b`, empty): a walk never leaves
/// the directory it is in.
fn component(name: &str) -> Result<&str> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(name),
        _ => Err(RuntimeError::Other(format!(
            "`{name}` is not a single file name"
        ))),
    }
}

/// Whether `path` is absolute and names no `.` or `..`: comparing such paths by prefix compares
/// where they lead (given no component is a link).
pub fn is_plain(path: &Path) -> bool {
    // Read off the bytes: `Path::components` silently drops an inner `.`.
    path.is_absolute()
        && path
            .as_os_str()
            .as_encoded_bytes()
            .split(|b| *b == b'/')
            .all(|part| part != b"." && part != b"..")
}

/// What `path` is, without following it.
pub fn kind(path: &Path) -> Kind {
    match std::fs::symlink_metadata(path) {
        Err(_) => Kind::Missing,
        Ok(meta) if meta.file_type().is_symlink() => {
            Kind::Symlink(std::fs::read_link(path).unwrap_or_default())
        }
        Ok(meta) if meta.is_dir() => Kind::Dir,
        Ok(_) => Kind::Other,
    }
}

/// Removes the real directory `path` and everything in it, following no link (a link inside is
/// removed, not what it points to). A link or file at `path` itself is refused; a missing
/// `path` is not an error. Returns whether something was removed.
pub fn remove_tree(path: &Path) -> Result<bool> {
    match kind(path) {
        Kind::Missing => Ok(false),
        Kind::Dir => match std::fs::remove_dir_all(path) {
            // std's remove_dir_all walks with openat(O_NOFOLLOW): no link inside is followed.
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(RuntimeError::io(format!(
                "cannot remove {}",
                path.display()
            ))(e)),
        },
        Kind::Symlink(target) => Err(untrusted(
            path,
            format!(
                "is a symbolic link to {}; nanika deletes only real directories it made",
                target.display()
            ),
            format!(
                "remove the link yourself if it is not needed: rm {}",
                path.display()
            ),
        )),
        Kind::Other => Err(untrusted(
            path,
            "is not a directory; nanika deletes only directories it made",
            format!("look at it, and remove it yourself: rm {}", path.display()),
        )),
    }
}

/// The symbolic links under `dir` (which must be a real directory), at most `depth` levels down,
/// skipping the names in `skip` at the top: nanika makes no link there, so any link was planted.
pub fn symlinks_under(dir: &Path, depth: usize, skip: &[&str]) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        match kind(&path) {
            Kind::Symlink(target) => found.push((path, target)),
            Kind::Dir if depth > 1 => found.extend(symlinks_under(&path, depth - 1, &[])),
            _ => {}
        }
    }
    found
}

/// `bytes` random bytes from the kernel, as hex: for names nobody can guess.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0u8; bytes];
    let mut random =
        fs_err::File::open("/dev/urandom").map_err(RuntimeError::io("cannot open /dev/urandom"))?;
    std::io::Read::read_exact(&mut random, &mut buffer)
        .map_err(RuntimeError::io("cannot read /dev/urandom"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens `path`, a directory the caller trusts as a whole (links in its own path are followed:
    /// they are the user's or the system's).
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(os_error(format!("cannot open {}", path.display())))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Its path (for messages and for tools that take a path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Its owner and permissions.
    pub fn stat(&self) -> Result<Stat> {
        nix::sys::stat::fstat(&self.fd)
            .map(Stat::from)
            .map_err(os_error(format!("cannot read {}", self.path.display())))
    }

    /// What `name` is in it, not following a link.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        let name = component(name)?;
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(Kind::Missing),
            Err(e) => Err(os_error(format!(
                "cannot read {}",
                self.join(name).display()
            ))(e)),
            Ok(stat) => {
                let kind = stat.st_mode & SFlag::S_IFMT.bits();
                Ok(if kind == SFlag::S_IFLNK.bits() {
                    Kind::Symlink(
                        nix::fcntl::readlinkat(&self.fd, name)
                            .map(PathBuf::from)
                            .unwrap_or_default(),
                    )
                } else if kind == SFlag::S_IFDIR.bits() {
                    Kind::Dir
                } else {
                    Kind::Other
                })
            }
        }
    }

    /// Opens the subdirectory `name`, never through a link: `None` when it does not exist, an
    /// error naming the link and where it points when it is one.
    pub fn open_dir(&self, name: &str) -> Result<Option<Dir>> {
        let name = component(name)?;
        let path = self.join(name);
        match nix::fcntl::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir { fd, path })),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(self.not_a_directory(name)),
            Err(e) => Err(os_error(format!("cannot open {}", path.display()))(e)),
        }
    }

    fn not_a_directory(&self, name: &str) -> RuntimeError {
        let path = self.join(name);
        match self.kind(name) {
            Ok(Kind::Symlink(target)) => untrusted(
                &path,
                format!(
                    "is a symbolic link to {}, which nanika did not make; it never follows one here",
                    target.display()
                ),
                format!(
                    "remove the link (rm {}; what it points to is left alone), then run nanika again",
                    path.display()
                ),
            ),
            _ => untrusted(
                &path,
                "is not a directory",
                format!("move it out of the way (mv {0} {0}.old)", path.display()),
            ),
        }
    }

    /// Creates the subdirectory `name` with exactly `mode`, or opens it when it exists (never
    /// through a link). Returns it and whether this call created it.
    pub fn make_dir(&self, name: &str, mode: u32) -> Result<(Dir, bool)> {
        let name = component(name)?;
        let created = match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode))
        {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => {
                return Err(os_error(format!(
                    "cannot create {}",
                    self.join(name).display()
                ))(e));
            }
        };
        let dir = self.open_dir(name)?.ok_or_else(|| {
            RuntimeError::Other(format!("{} vanished", self.join(name).display()))
        })?;
        if created {
            // The umask may have taken bits away.
            dir.set_mode(mode)?;
        }
        Ok((dir, created))
    }

    /// [`Self::make_dir`], then checks an existing directory against `expect`: a directory of
    /// someone else's, or one others may write to, is refused and left as it is.
    pub fn make_dir_expecting(&self, name: &str, mode: u32, expect: Expect) -> Result<(Dir, bool)> {
        let (dir, created) = self.make_dir(name, mode)?;
        if !created {
            dir.check(expect)?;
        }
        Ok((dir, created))
    }

    /// Refuses this directory unless it is as `expect` says.
    pub fn check(&self, expect: Expect) -> Result<()> {
        let stat = self.stat()?;
        if !expect.owners.contains(&stat.uid) {
            return Err(untrusted(
                &self.path,
                format!(
                    "belongs to uid {}, not to nanika or its server user (uid {}); nanika will not use or change it",
                    stat.uid,
                    expect
                        .owners
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                format!(
                    "if nobody needs it, remove it (rm -r {}), then run nanika again",
                    self.path.display()
                ),
            ));
        }
        let wrong = match expect.mode {
            Some(mode) => stat.mode != mode,
            None => stat.mode & 0o022 != 0,
        };
        if wrong {
            let wanted = expect
                .mode
                .map_or("not writable by group or others".to_string(), |m| {
                    format!("{m:04o}")
                });
            return Err(untrusted(
                &self.path,
                format!(
                    "has permissions {:04o}, but must be {wanted}; nanika will not use or change it",
                    stat.mode
                ),
                format!(
                    "if nobody needs it, remove it (rm -r {}), then run nanika again",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Sets its permissions, through the open directory.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(mode)).map_err(os_error(format!(
            "cannot set the permissions of {}",
            self.path.display()
        )))
    }

    /// Hands it to `uid`/`gid`, through the open directory.
    pub fn set_owner(&self, uid: u32, gid: u32) -> Result<()> {
        nix::unistd::fchown(&self.fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(
            os_error(format!("cannot hand {} to uid {uid}", self.path.display())),
        )
    }

    /// Creates the new file `name` with `mode`: never an existing file, never through a link.
    pub fn create_file(&self, name: &str, mode: u32) -> Result<std::fs::File> {
        let name = component(name)?;
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(os_error(format!(
            "cannot create {}",
            self.join(name).display()
        )))?;
        let file = std::fs::File::from(fd);
        // The umask may have taken bits away; it never adds any.
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode)).map_err(os_error(
            format!(
                "cannot set the permissions of {}",
                self.join(name).display()
            ),
        ))?;
        Ok(file)
    }

    /// Replaces the file `name` with `bytes`: written to a new file of `mode` (never through a
    /// link), then renamed over `name`, so a reader sees the old content or the new, never half.
    pub fn replace_file(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let name = component(name)?;
        // A name of its own: two writers never share (or remove) each other's temporary file.
        let temp = format!(".{name}.{}.tmp", random_hex(4)?);
        let written = self.create_file(&temp, mode).and_then(|mut file| {
            std::io::Write::write_all(&mut file, bytes).map_err(RuntimeError::io(format!(
                "cannot write {}",
                self.join(&temp).display()
            )))
        });
        let replaced = written.and_then(|()| self.rename_over(&temp, name));
        if replaced.is_err() {
            let _ = self.remove_file(&temp);
        }
        replaced
    }

    /// Removes the file or link `name` (a link is removed, not what it points to). Returns
    /// whether there was one.
    pub fn remove_file(&self, name: &str) -> Result<bool> {
        let name = component(name)?;
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(os_error(format!(
                "cannot remove {}",
                self.join(name).display()
            ))(e)),
        }
    }

    /// Renames `from` to `to` in this directory; fails rather than replace an existing `to`.
    pub fn rename_new(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (component(from)?, component(to)?);
        nix::fcntl::renameat2(&self.fd, from, &self.fd, to, RenameFlags::RENAME_NOREPLACE).map_err(
            os_error(format!(
                "cannot rename {} to {}",
                self.join(from).display(),
                self.join(to).display()
            )),
        )
    }

    /// Moves `from` in this directory to `to` in `target` (both on one filesystem), never
    /// replacing anything and never following a link. The raw error, so that callers can tell
    /// "nothing there" (`ENOENT`) and "another filesystem" (`EXDEV`) from the rest.
    pub fn move_new_to(
        &self,
        from: &str,
        target: &Dir,
        to: &str,
    ) -> std::result::Result<(), Errno> {
        let from = component(from).map_err(|_| Errno::EINVAL)?;
        let to = component(to).map_err(|_| Errno::EINVAL)?;
        nix::fcntl::renameat2(
            &self.fd,
            from,
            &target.fd,
            to,
            RenameFlags::RENAME_NOREPLACE,
        )
    }

    /// An exclusive `flock` on the directory itself, held while the returned file lives; `None`
    /// when another process holds it (or it cannot be taken).
    pub fn try_lock(&self) -> Option<std::fs::File> {
        let file = std::fs::File::from(self.fd.try_clone().ok()?);
        file.try_lock().ok().map(|()| file)
    }

    /// Renames `from` to `to` in this directory, replacing `to` (a link named `to` is replaced,
    /// not followed).
    pub fn rename_over(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (component(from)?, component(to)?);
        nix::fcntl::renameat(&self.fd, from, &self.fd, to).map_err(os_error(format!(
            "cannot write {}",
            self.join(to).display()
        )))
    }

    /// Reads the regular file `name`, never through a link and never more than `limit` bytes:
    /// for files a less privileged process writes (a server's pid file), which could have been
    /// swapped for a link, a FIFO or something endless. `None` when there is no such file.
    pub fn read_small_file(&self, name: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.open_regular(name)? else {
            return Ok(None);
        };
        let path = self.join(name);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit as u64), &mut bytes)
            .map_err(RuntimeError::io(format!("cannot read {}", path.display())))?;
        Ok(Some(bytes))
    }

    /// Opens the regular file `name` for reading, never through a link (see
    /// [`Self::read_small_file`]); `None` when there is no such file.
    pub fn open_regular(&self, name: &str) -> Result<Option<std::fs::File>> {
        let name = component(name)?;
        let path = self.join(name);
        // O_NONBLOCK: opening a FIFO planted under the name returns at once instead of waiting
        // for a writer; it is then refused as not a regular file.
        let fd = match nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(untrusted(
                    &path,
                    "is a symbolic link; nanika never reads this file through one",
                    format!("remove the link (rm {})", path.display()),
                ));
            }
            Err(e) => return Err(os_error(format!("cannot open {}", path.display()))(e)),
        };
        let stat = nix::sys::stat::fstat(&fd)
            .map_err(os_error(format!("cannot read {}", path.display())))?;
        if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(untrusted(
                &path,
                "is not a regular file",
                format!("look at it, and remove it yourself: rm {}", path.display()),
            ));
        }
        Ok(Some(std::fs::File::from(fd)))
    }

    /// The names of the entries in it, read through its descriptor (`/proc/self/fd/N`), so
    /// they are this directory's even when its path names another one now.
    pub fn names(&self) -> Result<Vec<String>> {
        use std::os::fd::AsRawFd;
        let through = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let entries = std::fs::read_dir(&through).map_err(RuntimeError::io(format!(
            "cannot list {}",
            self.path.display()
        )))?;
        Ok(entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect())
    }

    /// Connects to the Unix socket `name` in this directory, never through a link: the name must
    /// be a socket itself. The path goes through this directory's descriptor
    /// (`/proc/self/fd/N/name`), so it is short whatever the directory's own path, and is the
    /// directory that was opened, not whatever its path names now.
    pub fn connect_unix(&self, name: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
        let name = component(name).map_err(std::io::Error::other)?;
        let stat = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFSOCK.bits() {
            return Err(std::io::Error::other(format!(
                "{} is not a socket",
                self.join(name).display()
            )));
        }
        let via = format!(
            "/proc/self/fd/{}/{name}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        );
        std::os::unix::net::UnixStream::connect(via)
    }

    /// Makes the symbolic link `name` pointing to `target`.
    pub fn symlink(&self, name: &str, target: &Path) -> Result<()> {
        let name = component(name)?;
        nix::unistd::symlinkat(target, &self.fd, name).map_err(os_error(format!(
            "cannot link {}",
            self.join(name).display()
        )))
    }
}

/// Hands `dir` and everything in it to `uid`/`gid`, children first, never following a link (a
/// link itself is handed over, not what it points to). Call it only on a directory only root
/// could write to until now: a directory already handed over is skipped, so a process of the
/// new owner cannot swap a name for a link under a walk.
pub fn hand_over_tree(dir: &Dir, uid: u32, gid: u32) -> Result<()> {
    let entries = std::fs::read_dir(dir.path()).map_err(RuntimeError::io(format!(
        "cannot read {}",
        dir.path().display()
    )))?;
    for entry in entries {
        let entry = entry.map_err(RuntimeError::io(format!(
            "cannot read {}",
            dir.path().display()
        )))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if dir.kind(&name)? == Kind::Dir
            && let Some(child) = dir.open_dir(&name)?
            && child.stat()?.uid != uid
        {
            hand_over_tree(&child, uid, gid)?;
            continue;
        }
        nix::unistd::fchownat(
            &dir.fd,
            name.as_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(os_error(format!(
            "cannot hand {} to uid {uid}",
            dir.join(&name).display()
        )))?;
    }
    dir.set_owner(uid, gid)
}

/// Hands an open file to `uid`/`gid`, through its descriptor.
pub fn set_file_owner(file: &std::fs::File, path: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::fchown(file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(os_error(
        format!("cannot hand {} to uid {uid}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn plain_paths_have_no_dot_components() {
        assert!(is_plain(Path::new("/var/lib/nanika/game-0123")));
        assert!(!is_plain(Path::new("/var/lib/nanika/../../../tmp/x")));
        assert!(!is_plain(Path::new("/var/lib/nanika/./x")));
        assert!(is_plain(Path::new("/var/lib/.hidden")));
        assert!(!is_plain(Path::new("var/lib/nanika")));
        assert!(component("..").is_err() && component("a/b").is_err() && component("").is_err());
        assert!(component("data.initdb-incomplete").is_ok());
    }

    #[test]
    fn a_link_is_never_opened_made_or_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(victim.join("file"), dir.path().join("file-link")).unwrap();
        let base = Dir::open(dir.path()).unwrap();

        let refused = base.open_dir("link").unwrap_err();
        assert!(
            matches!(&refused, RuntimeError::Untrusted { problem, .. } if problem.contains(&victim.display().to_string())),
            "{refused}"
        );
        assert!(base.make_dir("link", 0o700).is_err());
        assert!(base.create_file("file-link", 0o600).is_err());
        assert!(
            !victim.join("file").exists(),
            "nothing created through the link"
        );
        assert_eq!(mode_of(&victim), 0o755, "the link's target is untouched");
        assert_eq!(base.kind("link").unwrap(), Kind::Symlink(victim.clone()));
        assert_eq!(base.kind("nothing").unwrap(), Kind::Missing);
    }

    #[test]
    fn made_directories_and_files_get_exactly_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let base = Dir::open(dir.path()).unwrap();
        let (made, created) = base.make_dir("state", 0o711).unwrap();
        assert!(created);
        assert_eq!(mode_of(made.path()), 0o711);
        let (_, again) = base.make_dir("state", 0o700).unwrap();
        assert!(!again, "an existing directory is opened, not made");
        assert_eq!(mode_of(made.path()), 0o711, "and its mode is left alone");
        drop(made.create_file("secret", 0o600).unwrap());
        assert_eq!(mode_of(&made.join("secret")), 0o600);
        assert!(
            made.create_file("secret", 0o600).is_err(),
            "never an existing file"
        );
        made.rename_new("secret", "kept").unwrap();
        made.replace_file("kept", b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(made.join("kept")).unwrap(), b"new");
        assert_eq!(mode_of(&made.join("kept")), 0o600);
        assert_eq!(
            std::fs::read_dir(made.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(made.remove_file("kept").unwrap() && !made.remove_file("kept").unwrap());
    }

    #[test]
    fn existing_directories_are_checked_not_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let base = Dir::open(dir.path()).unwrap();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let refused = base.make_dir_expecting(
            "open",
            0o700,
            Expect {
                owners: &[me],
                mode: None,
            },
        );
        assert!(refused.is_err());
        assert_eq!(mode_of(&open), 0o777, "refused, not chmodded");
        let foreign = base.make_dir_expecting(
            "open",
            0o700,
            Expect {
                owners: &[me + 4242],
                mode: None,
            },
        );
        assert!(foreign.unwrap_err().to_string().contains("belongs to uid"));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            base.make_dir_expecting(
                "open",
                0o700,
                Expect {
                    owners: &[me],
                    mode: Some(0o700)
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn removing_a_tree_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(remove_tree(&link).is_err(), "a link is refused");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("inner-link")).unwrap();
        assert_eq!(
            symlinks_under(dir.path(), 2, &["link"]),
            vec![(tree.join("inner-link"), victim.clone())]
        );
        assert!(remove_tree(&tree).unwrap());
        assert!(
            !tree.exists() && victim.join("keep").exists(),
            "only the link inside went"
        );
        assert!(!remove_tree(&tree).unwrap(), "a missing tree is no error");
    }

    #[test]
    fn random_names_differ() {
        let (a, b) = (random_hex(8).unwrap(), random_hex(8).unwrap());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
