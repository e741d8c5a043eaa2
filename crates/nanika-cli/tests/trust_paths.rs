//! nanika run as root never follows a path another local user planted ("Trust II", the file
//! part): each test plants what an adversarial review planted — a committed `.nanika/postgres`
//! link, a link with `..`, a socket directory in `/tmp`, a backup path through existing
//! directories, a database name with `../`, a process holding a file open — and shows that the
//! victim (owned by `nobody`, the "other local user") keeps its owner, mode and contents.

mod common;

use common::{Stack, as_root, eventually, text};
use nanika_testkit::TempProject;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `nobody`: the other local user of these tests.
const NOBODY: u32 = 65534;

/// A directory of another user's, with a file in it, that nanika must never touch.
struct Victim {
    dir: tempfile::TempDir,
}

/// Owner, group, mode and contents (names and bytes) of a victim.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    uid: u32,
    gid: u32,
    mode: u32,
    files: Vec<(String, Vec<u8>)>,
}

impl Victim {
    fn new(mode: u32) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nanika-victim-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("precious.txt"), "not nanika's\n").unwrap();
        for path in [dir.path().to_path_buf(), dir.path().join("precious.txt")] {
            nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(NOBODY)),
                Some(nix::unistd::Gid::from_raw(NOBODY)),
            )
            .unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        Victim { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn snapshot(&self) -> Snapshot {
        snapshot(self.path())
    }
}

