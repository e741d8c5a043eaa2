//! `db backup`, `db restore`, `db seed` and `db migrate` against pg_dump, pg_restore and psql,
//! on the native project's server.

use super::Context;
use crate::error::Result;
use crate::nanika::Project;
use crate::pairing::{Step, measure};
use crate::process::{pg_tool, run};
use crate::report::{Report, Row, Target};
use fs_err as fs;
use std::path::Path;
use std::time::{Duration, Instant};

const BACKUP: Target = Target {
    text: "≤ 1.05",
    max_ratio: Some(1.05),
    under: None,
};

const RESTORE: Target = BACKUP;

/// The seed's ratio target; its other criterion (≥ 5× one INSERT a row) is judged here.
const SEED: Target = Target {
    text: "≤ 1.20; ≥ 5× one INSERT a row",
    max_ratio: Some(1.20),
    under: None,
};

/// How much faster than one autocommitted INSERT a row the seed must be.
const SEED_SPEEDUP_MIN: f64 = 5.0;

const MIGRATE: Target = Target {
    text: "under 50 ms",
    max_ratio: None,
    under: Some(Duration::from_millis(50)),
};

/// Backup and restore of a pgbench database, the seed, and a migrate with nothing pending, on
/// `project` (which must be up).
pub fn run_all(ctx: &Context, project: &Project, report: &mut Report) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    backup_and_restore(ctx, project, scratch.path(), report)?;
    report.rows.push(seed(ctx, project, scratch.path())?);
    project.run(&["db", "migrate"])?;
    let samples = (0..ctx.options.fast_pairs() * 2)
        .map(|_| {
            let start = Instant::now();
            project.run(&["db", "migrate"]).map(|_| start.elapsed())
        })
        .collect::<Result<Vec<_>>>()?;
    report.rows.push(Row::alone(
        "`db migrate`, nothing pending",
        MIGRATE,
        &samples,
    ));
    Ok(())
}

fn backup_and_restore(
    ctx: &Context,
    project: &Project,
    scratch: &Path,
    report: &mut Report,
) -> Result<()> {
    let scale = if ctx.options.quick { "1" } else { "50" };
    eprintln!("pgbench -i -s {scale}…");
    run(project
        .pg_env(&mut pg_tool("pgbench"))
        .args(["-i", "-q", "-s", scale]))?;
    let (ours, theirs) = (scratch.join("nanika.dump"), scratch.join("pg_dump.dump"));
    let remove = |file: &Path| -> Result<()> {
        if file.exists() {
            fs::remove_file(file)?;
        }
        Ok(())
    };
    let backup = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => remove(&ours),
            Step::Run => run(project.command(&["db", "backup", "-o"]).arg(&ours)).map(drop),
        },
        |step| match step {
            Step::Prepare => remove(&theirs),
            Step::Run => run(project
                .pg_env(&mut pg_tool("pg_dump"))
                .args(["-Fc", "-f"])
                .arg(&theirs))
            .map(drop),
        },
    )?;
    report.rows.push(Row::paired(
        format!("`db backup` (pgbench scale {scale}, custom)"),
        "pg_dump -Fc",
        BACKUP,
        &backup,
    ));

    // Both restore pg_dump's file, each into a fresh database of its own.
    let fresh = |database: &str| -> Result<()> {
        project.admin_psql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))?;
        project.admin_psql(&format!("CREATE DATABASE {database} OWNER nanika_user"))?;
        Ok(())
    };
    let restore = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => fresh("nanika_game"),
            Step::Run => run(project
                .command(&["db", "restore", "--jobs", "2"])
                .arg(&theirs))
            .map(drop),
        },
        |step| match step {
            Step::Prepare => fresh("raw_restore"),
            Step::Run => run(project
                .pg_env(&mut pg_tool("pg_restore"))
                .args(["-j", "2", "-d", "raw_restore"])
                .arg(&theirs))
            .map(drop),
        },
    )?;
    report.rows.push(Row::paired(
        "`db restore --jobs 2` of that dump",
        "pg_restore -j 2 into a fresh database",
        RESTORE,
        &restore,
    ));
    project.admin_psql("DROP DATABASE IF EXISTS raw_restore WITH (FORCE)")?;
    fresh("nanika_game")
}

/// The seed's messages with COPY, against psql's `\copy` of the same rows, and the rate of one
/// INSERT a row for the second criterion.
fn seed(ctx: &Context, project: &Project, scratch: &Path) -> Result<Row> {
    project.run(&["db", "migrate"])?;
    project.run(&["db", "seed"])?;
    let messages: u64 = if ctx.options.quick { 20_000 } else { 1_000_000 };
    let room = project.psql(
        "nanika_game",
        "SELECT id FROM chat_rooms WHERE name = 'lobby'",
    )?;
    let authors: Vec<String> = project
        .psql("nanika_game", "SELECT id FROM users ORDER BY id")?
        .lines()
        .map(String::from)
        .collect();
    let author = |i: u64| &authors[(i % authors.len().max(1) as u64) as usize];
    let csv = scratch.join("messages.csv");
    let mut text = String::with_capacity(messages as usize * 24);
    for i in 0..messages {
        text += &format!("{room},{},load message {i}\n", author(i));
    }
    fs::write(&csv, text)?;
    let truncate = || {
        project
            .psql("nanika_game", "TRUNCATE chat_messages")
            .map(drop)
    };
    let count = messages.to_string();
    let copy = format!(
        "\\copy chat_messages (room_id, author_id, body) FROM '{}' WITH (FORMAT csv)",
        csv.display()
    );
    let paired = measure(
        ctx.slow(),
        |step| match step {
            Step::Prepare => truncate(),
            Step::Run => project.run(&["db", "seed", "--messages", &count]).map(drop),
        },
        |step| match step {
            Step::Prepare => truncate(),
            Step::Run => run(project.app_psql("nanika_game").args(["-c", &copy])).map(drop),
        },
    )?;
    let mut row = Row::paired(
        format!("`db seed --messages {messages}`"),
        "psql \\copy of the same rows from CSV",
        SEED,
        &paired,
    );

    // One INSERT a row, autocommit, on a sample: its rate against nanika's.
    let sample: u64 = if ctx.options.quick { 2_000 } else { 20_000 };
    let inserts = scratch.join("inserts.sql");
    let mut sql = String::new();
    for i in 0..sample {
        sql += &format!(
            "INSERT INTO chat_messages (room_id, author_id, body) VALUES ({room}, {}, 'insert {i}');\n",
            author(i)
        );
    }
    fs::write(&inserts, sql)?;
    truncate()?;
    let start = Instant::now();
    run(project.app_psql("nanika_game").arg("-f").arg(&inserts))?;
    let insert_rate = sample as f64 / start.elapsed().as_secs_f64();
    let nanika_rate = messages as f64 / (row.nanika.median / 1000.0);
    let speedup = nanika_rate / insert_rate;
    row.note = Some(format!(
        "{speedup:.1}× one INSERT a row ({insert_rate:.0} rows/s over {sample} INSERTs)"
    ));
    row.met = row.met.map(|met| met && speedup >= SEED_SPEEDUP_MIN);
    Ok(row)
}
