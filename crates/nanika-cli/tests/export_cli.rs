//! `nanika export kubernetes` as a user runs it: the real binary on temporary projects, no
//! servers. What it writes and prints, the output directory's rules, secrets, and bad options.

use assert_cmd::Command;
use nanika_testkit::TempProject;
use predicates::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn nanika(project: &TempProject) -> Command {
    let mut cmd = Command::cargo_bin("nanika").unwrap();
    cmd.current_dir(project.root());
    for var in nanika_config::env_vars::ALL {
        cmd.env_remove(var.name);
    }
    cmd
}

fn initialised() -> TempProject {
    let project = TempProject::empty();
    nanika(&project).arg("init").assert().success();
    project
}

fn export(project: &TempProject, args: &[&str]) -> assert_cmd::assert::Assert {
    nanika(project)
        .args(["export", "kubernetes"])
        .args(args)
        .assert()
}

fn mode(path: &Path) -> u32 {
    fs_err::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn writes_the_manifests_and_says_what_the_operators_manage() {
    let project = initialised();
    export(&project, &[])
        .success()
        .stdout(predicate::str::contains("wrote "))
        .stdout(predicate::str::contains(
            "docker/postgres/postgresql.conf listen_addresses = * (CloudNativePG)",
        ))
        .stdout(predicate::str::contains(
            "docker/postgres/postgresql.conf port = 5432 (CloudNativePG)",
        ))
        .stdout(predicate::str::contains("docker/redis/redis.conf bind = 0.0.0.0"))
        .stdout(predicate::str::contains(
            "kubectl create secret generic nanika-game-db-app-credentials -n nanika-game",
        ))
        .stdout(predicate::str::contains(
            "DATABASE_URL=postgresql://nanika_user:PASSWORD@nanika-game-db-rw.nanika-game.svc:5432/nanika_game?schema=public",
        ))
        .stdout(predicate::str::contains("nanika_password").not())
        .stderr(predicate::str::is_empty());
    for name in [
        "kustomization.yaml",
        "namespace.yaml",
        "postgres-cluster.yaml",
        "redis-config.yaml",
        "redis-replication.yaml",
        ".nanika-export",
    ] {
        let path = project.path(&format!("kubernetes/{name}"));
        assert!(path.is_file(), "{name} missing");
        assert_eq!(mode(&path), 0o644, "{name}");
    }
    let cluster = project.read("kubernetes/postgres-cluster.yaml");
    assert!(cluster.contains("shared_buffers: \"256MB\"\n"), "{cluster}");
    assert!(cluster.contains("#   listen_addresses = *: "), "{cluster}");

    // Exporting again replaces what the first export wrote, and drops what it no longer has.
    export(
        &project,
        &[
            "--redis",
            "sentinel",
            "--instances",
            "3",
            "--namespace",
            "games",
        ],
    )
    .success();
    assert!(project.path("kubernetes/redis-sentinel.yaml").is_file());
    assert!(
        project
            .read("kubernetes/postgres-cluster.yaml")
            .contains("  instances: 3\n")
    );
    export(&project, &["--redis", "cluster"])
        .success()
        .stdout(predicate::str::contains("removed "));
    assert!(!project.path("kubernetes/redis-sentinel.yaml").exists());
    assert!(!project.path("kubernetes/redis-replication.yaml").exists());
    assert!(project.path("kubernetes/redis-cluster.yaml").is_file());
    assert!(!project.path("kubernetes/postgres-podmonitor.yaml").exists());

    // With [monitoring] on, the cluster's Prometheus operator gets a PodMonitor a server.
    project.write("nanika.toml", "[monitoring]\nenabled = true\n");
    export(&project, &[]).success();
    let monitor = project.read("kubernetes/postgres-podmonitor.yaml");
    assert!(monitor.contains("kind: PodMonitor"), "{monitor}");
}

#[test]
fn a_directory_holding_other_files_or_a_link_is_refused() {
    let project = initialised();
    project.write("mine/notes.txt", "my own file\n");
    export(&project, &["-o", "mine"])
        .code(2)
        .stderr(predicate::str::contains(
            "was not written by `nanika export kubernetes`",
        ))
        .stderr(predicate::str::contains("nothing was written"));
    assert_eq!(project.read("mine/notes.txt"), "my own file\n");
    assert!(!project.path("mine/kustomization.yaml").exists());

    // A file added beside an earlier export is not the export's to replace.
    export(&project, &["-o", "out"]).success();
    project.write("out/extra.yaml", "kind: ConfigMap\n");
    export(&project, &["-o", "out"])
        .code(2)
        .stderr(predicate::str::contains("extra.yaml"));

    let target = project.path("elsewhere");
    fs_err::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, project.path("link")).unwrap();
    export(&project, &["-o", "link"])
        .code(2)
        .stderr(predicate::str::contains("symbolic link"));
    assert_eq!(fs_err::read_dir(&target).unwrap().count(), 0);

    // A listed file replaced by a link is not written through.
    export(&project, &["-o", "out2"]).success();
    let victim = project.path("victim.txt");
    fs_err::write(&victim, "untouched\n").unwrap();
    fs_err::remove_file(project.path("out2/namespace.yaml")).unwrap();
    std::os::unix::fs::symlink(&victim, project.path("out2/namespace.yaml")).unwrap();
    export(&project, &["-o", "out2"]).code(2);
    assert_eq!(fs_err::read_to_string(&victim).unwrap(), "untouched\n");
}

