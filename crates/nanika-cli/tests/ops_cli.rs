//! Operations against real servers: migrations, seed, backup and restore in every format, Redis
//! administration, the session backup, and doctor.

mod common;

use common::{Stack, text};
use std::path::Path;

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

/// Every user table with its row count and a checksum of its contents.
fn fingerprint(stack: &Stack) -> String {
    stack.psql(
        "SELECT string_agg(format('%s=%s', t, n), ' ' ORDER BY t) FROM ( \
           SELECT 'users' t, count(*) || ':' || md5(coalesce(string_agg(u::text, ',' ORDER BY id), '')) n FROM users u UNION ALL \
           SELECT 'chat_rooms', count(*) || ':' || md5(coalesce(string_agg(r::text, ',' ORDER BY id), '')) FROM chat_rooms r UNION ALL \
           SELECT 'chat_messages', count(*) || ':' || md5(coalesce(string_agg(m::text, ',' ORDER BY id), '')) FROM chat_messages m UNION ALL \
           SELECT 'session_backups', count(*) || ':' || md5(coalesce(string_agg(s::text, ',' ORDER BY session_id), '')) FROM session_backups s UNION ALL \
           SELECT '_sqlx_migrations', count(*)::text FROM _sqlx_migrations) x",
    )
}

fn empty_database(stack: &Stack) {
    stack.psql_in("postgres", "DROP DATABASE nanika_game WITH (FORCE)");
    stack.psql_in("postgres", "CREATE DATABASE nanika_game");
}

