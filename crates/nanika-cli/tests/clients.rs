//! The URLs and environment nanika hands out, given to the real clients: psql, pg_dump and
//! pg_restore, psycopg 3, Node's dotenv, bash and sh, and nanika's own commands, with a password
//! holding every character that a URL, a shell or a .env file reads specially.
//!
//! psycopg and dotenv come from the registries through `scripts/ci-client-deps`, which installs
//! them under `target/client-deps/`. Without them those parts say why and are skipped, or fail
//! when `CI` is set.

mod common;

use common::{PG_BIN, Stack, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A password with `+ % @ : / # ? & ' " $ \` and spaces: each breaks some client when nanika
/// writes it wrong (`%41` must stay three characters, `+` must stay a plus).
const HARD_PASSWORD: &str = r#"Pw+%41 @:/#?&'"$ \x9"#;

/// libpq's variables that nanika sets; unset where only the URL may carry the connection.
const PG_VARS: &str = "PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGOPTIONS PGCONNECT_TIMEOUT";

/// The workspace's `target/client-deps/`, where `scripts/ci-client-deps` installs.
fn client_deps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/client-deps")
}

/// `Some(path)` when a client is installed; else `None` after saying why on stderr, or a failure
/// when `CI` is set, since CI must run every part.
fn installed(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{what} is not installed ({} is missing): run scripts/ci-client-deps",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// The venv's python with psycopg 3.
fn psycopg_python() -> Option<PathBuf> {
    installed(client_deps().join("venv/bin/python"), "psycopg 3")
}

/// Node with the dotenv package: (node, the directory holding `node_modules/dotenv`).
fn node_dotenv() -> Option<(PathBuf, PathBuf)> {
    let dir = client_deps().join("node");
    installed(
        dir.join("node_modules/dotenv/package.json"),
        "Node's dotenv",
    )?;
    let node = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("node"))
        .find(|node| node.is_file());
    Some((
        installed(node.unwrap_or_else(|| "node".into()), "node")?,
        dir,
    ))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// `text` as RFC 3986 writes it in a URL's userinfo: all but the unreserved characters encoded.
/// Written here rather than taken from nanika, so the test checks nanika's encoding.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `value` double-quoted as nanika's .env reader (`nanika_config::dotenv`) reads it.
fn env_file_quoted(value: &str) -> String {
    let escaped = value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n");
    format!("\"{escaped}\"")
}

/// Sets the app's password to `password` in `.env`, in POSTGRES_PASSWORD and percent-encoded in
/// DATABASE_URL, and appends `query` to DATABASE_URL's `?schema=public`.
fn set_password(stack: &Stack, password: &str, query: &str) {
    stack.project.replace(
        ".env",
        "POSTGRES_PASSWORD=nanika_password",
        &format!("POSTGRES_PASSWORD={}", env_file_quoted(password)),
    );
    stack.project.replace(
        ".env",
        "nanika_user:nanika_password@",
        &format!("nanika_user:{}@", url_encoded(password)),
    );
    stack
        .project
        .replace(".env", "?schema=public", &format!("?schema=public{query}"));
}

fn ok(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what}:\n{}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// `nanika env ARGS` as JSON, an object of strings.
fn env_json(stack: &Stack, args: &[&str]) -> BTreeMap<String, String> {
    let mut all = vec!["env"];
    all.extend_from_slice(args);
    let out = ok(stack.run(&all), "nanika env");
    serde_json::from_str(&out).unwrap()
}

/// Runs `script` in bash after eval'ing `shell_env` (`nanika env --format shell` output), with
/// libpq's own variables unset again so that the URL alone carries the connection.
fn bash_with(shell_env: &str, script: &str, extra: &[(&str, &Path)]) -> Output {
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(format!(
            "set -eu\neval \"$NANIKA_ENV\"\nunset {PG_VARS}\n{script}"
        ))
        .env("NANIKA_ENV", shell_env)
        .env("PG", PG_BIN);
    for (name, path) in extra {
        bash.env(name, path);
    }
    bash.output().unwrap()
}

#[test]
fn libpq_tools_and_psycopg_connect_with_the_urls_nanika_hands_out() {
    let stack = Stack::new();
    set_password(&stack, HARD_PASSWORD, "");
    stack.up();
    ok(stack.run(&["db", "migrate"]), "nanika db migrate");

    let shell = ok(
        stack.run(&["env", "--format", "shell", "--show-secrets"]),
        "nanika env --format shell",
    );
    let seen = ok(
        bash_with(&shell, r#"printf '%s' "$POSTGRES_PASSWORD""#, &[]),
        "eval of the shell format",
    );
    assert_eq!(seen, HARD_PASSWORD, "eval gives back the password exactly");

    // psql with the URL only.
    let path = ok(
        bash_with(
            &shell,
            r#""$PG/psql" -X -Atc 'SHOW search_path' "$DATABASE_URL_LIBPQ""#,
            &[],
        ),
        "psql with DATABASE_URL_LIBPQ",
    );
    assert_eq!(path, "public");
    // psql with the PG* variables only (PGOPTIONS has a space that eval must keep).
    let mut only_env = Command::new("bash");
    only_env
        .arg("-c")
        .arg(r#"set -eu; eval "$NANIKA_ENV"; unset DATABASE_URL_LIBPQ; "$PG/psql" -X -Atc 'SHOW search_path'"#)
        .env("NANIKA_ENV", &shell)
        .env("PG", PG_BIN);
    assert_eq!(ok(only_env.output().unwrap(), "psql with PG*"), "public");

    // pg_dump to a file, then pg_restore into a new database, both with the URL.
    let dump = stack.root.join("clients.dump");
    let tables = "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'public'";
    let before = ok(
        bash_with(
            &shell,
            &format!(r#""$PG/psql" -X -Atc "{tables}" "$DATABASE_URL_LIBPQ""#),
            &[],
        ),
        "psql lists the tables",
    );
    assert!(before.contains("users"), "{before}");
    ok(
        bash_with(
            &shell,
            r#""$PG/pg_dump" -Fc -f "$DUMP" "$DATABASE_URL_LIBPQ""#,
            &[("DUMP", &dump)],
        ),
        "pg_dump with DATABASE_URL_LIBPQ",
    );
    let restored = ok(
        bash_with(
            &shell,
            &format!(
                r#""$PG/psql" -X -qc 'CREATE DATABASE restored' "$DATABASE_URL_LIBPQ"
restored=${{DATABASE_URL_LIBPQ/\/nanika_game\?/\/restored\?}}
[ "$restored" != "$DATABASE_URL_LIBPQ" ]
"$PG/pg_restore" --exit-on-error -d "$restored" "$DUMP"
"$PG/psql" -X -Atc "{tables}" "$restored"
"$PG/psql" -X -Atc 'SELECT current_database(), current_setting($$search_path$$)' "$restored""#
            ),
            &[("DUMP", &dump)],
        ),
        "pg_restore with DATABASE_URL_LIBPQ",
    );
    assert_eq!(restored, format!("{before}\nrestored|public"));

    // Through `nanika exec`, PG* route and URL route.
    let psql = format!("{PG_BIN}/psql");
    let via_exec = ok(
        stack.run(&["exec", "--", &psql, "-X", "-Atc", "SHOW search_path"]),
        "nanika exec -- psql",
    );
    assert_eq!(via_exec, "public");
    let via_exec_url = ok(
        stack.run(&[
            "exec",
            "--",
            "bash",
            "-c",
            &format!(
                r#"unset {PG_VARS}; exec "$0" -X -Atc 'SHOW search_path' "$DATABASE_URL_LIBPQ""#
            ),
            &psql,
        ]),
        "nanika exec -- psql $DATABASE_URL_LIBPQ",
    );
    assert_eq!(via_exec_url, "public");

    // psycopg 3 (its own libpq build), from the eval'd shell and through exec.
    let Some(python) = psycopg_python() else {
        return;
    };
    let check = script("psycopg_check.py");
    let expected = "nanika_user|nanika_game|public";
    let from_shell = ok(
        bash_with(
            &shell,
            r#""$PYTHON" "$CHECK""#,
            &[("PYTHON", &python), ("CHECK", &check)],
        ),
        "psycopg with DATABASE_URL_LIBPQ from the shell format",
    );
    assert_eq!(from_shell, expected);
    let from_exec = ok(
        stack
            .nanika()
            .arg("exec")
            .arg("--")
            .arg(&python)
            .arg(&check)
            .output()
            .unwrap(),
        "nanika exec -- python psycopg_check.py",
    );
    assert_eq!(from_exec, expected);
}

#[test]
fn prisma_urls_work_with_every_nanika_command() {
    let stack = Stack::new();
    let prisma = "&connection_limit=5&pool_timeout=10&connect_timeout=10";
    set_password(&stack, HARD_PASSWORD, prisma);
    let written = format!(
        "postgresql://nanika_user:{}@localhost:{}/nanika_game?schema=public{prisma}",
        url_encoded(HARD_PASSWORD),
        stack.pg_port
    );
    assert!(stack.project.read(".env").contains(&written));
    stack.up();

    let path = ok(
        stack.run(&["db", "psql", "--", "-X", "-Atc", "SHOW search_path"]),
        "nanika db psql",
    );
    assert_eq!(path, "public");
    ok(stack.run(&["db", "migrate"]), "nanika db migrate");
    let backup = stack.root.join("backups/prisma.dump");
    ok(
        stack.run_path(&["db", "backup", "-o"], &backup),
        "nanika db backup",
    );
    assert!(backup.exists());

    // Shown: the Prisma form with its parameters, the libpq form without Prisma's, no password.
    let shown = ok(stack.run(&["env"]), "nanika env");
    let masked = format!(
        "postgresql://nanika_user:****@localhost:{}/nanika_game",
        stack.pg_port
    );
    for line in [
        format!("DATABASE_URL={masked}?schema=public{prisma}"),
        format!("DATABASE_URL_LIBPQ={masked}?connect_timeout=10&options=-c%20search_path%3Dpublic"),
        "PGCONNECT_TIMEOUT=10".to_string(),
        "PGOPTIONS=-c search_path=public".to_string(),
        "PGPASSWORD=****".to_string(),
    ] {
        assert!(shown.lines().any(|l| l == line), "{line} in\n{shown}");
    }
    assert!(
        !shown.contains(HARD_PASSWORD) && !shown.contains(&url_encoded(HARD_PASSWORD)),
        "{shown}"
    );
    for format in ["shell", "dotenv", "json"] {
        let output = ok(
            stack.run(&["env", "--format", format]),
            &format!("nanika env --format {format}"),
        );
        assert!(
            !output.contains("Pw+") && !output.contains("Pw%2B"),
            "{format} shows the password:\n{output}"
        );
    }

    // With --show-secrets: the URL exactly as written, the password as set.
    let env = env_json(&stack, &["--format", "json", "--show-secrets"]);
    assert_eq!(env["DATABASE_URL"], written);
    assert_eq!(env["POSTGRES_PASSWORD"], HARD_PASSWORD);
    assert_eq!(env["PGPASSWORD"], HARD_PASSWORD);
    assert_eq!(
        env["DATABASE_URL_LIBPQ"],
        format!(
            "postgresql://nanika_user:{}@localhost:{}/nanika_game?connect_timeout=10&options=-c%20search_path%3Dpublic",
            url_encoded(HARD_PASSWORD),
            stack.pg_port
        )
    );
    assert_eq!(
        env_json(&stack, &["--json", "--show-secrets"]),
        env,
        "--json is --format json"
    );

    let psql = format!("{PG_BIN}/psql");
    let via_exec = ok(
        stack.run(&["exec", "--", &psql, "-X", "-Atc", "SHOW search_path"]),
        "nanika exec -- psql",
    );
    assert_eq!(via_exec, "public");
    let via_exec_url = ok(
        stack.run(&[
            "exec",
            "--",
            "bash",
            "-c",
            &format!(
                r#"unset {PG_VARS}; exec "$0" -X -Atc 'SHOW search_path' "$DATABASE_URL_LIBPQ""#
            ),
            &psql,
        ]),
        "nanika exec -- psql $DATABASE_URL_LIBPQ",
    );
    assert_eq!(via_exec_url, "public");
    if let Some(python) = psycopg_python() {
        let from_exec = ok(
            stack
                .nanika()
                .arg("exec")
                .arg("--")
                .arg(&python)
                .arg(script("psycopg_check.py"))
                .output()
                .unwrap(),
            "nanika exec -- python psycopg_check.py",
        );
        assert_eq!(from_exec, "nanika_user|nanika_game|public");
    }
}

/// What `sh_or_bash` has in its environment after eval'ing `shell_env`, as a map.
fn evaluated(shell: &str, shell_env: &str) -> BTreeMap<String, String> {
    let output = Command::new(shell)
        .arg("-c")
        .arg(r#"eval "$NANIKA_ENV" && exec env -0"#)
        .env_clear()
        .env("NANIKA_ENV", shell_env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(output.status.success(), "{shell}: {}", text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .split_terminator('\0')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shell_and_dotenv_formats_read_back_as_json_says() {
    // No servers: `nanika env` only reads the project.
    let passwords = [
        // No `'`: single quotes, in one line.
        r#"Pw+%41 @:/#?&"$ \x9"#,
        // A `'` but no `"`, `\` or `$`: double quotes.
        "it's #1 +%41@:/?&",
        // A line break with `$` and `"`: single quotes across lines.
        "two\nlines $\" #",
        // A line break alone: double quotes with `\n`.
        "two\nlines plain",
    ];
    let node = node_dotenv();
    for password in passwords {
        let stack = Stack::new();
        set_password(&stack, password, "&connection_limit=5");
        let json = env_json(&stack, &["--format", "json", "--show-secrets"]);
        assert_eq!(json["POSTGRES_PASSWORD"], password);

        let shell = ok(
            stack.run(&["env", "--format", "shell", "--show-secrets"]),
            "nanika env --format shell",
        );
        for sh in ["bash", "sh"] {
            let seen = evaluated(sh, &shell);
            for (key, value) in &json {
                assert_eq!(seen.get(key), Some(value), "{sh}: {key} for {password:?}");
            }
        }

        let dotenv = ok(
            stack.run(&["env", "--format", "dotenv", "--show-secrets"]),
            "nanika env --format dotenv",
        );
        if let Some((node, dir)) = &node {
            assert_eq!(
                node_reads(node, dir, &dotenv),
                json,
                "Node's dotenv reads\n{dotenv}"
            );
        }
    }
    if node.is_none() {
        return;
    }
    let (node, dir) = node.unwrap();

    // A `'` with `"` and `$`: no form that both Node and compose read alike, so an error naming
    // the variable, and nothing on stdout. Masked, the same project prints fine.
    let stack = Stack::new();
    set_password(&stack, HARD_PASSWORD, "");
    let refused = stack.run(&["env", "--format", "dotenv", "--show-secrets"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(refused.stdout.is_empty(), "{}", text(&refused));
    assert!(
        text(&refused).contains("POSTGRES_PASSWORD") && !text(&refused).contains("Pw+"),
        "{}",
        text(&refused)
    );
    let masked = ok(stack.run(&["env", "--format", "dotenv"]), "masked dotenv");
    assert_eq!(
        node_reads(&node, &dir, &masked),
        env_json(&stack, &["--format", "json"])
    );
    let both = stack.run(&["env", "--json", "--format", "shell"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
}

/// What Node's dotenv package reads from `dotenv_text`.
fn node_reads(node: &Path, dir: &Path, dotenv_text: &str) -> BTreeMap<String, String> {
    use std::io::Write;
    let mut child = Command::new(node)
        .arg(script("dotenv_parse.js"))
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dotenv_text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let parsed: Value = serde_json::from_str(&ok(output, "node dotenv_parse.js")).unwrap();
    serde_json::from_value(parsed).unwrap()
}
