//! Where the native runtime keeps its state, and who owns it.
//!
//! Everything lives under the project's `.nanika/`. PostgreSQL refuses to run as root, so when
//! nanika runs as root the server runs as an unprivileged user (`postgres` when it exists), which
//! must be able to reach its data directory. A project under a 0700 home such as `/root` is not
//! reachable by it; then the data directory lives in `/var/lib/nanika/<project>-<hash>/` and
//! `.nanika/postgres` is a symlink to it, so the project's state is still found (and removed)
//! through `.nanika/`.
//!
//! That link is the only one nanika makes, and a clone can carry a link of the same name (or
//! one anywhere in `.nanika/`). So the layout never takes its paths from a link on disk: the
//! external home is computed from the project's path, a link is accepted only when it points
//! exactly there, and [`StateLayout::verify`] refuses any other before a command touches the
//! state. Directories are made, handed over and deleted through [`super::safe_fs`].

use super::safe_fs::{self, Dir, Expect, Kind};
use crate::error::{Result, RuntimeError};
use nix::unistd::{Uid, User};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where state that the server user cannot reach inside the project goes (root only).
pub const EXTERNAL_STATE_ROOT: &str = "/var/lib/nanika";
/// Unix socket paths longer than this fail (`sun_path` is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// The unprivileged account PostgreSQL runs as when nanika runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl ServerUser {
    /// `None` when not root (the servers run as the current user); else `postgres`, or `nobody`.
    pub fn for_current_process() -> Result<Option<ServerUser>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = User::from_name(name) {
                return Ok(Some(ServerUser {
                    name: user.name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                }));
            }
        }
        Err(RuntimeError::Other(
            "nanika runs as root, and PostgreSQL refuses to: no `postgres` or `nobody` user exists to run it as".into(),
        ))
    }

    /// The account Redis runs as when nanika runs as root (`server_user` is PostgreSQL's, `None`
    /// when not root): `redis`, which Debian's redis-server package makes, else PostgreSQL's
    /// unprivileged user. Never root: a Redis anyone on the machine can reach must not be able to
    /// write as root (`CONFIG SET dir` + `CONFIG REWRITE`).
    pub fn for_redis(server_user: Option<&ServerUser>) -> Option<ServerUser> {
        let fallback = server_user?.clone();
        match User::from_name("redis") {
            Ok(Some(user)) if !user.uid.is_root() => Some(ServerUser {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            _ => Some(fallback),
        }
    }
}

/// Whether `uid`/`gid` may search (traverse) every directory from `/` down to `path`.
pub fn traversable_by(path: &Path, uid: u32, gid: u32) -> bool {
    path.ancestors().all(|dir| match std::fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if meta.uid() == uid {
                mode & 0o100 != 0
            } else if meta.gid() == gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        }
        Err(_) => true, // not created yet: nanika creates it with the right mode
    })
}

/// FNV-1a: a stable hash for directory names (std's hasher may change between releases).
pub(crate) fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why a project's state cannot be used as it is: found by [`StateLayout::new`], reported by
/// everything that would use it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    path: PathBuf,
    problem: String,
    fix: String,
}

/// The paths of the native runtime's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    /// The project's root.
    pub project: PathBuf,
    /// `.nanika/`.
    pub state: PathBuf,
    /// `.nanika/logs/`: one log a server, plus the supervisor's.
    pub logs: PathBuf,
    /// `.nanika/run/`: pid files, lock files, the supervisor's status.
    pub run: PathBuf,
    /// Where Redis's state really is (its AOF, the config it runs from, its pid file):
    /// `.nanika/redis`, or the external one nanika computes for this project.
    pub redis_dir: PathBuf,
    /// `.nanika/redis` (possibly a symlink to the external Redis directory).
    pub redis_link: PathBuf,
    /// The account Redis runs as when nanika runs as root.
    pub redis_user: Option<ServerUser>,
    /// `.nanika/postgres` (possibly a symlink to the external state dir).
    pub postgres_link: PathBuf,
    /// Where PostgreSQL's state really is: `.nanika/postgres`, or the external home nanika
    /// computes for this project, never wherever a link found on disk points.
    pub postgres_home: PathBuf,
    /// The server user when nanika runs as root.
    pub server_user: Option<ServerUser>,
    problem: Option<Problem>,
}

