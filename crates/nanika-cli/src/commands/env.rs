//! `nanika env` and `nanika exec`: the environment an app needs to reach the services.

use crate::context;
use crate::error::{CliError, CliResult};
use nanika_config::LoadedProject;
use nanika_config::secret::MASK;
use std::path::PathBuf;
use std::process::Command;

/// One variable: its name, its real value, and whether it is a secret.
struct Var {
    name: &'static str,
    value: String,
    secret: bool,
}

/// The app's variables as resolved, then the libpq forms of `DATABASE_URL`.
fn app_env(loaded: &LoadedProject) -> Vec<Var> {
    let env = &loaded.infra.env;
    let url = &env.database_url;
    let var = |name, value: String, secret| Var {
        name,
        value,
        secret,
    };
    let mut vars = vec![
        var("POSTGRES_DB", env.postgres_db.clone(), false),
        var("POSTGRES_USER", env.postgres_user.clone(), false),
        var(
            "POSTGRES_PASSWORD",
            env.postgres_password.expose().to_string(),
            true,
        ),
        var("POSTGRES_PORT", env.postgres_port.to_string(), false),
        var("DATABASE_URL", url.expose(), true),
        var("DATABASE_URL_LIBPQ", url.libpq_url(), true),
        var("REDIS_URL", env.redis_url.expose(), true),
        var("REDIS_PORT", env.redis_port.to_string(), false),
        var(
            "SESSION_SECRET",
            env.session_secret.expose().to_string(),
            true,
        ),
        var("NODE_ENV", env.node_env.clone(), false),
    ];
    for (name, value) in url.pg_env() {
        vars.push(var(name, value, name == "PGPASSWORD"));
    }
    vars
}

/// The value to show: masked unless asked, with a URL's password masked in place.
fn shown(var: &Var, loaded: &LoadedProject, show_secrets: bool) -> String {
    if show_secrets || !var.secret {
        return var.value.clone();
    }
    match var.name {
        "DATABASE_URL" => loaded.infra.env.database_url.to_string(),
        "REDIS_URL" => loaded.infra.env.redis_url.to_string(),
        "DATABASE_URL_LIBPQ" => {
            let password = loaded.infra.env.database_url.password.expose();
            if password.is_empty() {
                var.value.clone()
            } else {
                masked_libpq(&var.value)
            }
        }
        _ => MASK.to_string(),
    }
}

fn masked_libpq(url: &str) -> String {
    // postgresql://user:PASSWORD@host…: mask between the first ':' after the scheme and the '@'.
    let Some(scheme_end) = url.find("://") else {
        return MASK.into();
    };
    let rest = &url[scheme_end + 3..];
    match (rest.find(':'), rest.find('@')) {
        (Some(colon), Some(at)) if colon < at => format!(
            "{}{}:{MASK}{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// `nanika env`.
pub fn env(project_dir: Option<&PathBuf>, show_secrets: bool, json: bool) -> CliResult {
    let loaded = context::valid(project_dir)?;
    let vars = app_env(&loaded);
    if json {
        let map: serde_json::Map<String, serde_json::Value> = vars
            .iter()
            .map(|v| {
                (
                    v.name.to_string(),
                    serde_json::Value::String(shown(v, &loaded, show_secrets)),
                )
            })
            .collect();
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&map).expect("strings serialize")
        );
        return Ok(());
    }
    for var in &vars {
        crate::say!("{}={}", var.name, shown(var, &loaded, show_secrets));
    }
    Ok(())
}

/// `nanika exec -- CMD…`: runs CMD with the app's environment; exits with its code.
pub fn exec(
    project_dir: Option<&PathBuf>,
    command: &[String],
) -> CliResult<std::process::ExitCode> {
    let loaded = context::valid(project_dir)?;
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]);
    for var in app_env(&loaded) {
        child.env(var.name, var.value);
    }
    let status = child.status().map_err(|e| {
        CliError::failure(format!("cannot run `{}`", command[0]))
            .caused_by(e)
            .hint("check that the command exists and is on the PATH")
    })?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8))
}
