//! Test helpers for nanika: temporary projects and free ports. Dev-only: never a normal
//! dependency of another crate.

use nanika_config::ports::{EPHEMERAL_RANGE_FILE, PortRange};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// `/dev/shm` is used only with this much room: a test run puts a few hundred MiB there at most.
const SCRATCH_ROOM_NEEDED: u64 = 4 << 30;

/// Where tests put their projects, clusters and dumps: `NANIKA_TEST_TMPDIR` when set; else
/// `/dev/shm` when it is a memory filesystem with room to spare; else the system's temp dir.
///
/// Why memory: every project is a PostgreSQL cluster of about a thousand files, made and deleted
/// within seconds. On a disk filesystem (ext4 searching its inode tables for a free inode that
/// was not deleted recently, `discard` trimming every freed block) that churn cost the suite
/// more kernel time than the servers' own work.
pub fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("NANIKA_TEST_TMPDIR") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if memory_filesystem_with_room(shm) {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
    .clone()
}

/// Whether `dir` is a writable tmpfs with `SCRATCH_ROOM_NEEDED` free.
fn memory_filesystem_with_room(dir: &Path) -> bool {
    let Ok(fs) = nix::sys::statfs::statfs(dir) else {
        return false;
    };
    let Ok(vfs) = nix::sys::statvfs::statvfs(dir) else {
        return false;
    };
    fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
        && vfs.blocks_available() * vfs.fragment_size() >= SCRATCH_ROOM_NEEDED
        && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

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
                .tempdir_in(scratch_root())
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

/// The kernel's ephemeral port range, from which it takes the source port of every outgoing
/// connection (and the port of a bind to port 0).
pub fn ephemeral_ports() -> PortRange {
    let text = fs_err::read_to_string(EPHEMERAL_RANGE_FILE).expect("read the ephemeral port range");
    PortRange::parse(&text).unwrap_or_else(|| panic!("{EPHEMERAL_RANGE_FILE} says {text:?}"))
}

/// A TCP port on 127.0.0.1 that is free, for a test's server: below the kernel's ephemeral range
/// (a port inside it can be taken by any outgoing connection between the check and the server's
/// bind, and a connect to it can connect to itself) and above 1024, never 5432 or 6379 (where a
/// developer's own servers may run). Each port is claimed for the life of the test process
/// (see [`claim`]), so parallel tests and test processes do not get the same one.
pub fn free_port() -> u16 {
    let range = ephemeral_ports();
    // Well clear of the privileged ports and of the usual fixed ones below 10000.
    let lowest = if range.low > 20_000 { 10_000 } else { 1025 };
    assert!(
        range.low > lowest,
        "the ephemeral range {range} leaves no port below it for tests"
    );
    free_port_among(lowest..range.low, 1)
}

/// A free TCP port *inside* the kernel's ephemeral range, with the parity the kernel gives
/// connections' source ports first (that of the range's low end), away from the range's ends: for
/// tests that show a server can use such a port. Claimed like [`free_port`]'s.
pub fn free_ephemeral_port() -> u16 {
    let range = ephemeral_ports();
    assert!(
        range.high - range.low > 4000,
        "the ephemeral range {range} is too small"
    );
    let first = range.low + 1000;
    free_port_among(first..range.high - 1000, 2)
}

/// The first of `count` consecutive free ports, each claimed as [`free_port`]'s are, for a
/// topology's nodes (which nanika numbers from a first port); with `bus`, each port + `bus` is
/// free and claimed too (a Redis Cluster node's bus port is its port + 10000).
pub fn free_port_run(count: u16, bus: Option<u16>) -> u16 {
    let range = ephemeral_ports();
    let lowest = if range.low > 20_000 { 10_000 } else { 1025 };
    let highest = range.low - count - bus.unwrap_or(0);
    assert!(
        highest > lowest + 100,
        "the ephemeral range {range} leaves no room for {count} ports"
    );
    let span = highest - lowest;
    let start = (std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % u64::from(span)) as u16;
    'candidates: for i in 0..span {
        let first = lowest + (start + i) % span;
        let ports: Vec<u16> = (first..first + count)
            .flat_map(|p| std::iter::once(p).chain(bus.map(|b| p + b)))
            .collect();
        for port in &ports {
            if *port == 5432 || *port == 6379 || TcpListener::bind(("127.0.0.1", *port)).is_err() {
                continue 'candidates;
            }
        }
        // A port claimed by someone else on the way leaves the ones claimed before it claimed:
        // wasted for this process's life, never shared.
        if ports.iter().all(|p| claim(*p)) {
            return first;
        }
    }
    panic!("no {count} free consecutive ports below {}", range.low);
}

/// The first free, unclaimed port in `ports` taken every `step`, from a random start.
fn free_port_among(ports: std::ops::Range<u16>, step: u16) -> u16 {
    let count = (ports.end - ports.start) / step;
    let start = (std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % u64::from(count)) as u16;
    for i in 0..count {
        let port = ports.start + ((start + i) % count) * step;
        if port == 5432 || port == 6379 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && claim(port) {
            return port;
        }
    }
    panic!("no free port in {ports:?}");
}

/// Claims `port` for this process until it exits: an exclusive lock on its file in a directory
/// of the temp dir, which every test process shares (another one skips a locked port), plus a
/// list of this process's own. Returns false when the port is someone else's.
fn claim(port: u16) -> bool {
    static CLAIMED: Mutex<Vec<(u16, Option<std::fs::File>)>> = Mutex::new(Vec::new());
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.iter().any(|(p, _)| *p == port) {
        return false;
    }
    let dir = std::env::temp_dir().join("nanika-test-ports");
    let _ = std::fs::create_dir(&dir);
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    // A lock file that cannot be opened (another user's) leaves only the bind check: the
    // lock is a courtesy between test processes, not a guarantee.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
        .ok();
    if let Some(file) = &file
        && file.try_lock().is_err()
    {
        return false;
    }
    claimed.push((port, file));
    true
}

/// Makes the kernel's next connection to 127.0.0.1:`port` take a source port just below `port`.
///
/// Linux picks a connection's source port from a counter kept per destination, which moves on
/// by 2 to 16 (of one parity) with every connect. Connecting to `port` again and again walks the
/// counter until the source port lands in the 16 ports below `port`: the next connects to
/// `port` then get a source port of `port` itself, if nothing has bound it, and connect to
/// themselves. A listener holds `port` during the walk so that it is never itself the source
/// port, and every connection is reset rather than closed, so the walk leaves no TIME-WAIT on
/// any port. Returns the last source port; panics if the walk does not get there.
pub fn steer_source_ports_below(port: u16) -> u16 {
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(target).expect("hold the port while steering");
    let range = ephemeral_ports();
    // Enough for several rounds of the whole range at the smallest step.
    let limit = 4 * usize::from(range.high - range.low);
    for _ in 0..limit {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        socket
            .connect(&target.into())
            .expect("connect to the listener");
        let (accepted, _) = listener.accept().expect("accept the connection");
        let source = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("the connection's source address")
            .port();
        socket
            .set_linger(Some(Duration::ZERO))
            .expect("reset on close");
        drop(socket);
        drop(accepted);
        if source < port && port - source <= 16 {
            return source;
        }
    }
    panic!("{limit} connects to port {port} never took a source port just below it");
}
