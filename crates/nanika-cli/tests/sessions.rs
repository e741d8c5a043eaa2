//! Session backups are snapshots of Redis: a logout stays a logout, a restore never rolls back a
//! live session, and each session goes back under the prefix it was taken from.

mod common;

use common::{Stack, eventually, peak_rss_kib, text};
use std::time::Duration;

fn session(user: u32, visits: u32) -> String {
    format!(r#"{{"cookie":{{"path":"/"}},"userId":{user},"visits":{visits}}}"#)
}

fn migrated() -> Stack {
    let stack = Stack::new();
    stack.up();
    let migrate = stack.run(&["db", "migrate"]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    stack
}

fn ok(stack: &Stack, args: &[&str]) -> String {
    let output = stack.run(args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    text(&output)
}

#[test]
fn a_logged_out_session_never_comes_back_and_live_ones_keep_their_time() {
    let stack = migrated();
    for (id, user) in [("a", 1), ("b", 2), ("c", 3)] {
        stack.redis(&["SET", &format!("sess:{id}"), &session(user, 1), "EX", "600"]);
    }
    assert!(ok(&stack, &["sessions", "backup"]).contains("backed up 3 sessions"));
    // User 2 logs out (express-session's destroy deletes the key); the next backup mirrors it.
    stack.redis(&["DEL", "sess:b"]);
    let second = ok(&stack, &["sessions", "backup"]);
    assert!(second.contains("backed up 2 sessions"), "{second}");
    assert!(second.contains("removed 1"), "{second}");
    assert_eq!(stack.psql("SELECT count(*) FROM session_backups"), "2");
    ok(&stack, &["redis", "flush", "--yes"]);
    let restored = ok(&stack, &["sessions", "restore"]);
    assert!(restored.contains("restored 2 sessions"), "{restored}");
    assert_eq!(
        stack.redis(&["EXISTS", "sess:b"]),
        "0",
        "a logout came back"
    );
    let ttl: i64 = stack.redis(&["TTL", "sess:a"]).parse().unwrap();
    assert!(
        (580..=600).contains(&ttl),
        "sess:a came back with {ttl} s to live"
    );
}

#[test]
fn a_second_restore_never_rolls_back_a_live_session() {
    let stack = migrated();
    stack.redis(&["SET", "sess:a", &session(1, 1), "EX", "600"]);
    ok(&stack, &["sessions", "backup"]);
    ok(&stack, &["redis", "flush", "--yes"]);
    ok(&stack, &["sessions", "restore"]);
    // The app goes on using the session after the restore.
    stack.redis(&["SET", "sess:a", &session(1, 2), "KEEPTTL"]);
    let again = ok(&stack, &["sessions", "restore"]);
    assert!(again.contains("restored 0 sessions"), "{again}");
    assert!(again.contains("skipped 1 live"), "{again}");
    assert_eq!(stack.redis(&["GET", "sess:a"]), session(1, 2));
    // Unless asked to.
    let forced = ok(&stack, &["sessions", "restore", "--overwrite"]);
    assert!(forced.contains("restored 1 sessions"), "{forced}");
    assert_eq!(stack.redis(&["GET", "sess:a"]), session(1, 1));
}

#[test]
fn sessions_go_back_under_the_prefix_they_were_taken_from_and_expired_ones_stay_out() {
    let stack = migrated();
    stack.redis(&["SET", "myapp:x", &session(1, 1), "EX", "600"]);
    stack.redis(&["SET", "sess:soon", &session(2, 1), "PX", "2500"]);
    ok(&stack, &["sessions", "backup", "--prefix", "myapp:"]);
    assert!(ok(&stack, &["sessions", "backup"]).contains("backed up 1 sessions"));
    // sess:soon expires in Redis and, by its stored expiry, in the backup.
    assert!(eventually(Duration::from_secs(10), || {
        stack.psql("SELECT count(*) FROM session_backups WHERE expires_at <= now()") == "1"
    }));
    ok(&stack, &["redis", "flush", "--yes"]);
    let restored = ok(&stack, &["sessions", "restore"]);
    assert!(restored.contains("restored 1 sessions"), "{restored}");
    assert!(restored.contains("1 expired"), "{restored}");
    assert_eq!(stack.redis(&["EXISTS", "myapp:x"]), "1");
    assert_eq!(stack.redis(&["EXISTS", "sess:x"]), "0");
    assert_eq!(stack.redis(&["EXISTS", "sess:soon"]), "0");
}

#[test]
fn without_migrations_the_one_thing_to_do_is_said() {
    let stack = Stack::new();
    stack.up();
    for args in [&["sessions", "backup"][..], &["sessions", "restore"]] {
        let output = stack.run(args);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{all}");
        assert!(all.contains("nanika db migrate"), "{all}");
        assert!(!all.contains("at line"), "a stray line number: {all}");
    }
}

#[test]
fn ttl_audit_looks_at_every_key_and_reports_the_sessions() {
    let stack = Stack::new();
    stack.up();
    // More keys than the old default sample of 100 000, none with a TTL.
    stack.redis(&[
        "EVAL",
        "for i = 1, 150000 do redis.call('SET', 'cache:' .. i, 'v') end",
        "0",
    ]);
    for (id, ttl) in [("a", "100"), ("b", "200"), ("c", "300")] {
        stack.redis(&["SET", &format!("sess:{id}"), &session(1, 1), "EX", ttl]);
    }
    stack.redis(&["SET", "sess:forever", &session(2, 1)]);
    let output = ok(&stack, &["redis", "ttl-audit", "--json"]);
    let audit: serde_json::Value =
        serde_json::from_str(&output[..output.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(audit["scanned"], 150_004);
    assert_eq!(audit["total"], 150_004);
    let cache = audit["without_ttl"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "cache")
        .unwrap()
        .clone();
    assert_eq!(cache[1], 150_000);
    let sessions = &audit["sessions"];
    assert_eq!(sessions["count"], 4);
    assert_eq!(sessions["without_ttl"], 1);
    let secs = |key: &str| sessions[key].as_u64().unwrap();
    assert!((60..=100).contains(&secs("ttl_min_secs")), "{sessions}");
    assert!((160..=200).contains(&secs("ttl_median_secs")), "{sessions}");
    assert!((260..=300).contains(&secs("ttl_max_secs")), "{sessions}");
    assert!(
        sessions["eviction_risk"]
            .as_str()
            .unwrap()
            .contains("allkeys-lru evicts any key"),
        "{sessions}"
    );
    // A limited audit says that it sampled, on every output.
    let limited = ok(&stack, &["redis", "ttl-audit", "--limit", "1000"]);
    assert!(limited.contains("sampled 1000 of 150004 keys"), "{limited}");
}

#[test]
fn restore_takes_memory_independent_of_how_many_sessions_it_restores() {
    let stack = migrated();
    // 40 000 sessions of 4 KiB: 160 MiB of payloads, several times the bound below.
    stack.redis(&[
        "EVAL",
        "local v = string.rep('x', 4096) for i = 1, 40000 do redis.call('SET', 'sess:' .. i, v, 'EX', 3600) end",
        "0",
    ]);
    ok(&stack, &["sessions", "backup"]);
    ok(&stack, &["redis", "flush", "--yes"]);
    let (succeeded, peak_kib) = peak_rss_kib(stack.nanika_std().args(["sessions", "restore"]));
    assert!(succeeded, "sessions restore failed");
    assert_eq!(stack.redis(&["DBSIZE"]), "40000");
    assert!(
        peak_kib < 48 * 1024,
        "sessions restore peaked at {peak_kib} KiB for 160 MiB of sessions"
    );
}