#[test]
fn secrets_are_written_only_with_include_secrets_and_a_warning() {
    let project = initialised();
    export(&project, &["-o", "plain"]).success();
    for entry in fs_err::read_dir(project.path("plain")).unwrap() {
        let text = fs_err::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("nanika_password"));
    }
    export(&project, &["-o", "with", "--include-secrets"])
        .success()
        .stdout(predicate::str::contains("nanika_password").not())
        .stderr(predicate::str::contains(
            "warning: --include-secrets wrote the passwords",
        ));
    let secret = project.path("with/postgres-app-credentials.yaml");
    assert_eq!(mode(&secret), 0o600);
    assert!(
        fs_err::read_to_string(&secret)
            .unwrap()
            .contains("nanika_password")
    );
    assert!(
        project
            .read("with/kustomization.yaml")
            .contains("postgres-app-credentials.yaml")
    );
}

#[test]
fn bad_options_are_usage_errors_with_a_hint() {
    let project = initialised();
    export(&project, &["--namespace", "Games_1"])
        .code(2)
        .stderr(predicate::str::contains("--namespace `Games_1`"))
        .stderr(predicate::str::contains("lower-case letters"));
    export(&project, &["--instances", "0"])
        .code(2)
        .stderr(predicate::str::contains("--instances"));
    export(&project, &["--redis", "ring"])
        .code(2)
        .stderr(predicate::str::contains("replication"));
    export(&project, &["--backup-destination", "s3://bucket/x"])
        .code(2)
        .stderr(predicate::str::contains("[backups] enabled"));
    project.write("nanika.toml", "[backups]\nenabled = true\n");
    export(&project, &[])
        .code(2)
        .stderr(predicate::str::contains("--backup-destination is missing"))
        .stderr(predicate::str::contains("s3://BUCKET/PATH"));
    export(&project, &["--backup-destination", "s3://bucket/nanika"])
        .success()
        .stdout(predicate::str::contains(
            "nanika-game-db-backup-credentials",
        ));
    assert!(
        project
            .path("kubernetes/postgres-scheduled-backup.yaml")
            .is_file()
    );
}

#[test]
fn a_project_with_errors_is_refused() {
    let project = initialised();
    project.replace(
        "docker/postgres/postgresql.conf",
        "work_mem = 4MB",
        "work_mem = lots",
    );
    export(&project, &[])
        .failure()
        .stderr(predicate::str::contains("work_mem"))
        .stderr(predicate::str::contains("nothing was done"));
    assert!(!project.path("kubernetes").exists());
}

