//! `nanika init` and `nanika config …` as a user runs them: the real binary on temporary projects.

use assert_cmd::Command;
use nanika_testkit::TempProject;
use predicates::prelude::*;
use std::os::unix::fs::PermissionsExt;

const PG: &str = "docker/postgres/postgresql.conf";
const REDIS: &str = "docker/redis/redis.conf";
const COMPOSE: &str = "compose.yaml";
const ENV: &str = ".env";

fn nanika(project: &TempProject) -> Command {
    let mut cmd = Command::cargo_bin("nanika").unwrap();
    cmd.current_dir(project.root());
    for var in [
        "NANIKA_PROJECT_DIR",
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "DATABASE_URL",
        "REDIS_URL",
        "SESSION_SECRET",
        "NODE_ENV",
        "POSTGRES_PORT",
        "REDIS_PORT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn initialised() -> TempProject {
    let project = TempProject::empty();
    nanika(&project).arg("init").assert().success();
    project
}

#[test]
fn init_writes_the_spec_files_and_a_private_env() {
    let project = initialised();
    for file in [PG, REDIS, COMPOSE, ".env.example", ENV, ".gitignore"] {
        assert!(project.path(file).is_file(), "{file} missing");
    }
    let mode = fs_err::metadata(project.path(ENV))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, ".env must be readable by its owner only");
    assert_eq!(project.read(ENV), project.read(".env.example"));
    let gitignore = project.read(".gitignore");
    for entry in ["/.env", "/.nanika/", "/backups/"] {
        assert!(gitignore.lines().any(|l| l == entry), "{entry} not ignored");
    }
    nanika(&project)
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 errors, 0 warnings"));
}

#[test]
fn init_refuses_to_overwrite_and_changes_nothing() {
    let project = initialised();
    project.write(REDIS, "# mine\n");
    nanika(&project).arg("init").assert().code(1).stderr(
        predicate::str::contains("docker/redis/redis.conf")
            .and(predicate::str::contains("--force")),
    );
    assert_eq!(project.read(REDIS), "# mine\n");
}

#[test]
fn init_force_overwrites_config_files_but_keeps_env() {
    let project = initialised();
    project.write(REDIS, "# mine\n");
    project.write(ENV, "POSTGRES_PASSWORD=mine\n");
    nanika(&project)
        .args(["init", "--force"])
        .assert()
        .success()
        .stdout(predicate::str::contains("kept .env"));
    assert!(project.read(REDIS).contains("maxmemory 512mb"));
    assert_eq!(project.read(ENV), "POSTGRES_PASSWORD=mine\n");
}

#[test]
fn init_keeps_an_existing_gitignore() {
    let project = TempProject::empty();
    project.write(".gitignore", "node_modules\n.env");
    nanika(&project).arg("init").assert().success();
    assert_eq!(
        project.read(".gitignore"),
        "node_modules\n.env\n/.nanika/\n/backups/\n"
    );
}

