//! `cargo xtask bench [--quick] [--pairs N] [--only GROUP,…] [--out PATH]`: times each nanika operation against
//! the raw commands it wraps and writes docs/BENCHMARKS.md. Benchmarks are not tests: nothing
//! here asserts a time, but every run's exit status is checked.
//!
//! Layout: [`options`] parses the command line; [`nanika`] drives a nanika project and [`raw`]
//! the same servers without it; [`pairing`] runs the two sides in ABBA pairs and [`stats`] sums
//! them up; [`bench`] holds one module per group of operations; [`report`] renders the table
//! and [`machine`] its header line. `--quick` is a smoke run for CI: one pair each, no warm-up,
//! small data, and the report goes to stdout only (unless `--out`).

mod bench;
mod error;
mod machine;
mod nanika;
mod options;
mod pairing;
mod poll;
mod process;
mod raw;
mod report;
mod stats;

use bench::Context;
use error::Result;
use fs_err as fs;
use nanika::{Project, Runtime};
use options::Options;
use report::Report;
use std::process::Command;

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = bench(options) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

fn bench(options: Options) -> Result<()> {
    let root = process::workspace();
    eprintln!("building nanika (release)…");
    process::run(
        Command::new("cargo")
            .args(["build", "--quiet", "--release", "-p", "nanika-cli"])
            .current_dir(&root),
    )?;
    let ctx = Context {
        nanika: root.join("target/release/nanika"),
        options,
    };
    let mut report = Report::default();
    let options = &ctx.options;
    if ["lifecycle", "data", "supervisor", "scale"]
        .iter()
        .any(|group| options.runs(group))
    {
        let project = Project::new(&ctx.nanika, Runtime::Native)?;
        // The lifecycle group leaves `project` up, which the others start from.
        if options.runs("lifecycle") {
            bench::lifecycle::run_all(&ctx, &project, &mut report)?;
        } else {
            project.run(&["up"])?;
        }
        if options.runs("data") {
            bench::data::run_all(&ctx, &project, &mut report)?;
        } else {
            project.run(&["db", "migrate"])?;
        }
        if options.runs("supervisor") {
            bench::supervisor::run_all(&ctx, &project, &mut report)?;
        }
        if options.runs("scale") {
            bench::scale::run_all(&ctx, &project, &mut report)?;
        }
    }
    if options.runs("backups") {
        bench::backups::run_all(&ctx, &mut report)?;
    }
    if options.runs("topology") {
        bench::topology::run_all(&ctx, &mut report)?;
    }
    if options.runs("monitoring") {
        bench::monitoring::run_all(&ctx, &mut report)?;
    }
    if options.runs("docker") {
        bench::docker::run_all(&ctx, &mut report)?;
    }

    let text = report::render(&ctx.options, &machine::describe(), &report);
    println!("{text}");
    let out = ctx.options.out.clone().or_else(|| {
        ctx.options
            .is_full()
            .then(|| root.join("docs/BENCHMARKS.md"))
    });
    if let Some(out) = out {
        fs::write(&out, text)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