#[test]
fn a_list_naming_files_outside_the_directory_is_refused() {
    let project = initialised();
    export(&project, &["-o", "out"]).success();
    let inside = project.path("x");
    fs_err::write(&inside, "keep me\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("victim.txt");
    fs_err::write(&absolute, "keep me too\n").unwrap();
    let marker = project.read("out/.nanika-export");
    for tampered in ["../x".to_string(), absolute.display().to_string()] {
        project.write("out/.nanika-export", &format!("{marker}{tampered}\n"));
        let before = project.read("out/namespace.yaml");
        export(&project, &["-o", "out", "--redis", "cluster"])
            .code(2)
            .stderr(predicate::str::contains(
                "lists names an export never writes",
            ))
            .stderr(predicate::str::contains(tampered.as_str()))
            .stderr(predicate::str::contains("nothing was written"));
        // Nothing written or removed: not the named files, not the directory's own.
        assert_eq!(fs_err::read_to_string(&inside).unwrap(), "keep me\n");
        assert_eq!(fs_err::read_to_string(&absolute).unwrap(), "keep me too\n");
        assert_eq!(project.read("out/namespace.yaml"), before);
        assert!(project.path("out/redis-replication.yaml").is_file());
        assert!(!project.path("out/redis-cluster.yaml").exists());
    }
    for tampered in [".", "..", "sub/namespace.yaml", "notes.txt"] {
        project.write("out/.nanika-export", &format!("{marker}{tampered}\n"));
        export(&project, &["-o", "out"]).code(2);
    }
}

#[test]
fn redis_conf_passwords_and_acl_users_stay_out_of_output_and_files() {
    let project = initialised();
    let conf = project.read("docker/redis/redis.conf");
    project.write(
        "docker/redis/redis.conf",
        &format!(
            "{conf}masterauth repl-secret-1\nmasteruser repl-user-2\nuser game on >acl-secret-3 ~* +@all\ntls-key-file-pass tls-secret-4\ntls-client-key-file-pass tls-secret-5\n"
        ),
    );
    let secrets = [
        "repl-secret-1",
        "repl-user-2",
        "acl-secret-3",
        "tls-secret-4",
        "tls-secret-5",
    ];
    for layout in ["replication", "sentinel", "cluster"] {
        let out = export(&project, &["--redis", layout]).success();
        let output = out.get_output();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for key in [
            "masterauth",
            "masteruser",
            "user",
            "tls-key-file-pass",
            "tls-client-key-file-pass",
        ] {
            assert!(
                printed.contains(&format!(
                    "docker/redis/redis.conf {key} = **** (redis-operator)"
                )),
                "{key} not listed as managed and masked:\n{printed}"
            );
        }
        for entry in fs_err::read_dir(project.path("kubernetes")).unwrap() {
            let path = entry.unwrap().path();
            let text = fs_err::read_to_string(&path).unwrap();
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} in {}", path.display());
                assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
            }
        }
    }
    let config = project.read("kubernetes/redis-config.yaml");
    assert!(config.contains("#   masterauth = ****: "), "{config}");
}

#[test]
fn the_printed_commands_make_the_namespace_first_and_stop_on_an_unset_password() {
    let project = initialised();
    let out = export(&project, &[]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let namespace = stdout
        .find("kubectl apply -f ")
        .expect("the namespace command");
    assert!(stdout[namespace..].starts_with(&format!(
        "kubectl apply -f {}",
        project.path("kubernetes/namespace.yaml").display()
    )));
    let secret = stdout
        .find("kubectl create secret")
        .expect("a secret command");
    assert!(namespace < secret, "{stdout}");
    assert!(
        stdout.contains("\"${POSTGRES_PASSWORD:?set it, e.g. set -a; . ./.env; set +a}\""),
        "{stdout}"
    );
    // The command as printed, run by a shell without the variable, stops before kubectl.
    let line = stdout[secret..].lines().next().unwrap();
    let run = std::process::Command::new("bash")
        .args(["-c", &format!("kubectl() {{ echo ran; }}; {line}")])
        .env_remove("POSTGRES_PASSWORD")
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(!String::from_utf8_lossy(&run.stdout).contains("ran"));
    assert!(String::from_utf8_lossy(&run.stderr).contains("POSTGRES_PASSWORD"));
}

#[test]
fn include_secrets_writes_a_gitignore_for_them() {
    let project = initialised();
    export(&project, &["--include-secrets"])
        .success()
        .stderr(predicate::str::contains(".gitignore"));
    let ignore = project.read("kubernetes/.gitignore");
    assert!(
        ignore
            .lines()
            .any(|l| l == "/postgres-app-credentials.yaml"),
        "{ignore}"
    );
    assert!(
        project
            .read("kubernetes/.nanika-export")
            .contains(".gitignore\n")
    );
    // Git agrees, when it is installed.
    if let Ok(status) = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(project.root())
        .status()
        && status.success()
    {
        let checked = std::process::Command::new("git")
            .args([
                "check-ignore",
                "-q",
                "kubernetes/postgres-app-credentials.yaml",
            ])
            .current_dir(project.root())
            .status()
            .unwrap();
        assert!(checked.success(), "git does not ignore the Secret");
    }
    // Exporting again without secrets removes them and the ignore file with them.
    export(&project, &[]).success();
    assert!(!project.path("kubernetes/.gitignore").exists());
    assert!(
        !project
            .path("kubernetes/postgres-app-credentials.yaml")
            .exists()
    );
}