/// The longest socket file name PostgreSQL makes (a five-digit port): the socket directory is
/// chosen for it, so it does not move when the port changes.
const LONGEST_SOCKET_NAME: &str = ".s.PGSQL.65535";

impl StateLayout {
    /// The layout of `project`'s state; creates nothing. A `.nanika/postgres` link that nanika
    /// would not have made is recorded, and [`Self::verify`] refuses the layout.
    pub fn new(project: &Path, server_user: Option<ServerUser>) -> Self {
        let project = std::path::absolute(project).unwrap_or_else(|_| project.to_path_buf());
        let state = project.join(nanika_config::project::STATE_DIR);
        let postgres_link = state.join("postgres");
        let external = Self::external_home(&project);
        // The only link nanika makes: when it runs as root and the server user cannot enter the
        // project, to the home it computes for this project.
        let link_expected = server_user
            .as_ref()
            .is_some_and(|user| !traversable_by(&state, user.uid, user.gid));
        let mut problem = None;
        let postgres_home = Self::home(&postgres_link, external, link_expected, &mut problem);
        let redis_user = ServerUser::for_redis(server_user.as_ref());
        let redis_link = state.join("redis");
        let redis_external = Self::external_redis(&project);
        let redis_link_expected = redis_user
            .as_ref()
            .is_some_and(|user| !traversable_by(&state, user.uid, user.gid));
        let redis_dir = Self::home(
            &redis_link,
            redis_external,
            redis_link_expected,
            &mut problem,
        );
        StateLayout {
            logs: state.join("logs"),
            run: state.join("run"),
            redis_dir,
            redis_link,
            redis_user,
            state,
            postgres_link,
            postgres_home,
            project,
            server_user,
            problem,
        }
    }

    /// Where the state behind `link` really is: `link` itself, or `external` when nanika links it
    /// there. A link nanika would not have made is recorded in `problem`.
    fn home(
        link: &Path,
        external: PathBuf,
        link_expected: bool,
        problem: &mut Option<Problem>,
    ) -> PathBuf {
        match safe_fs::kind(link) {
            Kind::Symlink(target) => {
                if link_expected && target.as_os_str() == external.as_os_str() {
                    external
                } else {
                    if problem.is_none() {
                        *problem = Some(Self::foreign_link(
                            link,
                            &target,
                            link_expected.then_some(external.as_path()),
                        ));
                    }
                    link.to_path_buf()
                }
            }
            Kind::Missing if link_expected => external,
            _ => link.to_path_buf(),
        }
    }

    /// Redis's external directory, beside PostgreSQL's: its own, because another user owns it.
    fn external_redis(project: &Path) -> PathBuf {
        let mut name = Self::external_home(project).into_os_string();
        name.push(".redis");
        PathBuf::from(name)
    }

    /// Whether Redis's state lives outside the project.
    pub fn redis_is_external(&self) -> bool {
        self.redis_dir != self.redis_link
    }

    /// The copy of the committed `redis.conf` Redis runs from (plus what only `.env` holds):
    /// its own, so `CONFIG REWRITE` can never touch a committed file.
    pub fn redis_conf(&self) -> PathBuf {
        self.redis_dir.join("redis.conf")
    }

    fn foreign_link(link: &Path, target: &Path, expected: Option<&Path>) -> Problem {
        let problem = match expected {
            Some(expected) => format!(
                "is a symbolic link to {}, but the only link nanika makes there points to {}; nanika will not use, change or delete what it points to",
                target.display(),
                expected.display()
            ),
            None => format!(
                "is a symbolic link to {}, which nanika did not make: it links .nanika/postgres and .nanika/redis only when it runs as root for a project the server user cannot enter, which is not the case here; nanika will not use, change or delete what it points to",
                target.display()
            ),
        };
        Problem {
            path: link.to_path_buf(),
            problem,
            fix: format!(
                "remove the link (rm {}; what it points to is left alone), then run nanika again",
                link.display()
            ),
        }
    }

