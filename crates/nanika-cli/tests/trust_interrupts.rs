//! Interrupts leave nothing half done: real signals sent to a real `nanika` while it backs up,
//! restores, seeds, migrates and resets against a real PostgreSQL. Each case waits until it can
//! see the operation in progress (a growing `.partial`, a running `pg_restore`, an active COPY or
//! statement), sends the signal, and checks the exit code (128 + the signal), the message, that
//! no tool is left running, and that the data is as it was. Each prints what it measured
//! (`-- --nocapture`); docs/RELIABILITY.md records the figures.

mod common;

use common::{Stack, eventually, text};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Rows in the table that makes the database big enough for each tool to take seconds (a 600 000
/// row table takes pg_dump -Fc about 4 s here, and pg_restore about 5 s). If a case fails because
/// the operation finished before the signal, make this bigger; never skip the case.
const ROWS: u64 = 600_000;

/// How long an operation may take to show it is under way, and a signalled nanika to exit.
const LIMIT: Duration = Duration::from_secs(90);

/// A stack that is up, migrated and seeded.
fn seeded() -> Stack {
    let stack = Stack::new();
    stack.up();
    for args in [&["db", "migrate"][..], &["db", "seed"]] {
        let output = stack.run(args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
    }
    stack
}

/// Adds the `filler` table: `ROWS` rows of 96 hex characters, with a primary key.
fn fill(stack: &Stack) {
    stack.psql(&format!(
        "CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS a, \
         md5((g * 7)::text) AS b FROM generate_series(1, {ROWS}) g; \
         ALTER TABLE filler ADD PRIMARY KEY (id)"
    ));
}

/// Every table's row count and a checksum of its contents.
fn fingerprint(stack: &Stack) -> String {
    stack.psql(
        "SELECT string_agg(format('%s=%s', t, n), ' ' ORDER BY t) FROM ( \
           SELECT 'users' t, count(*) || ':' || md5(coalesce(string_agg(u::text, ',' ORDER BY id), '')) n FROM users u UNION ALL \
           SELECT 'chat_rooms', count(*) || ':' || md5(coalesce(string_agg(r::text, ',' ORDER BY id), '')) FROM chat_rooms r UNION ALL \
           SELECT 'chat_messages', count(*) || ':' || md5(coalesce(string_agg(m::text, ',' ORDER BY id), '')) FROM chat_messages m UNION ALL \
           SELECT 'filler', count(*) || ':' || sum(hashtext(a)::bigint + hashtext(b) + id) FROM filler UNION ALL \
           SELECT '_sqlx_migrations', count(*)::text FROM _sqlx_migrations) x",
    )
}

/// How a signal reaches nanika.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// Its whole process group, as a terminal's Ctrl-C does (nanika runs as a shell job would,
    /// leading a group of its own).
    Group,
    /// Only nanika's own process, as `kill PID` does.
    Alone,
}

/// Starts `nanika ARGS` in the stack's project, leading a process group of its own.
fn start(stack: &Stack, args: &[&str]) -> Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nanika"));
    command
        .args(args)
        .current_dir(&stack.root)
        .env("NANIKA_RUNTIME", "native")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in common::foreign_env() {
        command.env_remove(var);
    }
    command.spawn().unwrap()
}

fn send(child: &Child, signal: Signal, target: Target) {
    let pid = Pid::from_raw(child.id() as i32);
    match target {
        Target::Group => killpg(pid, signal).unwrap(),
        Target::Alone => kill(pid, signal).unwrap(),
    }
}

/// Waits (bounded) for nanika to exit; its status, its output, and how long it took.
fn finish(mut child: Child) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut status = None;
    let exited = eventually(LIMIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !exited {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    let took = started.elapsed();
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut output).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut output).unwrap();
    }
    assert!(exited, "nanika did not exit within {LIMIT:?}: {output}");
    (status.unwrap(), output, took)
}

