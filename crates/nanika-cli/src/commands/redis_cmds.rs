//! `nanika redis …` and `nanika sessions …`.

use super::db::{block_on, exit_like, ops_error};
use super::services::confirm;
use crate::cli::{RedisCommand, RuntimeArg, SessionsCommand};
use crate::context;
use crate::error::CliResult;
use crate::output::print_table;
use nanika_ops::{pg, redis_admin, sessions};
use nanika_runtime::Service;
use std::path::PathBuf;
use std::process::ExitCode;

/// `nanika redis …`.
pub fn run(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    command: RedisCommand,
) -> CliResult<ExitCode> {
    let loaded = super::services::target(project_dir, runtime, &[Service::Redis])?;
    let url = &loaded.infra.env.redis_url;
    if let RedisCommand::Cli { args } = &command {
        let bins = nanika_runtime::native::binaries::find_redis(&context::binary_search())
            .map_err(super::services::runtime_error)?;
        let mut cli = std::process::Command::new(bins.cli());
        cli.args([
            "-h",
            &url.host,
            "-p",
            &url.port.to_string(),
            "-n",
            &url.db.to_string(),
        ]);
        if !url.user.is_empty() {
            cli.args(["--user", &url.user]);
        }
        if !url.password.is_empty() {
            // Through the environment: a password on the command line shows in `ps`.
            cli.env("REDISCLI_AUTH", url.password.expose());
        }
        cli.args(args);
        return exit_like(cli.status(), "redis-cli");
    }
    let mut con = redis_admin::connect(url).map_err(ops_error)?;
    match command {
        RedisCommand::Cli { .. } => unreachable!("handled above"),
        RedisCommand::Keys {
            pattern,
            limit,
            json,
        } => {
            // One more than asked for tells whether the list was cut.
            let mut keys = redis_admin::scan(&mut con, url, &pattern, limit.map(|l| l + 1))
                .map_err(ops_error)?;
            let cut = limit.is_some_and(|l| keys.len() > l);
            if let Some(limit) = limit.filter(|_| cut) {
                keys.truncate(limit);
                eprintln!("note: the first {limit} keys only; there are more (raise --limit)");
            }
            if json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&keys).expect("serializes")
                );
            } else {
                for key in &keys {
                    crate::say!("{key}");
                }
            }
        }
        RedisCommand::Info { section } => {
            let info = redis_admin::info(&mut con, url, section.as_deref()).map_err(ops_error)?;
            if info.trim().is_empty() {
                return Err(crate::error::CliError::failure(format!(
                    "Redis has no INFO section `{}`",
                    section.unwrap_or_default()
                ))
                .hint("sections: server, clients, memory, persistence, stats, replication, cpu, modules, errors, keyspace, commandstats, latencystats, cluster; or all, everything"));
            }
            crate::say!("{}", info.trim_end().replace('\r', ""));
        }
        RedisCommand::Flush { yes } => {
            confirm(
                &format!("delete every key of the Redis at {url}? A snapshot is saved first"),
                yes,
            )?;
            let report = redis_admin::flush(
                &mut con,
                url,
                &loaded.project.path("backups"),
                &crate::clock::file_stamp(),
            )
            .map_err(ops_error)?;
            match &report.snapshot {
                Some(path) => crate::say!(
                    "flushed {} keys; the snapshot taken before is {}",
                    report.keys_removed,
                    path.display()
                ),
                None => crate::say!(
                    "flushed {} keys; the server saved a snapshot before (on its own machine)",
                    report.keys_removed
                ),
            }
        }
        RedisCommand::TtlAudit {
            limit,
            session_prefix,
            json,
        } => {
            let audit =
                redis_admin::ttl_audit(&mut con, url, limit, &session_prefix).map_err(ops_error)?;
            if json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&audit).expect("serializes")
                );
            } else {
                if limit.is_some_and(|l| audit.scanned >= l as u64) {
                    crate::say!(
                        "sampled {} of {} keys (--limit); every figure below is of the sample",
                        audit.scanned,
                        audit.total
                    );
                } else {
                    crate::say!("{} keys, every one looked at", audit.scanned);
                }
                crate::say!("{} evicted since the server started", audit.evicted_keys);
                let s = &audit.sessions;
                let secs = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v}s"));
                crate::say!(
                    "\nsessions ({}*): {}, {} without a TTL; remaining life min {}, median {}, max {}",
                    s.prefix,
                    s.count,
                    s.without_ttl,
                    secs(s.ttl_min_secs),
                    secs(s.ttl_median_secs),
                    secs(s.ttl_max_secs)
                );
                match &s.eviction_risk {
                    Some(risk) => crate::say!("warning: {risk}"),
                    None => crate::say!(
                        "maxmemory-policy {} never evicts sessions",
                        s.maxmemory_policy
                    ),
                }
                crate::say!("\nkeys without a TTL, by prefix:");
                print_table(
                    &["PREFIX", "KEYS"],
                    &audit
                        .without_ttl
                        .iter()
                        .map(|(p, n)| vec![p.clone(), n.to_string()])
                        .collect::<Vec<_>>(),
                );
                crate::say!("\nbiggest keys:");
                print_table(
                    &["KEY", "BYTES"],
                    &audit
                        .biggest
                        .iter()
                        .map(|(k, n)| vec![k.clone(), n.to_string()])
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanika sessions …`.
pub fn sessions(
    project_dir: Option<&PathBuf>,
    runtime: RuntimeArg,
    command: SessionsCommand,
) -> CliResult<ExitCode> {
    let loaded =
        super::services::target(project_dir, runtime, &[Service::Postgres, Service::Redis])?;
    let redis_url = &loaded.infra.env.redis_url;
    let db_url = &loaded.infra.env.database_url;
    let mut con = redis_admin::connect(redis_url).map_err(ops_error)?;
    let summary = block_on(async {
        let mut conn = pg::connect(db_url, None).await?;
        let summary = match &command {
            SessionsCommand::Backup { prefix } => {
                sessions::backup(&mut con, redis_url, &mut conn, prefix)
                    .await
                    .map(|r| {
                        format!(
                            "backed up {} sessions under {prefix}; removed {} that are gone from Redis; skipped {} keys that are not sessions",
                            r.backed_up, r.removed, r.skipped
                        )
                    })
            }
            SessionsCommand::Restore { prefix, overwrite } => {
                let overwrite = if *overwrite {
                    sessions::Overwrite::Always
                } else {
                    sessions::Overwrite::Never
                };
                sessions::restore(&mut con, redis_url, &mut conn, prefix.as_deref(), overwrite)
                    .await
                    .map(|r| {
                        format!(
                            "restored {} sessions; skipped {} live (Redis's are newer) and {} expired",
                            r.restored, r.skipped_live, r.skipped_expired
                        )
                    })
            }
        };
        pg::close(conn).await;
        summary
    })
    .map_err(ops_error)?;
    crate::say!("{summary}");
    Ok(ExitCode::SUCCESS)
}