#[test]
fn migrate_applies_once_and_refuses_a_changed_migration() {
    let stack = Stack::new();
    stack.up();
    let dry = stack.run(&["db", "migrate", "--dry-run"]);
    assert!(
        text(&dry).contains("would apply 20250801000001 users"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'users'"),
        "0",
        "dry run applies nothing"
    );

    let first = stack.run(&["db", "migrate"]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(
        text(&first).matches("applied 2025").count(),
        3,
        "{}",
        text(&first)
    );
    let again = stack.run(&["db", "migrate"]);
    assert!(
        again.status.success() && text(&again).contains("nothing to apply"),
        "{}",
        text(&again)
    );
    let tables = stack.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(
        tables,
        "_sqlx_migrations,chat_messages,chat_rooms,session_backups,users"
    );

    // Constraints keep bad data out.
    let blank = stack.psql_with(
        common::PASSWORD,
        "nanika_game",
        "INSERT INTO users (username, email, password_hash) VALUES (' ', 'x@y', 'h')",
    );
    assert!(
        !blank.status.success() && text(&blank).contains("users_username_not_blank"),
        "{}",
        text(&blank)
    );

    let file = stack.root.join("migrations/20250801000002_chat.sql");
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str("\n-- changed after it was applied\n");
    std::fs::write(&file, sql).unwrap();
    let refused = stack.run(&["db", "migrate"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("migration 20250801000002 was changed after it was applied"),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("new migration"),
        "the hint says how to repair: {}",
        text(&refused)
    );
    let status = stack.run(&["db", "migrate", "status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(text(&status).contains("modified"), "{}", text(&status));

    let created = stack.run(&["db", "migrate", "new", "Add friends"]);
    assert!(created.status.success(), "{}", text(&created));
    assert!(
        text(&created).contains("_add_friends.sql"),
        "{}",
        text(&created)
    );
}

#[test]
fn seeding_twice_changes_nothing_and_bulk_uses_copy() {
    let stack = seeded();
    let once = fingerprint(&stack);
    let again = stack.run(&["db", "seed"]);
    assert!(
        text(&again).contains("added 0 users, 0 rooms, 0 messages"),
        "{}",
        text(&again)
    );
    assert_eq!(fingerprint(&stack), once);
    assert_eq!(
        stack.psql("SELECT string_agg(username, ',' ORDER BY username) FROM users"),
        "alice,bob,carol"
    );
    assert!(
        stack
            .psql("SELECT password_hash FROM users WHERE username = 'alice'")
            .starts_with("$argon2id$")
    );

    let bulk = stack.run(&["db", "seed", "--users", "50", "--messages", "20000"]);
    assert!(bulk.status.success(), "{}", text(&bulk));
    assert_eq!(stack.psql("SELECT count(*) FROM users"), "53");
    assert_eq!(stack.psql("SELECT count(*) FROM chat_messages"), "20004");
}

#[test]
fn backup_and_restore_round_trip_in_every_format() {
    let stack = seeded();
    stack.run(&["db", "seed", "--users", "20", "--messages", "500"]);
    stack.psql("INSERT INTO session_backups (session_id, payload, data, expires_at) VALUES ('s1', '{\"a\":1}', '{\"a\":1}', now() + interval '1 hour')");
    let before = fingerprint(&stack);
    for (format, extension) in [("custom", "dump"), ("sql", "sql"), ("directory", "dir")] {
        let path = stack.root.join(format!("backups/round-trip.{extension}"));
        let backup = stack.run_path(&["db", "backup", "--format", format, "-o"], &path);
        assert!(backup.status.success(), "{format}: {}", text(&backup));
        assert!(!Path::new(&format!("{}.partial", path.display())).exists());
        empty_database(&stack);
        let restore = stack
            .nanika()
            .args(["db", "restore"])
            .arg(&path)
            .args(["--jobs", if format == "sql" { "1" } else { "2" }])
            .output()
            .unwrap();
        assert!(restore.status.success(), "{format}: {}", text(&restore));
        assert_eq!(
            fingerprint(&stack),
            before,
            "{format}: contents differ after the round trip"
        );
    }
    // The spec's plain backup.sql is a complete SQL script.
    let sql = std::fs::read_to_string(stack.root.join("backups/round-trip.sql")).unwrap();
    assert!(
        sql.contains("CREATE TABLE public.users")
            && sql.contains("PostgreSQL database dump complete")
    );
    let verify = stack
        .nanika()
        .args(["db", "restore", "--verify"])
        .arg(stack.root.join("backups/round-trip.dump"))
        .output()
        .unwrap();
    assert!(
        verify.status.success() && text(&verify).contains("verified"),
        "{}",
        text(&verify)
    );
}

#[test]
fn bad_restores_change_nothing() {
    let stack = seeded();
    stack.run(&["db", "seed", "--messages", "5000"]);
    let dump = stack.root.join("backups/full.dump");
    assert!(
        stack
            .run_path(&["db", "backup", "-o"], &dump)
            .status
            .success()
    );
    let before = fingerprint(&stack);

    let refused = stack.run_path(&["db", "restore"], &dump);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("database nanika_game is not empty")
            && text(&refused).contains("--clean"),
        "{}",
        text(&refused)
    );

    let bytes = std::fs::read(&dump).unwrap();
    let truncated = stack.root.join("backups/truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let failed = stack.run_path(&["db", "restore", "--clean", "--yes"], &truncated);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(text(&failed).contains("pg_restore"), "{}", text(&failed));
    assert_eq!(
        fingerprint(&stack),
        before,
        "a truncated dump must leave the database as it was"
    );
    assert_eq!(
        stack.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%nanika_restore%'"),
        "0",
        "the scratch database is gone"
    );

    let sql = stack.root.join("backups/full.sql");
    assert!(
        stack
            .run_path(&["db", "backup", "--format", "sql", "-o"], &sql)
            .status
            .success()
    );
    let text_dump = std::fs::read_to_string(&sql).unwrap();
    let cut = stack.root.join("backups/cut.sql");
    std::fs::write(
        &cut,
        &text_dump[..text_dump
            .rfind("-- PostgreSQL database dump complete")
            .unwrap()],
    )
    .unwrap();
    let incomplete = stack.run_path(&["db", "restore", "--clean", "--yes"], &cut);
    assert_eq!(incomplete.status.code(), Some(1));
    assert!(
        text(&incomplete).contains("is incomplete"),
        "{}",
        text(&incomplete)
    );

    let junk = stack.root.join("backups/notes.txt");
    std::fs::write(&junk, "just some notes\n").unwrap();
    let not_dump = stack.run_path(&["db", "restore", "--clean", "--yes"], &junk);
    assert_eq!(not_dump.status.code(), Some(1));
    assert!(
        text(&not_dump).contains("neither a pg_dump archive nor a pg_dump SQL script"),
        "{}",
        text(&not_dump)
    );
    assert_eq!(fingerprint(&stack), before);
}

#[test]
fn clean_restore_takes_a_safety_backup_and_needs_confirmation() {
    let stack = seeded();
    let dump = stack.root.join("backups/base.dump");
    assert!(
        stack
            .run_path(&["db", "backup", "-o"], &dump)
            .status
            .success()
    );
    stack.psql("INSERT INTO chat_rooms (name) VALUES ('later')");
    let unconfirmed = stack.run_path(&["db", "restore", "--clean"], &dump);
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", text(&unconfirmed));
    assert_eq!(
        stack.psql("SELECT count(*) FROM chat_rooms WHERE name = 'later'"),
        "1"
    );
    let done = stack.run_path(&["db", "restore", "--clean", "--yes"], &dump);
    assert!(done.status.success(), "{}", text(&done));
    assert!(text(&done).contains("safety backup: "), "{}", text(&done));
    assert_eq!(
        stack.psql("SELECT count(*) FROM chat_rooms WHERE name = 'later'"),
        "0"
    );
    // The swapped-in database still belongs to the app, which can still create in it.
    assert_eq!(
        stack.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "nanika_user"
    );
    assert_eq!(
        stack.psql("SELECT has_schema_privilege('public', 'CREATE')"),
        "t"
    );
}

#[test]
fn redis_keys_scans_ten_thousand_keys_without_keys() {
    let stack = Stack::new();
    stack.up();
    let mut commands = String::new();
    for i in 0..10_000 {
        commands += &format!("SET load:{i} {i}\r\n");
    }
    for i in 0..100 {
        commands += &format!("SET other:{i} {i}\r\n");
    }
    let mut pipe = std::process::Command::new("redis-cli")
        .args(["-p", &stack.redis_port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(pipe.stdin.as_mut().unwrap(), commands.as_bytes()).unwrap();
    drop(pipe.stdin.take());
    assert!(pipe.wait().unwrap().success());
    stack.redis(&["CONFIG", "RESETSTAT"]);
    let output = stack.run(&["redis", "keys", "load:*", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let keys: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(keys.len(), 10_000);
    assert!(keys.iter().all(|k| k.starts_with("load:")));
    let stats = stack.redis(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_scan:") && !stats.contains("cmdstat_keys:"),
        "{stats}"
    );
    let limited = stack.run(&["redis", "keys", "*", "--limit", "10"]);
    assert_eq!(String::from_utf8_lossy(&limited.stdout).lines().count(), 10);
}

#[test]
fn redis_flush_asks_first_and_keeps_a_snapshot() {
    let stack = Stack::new();
    stack.up();
    stack.redis(&["SET", "keep", "me"]);
    let refused = stack.run(&["redis", "flush"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("--yes"));
    assert_eq!(stack.redis(&["GET", "keep"]), "me");
    let flushed = stack.run(&["redis", "flush", "--yes"]);
    assert!(flushed.status.success(), "{}", text(&flushed));
    assert_eq!(stack.redis(&["DBSIZE"]), "0");
    let snapshot = std::fs::read_dir(stack.root.join("backups"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".rdb"));
    assert!(snapshot, "a snapshot is kept in backups/");
}

#[test]
fn sessions_survive_a_round_trip_with_their_ttl() {
    let stack = seeded();
    let alice = stack.psql("SELECT id FROM users WHERE username = 'alice'");
    let session = format!("{{\"cookie\":{{\"maxAge\":600000}},\"userId\":{alice}}}");
    stack.redis(&["SET", "sess:one", &session, "EX", "600"]);
    stack.redis(&["SET", "sess:two", "not json", "EX", "120"]);
    stack.redis(&["SET", "cache:other", "x"]);
    let backup = stack.run(&["sessions", "backup"]);
    assert!(
        text(&backup).contains("backed up 2 sessions"),
        "{}",
        text(&backup)
    );
    assert_eq!(
        stack.psql("SELECT user_id FROM session_backups WHERE session_id = 'one'"),
        alice
    );
    assert_eq!(
        stack
            .psql("SELECT data->'cookie'->>'maxAge' FROM session_backups WHERE session_id = 'one'"),
        "600000"
    );
    stack.redis(&["FLUSHALL"]);
    let restore = stack.run(&["sessions", "restore"]);
    assert!(
        text(&restore).contains("restored 2 sessions"),
        "{}",
        text(&restore)
    );
    assert_eq!(stack.redis(&["GET", "sess:one"]), session);
    assert_eq!(stack.redis(&["GET", "sess:two"]), "not json");
    let ttl: i64 = stack.redis(&["TTL", "sess:one"]).parse().unwrap();
    assert!((598..=600).contains(&ttl), "TTL {ttl}");
    let ttl: i64 = stack.redis(&["TTL", "sess:two"]).parse().unwrap();
    assert!((118..=120).contains(&ttl), "TTL {ttl}");
}

#[test]
fn doctor_is_ok_when_healthy_and_fails_for_a_stopped_server_or_a_wrong_password() {
    let stack = seeded();
    let healthy = stack.run(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&healthy.stdout).unwrap();
    let failing: Vec<&serde_json::Value> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .collect();
    assert!(
        healthy.status.success() && failing.is_empty(),
        "{failing:#?}"
    );
    for name in [
        "postgres.reachable",
        "postgres.create-in-public",
        "postgres.drift",
        "redis.reachable",
        "redis.memory",
        "redis.aof",
        "redis.drift",
        "disk.state",
    ] {
        assert!(
            checks
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == name && c["verdict"] == "ok"),
            "{name} not ok: {checks:#}"
        );
    }

    stack.project.replace(
        ".env",
        "POSTGRES_PASSWORD=nanika_password",
        "POSTGRES_PASSWORD=wrong-password-123",
    );
    stack.project.replace(
        ".env",
        "nanika_user:nanika_password@",
        "nanika_user:wrong-password-123@",
    );
    let wrong = stack.run(&["doctor"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).contains("FAIL postgres.reachable")
            && text(&wrong).contains("refused nanika_user's password"),
        "{}",
        text(&wrong)
    );
    assert!(
        !text(&wrong).contains("wrong-password-123"),
        "doctor never prints a password"
    );
    let recorded = stack.run(&["doctor"]);
    assert!(
        text(&recorded).contains("failed password attempts"),
        "{}",
        text(&recorded)
    );

    stack.project.replace(
        ".env",
        "POSTGRES_PASSWORD=wrong-password-123",
        "POSTGRES_PASSWORD=nanika_password",
    );
    stack.project.replace(
        ".env",
        "nanika_user:wrong-password-123@",
        "nanika_user:nanika_password@",
    );
    stack.run(&["down"]);
    let stopped = stack.run(&["doctor"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped).contains("FAIL postgres.reachable")
            && text(&stopped).contains(&format!("nothing answers on port {}", stack.pg_port)),
        "{}",
        text(&stopped)
    );
    assert!(
        text(&stopped).contains("FAIL redis.reachable"),
        "{}",
        text(&stopped)
    );
}

/// Issue #18: `db reset` migrates and seeds, so a restore into it is refused; the refusal names
/// `db reset --empty`, which leaves the empty database a plain restore wants.
#[test]
fn reset_empty_leaves_the_database_a_plain_restore_wants() {
    let stack = seeded();
    stack.psql("INSERT INTO chat_rooms (name) VALUES ('kept by the dump')");
    let dump = stack.root.join("backups/before-reset.dump");
    let backup = stack.run_path(&["db", "backup", "-o"], &dump);
    assert!(backup.status.success(), "{}", text(&backup));
    let before = fingerprint(&stack);

    let reset = stack.run(&["db", "reset", "--yes"]);
    assert!(reset.status.success(), "{}", text(&reset));
    let refused = stack.run_path(&["db", "restore", "--yes"], &dump);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not empty")
            && text(&refused).contains("nanika db reset --empty --yes"),
        "{}",
        text(&refused)
    );

    let asked = stack.run(&["db", "reset", "--empty"]);
    assert_eq!(
        asked.status.code(),
        Some(2),
        "it asks first: {}",
        text(&asked)
    );
    let emptied = stack.run(&["db", "reset", "--empty", "--yes"]);
    assert!(emptied.status.success(), "{}", text(&emptied));
    assert!(text(&emptied).contains("empty"), "{}", text(&emptied));
    assert_eq!(
        stack.psql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ),
        "0",
        "no table at all, not even the migrations' own"
    );
    assert_eq!(
        stack.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "nanika_user"
    );

    let restored = stack.run_path(&["db", "restore", "--yes"], &dump);
    assert!(restored.status.success(), "{}", text(&restored));
    assert_eq!(fingerprint(&stack), before);
}

#[test]
fn psql_reset_and_maintain() {
    let stack = seeded();
    let psql = stack.run(&["db", "psql", "--", "-Atc", "SHOW search_path"]);
    assert!(psql.status.success(), "{}", text(&psql));
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "public");
    let failing = stack.run(&["db", "psql", "--", "-c", "SELECT nope"]);
    assert_ne!(
        failing.status.code(),
        Some(0),
        "psql's exit code is passed on"
    );

    stack.psql("INSERT INTO chat_rooms (name) VALUES ('scratch')");
    let refused = stack.run(&["db", "reset"]);
    assert_eq!(refused.status.code(), Some(2));
    let reset = stack.run(&["db", "reset", "--yes"]);
    assert!(reset.status.success(), "{}", text(&reset));
    assert_eq!(
        stack.psql("SELECT count(*) FROM chat_rooms"),
        "1",
        "only the seeded lobby"
    );
    assert_eq!(
        stack.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        "nanika_user"
    );

    let maintain = stack.run(&["db", "maintain", "--json"]);
    assert!(maintain.status.success(), "{}", text(&maintain));
    assert!(
        stack
            .psql("SELECT count(*) FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL")
            .parse::<i64>()
            .unwrap()
            >= 4
    );
}