fn snapshot(path: &Path) -> Snapshot {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    Snapshot {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.permissions().mode() & 0o7777,
        files,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Asserts that a command was refused (exit 1) and that its message names every one of `named`.
fn assert_refused(output: &std::process::Output, named: &[&str]) {
    let message = text(output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    for name in named {
        assert!(message.contains(name), "`{name}` not named in:\n{message}");
    }
}

#[test]
fn a_planted_state_link_is_refused_and_its_target_left_as_it_was() {
    if !as_root("a_planted_state_link_is_refused_and_its_target_left_as_it_was") {
        return;
    }
    // In an open project no link is expected at all; in a closed home only the one to
    // /var/lib/nanika/<project>-<hash>.
    for stack in [Stack::new(), Stack::in_closed_home()] {
        let victim = Victim::new(0o755);
        let before = victim.snapshot();
        std::fs::create_dir(stack.root.join(".nanika")).unwrap();
        let link = stack.root.join(".nanika/postgres");
        std::os::unix::fs::symlink(victim.path(), &link).unwrap();
        let (link_text, victim_text) = (
            link.display().to_string(),
            victim.path().display().to_string(),
        );
        for args in [
            &["up"][..],
            &["ps"],
            &["down"],
            &["down", "--volumes", "--yes"],
        ] {
            let output = stack.run(args);
            assert_refused(&output, &[&link_text, &victim_text, "remove the link"]);
        }
        assert_eq!(victim.snapshot(), before, "the victim is unchanged");
        assert_eq!(stack.own_processes(), Vec::<String>::new());
        std::fs::remove_file(&link).unwrap();
    }
}

#[test]
fn a_link_through_dotdot_never_lets_down_volumes_delete_elsewhere() {
    if !as_root("a_link_through_dotdot_never_lets_down_volumes_delete_elsewhere") {
        return;
    }
    let stack = Stack::in_closed_home();
    let victim = Victim::new(0o755);
    let before = victim.snapshot();
    std::fs::create_dir(stack.root.join(".nanika")).unwrap();
    let link = stack.root.join(".nanika/postgres");
    // Starts with /var/lib/nanika as a string, and leads to the victim.
    let target = PathBuf::from(format!(
        "/var/lib/nanika/../../..{}",
        victim.path().display()
    ));
    assert_eq!(std::fs::canonicalize(&target).unwrap(), victim.path());
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let output = stack.run(&["down", "--volumes", "--yes"]);
    assert_refused(
        &output,
        &[&link.display().to_string(), "/var/lib/nanika/../"],
    );
    assert_eq!(victim.snapshot(), before, "the victim survives");
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "the link itself is left for the user to look at"
    );

    // Once the link is gone, the project is nanika's again.
    std::fs::remove_file(&link).unwrap();
    let done = stack.run(&["down", "--volumes", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(victim.snapshot(), before);
}

/// The socket directory of a project whose path is too long for `sun_path`, as `up` chose it.
fn socket_dir_of(stack: &Stack) -> PathBuf {
    let plan = std::fs::read_to_string(stack.root.join(".nanika/run/plan.json")).unwrap();
    let start = plan
        .find("unix_socket_directories=")
        .expect("the plan names the socket directory")
        + "unix_socket_directories=".len();
    let end = start + plan[start..].find('"').unwrap();
    PathBuf::from(&plan[start..end])
}

#[test]
fn a_socket_directory_planted_in_tmp_is_refused_and_left_alone() {
    if !as_root("a_socket_directory_planted_in_tmp_is_refused_and_left_alone") {
        return;
    }
    // A project the server user can enter, with a path too long for a socket inside it.
    let home = tempfile::Builder::new()
        .prefix("nanika-long-")
        .tempdir_in(nanika_testkit::scratch_root())
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deep = home.path().join("d".repeat(70));
    std::fs::create_dir(&deep).unwrap();
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stack = Stack::in_project(TempProject::inside(&deep), Some(home));
    stack.up();
    let socket_dir = socket_dir_of(&stack);
    assert!(
        socket_dir.starts_with(std::env::temp_dir()) && socket_dir.exists(),
        "{}",
        socket_dir.display()
    );
    let done = stack.run(&["down", "--volumes", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert!(!socket_dir.exists(), "down --volumes removes nanika's own");

    // Another user plants a link to their directory under the predictable name...
    let victim = Victim::new(0o755);
    let before = victim.snapshot();
    std::os::unix::fs::symlink(victim.path(), &socket_dir).unwrap();
    let output = stack.run(&["up"]);
    assert_refused(
        &output,
        &[
            &socket_dir.display().to_string(),
            &victim.path().display().to_string(),
        ],
    );
    assert_eq!(
        victim.snapshot(),
        before,
        "the link's target is not chowned"
    );
    let done = stack.run(&["down", "--volumes", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert!(
        std::fs::symlink_metadata(&socket_dir).is_ok() && victim.path().exists(),
        "nor is the link followed when deleting"
    );
    std::fs::remove_file(&socket_dir).unwrap();

    // ...or a real directory of their own.
    std::fs::create_dir(&socket_dir).unwrap();
    nix::unistd::chown(
        &socket_dir,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let planted = snapshot(&socket_dir);
    let output = stack.run(&["up"]);
    assert_refused(
        &output,
        &[&socket_dir.display().to_string(), "belongs to uid 65534"],
    );
    let done = stack.run(&["down", "--volumes", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(
        snapshot(&socket_dir),
        planted,
        "neither chowned nor deleted"
    );
    std::fs::remove_dir(&socket_dir).unwrap();

    // With the name free again, up works.
    stack.up();
    assert_eq!(mode(&socket_dir), 0o700);
}

#[test]
fn a_backup_goes_exactly_where_asked_and_changes_no_directory() {
    let stack = Stack::new();
    stack.up();
    // An existing directory keeps its mode; only the backup is owner-only.
    let exports = stack.root.join("exports/nested");
    std::fs::create_dir_all(&exports).unwrap();
    std::fs::set_permissions(&exports, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = stack.run(&["db", "backup", "-o", "exports/nested/x.dump"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(mode(&exports), 0o755, "the directory's mode is unchanged");
    assert_eq!(mode(&exports.join("x.dump")), 0o600);

    // A directory that does not exist is named, never created.
    let nonexistent = Path::new("/nonexistent");
    assert!(
        !nonexistent.exists(),
        "the test needs /nonexistent to be absent"
    );
    let output = stack.run(&["db", "backup", "-o", "/nonexistent/dir/x.dump"]);
    assert_refused(&output, &["/nonexistent/dir", "does not exist"]);
    assert!(!nonexistent.exists(), "nothing was created");
    let output = stack.run(&["db", "backup", "-o", "exports/missing/x.dump"]);
    assert_refused(&output, &["exports/missing"]);
    assert!(!stack.root.join("exports/missing").exists());

    // The project's own backups/ is the one directory nanika makes: owner-only.
    let output = stack.run(&["db", "backup"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(mode(&stack.root.join("backups")), 0o700);
    for entry in std::fs::read_dir(stack.root.join("backups")).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
}

#[test]
fn a_database_name_with_dotdot_never_writes_outside_backups() {
    let stack = Stack::new();
    stack
        .project
        .replace(".env", "POSTGRES_DB=nanika_game", "POSTGRES_DB=../escape");
    stack
        .project
        .replace(".env", "/nanika_game?", "/..%2Fescape?");
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let up = stack.run(&["up"]);
    if up.status.code() == Some(2) {
        // Such a name is a configuration error: refused before anything is written.
        assert!(!stack.root.join("backups").exists(), "{}", text(&up));
        return;
    }
    assert!(up.status.success(), "{}", text(&up));
    let before = listing(&stack.root);
    let output = stack.run(&["db", "backup"]);
    assert!(output.status.success(), "{}", text(&output));
    let mut after = listing(&stack.root);
    after.retain(|name| name != "backups");
    assert_eq!(after, before, "nothing new beside backups/");
    let backups = listing(&stack.root.join("backups"));
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].starts_with("__escape-"), "{backups:?}");
    assert!(
        listing(stack.root.parent().unwrap())
            .iter()
            .all(|name| !name.starts_with("escape")),
        "nothing written beside the project"
    );
}

#[test]
fn a_redis_flush_snapshot_is_owner_only_in_an_owner_only_directory() {
    let stack = Stack::new();
    stack.up();
    stack.redis(&["SET", "keep", "me"]);
    let output = stack.run(&["redis", "flush", "--yes"]);
    assert!(output.status.success(), "{}", text(&output));
    let backups = stack.root.join("backups");
    assert_eq!(mode(&backups), 0o700);
    let snapshots: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert!(snapshots[0].to_string_lossy().ends_with(".rdb"));
    assert_eq!(mode(&snapshots[0]), 0o600);
}

/// Kills the child when dropped, so a failed test leaves no `tail` behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_holding_a_file_in_a_leftover_initdb_directory_survives_up() {
    let stack = Stack::new();
    stack.up();
    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    // As an interrupted initdb leaves it, with somebody's `tail -f` on a file in it.
    let home = stack.root.join(".nanika/postgres");
    std::fs::remove_dir_all(home.join("data")).unwrap();
    let scratch = home.join("data.initdb-incomplete");
    std::fs::create_dir(&scratch).unwrap();
    let held = scratch.join("held.log");
    std::fs::write(&held, "a line\n").unwrap();
    let mut tail = Reaped(
        std::process::Command::new("tail")
            .arg("-f")
            .arg(&held)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = tail.0.id();
    let holds_it = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .any(|l| l.file_name().is_some_and(|n| n == "held.log"))
            })
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(10), holds_it),
        "tail opened the file"
    );

    let output = stack.up();
    assert_eq!(stack.psql("SELECT 1"), "1");
    assert!(
        tail.0.try_wait().unwrap().is_none(),
        "tail was signalled: {}",
        text(&output)
    );
    assert!(holds_it(), "and still holds its file");
    assert!(
        text(&output).contains(&format!("tail (pid {pid})")),
        "the user is told who held it: {}",
        text(&output)
    );
    let aside: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.initdb-incomplete."))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside under a fresh name: {aside:?}");
    assert!(!scratch.exists());
}