/// The PostgreSQL tools (not zombies) whose command line names something in the project.
fn tools_running(stack: &Stack) -> Vec<String> {
    let root = stack.root.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !matches!(comm.trim(), "pg_dump" | "pg_restore" | "psql") {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&root) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Bytes under `path`, a file or a directory (0 when missing).
fn size(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}

/// The `.partial` files and directories in the project's `backups/`.
fn partials(stack: &Stack) -> Vec<PathBuf> {
    std::fs::read_dir(stack.root.join("backups"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

/// The relations (tables, indexes, sequences, views…) outside the system schemas.
fn user_relations(stack: &Stack) -> i64 {
    stack
        .psql(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
        )
        .parse()
        .unwrap()
}

fn scratch_databases(stack: &Stack) -> String {
    stack.psql_in(
        "postgres",
        "SELECT coalesce(string_agg(datname, ','), '') FROM pg_database \
         WHERE datname NOT IN ('postgres', 'template0', 'template1', 'nanika_game')",
    )
}

fn backup(stack: &Stack, name: &str) -> PathBuf {
    let path = stack.root.join("backups").join(name);
    let output = stack.run_path(&["db", "backup", "-o"], &path);
    assert!(output.status.success(), "{}", text(&output));
    path
}

#[test]
fn an_interrupted_backup_leaves_no_partial_file_and_no_pg_dump() {
    let stack = seeded();
    fill(&stack);
    for (signal, target, format, extension) in [
        (Signal::SIGINT, Target::Group, "custom", "dump"),
        (Signal::SIGTERM, Target::Alone, "directory", "dir"),
    ] {
        let output = stack.root.join(format!("backups/interrupted.{extension}"));
        let partial = PathBuf::from(format!("{}.partial", output.display()));
        let child = start(
            &stack,
            &[
                "db",
                "backup",
                "--format",
                format,
                "--jobs",
                "2",
                "-o",
                &output.display().to_string(),
            ],
        );
        // Under way: pg_dump runs and has written table data.
        assert!(
            eventually(LIMIT, || size(&partial) > 1 << 20
                && tools_running(&stack).iter().any(|p| p.contains("pg_dump"))),
            "{format}: the backup never showed progress"
        );
        let written = size(&partial);
        send(&child, signal, target);
        let (status, said, took) = finish(child);
        let code = 128 + signal as i32;
        assert_eq!(
            status.code(),
            Some(code),
            "{format}: if the backup finished before the signal, raise ROWS: {said}"
        );
        for part in [
            format!("interrupted by {}", signal.as_str()),
            "stopped pg_dump".into(),
            format!("removed {}", stack.root.join("backups").display()),
            format!("interrupted.{extension}.partial"),
            "no backup was written".into(),
        ] {
            assert!(said.contains(&part), "{format}: lacks {part:?}: {said}");
        }
        assert!(!partial.exists(), "{format}: {} left", partial.display());
        assert!(!output.exists(), "{format}: no backup may look complete");
        assert_eq!(tools_running(&stack), Vec::<String>::new(), "{format}");
        assert!(
            eventually(Duration::from_secs(10), || {
                stack.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'nanika-pg_dump-%'"
            ) == "0"
            }),
            "{format}: pg_dump's sessions outlived it"
        );
        eprintln!(
            "measured: backup --format {format}, {} to {target:?}: {:.1} MB written when signalled, \
             exit {code} {} ms later, no .partial, no pg_dump",
            signal.as_str(),
            written as f64 / 1e6,
            took.as_millis()
        );
    }
}

#[test]
fn an_interrupted_restore_leaves_the_database_as_it_was() {
    // One database and one dump for the three cases: making them is most of the time.
    let stack = seeded();
    fill(&stack);
    let at_backup = fingerprint(&stack);
    let dump = backup(&stack, "full.dump");
    clean_restore(&stack, &dump);
    parallel_restore_into_an_empty_database(&stack, &dump, &at_backup);
}

/// `restore --clean` interrupted in its safety backup (SIGTERM to nanika alone), then in its
/// restore into the scratch database (SIGINT to the group): the original rows, a marker added
/// after the backup among them, intact; no scratch database; no `.partial`.
fn clean_restore(stack: &Stack, dump: &Path) {
    stack.psql("INSERT INTO chat_rooms (name) VALUES ('marker, added after the backup')");
    let before = fingerprint(stack);
    let dump = dump.display().to_string();
    let restore = ["db", "restore", "--clean", "--yes", &dump];

    // During the safety backup.
    let child = start(stack, &restore);
    assert!(
        eventually(LIMIT, || partials(stack).iter().any(|p| size(p) > 1 << 20)),
        "the safety backup never showed progress"
    );
    send(&child, Signal::SIGTERM, Target::Alone);
    let (status, said, took_backup) = finish(child);
    assert_eq!(
        status.code(),
        Some(143),
        "if the safety backup finished before the signal, raise ROWS: {said}"
    );
    for part in [
        "interrupted by SIGTERM",
        "stopped pg_dump",
        "removed",
        "nothing was restored, nanika_game is unchanged",
    ] {
        assert!(said.contains(part), "lacks {part:?}: {said}");
    }
    assert_eq!(partials(stack), Vec::<PathBuf>::new());
    assert_eq!(tools_running(stack), Vec::<String>::new());
    assert_eq!(scratch_databases(stack), "");
    assert_eq!(fingerprint(stack), before);

    // During the restore into the scratch database: one transaction, so its tables are not
    // visible from outside; its COPY is.
    let child = start(stack, &restore);
    assert!(
        eventually(LIMIT, || stack.psql_in(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'nanika_game__nanika_restore' \
             AND application_name LIKE 'nanika-pg_restore-%' AND state = 'active' \
             AND query LIKE 'COPY %'"
        ) != "0"
            && tools_running(stack)
                .iter()
                .any(|p| p.contains("pg_restore"))),
        "the restore into the scratch database never showed progress"
    );
    send(&child, Signal::SIGINT, Target::Group);
    let (status, said, took_restore) = finish(child);
    assert_eq!(
        status.code(),
        Some(130),
        "if the restore finished before the signal, raise ROWS: {said}"
    );
    for part in [
        "safety backup: ",
        "interrupted by SIGINT",
        "stopped pg_restore",
        "dropped the scratch database nanika_game__nanika_restore",
        "nothing was restored; nanika_game is unchanged",
    ] {
        assert!(said.contains(part), "lacks {part:?}: {said}");
    }
    assert_eq!(scratch_databases(stack), "", "no scratch database is left");
    assert_eq!(partials(stack), Vec::<PathBuf>::new());
    assert_eq!(tools_running(stack), Vec::<String>::new());
    assert_eq!(
        fingerprint(stack),
        before,
        "the original rows, the marker among them, are intact"
    );
    eprintln!(
        "measured: restore --clean interrupted in the safety backup (SIGTERM): exit 143 {} ms \
         later; in the scratch restore (SIGINT to the group): exit 130 {} ms later; both times \
         the checksummed contents unchanged, no scratch database, no .partial",
        took_backup.as_millis(),
        took_restore.as_millis()
    );
}

/// `restore --jobs 4` into an empty database, SIGINT to the group: empty again, and a plain
/// restore then succeeds with the contents of the backup (`at_backup`).
fn parallel_restore_into_an_empty_database(stack: &Stack, dump: &Path, at_backup: &str) {
    stack.psql_in("postgres", "DROP DATABASE nanika_game WITH (FORCE)");
    stack.psql_in("postgres", "CREATE DATABASE nanika_game");

    let child = start(
        stack,
        &["db", "restore", "--jobs", "4", &dump.display().to_string()],
    );
    // Under way: pg_restore has created tables and its workers are loading rows.
    assert!(
        eventually(LIMIT, || user_relations(stack) > 0
            && stack.psql_in(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'nanika_game' \
                 AND application_name LIKE 'nanika-pg_restore-%' AND state = 'active' \
                 AND query LIKE 'COPY %'"
            ) != "0"),
        "the restore never showed progress"
    );
    let seen = user_relations(stack);
    send(&child, Signal::SIGINT, Target::Group);
    let (status, said, took) = finish(child);
    assert_eq!(
        status.code(),
        Some(130),
        "if the restore finished before the signal, raise ROWS: {said}"
    );
    for part in [
        "interrupted by SIGINT",
        "stopped pg_restore",
        "dropped nanika_game and created it again, empty, owned by nanika_user",
        "nanika_game is empty again",
    ] {
        assert!(said.contains(part), "lacks {part:?}: {said}");
    }
    assert_eq!(tools_running(stack), Vec::<String>::new());
    assert_eq!(user_relations(stack), 0, "the database is empty again");
    assert_eq!(
        stack.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "nanika_user"
    );
    assert_eq!(scratch_databases(stack), "");

    let again = stack.run_path(&["db", "restore"], dump);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(fingerprint(stack), at_backup);
    eprintln!(
        "measured: restore --jobs 4 into an empty database, SIGINT to the group during COPY with \
         {seen} relations created: exit 130 {} ms later, 0 relations left, owner nanika_user; \
         the next plain restore succeeds with identical contents",
        took.as_millis()
    );
}

#[test]
fn an_interrupted_seed_adds_no_row() {
    let stack = seeded();
    let counts = || {
        stack.psql(
            "SELECT (SELECT count(*) FROM users) || '/' || (SELECT count(*) FROM chat_messages)",
        )
    };
    let before = counts();
    for (signal, target) in [
        (Signal::SIGHUP, Target::Alone),
        (Signal::SIGINT, Target::Group),
    ] {
        let child = start(
            &stack,
            &["db", "seed", "--users", "200000", "--messages", "400000"],
        );
        // Under way: nanika's COPY is running.
        assert!(
            eventually(LIMIT, || stack.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nanika' \
                 AND state = 'active' AND query LIKE 'COPY%'"
            ) == "1"),
            "the seed never started its COPY"
        );
        send(&child, signal, target);
        let (status, said, took) = finish(child);
        let code = 128 + signal as i32;
        assert_eq!(
            status.code(),
            Some(code),
            "if the seed finished before the signal, seed more rows: {said}"
        );
        assert!(
            said.contains(&format!("interrupted by {}", signal.as_str()))
                && said.contains("the server rolled back its transaction")
                && said.contains("no row was added"),
            "{said}"
        );
        assert_eq!(counts(), before, "no partial rows");
        assert_eq!(
            stack.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nanika'"),
            "0",
            "the seed's session ended before nanika said so"
        );
        eprintln!(
            "measured: seed --users 200000 --messages 400000, {} to {target:?} during COPY: \
             exit {code} {} ms later, counts unchanged ({before})",
            signal.as_str(),
            took.as_millis()
        );
    }
}

/// A migration that runs until it is stopped, after a change it must not leave behind.
const SLOW: &str = "CREATE TABLE interrupted_marker (id int);\n\
                    INSERT INTO interrupted_marker VALUES (1);\n\
                    SELECT pg_sleep(600);\n";

fn wait_for_the_slow_migration(stack: &Stack) {
    // Asked from `postgres`: a reset drops and creates the app's database meanwhile.
    let running = || {
        let output = stack.psql_with(
            common::PASSWORD,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nanika' \
             AND state = 'active' AND query LIKE '%pg_sleep%'",
        );
        String::from_utf8_lossy(&output.stdout).trim() == "1"
    };
    assert!(
        eventually(LIMIT, running),
        "the slow migration never started"
    );
}

#[test]
fn an_interrupted_migration_rolls_back_and_releases_the_lock() {
    let stack = seeded();
    let slow = stack.root.join("migrations/20990101000000_slow.sql");
    std::fs::write(&slow, SLOW).unwrap();
    let child = start(&stack, &["db", "migrate"]);
    wait_for_the_slow_migration(&stack);
    send(&child, Signal::SIGTERM, Target::Alone);
    let (status, said, took) = finish(child);
    assert_eq!(status.code(), Some(143), "{said}");
    for part in [
        "interrupted by SIGTERM",
        "the server rolled back the migration in progress and released the lock",
        "no migration was applied; still pending: 20990101000000 slow",
        "run `nanika db migrate` again",
    ] {
        assert!(said.contains(part), "lacks {part:?}: {said}");
    }
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'interrupted_marker'"),
        "0"
    );
    assert_eq!(stack.psql("SELECT count(*) FROM _sqlx_migrations"), "4");
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0",
        "the migration lock is released"
    );
    std::fs::write(&slow, "CREATE TABLE interrupted_marker (id int);\n").unwrap();
    let again = stack.run(&["db", "migrate"]);
    assert!(
        again.status.success() && text(&again).contains("applied 20990101000000 slow"),
        "{}",
        text(&again)
    );
    eprintln!(
        "measured: migrate, SIGTERM during a migration's statement: exit 143 {} ms later, the \
         migration's table absent, 4 rows in _sqlx_migrations, no advisory lock held",
        took.as_millis()
    );
}

