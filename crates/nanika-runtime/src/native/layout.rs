//! Where the native runtime keeps its state, and who owns it.
//!
//! Everything lives under the project's `.nanika/`. PostgreSQL refuses to run as root, so when
//! nanika runs as root the server runs as an unprivileged user (`postgres` when it exists), which
//! must be able to reach its data directory. A project under a 0700 home such as `/root` is not
//! reachable by it; then the data directory lives in `/var/lib/nanika/<project>-<hash>/` and
//! `.nanika/postgres` is a symlink to it, so the project's state is still found (and removed)
//! through `.nanika/`.

use crate::error::{Result, RuntimeError};
use fs_err as fs;
use nix::unistd::{Gid, Uid, User};
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
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
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
    /// `.nanika/redis/`: Redis's working directory (its AOF).
    pub redis_dir: PathBuf,
    /// `.nanika/postgres` (possibly a symlink to the external state dir).
    pub postgres_link: PathBuf,
    /// Where PostgreSQL's state really is.
    pub postgres_home: PathBuf,
    /// The server user when nanika runs as root.
    pub server_user: Option<ServerUser>,
}

impl StateLayout {
    /// The layout of `project`'s state; creates nothing.
    pub fn new(project: &Path, server_user: Option<ServerUser>) -> Self {
        let project = std::path::absolute(project).unwrap_or_else(|_| project.to_path_buf());
        let state = project.join(nanika_config::project::STATE_DIR);
        let postgres_link = state.join("postgres");
        let postgres_home = match fs::read_link(&postgres_link) {
            Ok(target) => target,
            Err(_) => match &server_user {
                Some(user) if !traversable_by(&state, user.uid, user.gid) => {
                    Self::external_home(&project)
                }
                _ => postgres_link.clone(),
            },
        };
        StateLayout {
            logs: state.join("logs"),
            run: state.join("run"),
            redis_dir: state.join("redis"),
            state,
            postgres_link,
            postgres_home,
            project,
            server_user,
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
        self.postgres_home.join("data.initdb-incomplete")
    }

    /// The copy of the committed `postgresql.conf` the server reads (the server user may not be
    /// able to read the project itself).
    pub fn postgres_conf(&self) -> PathBuf {
        self.postgres_home.join("postgresql.conf")
    }

    /// The directory of PostgreSQL's Unix socket: short enough for `sun_path`.
    pub fn postgres_socket_dir(&self, port: u16) -> PathBuf {
        let inside = self.postgres_home.join("run");
        if inside.join(format!(".s.PGSQL.{port}")).as_os_str().len() <= MAX_SOCKET_PATH {
            return inside;
        }
        let uid = self
            .server_user
            .as_ref()
            .map_or(Uid::effective().as_raw(), |u| u.uid);
        std::env::temp_dir().join(format!(
            "nanika-{uid}-{:08x}",
            stable_hash(&self.state.to_string_lossy()) as u32
        ))
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

    /// Creates the directories with owner-only permissions, handing PostgreSQL's to the server
    /// user. `.nanika/` itself is 0711 when a server user must pass through it, else 0700.
    pub fn create(&self, port: u16) -> Result<()> {
        let make = |dir: &Path, mode: u32| -> Result<()> {
            fs::create_dir_all(dir)
                .map_err(RuntimeError::io(format!("cannot create {}", dir.display())))?;
            fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(
                RuntimeError::io(format!("cannot set the permissions of {}", dir.display())),
            )
        };
        let state_mode = if self.server_user.is_some() && !self.postgres_is_external() {
            0o711
        } else {
            0o700
        };
        make(&self.state, state_mode)?;
        make(&self.logs, 0o700)?;
        make(&self.run, 0o700)?;
        make(&self.redis_dir, 0o700)?;
        if self.postgres_is_external() {
            make(Path::new(EXTERNAL_STATE_ROOT), 0o755)?;
            make(&self.postgres_home, 0o700)?;
            if fs::symlink_metadata(&self.postgres_link).is_err() {
                std::os::unix::fs::symlink(&self.postgres_home, &self.postgres_link).map_err(
                    RuntimeError::io(format!("cannot link {}", self.postgres_link.display())),
                )?;
            }
        } else {
            make(&self.postgres_home, 0o700)?;
        }
        let socket_dir = self.postgres_socket_dir(port);
        make(&socket_dir, 0o700)?;
        if let Some(user) = &self.server_user {
            for dir in [
                &self.postgres_home,
                &self.postgres_home.join("run"),
                &socket_dir,
            ] {
                if dir.exists() {
                    self.give_to_server_user(dir, user)?;
                }
            }
        }
        Ok(())
    }

    fn give_to_server_user(&self, path: &Path, user: &ServerUser) -> Result<()> {
        nix::unistd::chown(
            path,
            Some(Uid::from_raw(user.uid)),
            Some(Gid::from_raw(user.gid)),
        )
        .map_err(|e| {
            RuntimeError::io(format!("cannot hand {} to {}", path.display(), user.name))(e.into())
        })
    }

    /// Hands a file PostgreSQL must read to the server user.
    pub fn give_file_to_server(&self, path: &Path) -> Result<()> {
        match &self.server_user {
            Some(user) => self.give_to_server_user(path, user),
            None => Ok(()),
        }
    }

    /// Every path `down --volumes` removes: `.nanika/` and, when PostgreSQL's state is external,
    /// that directory (only ever one under [`EXTERNAL_STATE_ROOT`]).
    pub fn removable(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.state.clone()];
        if self.postgres_is_external() && self.postgres_home.starts_with(EXTERNAL_STATE_ROOT) {
            paths.push(self.postgres_home.clone());
        }
        let socket_dir = self.postgres_socket_dir(0);
        if socket_dir.starts_with(std::env::temp_dir())
            && socket_dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nanika-"))
        {
            paths.push(socket_dir);
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .postgres_socket_dir(5432)
                .join(".s.PGSQL.5432")
                .as_os_str()
                .len()
                <= MAX_SOCKET_PATH
        );
    }
}
