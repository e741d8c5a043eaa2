//! The parsers of postgresql.conf, redis.conf and .env never panic, whatever they are given:
//! arbitrary text, and text shaped like their files with the quotes, escapes and units broken.

use nanika_config::{dotenv, pgconf, redisconf};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Lines that look like config lines, built from the pieces parsers trip over.
fn config_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("shared_buffers".to_string()),
        Just("maxmemory".to_string()),
        Just("DATABASE_URL".to_string()),
        Just("bind".to_string()),
        Just(" = ".to_string()),
        Just("=".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\x".to_string()),
        Just("#".to_string()),
        Just("\n".to_string()),
        Just("256MB".to_string()),
        Just("1.5e308GB".to_string()),
        Just("-99999999999999999999".to_string()),
        Just("postgresql://u:p@h:99999/d?schema=".to_string()),
        Just("export ".to_string()),
        Just("include".to_string()),
        "[a-z_]{1,12}",
        "[0-9]{1,25}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn postgresql_conf(text in prop_oneof![any::<String>(), config_like()]) {
        let _ = pgconf::parse(&text, Path::new("postgresql.conf"));
    }

    #[test]
    fn redis_conf(text in prop_oneof![any::<String>(), config_like()]) {
        let _ = redisconf::parse(&text, Path::new("redis.conf"));
    }

    #[test]
    fn dotenv_files(text in prop_oneof![any::<String>(), config_like()]) {
        let _ = dotenv::resolve(&text, Path::new(".env"), &BTreeMap::new());
    }
}