#[test]
fn an_interrupted_reset_says_what_state_the_database_is_in() {
    let stack = seeded();
    stack.psql("INSERT INTO chat_rooms (name) VALUES ('gone after the reset')");
    std::fs::write(stack.root.join("migrations/20990101000000_slow.sql"), SLOW).unwrap();
    let child = start(&stack, &["db", "reset", "--yes"]);
    wait_for_the_slow_migration(&stack);
    send(&child, Signal::SIGINT, Target::Group);
    let (status, said, took) = finish(child);
    assert_eq!(status.code(), Some(130), "{said}");
    let state = "database nanika_game was dropped and created again; applied 4 of 5 pending \
                 migrations (20250801000001 users, 20250801000002 chat, 20250801000003 session \
                 backups, 20261129000001 session backups prefix); still pending: 20990101000000 \
                 slow; it is not seeded";
    assert!(said.contains(state), "{said}");
    assert!(said.contains("run `nanika db reset --yes` again"), "{said}");
    // The database is in exactly that state.
    assert_eq!(stack.psql("SELECT count(*) FROM _sqlx_migrations"), "4");
    assert_eq!(stack.psql("SELECT count(*) FROM users"), "0");
    assert_eq!(stack.psql("SELECT count(*) FROM chat_rooms"), "0");
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'interrupted_marker'"),
        "0"
    );
    eprintln!(
        "measured: reset, SIGINT to the group during the 4th migration: exit 130 {} ms later; \
         the message's state (recreated, 3 of 4 migrations, not seeded) is what the database holds",
        took.as_millis()
    );
}