    fn external_home(project: &Path) -> PathBuf {
        let name: String = project
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect()
            })
            .unwrap_or_default();
        let hash = stable_hash(&project.to_string_lossy());
        Path::new(EXTERNAL_STATE_ROOT).join(format!("{name}-{hash:012x}").trim_start_matches('-'))
    }

    /// Whether PostgreSQL's state lives outside the project.
    pub fn postgres_is_external(&self) -> bool {
        self.postgres_home != self.postgres_link
    }

    /// PostgreSQL's data directory.
    pub fn postgres_data(&self) -> PathBuf {
        self.postgres_home.join("data")
    }

    /// Where a fresh `initdb` writes before it is complete and renamed to [`Self::postgres_data`].
    pub fn postgres_data_in_progress(&self) -> PathBuf {
        self.postgres_home.join(INITDB_SCRATCH)
    }

    /// The copy of the committed `postgresql.conf` the server reads (the server user may not be
    /// able to read the project itself).
    pub fn postgres_conf(&self) -> PathBuf {
        self.postgres_home.join("postgresql.conf")
    }

    /// The directory of PostgreSQL's Unix socket: short enough for `sun_path`.
    pub fn postgres_socket_dir(&self) -> PathBuf {
        self.outside_socket_dir()
            .unwrap_or_else(|| self.postgres_home.join("run"))
    }

    /// The socket directory in the temp directory, for a project whose own path is too long.
    /// Its name is predictable, so [`Self::create`] makes sure it is nanika's before using it.
    fn outside_socket_dir(&self) -> Option<PathBuf> {
        let inside = self.postgres_home.join("run").join(LONGEST_SOCKET_NAME);
        if inside.as_os_str().len() <= MAX_SOCKET_PATH {
            return None;
        }
        Some(std::env::temp_dir().join(format!(
            "nanika-{}-{:08x}",
            self.server_uid(),
            stable_hash(&self.state.to_string_lossy()) as u32
        )))
    }

    fn server_uid(&self) -> u32 {
        self.server_user
            .as_ref()
            .map_or(Uid::effective().as_raw(), |u| u.uid)
    }

    /// Where the password of the cluster's superuser (`postgres`) is kept, owner-only. The app's
    /// role is not a superuser, so nanika's own connections keep the slots PostgreSQL reserves
    /// for superusers when the app exhausts `max_connections`.
    pub fn postgres_admin_password_file(&self) -> PathBuf {
        self.run.join("postgres-admin.password")
    }

    /// The superuser's password, when this cluster has nanika's own superuser.
    pub fn postgres_admin_password(&self) -> Option<nanika_config::Secret> {
        let text = std::fs::read_to_string(self.postgres_admin_password_file()).ok()?;
        Some(nanika_config::Secret::new(text.trim().to_string())).filter(|s| !s.is_empty())
    }

    /// A log file.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn state_mode(&self) -> u32 {
        if self.server_user.is_some() && !self.postgres_is_external() {
            0o711
        } else {
            0o700
        }
    }

    /// Refuses a state that nanika did not make: a `.nanika/postgres` link to anywhere but the
    /// home nanika computes, a link anywhere else in `.nanika/` (nanika makes none), a
    /// `.nanika` that is a link, or a shared directory of someone else's. Creates and changes
    /// nothing; every runtime command calls it before touching the state.
    pub fn verify(&self) -> Result<()> {
        if let Some(problem) = &self.problem {
            return Err(safe_fs::untrusted(
                &problem.path,
                problem.problem.clone(),
                problem.fix.clone(),
            ));
        }
        match safe_fs::kind(&self.state) {
            Kind::Missing | Kind::Dir => {}
            Kind::Symlink(target) => return Err(planted(&self.state, &target)),
            Kind::Other => {
                return Err(safe_fs::untrusted(
                    &self.state,
                    "is not a directory",
                    format!(
                        "move it out of the way (mv {0} {0}.old)",
                        self.state.display()
                    ),
                ));
            }
        }
        // Logs, pid files and Redis's files are written by root: a link among them would
        // redirect those writes.
        let skip: &[&str] = if self.redis_is_external() {
            &["postgres", "redis"]
        } else {
            &["postgres"]
        };
        let mut links = safe_fs::symlinks_under(&self.state, 4, skip);
        if self.redis_is_external() {
            let owners = [0, self.redis_uid()];
            check_shared_dir(&self.redis_dir, &owners)?;
            if safe_fs::kind(&self.redis_dir) == Kind::Dir {
                links.extend(safe_fs::symlinks_under(&self.redis_dir, 3, &[]));
            }
        }
        if safe_fs::kind(&self.postgres_link) == Kind::Other {
            return Err(safe_fs::untrusted(
                &self.postgres_link,
                "is not a directory",
                format!(
                    "move it out of the way (mv {0} {0}.old)",
                    self.postgres_link.display()
                ),
            ));
        }
        if self.postgres_is_external() {
            let root = Path::new(EXTERNAL_STATE_ROOT);
            check_shared_dir(root, &[0])?;
            let owners = [0, self.server_uid()];
            check_shared_dir(&self.postgres_home, &owners)?;
        }
        if safe_fs::kind(&self.postgres_home) == Kind::Dir {
            links.extend(safe_fs::symlinks_under(&self.postgres_home, 1, &[]));
            links.extend(safe_fs::symlinks_under(
                &self.postgres_home.join("run"),
                1,
                &[],
            ));
        }
        match links.first() {
            Some((link, target)) => Err(planted(link, target)),
            None => Ok(()),
        }
    }

    /// The uids a directory of this project's state may belong to: nanika's, and the project
    /// owner's (who controls the project anyway).
    fn own_owners(&self, project: &Dir) -> Result<[u32; 2]> {
        Ok([Uid::effective().as_raw(), project.stat()?.uid])
    }

    /// Creates `.nanika/` and its `logs/`, `run/` and `redis/` (or checks the existing ones: real
    /// directories of nanika's or the project owner's), owner-only. `.nanika/` itself is 0711
    /// when a server user must pass through it.
    pub fn create_state_dirs(&self) -> Result<Dir> {
        let project = Dir::open(&self.project)?;
        let owners = self.own_owners(&project)?;
        let expect = Expect {
            owners: &owners,
            mode: None,
        };
        let (state, _) = project.make_dir_expecting(
            nanika_config::project::STATE_DIR,
            self.state_mode(),
            expect,
        )?;
        state.set_mode(self.state_mode())?;
        for name in ["logs", "run"] {
            let (dir, _) = state.make_dir_expecting(name, 0o700, expect)?;
            dir.set_mode(0o700)?;
        }
        Ok(state)
    }

    /// Creates the directories with owner-only permissions, handing PostgreSQL's to the server
    /// user, after [`Self::verify`]. Every directory is made or opened without following a
    /// link, and changed through its descriptor; shared ones (`/var/lib/nanika`, the socket
    /// directory in `/tmp`) are changed only when nanika made them.
    pub fn create(&self) -> Result<()> {
        self.verify()?;
        let state = self.create_state_dirs()?;
        let server = self.server_uid();
        let me = Uid::effective().as_raw();
        let home = self.make_home(
            &state,
            "postgres",
            &self.postgres_home,
            self.postgres_is_external(),
            server,
        )?;
        home.set_mode(0o700)?;
        let (run, _) = home.make_dir_expecting(
            "run",
            0o700,
            Expect {
                owners: &[me, server],
                mode: None,
            },
        )?;
        run.set_mode(0o700)?;
        if let Some(user) = &self.server_user {
            home.set_owner(user.uid, user.gid)?;
            run.set_owner(user.uid, user.gid)?;
        }
        if let Some(socket) = self.outside_socket_dir() {
            self.create_socket_dir(&socket)?;
        }
        self.create_redis_dir(&state)
    }

    /// A server's home: `.nanika/<name>`, or when `external`, `home` in `/var/lib/nanika` with
    /// `.nanika/<name>` linked to it. Made or opened without following a link; an existing one
    /// must belong to nanika, the project's owner or `server_uid`, and be writable by no one else.
    fn make_home(
        &self,
        state: &Dir,
        name: &str,
        home: &Path,
        external: bool,
        server_uid: u32,
    ) -> Result<Dir> {
        let me = Uid::effective().as_raw();
        if !external {
            let project = Dir::open(&self.project)?;
            let owners = self.own_owners(&project)?;
            let (dir, _) = state.make_dir_expecting(
                name,
                0o700,
                Expect {
                    owners: &[owners[0], owners[1], server_uid],
                    mode: None,
                },
            )?;
            return Ok(dir);
        }
        let parent = Dir::open(external_parent())?;
        let (root, _) = parent.make_dir_expecting(
            EXTERNAL_ROOT_NAME,
            0o755,
            Expect {
                owners: &[0],
                mode: None,
            },
        )?;
        let (dir, _) = root.make_dir_expecting(
            file_name_of(home)?,
            0o700,
            Expect {
                owners: &[me, server_uid],
                mode: None,
            },
        )?;
        if state.kind(name)? == Kind::Missing {
            state.symlink(name, home)?;
        }
        Ok(dir)
    }

    /// A server's home made by [`Self::make_home`], opened without following any link nanika
    /// did not make.
    fn open_home(&self, name: &str, home: &Path, external: bool) -> Result<Dir> {
        self.verify()?;
        let missing = || {
            RuntimeError::Other(format!(
                "{} does not exist; `nanika up` creates it",
                home.display()
            ))
        };
        if external {
            Dir::open(external_parent())?
                .open_dir(EXTERNAL_ROOT_NAME)?
                .ok_or_else(missing)?
                .open_dir(file_name_of(home)?)?
                .ok_or_else(missing)
        } else {
            Dir::open(&self.project)?
                .open_dir(nanika_config::project::STATE_DIR)?
                .ok_or_else(missing)?
                .open_dir(name)?
                .ok_or_else(missing)
        }
    }

    /// Redis's directory, owner-only and handed to the Redis user: in `.nanika/`, or in
    /// `/var/lib/nanika` (linked from `.nanika/redis`) when that user cannot enter the project.
    fn create_redis_dir(&self, state: &Dir) -> Result<()> {
        let redis = self.make_home(
            state,
            "redis",
            &self.redis_dir,
            self.redis_is_external(),
            self.redis_uid(),
        )?;
        redis.set_mode(0o700)?;
        if let Some(user) = &self.redis_user
            && redis.stat()?.uid != user.uid
        {
            // Made by nanika as root (or by a Redis that ran as root before nanika ran it
            // unprivileged): everything in it is nanika's, and only root could write there.
            safe_fs::hand_over_tree(&redis, user.uid, user.gid)?;
        }
        Ok(())
    }

    fn redis_uid(&self) -> u32 {
        self.redis_user
            .as_ref()
            .map_or(Uid::effective().as_raw(), |u| u.uid)
    }

    /// Hands a file nanika just created for Redis to the Redis user, through its descriptor.
    pub fn give_file_to_redis(&self, file: &std::fs::File, path: &Path) -> Result<()> {
        match &self.redis_user {
            Some(user) => safe_fs::set_file_owner(file, path, user.uid, user.gid),
            None => Ok(()),
        }
    }

    /// Redis's directory, opened without following a link nanika did not make (after
    /// [`Self::create`]).
    pub fn open_redis_dir(&self) -> Result<Dir> {
        self.open_home("redis", &self.redis_dir, self.redis_is_external())
    }

    /// The socket directory in the shared temp directory: made fresh (0700, then handed to the
    /// server user), or used only if it already is a real 0700 directory of the server user's
    /// or nanika's. A link or someone else's directory there is refused and left alone.
    fn create_socket_dir(&self, socket: &Path) -> Result<()> {
        let (Some(parent), Some(name)) = (socket.parent(), socket.file_name()) else {
            return Err(RuntimeError::Other(format!(
                "{} is not a directory in a directory",
                socket.display()
            )));
        };
        let tmp = Dir::open(parent)?;
        let me = Uid::effective().as_raw();
        let (dir, _) = tmp.make_dir_expecting(
            &name.to_string_lossy(),
            0o700,
            Expect {
                owners: &[self.server_uid(), me],
                mode: Some(0o700),
            },
        )?;
        if let Some(user) = &self.server_user {
            dir.set_owner(user.uid, user.gid)?;
        }
        Ok(())
    }

    /// PostgreSQL's home, opened without following any link nanika did not make (after
    /// [`Self::create`]).
    pub fn open_postgres_home(&self) -> Result<Dir> {
        self.open_home("postgres", &self.postgres_home, self.postgres_is_external())
    }

    /// `.nanika/run`, opened without following a link (after [`Self::create_state_dirs`]): the
    /// supervisor writes its records through it, so that once `.nanika/run` is deleted under it
    /// they go nowhere rather than into a directory made since.
    pub fn open_run(&self) -> Result<Dir> {
        let missing = || {
            RuntimeError::Other(format!(
                "{} does not exist; `nanika up` creates it",
                self.run.display()
            ))
        };
        Dir::open(&self.project)?
            .open_dir(nanika_config::project::STATE_DIR)?
            .ok_or_else(missing)?
            .open_dir("run")?
            .ok_or_else(missing)
    }

    /// Hands a file nanika just created for PostgreSQL to the server user (through its
    /// descriptor, so nothing else can be swapped in).
    pub fn give_file_to_server(&self, file: &std::fs::File, path: &Path) -> Result<()> {
        match &self.server_user {
            Some(user) => safe_fs::set_file_owner(file, path, user.uid, user.gid),
            None => Ok(()),
        }
    }

    /// Every path `down --volumes` removes: `.nanika/` when it is a real directory; the external
    /// home only when it is exactly the one nanika computes for this project; the socket
    /// directory in the temp directory only when it is a real directory of nanika's.
    /// Nothing when the state holds a link nanika did not make.
    pub fn removable(&self) -> Vec<PathBuf> {
        if self.problem.is_some() {
            return Vec::new();
        }
        let mut paths = Vec::new();
        if safe_fs::kind(&self.state) == Kind::Dir {
            paths.push(self.state.clone());
        }
        if self.postgres_is_external()
            && self.postgres_home == Self::external_home(&self.project)
            && safe_fs::is_plain(&self.postgres_home)
            && safe_fs::kind(&self.postgres_home) == Kind::Dir
        {
            paths.push(self.postgres_home.clone());
        }
        if self.redis_is_external()
            && self.redis_dir == Self::external_redis(&self.project)
            && safe_fs::is_plain(&self.redis_dir)
            && safe_fs::kind(&self.redis_dir) == Kind::Dir
        {
            paths.push(self.redis_dir.clone());
        }
        if let Some(socket) = self.outside_socket_dir()
            && safe_fs::kind(&socket) == Kind::Dir
            && std::fs::symlink_metadata(&socket)
                .is_ok_and(|m| [self.server_uid(), Uid::effective().as_raw()].contains(&m.uid()))
        {
            paths.push(socket);
        }
        paths
    }
}

