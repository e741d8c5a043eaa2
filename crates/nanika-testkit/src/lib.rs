//! Test helpers for nanika: temporary projects and free ports. Dev-only: never a normal
//! dependency of another crate.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A project in its own temporary directory, removed when dropped.
pub struct TempProject {
    dir: tempfile::TempDir,
}

impl TempProject {
    /// An empty directory to create a project in.
    pub fn empty() -> Self {
        TempProject {
            dir: tempfile::Builder::new()
                .prefix("nanika-test-")
                .tempdir()
                .expect("create a temp dir"),
        }
    }

    /// An empty project directory inside `parent`.
    pub fn inside(parent: &Path) -> Self {
        TempProject {
            dir: tempfile::Builder::new()
                .prefix("nanika-test-")
                .tempdir_in(parent)
                .expect("create a temp dir"),
        }
    }

    /// The project's root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the project.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `text` to a file of the project, creating its directories.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).expect("create parent dirs");
        }
        fs_err::write(path, text).expect("write test file");
    }

    /// Reads a file of the project.
    pub fn read(&self, relative: &str) -> String {
        fs_err::read_to_string(self.path(relative)).expect("read test file")
    }

    /// Appends lines to a file of the project; returns the 1-based line number of the first one.
    pub fn append(&self, relative: &str, text: &str) -> usize {
        let mut current = self.read(relative);
        if !current.ends_with('\n') && !current.is_empty() {
            current.push('\n');
        }
        let first_line = current.lines().count() + 1;
        current.push_str(text);
        fs_err::write(self.path(relative), current).expect("append to test file");
        first_line
    }

    /// Replaces the first occurrence of `from` in a file, which must contain it; returns its line.
    pub fn replace(&self, relative: &str, from: &str, to: &str) -> usize {
        let current = self.read(relative);
        let at = current
            .find(from)
            .unwrap_or_else(|| panic!("{relative} does not contain {from:?}"));
        let line = current[..at].matches('\n').count() + 1;
        fs_err::write(self.path(relative), current.replacen(from, to, 1))
            .expect("rewrite test file");
        line
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it, so tests never use a
/// fixed port (and never 5432 or 6379, where a developer's own servers may run).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}