#[test]
fn no_project_is_a_usage_error() {
    let empty = TempProject::empty();
    nanika(&empty)
        .args(["config", "check"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no nanika project")
                .and(predicate::str::contains("nanika init")),
        );
}

#[test]
fn unknown_flags_are_usage_errors() {
    let project = initialised();
    nanika(&project)
        .args(["config", "check", "--colour"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--colour"));
}

/// One bad input: how to break the project, and what the finding must name.
struct BadInput {
    file: &'static str,
    /// The text to replace and its replacement; an empty `from` appends `to` instead.
    from: &'static str,
    to: &'static str,
    key: &'static str,
    code: &'static str,
    /// Something the message or hint must say.
    says: &'static str,
}

const BAD_INPUTS: &[BadInput] = &[
    BadInput {
        file: PG,
        from: "",
        to: "shared_bufers = 128MB\n",
        key: "shared_bufers",
        code: "unknown-key",
        says: "did you mean `shared_buffers`",
    },
    BadInput {
        file: PG,
        from: "shared_buffers = 256MB",
        to: "shared_buffers = 256XB",
        key: "shared_buffers",
        code: "wrong-unit",
        says: "kB, MB, GB",
    },
    BadInput {
        file: PG,
        from: "work_mem = 4MB",
        to: "work_mem = 8M",
        key: "work_mem",
        code: "wrong-unit",
        says: "case-sensitive",
    },
    BadInput {
        file: PG,
        from: "max_connections = 100",
        to: "max_connections = 0",
        key: "max_connections",
        code: "out-of-range",
        says: "1 to 262143",
    },
    BadInput {
        file: PG,
        from: "log_connections = on",
        to: "log_connections = maybe",
        key: "log_connections",
        code: "wrong-type",
        says: "not a boolean",
    },
    BadInput {
        file: PG,
        from: "",
        to: "port = 5433\n",
        key: "port",
        code: "duplicate-key",
        says: "line 8 set it first",
    },
    BadInput {
        file: PG,
        from: "",
        to: "include 'extra.conf'\n",
        key: "include",
        code: "unsupported-include",
        says: "copy the included settings",
    },
    BadInput {
        file: PG,
        from: "log_statement = 'mod'",
        to: "log_statement = 'most'",
        key: "log_statement",
        code: "wrong-value",
        says: "none, ddl, mod, all",
    },
    BadInput {
        file: PG,
        from: "random_page_cost = 1.1",
        to: "random_page_cost = fast",
        key: "random_page_cost",
        code: "wrong-type",
        says: "not a number",
    },
    BadInput {
        file: REDIS,
        from: "",
        to: "maxmemroy 1gb\n",
        key: "maxmemroy",
        code: "unknown-key",
        says: "did you mean `maxmemory`",
    },
    BadInput {
        file: REDIS,
        from: "maxmemory 512mb",
        to: "maxmemory 512xb",
        key: "maxmemory",
        code: "wrong-unit",
        says: "mb",
    },
    BadInput {
        file: REDIS,
        from: "timeout 300",
        to: "timeout 300 # seconds",
        key: "timeout",
        code: "wrong-type",
        says: "comment on its own line",
    },
    BadInput {
        file: REDIS,
        from: "maxmemory-samples 5",
        to: "maxmemory-samples 100",
        key: "maxmemory-samples",
        code: "out-of-range",
        says: "1 to 64",
    },
    BadInput {
        file: REDIS,
        from: "maxmemory-policy allkeys-lru",
        to: "maxmemory-policy allkeys-lfru",
        key: "maxmemory-policy",
        code: "wrong-value",
        says: "allkeys-lru",
    },
    BadInput {
        file: REDIS,
        from: "appendonly yes",
        to: "appendonly maybe",
        key: "appendonly",
        code: "wrong-type",
        says: "yes or no",
    },
    BadInput {
        file: REDIS,
        from: "",
        to: "maxclients 10\n",
        key: "maxclients",
        code: "duplicate-key",
        says: "set it first",
    },
    BadInput {
        file: COMPOSE,
        from: "container_name: nanika-game-redis",
        to: "container_name: 5",
        key: "services.redis.container_name",
        code: "schema",
        says: "string",
    },
    BadInput {
        file: COMPOSE,
        from: "interval: 1s",
        to: "interval: 1sec",
        key: "services.postgres.healthcheck.interval",
        code: "schema",
        says: "duration",
    },
    BadInput {
        file: COMPOSE,
        from: "    restart: unless-stopped",
        to: "    restart_policy: always",
        key: "services.postgres.restart_policy",
        code: "schema",
        says: "restart_policy",
    },
    BadInput {
        file: ENV,
        from: "",
        to: "NOT A VARIABLE\n",
        key: "",
        code: "syntax",
        says: "KEY=VALUE",
    },
    BadInput {
        file: ENV,
        from: "schema=public",
        to: "schema=public&pool=5",
        key: "DATABASE_URL",
        code: "wrong-value",
        says: "unknown parameter `pool`",
    },
    BadInput {
        file: ENV,
        from: "POSTGRES_PORT=5432",
        to: "POSTGRES_PORT=54x",
        key: "POSTGRES_PORT",
        code: "wrong-value",
        says: "not a port",
    },
    BadInput {
        file: ENV,
        from: "",
        to: "NODE_ENV=production\n",
        key: "NODE_ENV",
        code: "duplicate-key",
        says: "set it first",
    },
];

#[test]
fn every_bad_input_is_reported_with_file_line_key_and_exit_1() {
    assert!(BAD_INPUTS.len() >= 15);
    for bad in BAD_INPUTS {
        let project = initialised();
        let line = if bad.from.is_empty() {
            project.append(bad.file, bad.to)
        } else {
            project.replace(bad.file, bad.from, bad.to)
        };
        let before = project.read(bad.file);
        let output = nanika(&project).args(["config", "check"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{}: {stdout}", bad.to);
        let location = format!("{}:{line}: ", bad.file);
        let finding = stdout
            .split("\n")
            .position(|l| l.starts_with(&format!("error[{}]: {location}", bad.code)))
            .map(|i| {
                stdout
                    .lines()
                    .skip(i)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| {
                panic!(
                    "no error[{}] at {location} for {:?}:\n{stdout}",
                    bad.code, bad.to
                )
            });
        if !bad.key.is_empty() {
            assert!(
                finding.contains(&format!("{location}{}: ", bad.key)),
                "key {} not named: {finding}",
                bad.key
            );
        }
        assert!(
            finding.contains(bad.says),
            "{:?} should say {:?}: {finding}",
            bad.to,
            bad.says
        );
        assert!(finding.contains("hint: "), "no hint: {finding}");
        assert_eq!(
            project.read(bad.file),
            before,
            "check must not change the file"
        );

        let json = nanika(&project)
            .args(["config", "check", "--json"])
            .output()
            .unwrap();
        assert_eq!(json.status.code(), Some(1));
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let found = report["findings"].as_array().unwrap().iter().any(|f| {
            f["code"] == bad.code
                && f["file"] == bad.file
                && f["line"] == line
                && f["severity"] == "error"
        });
        assert!(
            found,
            "--json lacks the finding for {:?}: {report:#}",
            bad.to
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let project = initialised();
    project.replace(PG, "work_mem = 4MB", "work_mem = 8M");
    project.replace(REDIS, "maxmemory 512mb", "maxmemory lots");
    project.append(ENV, "BROKEN\n");
    let output = nanika(&project)
        .args(["config", "check", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"], 3, "{report:#}");
}

#[test]
fn a_yaml_syntax_error_names_its_line() {
    let project = initialised();
    let line = project.replace(
        COMPOSE,
        "    image: redis:7-alpine",
        "    image: [redis:7-alpine",
    );
    let output = nanika(&project).args(["config", "check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.contains("error[syntax]: compose.yaml:"), "{stdout}");
    let reported: usize = stdout
        .split("compose.yaml:")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (line..=line + 2).contains(&reported),
        "reported line {reported}, broken line {line}: {stdout}"
    );
}

#[test]
fn a_missing_required_variable_is_named() {
    let project = initialised();
    project.replace(ENV, "POSTGRES_PASSWORD=nanika_password\n", "");
    nanika(&project)
        .args(["config", "check"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "error[missing-key]: .env: POSTGRES_PASSWORD: is not set",
        ));
}

#[test]
fn a_missing_service_is_named() {
    let project = initialised();
    let text = project.read(COMPOSE);
    let start = text.find("  # Redisキャッシュ").unwrap();
    let end = text.find("volumes:\n  # PostgreSQL").unwrap();
    project.write(COMPOSE, &format!("{}{}", &text[..start], &text[end..]));
    nanika(&project)
        .args(["config", "check"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "services.redis: has no `redis` service",
        ));
}

#[test]
fn values_that_differ_from_the_spec_are_listed_as_information() {
    let project = initialised();
    project.replace(PG, "work_mem = 4MB", "work_mem = 8MB");
    project.replace(REDIS, "maxclients 1000", "maxclients 50");
    nanika(&project)
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains("info[differs-from-spec]: docker/postgres/postgresql.conf:14: work_mem: differs from the spec: spec 4MB, file 8MB"))
        .stdout(predicate::str::contains("docker/redis/redis.conf:35: maxclients: differs from the spec: spec 1000, file 50"))
        .stdout(predicate::str::contains("0 errors, 0 warnings, 2 differences from the spec"));
}

#[test]
fn lint_warns_about_the_specs_own_risks_and_passes() {
    let project = initialised();
    let output = nanika(&project)
        .args(["config", "lint", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    for code in [
        "session-eviction",
        "weak-password",
        "weak-session-secret",
        "redis-open",
        "password-in-log",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    assert_eq!(report["errors"], 0);
}

#[test]
fn lint_for_production_fails_on_weak_secrets() {
    let project = initialised();
    nanika(&project)
        .args(["config", "lint", "--production"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "error[weak-password]: .env:8: POSTGRES_PASSWORD",
        ))
        .stdout(predicate::str::contains(
            "error[weak-session-secret]: .env:13: SESSION_SECRET",
        ));
}

#[test]
fn check_catches_a_database_url_that_disagrees() {
    let project = initialised();
    project.replace(ENV, "POSTGRES_PORT=5432", "POSTGRES_PORT=15432");
    project.replace(
        ENV,
        "@localhost:5432/nanika_game",
        "@localhost:5432/other_db",
    );
    let output = nanika(&project).args(["config", "check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("error[url-mismatch]: .env:11: DATABASE_URL: its database is `other_db` but POSTGRES_DB is `nanika_game` (.env:6)"), "{stdout}");
    assert!(
        stdout.contains("error[port-mismatch]: .env:11: DATABASE_URL: reaches port 5432, but PostgreSQL listens on 15432 (POSTGRES_PORT: .env:17)"),
        "{stdout}"
    );
    // Every command that reaches a server refuses, with the same findings, before connecting.
    for args in [
        &["db", "migrate"][..],
        &["redis", "keys"],
        &["ps"],
        &["env"],
    ] {
        let output = nanika(&project).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("nothing was done"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error[port-mismatch]"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn lint_clean_when_risks_are_fixed() {
    let project = initialised();
    let password = "Xq7-long-random-password-9f3";
    project.replace(
        ENV,
        "POSTGRES_PASSWORD=nanika_password",
        &format!("POSTGRES_PASSWORD={password}"),
    );
    project.replace(
        ENV,
        "nanika_user:nanika_password@",
        &format!("nanika_user:{password}@"),
    );
    project.replace(
        ENV,
        "SESSION_SECRET=your-secret-key-change-in-production",
        "SESSION_SECRET=0123456789abcdef0123456789abcdef0123",
    );
    project.replace(
        REDIS,
        "maxmemory-policy allkeys-lru",
        "maxmemory-policy noeviction",
    );
    project.replace(REDIS, "bind 0.0.0.0", "bind 127.0.0.1");
    project.replace(PG, "log_statement = 'mod'", "log_statement = 'none'");
    project.replace(ENV, "# REDIS_PASSWORD=", "REDIS_PASSWORD=redis-Secret-0815");
    project.replace(
        ENV,
        "redis://localhost",
        "redis://:redis-Secret-0815@localhost",
    );
    nanika(&project)
        .args(["config", "lint", "--production"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 errors, 0 warnings"));
}

#[test]
fn show_traces_every_value_to_its_source_and_masks_secrets() {
    let project = initialised();
    let password = "recognisable-Secret-4711";
    project.replace(
        ENV,
        "POSTGRES_PASSWORD=nanika_password",
        &format!("POSTGRES_PASSWORD={password}"),
    );
    project.replace(
        ENV,
        "nanika_user:nanika_password@",
        &format!("nanika_user:{password}@"),
    );
    project.replace(PG, "work_mem = 4MB", "# work_mem removed");
    let output = nanika(&project)
        .args(["config", "show", "--json"])
        .env("REDIS_PORT", "16379")
        .output()
        .unwrap();
    assert!(output.status.success());
    let settings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let find = |file: &str, key: &str| {
        settings
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["file"] == file && s["key"] == key)
            .unwrap_or_else(|| panic!("{key}"))
            .clone()
    };
    assert_eq!(
        find(PG, "shared_buffers")["source"],
        serde_json::json!({"kind": "file", "file": PG, "line": 12})
    );
    // A setting missing from the file is not the spec's value: the server never sees it.
    assert_eq!(find(PG, "work_mem")["source"]["kind"], "missing-from-file");
    assert_eq!(find(PG, "work_mem")["value"], "(not set)");
    assert_eq!(find("env", "REDIS_PORT")["value"], "16379");
    assert_eq!(find("env", "REDIS_PORT")["source"]["kind"], "process-env");
    assert_eq!(
        find("env", "DATABASE_URL")["value"],
        "postgresql://nanika_user:****@localhost:5432/nanika_game?schema=public"
    );
    assert_eq!(find("env", "POSTGRES_PASSWORD")["value"], "****");

    for args in [
        &["config", "show"][..],
        &["config", "show", "--json"],
        &["config", "lint"],
        &["config", "lint", "--json"],
        &["config", "check"],
        &["config", "lint"],
        &["config", "lint", "--production"],
    ] {
        let output = nanika(&project).args(args).output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !all.contains(password),
            "`nanika {}` printed the password",
            args.join(" ")
        );
    }
}

#[test]
fn the_process_environment_wins_over_dotenv() {
    let project = initialised();
    nanika(&project)
        .args(["config", "show"])
        .env("POSTGRES_PORT", "25432")
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"env\.POSTGRES_PORT\s+25432\s+process env").unwrap());
}

#[test]
fn a_bad_value_from_the_process_environment_says_so() {
    let project = initialised();
    nanika(&project)
        .args(["config", "check"])
        .env("REDIS_PORT", "70000")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "REDIS_PORT: `70000` is not a port (from the process environment)",
        ));
}

#[test]
fn project_dir_works_from_anywhere() {
    let project = initialised();
    let elsewhere = TempProject::empty();
    nanika(&elsewhere)
        .args(["config", "check"])
        .arg("--project-dir")
        .arg(project.root())
        .assert()
        .success();
    nanika(&elsewhere)
        .args(["config", "check"])
        .env("NANIKA_PROJECT_DIR", project.root())
        .assert()
        .success();
    let nested = project.path("src/deep");
    fs_err::create_dir_all(&nested).unwrap();
    let mut cmd = nanika(&project);
    cmd.current_dir(&nested)
        .args(["config", "check"])
        .assert()
        .success();
}

#[test]
fn completions_are_printed() {
    let project = TempProject::empty();
    nanika(&project)
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nanika"));
}

#[test]
fn secrets_in_the_server_files_never_reach_check_or_show() {
    let project = initialised();
    let redis = project.read(REDIS);
    project.write(
        REDIS,
        &format!(
            "{redis}\nmasterauth \"MasterSecret1\"\nuser alice on >AlicePassword2 ~app:* +@read\nsentinel auth-pass mymaster SentinelSecret5\nrequirepass \"WrongLine6\" trailing\n"
        ),
    );
    let pg = project.read(PG);
    project.write(
        PG,
        &format!(
            "{pg}\nprimary_conninfo = 'host=127.0.0.1 user=r password=ConnSecret3'\nssl_passphrase_command = 'echo PassPhrase4'\n"
        ),
    );
    let mut seen = String::new();
    for args in [
        &["config", "check"][..],
        &["config", "check", "--json"],
        &["config", "show"],
        &["config", "show", "--json"],
        &["config", "lint"],
        &["config", "lint", "--json"],
    ] {
        let output = nanika(&project).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in [
            "MasterSecret1",
            "AlicePassword2",
            "ConnSecret3",
            "PassPhrase4",
            "SentinelSecret5",
            "WrongLine6",
        ] {
            assert!(!text.contains(secret), "{args:?} shows {secret}:\n{text}");
        }
        seen += &text;
    }
    // What is not secret stays readable: the ACL user's name and rules, the connection's host.
    assert!(seen.contains("alice on >**** ~app:* +@read"), "{seen}");
    assert!(
        seen.contains("host=127.0.0.1 user=r password=****"),
        "{seen}"
    );
    assert!(seen.contains("auth-pass mymaster ****"), "{seen}");
    // A malformed secret line is reported without its value.
    assert!(seen.contains("takes one argument, found 2: ****"), "{seen}");
}
