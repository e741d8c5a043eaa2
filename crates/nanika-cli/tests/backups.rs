//! Physical backups with pgBackRest (`nanika.toml` [backups]): WAL archiving turned on without
//! changing a spec value, full/diff/incr backups listed with their sizes, retention.

mod common;

use common::{Stack, text};
use serde_json::Value;

fn have_pgbackrest() -> bool {
    let found = std::process::Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "pgbackrest is missing: scripts/install-deps --tests installs it"
        );
        eprintln!("pgbackrest is missing: skipped");
    }
    found
}

fn backups(stack: &Stack) -> Vec<Value> {
    let output = stack.run(&["backup", "list", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

fn backup_now(stack: &Stack, kind: &str) -> String {
    let output = stack.run(&["backup", "now", "--type", kind]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// A running project with backups on and no schedule (backups taken by the test alone).
fn manual_backups_project() -> Stack {
    let stack = Stack::new();
    stack.project.write("nanika.toml", MANUAL_BACKUPS);
    stack.up();
    stack
}

const MANUAL_BACKUPS: &str = "[backups]\nenabled = true\nschedule = false\n";

/// `doctor`'s `backups` check.
fn doctor_backups_check(stack: &Stack) -> Value {
    let output = stack.run(&["doctor", "--json"]);
    let checks: Vec<Value> =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
    checks
        .into_iter()
        .find(|c| c["name"] == "backups")
        .unwrap_or_else(|| panic!("no backups check: {}", text(&output)))
}

/// The running server's settings, as `SHOW ALL` gives them: what backups must not change.
fn spec_settings(stack: &Stack) -> String {
    stack.psql(
        "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings \
         WHERE name NOT IN ('archive_mode', 'archive_command')",
    )
}

#[test]
fn backups_need_the_setting_and_a_server_started_with_it() {
    let stack = Stack::new();
    stack.up();
    let off = stack.run(&["backup", "now"]);
    assert_eq!(off.status.code(), Some(2), "{}", text(&off));
    assert!(text(&off).contains("backups are off"), "{}", text(&off));

    stack.project.write("nanika.toml", MANUAL_BACKUPS);
    if !have_pgbackrest() {
        return;
    }
    // Still running without archiving: said, nothing done.
    let stale = stack.run(&["backup", "now"]);
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    assert!(
        text(&stale).contains("nanika restart postgres"),
        "{}",
        text(&stale)
    );
    assert!(
        !stack
            .root
            .join(".nanika/postgres/pgbackrest/repo/backup")
            .exists(),
        "a refused backup made a repository"
    );

    // A setting nanika does not know stops every command, naming the file and line.
    stack.project.write(
        "nanika.toml",
        "[backups]\nenabled = true\nschedule = false\nretention = 3\n",
    );
    let wrong = stack.run(&["backup", "list"]);
    assert_ne!(wrong.status.code(), Some(0), "{}", text(&wrong));
    assert!(text(&wrong).contains("nanika.toml:4"), "{}", text(&wrong));
}

#[test]
fn full_diff_and_incr_backups_are_listed_and_retention_drops_the_oldest_chain() {
    if !have_pgbackrest() {
        return;
    }
    let stack = Stack::new();
    stack.up();
    let before = spec_settings(&stack);
    stack.project.write(
        "nanika.toml",
        "[backups]\nenabled = true\nschedule = false\nretention_full = 1\n",
    );
    let restarted = stack.run(&["restart", "postgres"]);
    assert!(restarted.status.success(), "{}", text(&restarted));
    assert_eq!(
        spec_settings(&stack),
        before,
        "turning backups on changed a setting besides archiving"
    );
    assert_eq!(stack.psql("SHOW archive_mode"), "on");
    // `config show` says where the two extra settings come from; the committed file is as it was.
    let shown = stack.run(&["config", "show", "--json"]);
    let shown: Vec<Value> = serde_json::from_slice(&shown.stdout).unwrap();
    let archive = shown
        .iter()
        .find(|s| s["key"] == "archive_mode")
        .unwrap_or_else(|| panic!("{shown:?}"));
    assert_eq!(archive["value"], "on");
    assert_eq!(archive["source"]["kind"], "added-for", "{archive}");
    assert_eq!(archive["source"]["line"], 2, "{archive}");
    assert!(
        !stack
            .project
            .read("docker/postgres/postgresql.conf")
            .contains("archive_mode"),
        "the committed postgresql.conf was changed"
    );
    let check = stack.run(&["backup", "check"]);
    assert!(check.status.success(), "{}", text(&check));
    assert_eq!(backups(&stack), Vec::<Value>::new());

    // The first backup is full whatever was asked, and says so.
    let first = backup_now(&stack, "incr");
    assert!(first.starts_with("full backup "), "{first}");
    assert!(first.contains("made a full one"), "{first}");
    stack.psql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 200000) g");
    backup_now(&stack, "diff");
    // pgBackRest 2.45 copies whole changed files: the incr takes the new table and the catalog
    // files it touched, not the big table again.
    stack.psql("CREATE TABLE tiny AS SELECT 1 AS one");
    backup_now(&stack, "incr");

    let listed = backups(&stack);
    let kinds: Vec<&str> = listed.iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["full", "diff", "incr"], "{listed:?}");
    let full = &listed[0];
    assert!(full["prior"].is_null(), "{full}");
    assert_eq!(listed[1]["prior"], full["label"]);
    assert_eq!(listed[2]["prior"], listed[1]["label"]);
    for backup in &listed {
        assert!(backup["repository_bytes"].as_u64().unwrap() > 0, "{backup}");
        assert!(backup["wal_start"].is_string(), "{backup}");
    }
    // The diff copied the big new table; the incr after it, only a little.
    let copied = |b: &Value| b["copied_bytes"].as_u64().unwrap();
    assert!(copied(&listed[1]) > 6 << 20, "{listed:?}");
    assert!(copied(&listed[2]) < 2 << 20, "{listed:?}");
    assert_eq!(
        copied(full),
        full["database_bytes"].as_u64().unwrap(),
        "{full}"
    );
    let table = stack.run(&["backup", "list"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("MiB") && table.contains("diff"), "{table}");

    // retention_full = 1: a second full backup expires the first and what was built on it.
    backup_now(&stack, "full");
    let listed_after = backups(&stack);
    assert_eq!(listed_after.len(), 1, "{listed_after:?}");
    assert_eq!(listed_after[0]["kind"], "full");
    assert_ne!(listed_after[0]["label"], full["label"]);
}

/// The moment now, as the server sees it, in RFC 3339 UTC with microseconds.
fn server_now(stack: &Stack) -> String {
    stack.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

#[test]
fn a_point_in_time_restore_brings_back_exactly_what_was_committed_before_it() {
    if !have_pgbackrest() {
        return;
    }
    let stack = manual_backups_project();
    assert!(backup_now(&stack, "full").starts_with("full backup "));
    // pgBackRest counts a backup's stop in whole seconds and needs it before the target: the
    // server's clock is let pass the next second after the backup ended.
    let stopped = backups(&stack)[0]["stopped_at"].as_i64().unwrap();
    stack.psql(&format!(
        "DO $$ BEGIN WHILE extract(epoch FROM clock_timestamp()) < {} LOOP PERFORM pg_sleep(0.05); END LOOP; END $$",
        stopped + 1
    ));

    // t1: the rows to get back; t2: the mistake, and a row after it.
    stack.psql("CREATE TABLE precious AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g");
    let rows_at_t1 =
        stack.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM precious");
    let between = server_now(&stack);
    stack.psql("DROP TABLE precious");
    stack.psql("CREATE TABLE after_the_mistake (x int)");

    // Refused before anything is touched: no zone, the future, before the first backup.
    for (to, says) in [
        (between.trim_end_matches('Z').to_string(), "with its zone"),
        ("2999-01-01T00:00:00Z".to_string(), "in the future"),
        ("2000-01-01T00:00:00Z".to_string(), "the oldest backup"),
    ] {
        let refused = stack.run(&["backup", "restore", "--to", &to, "--yes"]);
        assert!(!refused.status.success(), "{to}: {}", text(&refused));
        assert!(text(&refused).contains(says), "{to}: {}", text(&refused));
        assert_eq!(stack.psql("SELECT count(*) FROM after_the_mistake"), "0");
    }
    // Without --yes and without a terminal: asks, cannot, does nothing.
    let unasked = stack.run(&["backup", "restore", "--to", &between]);
    assert_eq!(unasked.status.code(), Some(2), "{}", text(&unasked));
    assert_eq!(stack.psql("SELECT count(*) FROM after_the_mistake"), "0");

    let restored = stack.run(&["backup", "restore", "--to", &between, "--yes"]);
    assert!(restored.status.success(), "{}", text(&restored));
    assert_eq!(
        stack.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM precious"),
        rows_at_t1
    );
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_class WHERE relname = 'after_the_mistake'"),
        "0",
        "a change after the target survived the restore"
    );
    // The cluster from before the restore is kept, and named.
    let said = text(&restored);
    let kept = std::fs::read_dir(stack.root.join(".nanika/postgres"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("data.before-restore-"))
        .unwrap_or_else(|| panic!("no cluster kept aside: {said}"));
    assert!(said.contains(&kept), "{said}");
    assert!(
        stack
            .root
            .join(".nanika/postgres")
            .join(&kept)
            .join("PG_VERSION")
            .exists()
    );

    // --latest after a SIGKILL of the server: every committed row.
    stack.psql("CREATE TABLE counted (n int)");
    for n in 0..50 {
        stack.psql(&format!("INSERT INTO counted VALUES ({n})"));
    }
    let before = stack.service("postgres");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before["pid"].as_u64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(60), || {
            let now = stack.service("postgres");
            now["state"] == "healthy" && now["pid"] != before["pid"]
        }),
        "postgres was not restarted after SIGKILL"
    );
    let latest = stack.run(&["backup", "restore", "--latest", "--yes"]);
    assert!(latest.status.success(), "{}", text(&latest));
    assert_eq!(stack.psql("SELECT count(*) FROM counted"), "50");
    assert_eq!(
        stack.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM precious"),
        rows_at_t1
    );
    // Still archiving after its promotion, on its new timeline.
    let check = stack.run(&["backup", "check"]);
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn a_damaged_backup_file_is_found_by_verify_and_reported_by_doctor() {
    if !have_pgbackrest() {
        return;
    }
    let stack = manual_backups_project();
    let empty = doctor_backups_check(&stack);
    assert_eq!(empty["verdict"], "warn", "{empty}");
    assert!(
        empty["seen"].as_str().unwrap().contains("no backup"),
        "{empty}"
    );
    let said = backup_now(&stack, "full");
    assert!(said.contains("verified"), "{said}");
    let healthy = doctor_backups_check(&stack);
    assert_eq!(healthy["verdict"], "ok", "{healthy}");
    assert_eq!(backups(&stack)[0]["verified"], "valid");

    // One byte changed in one file of the backup, as a failing disk would.
    let label = backups(&stack)[0]["label"].as_str().unwrap().to_string();
    let files = stack
        .root
        .join(".nanika/postgres/pgbackrest/repo/backup/nanika")
        .join(&label)
        .join("pg_data/global");
    let victim = std::fs::read_dir(&files)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 200))
        .min()
        .unwrap_or_else(|| panic!("no file to damage in {}", files.display()));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();

    assert_eq!(backups(&stack)[0]["verified"], "invalid");
    let damaged = doctor_backups_check(&stack);
    assert_eq!(damaged["verdict"], "fail", "{damaged}");
    assert!(
        damaged["seen"].as_str().unwrap().contains(&label),
        "{damaged}"
    );
    // The next backup says the repository is damaged, and that it itself is intact.
    let next = stack.run(&["backup", "now", "--type", "full"]);
    assert_eq!(next.status.code(), Some(1), "{}", text(&next));
    assert!(
        text(&next).contains("the new backup reads back intact"),
        "{}",
        text(&next)
    );
}

#[test]
fn the_supervisor_takes_backups_on_schedule_and_reports_a_failing_one() {
    if !have_pgbackrest() {
        return;
    }
    let stack = Stack::new();
    stack.project.write(
        "nanika.toml",
        "[backups]\nenabled = true\nincr_every = \"3s\"\n",
    );
    stack.up();
    let limit = std::time::Duration::from_secs(90);
    let mut listed = Vec::new();
    assert!(
        common::eventually(limit, || {
            listed = backups(&stack);
            listed.iter().any(|b| b["kind"] == "full") && listed.iter().any(|b| b["kind"] == "incr")
        }),
        "no full and incremental backup on schedule: {listed:?}"
    );
    assert_eq!(
        listed[0]["kind"], "full",
        "the first scheduled backup is full"
    );
    assert!(
        listed.iter().all(|b| b["verified"] == "valid"),
        "{listed:?}"
    );
    let ps = text(&stack.run(&["ps"]));
    assert!(
        ps.contains("backups: full every 7d, diff every 1d, incr every 3s; last full 20"),
        "{ps}"
    );
    let logs = text(&stack.run(&["logs", "postgres", "-n", "500"]));
    assert!(logs.contains("scheduled full backup"), "{logs}");
    // A backup by hand beside the schedule waits for pgBackRest's lock instead of failing.
    for _ in 0..3 {
        assert!(backup_now(&stack, "incr").starts_with("incr backup "));
    }

    // The repository becomes unwritable: the failure is recorded, shown and retried.
    let unwritable = common::UnwritableRepository::new(&stack);
    let mut seen = Value::Null;
    assert!(
        common::eventually(limit, || {
            seen = doctor_backups_check(&stack);
            seen["verdict"] == "fail"
                && seen["seen"]
                    .as_str()
                    .is_some_and(|s| s.contains("the last scheduled backup failed"))
        }),
        "doctor never reported the failing schedule: {seen}"
    );
    assert!(text(&stack.run(&["ps"])).contains("FAILED"));
    drop(unwritable);
    assert!(
        common::eventually(limit, || {
            seen = doctor_backups_check(&stack);
            seen["verdict"] == "ok"
        }),
        "the schedule did not recover: {seen}"
    );
}

#[test]
fn a_restore_killed_half_way_is_refused_everywhere_until_abandon_puts_the_cluster_back() {
    if !have_pgbackrest() {
        return;
    }
    let stack = manual_backups_project();
    stack.psql("CREATE TABLE kept AS SELECT g AS id FROM generate_series(1, 50000) g");
    backup_now(&stack, "full");
    stack.psql("INSERT INTO kept VALUES (-1)");
    let before = stack.psql("SELECT count(*) || ':' || sum(id) FROM kept");

    // SIGKILL to nanika and pgbackrest (its whole group) once the cluster is being replaced.
    let mut restore = stack.nanika_std();
    std::os::unix::process::CommandExt::process_group(&mut restore, 0);
    let mut child = restore
        .args(["backup", "restore", "--latest", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = stack.root.join(".nanika/run/restore.json");
    assert!(
        common::eventually(std::time::Duration::from_secs(60), || {
            std::fs::read_to_string(&marker).is_ok_and(|m| m.contains("\"restoring\""))
        }),
        "the restore never got to replacing the cluster"
    );
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();

    let up = stack.run(&["up"]);
    assert!(!up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("did not finish"), "{}", text(&up));
    assert!(text(&up).contains("data.before-restore-"), "{}", text(&up));
    assert!(text(&up).contains("--abandon"), "{}", text(&up));
    let wipe = stack.run(&["down", "--volumes", "--yes"]);
    assert!(!wipe.status.success(), "{}", text(&wipe));
    assert!(stack.root.join(".nanika/postgres").exists());
    let check = doctor_backups_check(&stack);
    assert_eq!(check["verdict"], "fail", "{check}");

    let abandon = stack.run(&["backup", "restore", "--abandon"]);
    assert!(abandon.status.success(), "{}", text(&abandon));
    assert_eq!(
        stack.psql("SELECT count(*) || ':' || sum(id) FROM kept"),
        before
    );
    assert!(!marker.exists());
    let up = stack.run(&["up"]);
    assert!(up.status.success(), "{}", text(&up));
}
