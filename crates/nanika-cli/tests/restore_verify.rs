//! `restore --verify` compares the database with the dump's own contents, never with the
//! database a restore replaced, and fails on a real difference.

mod common;

use common::{Stack, text};

#[test]
fn verify_compares_with_what_the_dump_holds() {
    let stack = Stack::new();
    stack.up();
    for args in [&["db", "migrate"][..], &["db", "seed"]] {
        let output = stack.run(args);
        assert!(output.status.success(), "{}", text(&output));
    }
    for (format, file) in [("custom", "backups/v.dump"), ("sql", "backups/v.sql")] {
        let backup = stack.run(&["db", "backup", "--format", format, "-o", file]);
        assert!(backup.status.success(), "{}", text(&backup));
        // The database changes after the backup; a correct clean restore verifies against the
        // backup, not against the database it replaced.
        stack.psql("INSERT INTO chat_rooms (name) VALUES ('after the backup')");
        let restore = stack.run(&["db", "restore", "--clean", "--verify", "--yes", file]);
        assert!(restore.status.success(), "{format}: {}", text(&restore));
        assert!(text(&restore).contains("verified"), "{}", text(&restore));
        assert!(!text(&restore).contains("differs"), "{}", text(&restore));
    }
    // --verify alone on a database that no longer holds what the dump holds: a real difference.
    stack.psql("DELETE FROM chat_messages WHERE id = (SELECT min(id) FROM chat_messages)");
    let verify = stack.run(&["db", "restore", "--verify", "backups/v.dump"]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(
        text(&verify).contains("differs: public.chat_messages"),
        "{}",
        text(&verify)
    );
    assert!(
        text(&verify).contains("nothing was restored"),
        "{}",
        text(&verify)
    );
}