/// The scratch name of a running `initdb`.
pub const INITDB_SCRATCH: &str = "data.initdb-incomplete";
const EXTERNAL_ROOT_NAME: &str = "nanika";

/// The last component of `path`, which nanika made from a project's name and a hash.
fn file_name_of(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| RuntimeError::Other(format!("{} has no usable name", path.display())))
}

fn external_parent() -> &'static Path {
    Path::new(EXTERNAL_STATE_ROOT)
        .parent()
        .unwrap_or(Path::new("/"))
}

/// The error for a link found where nanika makes none.
fn planted(link: &Path, target: &Path) -> RuntimeError {
    safe_fs::untrusted(
        link,
        format!(
            "is a symbolic link to {}, which nanika did not make; nanika will not write, change or delete anything through it",
            target.display()
        ),
        format!(
            "remove the link (rm {}; what it points to is left alone), then run nanika again",
            link.display()
        ),
    )
}

/// Checks a directory nanika shares with the system (`/var/lib/nanika`, the external home) when
/// it exists: a real directory, of one of `owners`, not writable by group or others.
fn check_shared_dir(path: &Path, owners: &[u32]) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    if meta.file_type().is_symlink() {
        return Err(planted(path, &std::fs::read_link(path).unwrap_or_default()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_dir() || !owners.contains(&meta.uid()) || mode & 0o022 != 0 {
        return Err(safe_fs::untrusted(
            path,
            format!(
                "must be a directory of uid {} that only its owner can write, but is {} of uid {} with permissions {mode:04o}; nanika will not use or change it",
                owners
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
                if meta.is_dir() {
                    "a directory"
                } else {
                    "not a directory"
                },
                meta.uid()
            ),
            format!(
                "look at who made {} and why; remove it if nobody needs it",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Gid;

    #[test]
    fn a_closed_home_is_not_traversable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let project = home.join("project");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let me = Uid::effective().as_raw();
        assert!(traversable_by(&project, me, Gid::effective().as_raw()));
        assert!(!traversable_by(&project, me + 4242, 4242));
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert!(traversable_by(&project, me + 4242, 4242));
    }

    #[test]
    fn external_state_is_named_after_the_project_and_stable() {
        let a = StateLayout::external_home(Path::new("/home/dev/game"));
        assert_eq!(a, StateLayout::external_home(Path::new("/home/dev/game")));
        assert!(
            a.starts_with(EXTERNAL_STATE_ROOT)
                && a.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("game-")
        );
        assert_ne!(a, StateLayout::external_home(Path::new("/home/other/game")));
    }

    #[test]
    fn socket_paths_stay_short() {
        let deep = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let layout = StateLayout::new(&deep, None);
        assert!(
            layout
                .postgres_socket_dir()
                .join(LONGEST_SOCKET_NAME)
                .as_os_str()
                .len()
                <= MAX_SOCKET_PATH
        );
    }

    /// A server user that cannot enter a 0700 directory of ours.
    fn stranger() -> ServerUser {
        ServerUser {
            name: "stranger".into(),
            uid: Uid::effective().as_raw() + 4242,
            gid: Gid::effective().as_raw() + 4242,
        }
    }

    fn closed_project() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let project = dir.path().join("game");
        std::fs::create_dir_all(project.join(".nanika")).unwrap();
        (dir, project)
    }

    #[test]
    fn only_the_link_nanika_makes_is_followed() {
        let (_dir, project) = closed_project();
        let link = project.join(".nanika/postgres");
        let expected = StateLayout::external_home(&project);
        std::os::unix::fs::symlink(&expected, &link).unwrap();
        let layout = StateLayout::new(&project, Some(stranger()));
        assert!(layout.verify().is_ok());
        assert_eq!(layout.postgres_home, expected);

        for target in [
            PathBuf::from("/tmp/victim"),
            PathBuf::from(format!("{EXTERNAL_STATE_ROOT}/../../../tmp/victim")),
            PathBuf::from(format!("{}/", expected.display())),
        ] {
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let layout = StateLayout::new(&project, Some(stranger()));
            let refused = layout.verify().unwrap_err().to_string();
            assert!(
                refused.contains(&link.display().to_string())
                    && refused.contains(&target.display().to_string()),
                "{refused}"
            );
            assert_eq!(layout.removable(), Vec::<PathBuf>::new(), "nothing deleted");
            assert!(!layout.postgres_home.starts_with(&target));
        }
    }

    #[test]
    fn a_link_where_none_is_expected_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("game");
        std::fs::create_dir_all(project.join(".nanika")).unwrap();
        let link = project.join(".nanika/postgres");
        std::os::unix::fs::symlink(StateLayout::external_home(&project), &link).unwrap();
        // Not root: nanika never links.
        let layout = StateLayout::new(&project, None);
        let refused = layout.verify().unwrap_err();
        assert!(refused.hint().unwrap().contains("rm "), "{refused}");
    }

    #[test]
    fn a_link_planted_anywhere_in_the_state_is_refused() {
        let (dir, project) = closed_project();
        std::fs::create_dir_all(project.join(".nanika/logs")).unwrap();
        let victim = dir.path().join("victim.txt");
        std::os::unix::fs::symlink(&victim, project.join(".nanika/logs/redis.log")).unwrap();
        let refused = StateLayout::new(&project, None).verify().unwrap_err();
        assert!(refused.to_string().contains("redis.log"), "{refused}");
        assert!(!victim.exists());
    }

    #[test]
    fn state_directories_are_made_owner_only_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("game");
        std::fs::create_dir_all(&project).unwrap();
        let layout = StateLayout::new(&project, None);
        layout.create().unwrap();
        for path in [&layout.state, &layout.run, &layout.postgres_home] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
        assert_eq!(layout.removable(), vec![layout.state.clone()]);

        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::os::unix::fs::symlink(&victim, other.join(".nanika")).unwrap();
        let layout = StateLayout::new(&other, None);
        assert!(layout.create().is_err());
        assert!(layout.removable().is_empty());
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    }
}
