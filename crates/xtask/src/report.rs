//! The report: rows of the table, what else was measured, and its Markdown.

use crate::options::Options;
use crate::pairing::Paired;
use crate::stats::{Spread, pair_ratios};
use std::time::Duration;

/// The goal a row is judged against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// As the table shows it.
    pub text: &'static str,
    /// The median per-pair ratio must not exceed this.
    pub max_ratio: Option<f64>,
    /// nanika's median time must stay below this.
    pub under: Option<Duration>,
}

impl Target {
    /// A row measured for context, judged against nothing.
    pub const NONE: Target = Target {
        text: "—",
        max_ratio: None,
        under: None,
    };

    /// Whether `nanika_ms` (median) and `ratio` (median per-pair ratio) meet the target; `None`
    /// when there is nothing to judge.
    pub fn judge(&self, nanika_ms: f64, ratio: Option<f64>) -> Option<bool> {
        if self.max_ratio.is_none() && self.under.is_none() {
            return None;
        }
        let ratio_ok = match (self.max_ratio, ratio) {
            (Some(limit), Some(ratio)) => ratio <= limit,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let time_ok = self
            .under
            .is_none_or(|limit| nanika_ms < limit.as_secs_f64() * 1000.0);
        Some(ratio_ok && time_ok)
    }
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The nanika operation.
    pub operation: String,
    /// What it is compared with, and how that is run.
    pub baseline: String,
    /// Timed pairs (or runs, for a row without a baseline).
    pub runs: usize,
    /// nanika's times, ms.
    pub nanika: Spread,
    /// The baseline's times, ms.
    pub raw: Option<Spread>,
    /// Per-pair ratios nanika/raw.
    pub ratio: Option<Spread>,
    /// Said after the ratio (another criterion's figure).
    pub note: Option<String>,
    /// The goal.
    pub target: Target,
    /// Whether the goal was met (`None`: no goal).
    pub met: Option<bool>,
}

impl Row {
    /// The row of a paired measurement, judged against `target`; prints a summary line to
    /// stderr as progress.
    pub fn paired(
        operation: impl Into<String>,
        baseline: impl Into<String>,
        target: Target,
        paired: &Paired,
    ) -> Row {
        let nanika = Spread::of_ms(&paired.nanika).unwrap_or(Spread::ZERO);
        let ratio = Spread::of(&pair_ratios(&paired.nanika, &paired.raw));
        let row = Row {
            operation: operation.into(),
            baseline: baseline.into(),
            runs: paired.nanika.len(),
            nanika,
            raw: Spread::of_ms(&paired.raw),
            ratio,
            note: None,
            met: target.judge(nanika.median, ratio.map(|r| r.median)),
            target,
        };
        eprintln!(
            "{}: nanika {:.1} ms, raw {:.1} ms, ratio {}",
            row.operation,
            row.nanika.median,
            row.raw.map_or(0.0, |r| r.median),
            row.ratio.map_or("—".into(), |r| ratio_text(&r))
        );
        row
    }

    /// The row of nanika alone (no raw command does the same), judged against `target`.
    pub fn alone(operation: impl Into<String>, target: Target, samples: &[Duration]) -> Row {
        let nanika = Spread::of_ms(samples).unwrap_or(Spread::ZERO);
        let row = Row {
            operation: operation.into(),
            baseline: "—".into(),
            runs: samples.len(),
            nanika,
            raw: None,
            ratio: None,
            note: None,
            met: target.judge(nanika.median, None),
            target,
        };
        eprintln!("{}: nanika {:.1} ms", row.operation, row.nanika.median);
        row
    }
}

impl Spread {
    /// Stands in for an empty sample (zero pairs), which the options never produce.
    pub const ZERO: Spread = Spread {
        median: 0.0,
        min: 0.0,
        max: 0.0,
    };
}

/// Everything a run found out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The table.
    pub rows: Vec<Row>,
    /// "Also measured" lines.
    pub also: Vec<String>,
    /// Rows that could not be measured, each with why.
    pub skipped: Vec<String>,
}

fn ratio_text(ratio: &Spread) -> String {
    format!("{:.2} ({:.2}–{:.2})", ratio.median, ratio.min, ratio.max)
}

fn time_text(spread: &Spread) -> String {
    format!("{:.1} ({:.1}–{:.1})", spread.median, spread.min, spread.max)
}

/// The whole Markdown document.
pub fn render(options: &Options, machine: &str, report: &Report) -> String {
    let mut out = String::from("# Benchmarks\n\n");
    out += "Each nanika operation against the raw commands it wraps, run the fastest sensible way a person\n\
            would script them (unless the row says otherwise), timed in pairs in ABBA order (nanika first in\n\
            one pair, the raw commands first in the next";
    out += if options.warm_up() {
        ") after one untimed warm-up of each.\n"
    } else {
        "; no warm-up).\n"
    };
    let produced_by = if options.quick {
        "`cargo xtask bench --quick` (a smoke run: the figures are not representative)".to_string()
    } else if !options.only.is_empty() {
        format!("`cargo xtask bench --only {}`", options.only.join(","))
    } else {
        "`cargo xtask bench`".to_string()
    };
    out += &format!(
        "Every run's exit status is checked. Pairs: {} for operations of about a second or less, {} for\n\
         the longer ones (column `pairs`). Times in milliseconds, median (min–max); the ratio is\n\
         nanika/raw within each pair, median (min–max) over the pairs. Produced by {produced_by}.\n\n",
        options.fast_pairs(),
        options.slow_pairs(),
    );
    out += &format!("Machine: {machine}.\n\n");
    out += "| operation | raw baseline | pairs | nanika | raw | ratio | target | met |\n";
    out += "|---|---|---|---|---|---|---|---|\n";
    for row in &report.rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let mut ratio = row.ratio.as_ref().map_or("—".into(), ratio_text);
        if let Some(note) = &row.note {
            ratio = format!("{ratio}; {note}");
        }
        out += &format!(
            "| {} | {} | {} | {} | {} | {ratio} | {} | {met} |\n",
            row.operation,
            row.baseline,
            row.runs,
            time_text(&row.nanika),
            row.raw.as_ref().map_or("—".into(), time_text),
            row.target.text,
        );
    }
    if !report.skipped.is_empty() {
        out += "\n## Not measured in this run\n\n";
        for line in &report.skipped {
            out += &format!("- {line}\n");
        }
    }
    if !report.also.is_empty() {
        out += "\n## Also measured\n\n";
        for line in &report.also {
            out += &format!("- {line}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    const WARM: Target = Target {
        text: "≤ 1.10, under 1 s",
        max_ratio: Some(1.10),
        under: Some(Duration::from_secs(1)),
    };

    #[test]
    fn a_target_needs_both_the_ratio_and_the_time() {
        assert_eq!(WARM.judge(900.0, Some(1.0)), Some(true));
        assert_eq!(WARM.judge(900.0, Some(1.2)), Some(false));
        assert_eq!(WARM.judge(1000.0, Some(0.5)), Some(false));
        assert_eq!(Target::NONE.judge(5000.0, Some(9.0)), None);
    }

    #[test]
    fn a_row_reports_the_median_per_pair_ratio_with_its_range() {
        let paired = Paired {
            nanika: ms(&[90, 120, 100]),
            raw: ms(&[100, 100, 200]),
        };
        let row = Row::paired("warm `up`", "x", WARM, &paired);
        let ratio = row.ratio.unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(ratio.median, 0.9) && close(ratio.min, 0.5) && close(ratio.max, 1.2));
        assert_eq!(row.met, Some(true));
        assert_eq!(row.runs, 3);
        let text = render(
            &Options {
                quick: true,
                pairs: 5,
                out: None,
                only: Vec::new(),
            },
            "m",
            &Report {
                rows: vec![row],
                also: vec![],
                skipped: vec!["docker rows: no engine".into()],
            },
        );
        assert!(
            text.contains(
                "| warm `up` | x | 3 | 100.0 (90.0–120.0) | 100.0 (100.0–200.0) | 0.90 (0.50–1.20) | ≤ 1.10, under 1 s | yes |"
            ),
            "{text}"
        );
        assert!(text.contains("## Not measured in this run\n\n- docker rows: no engine\n"));
    }

    #[test]
    fn a_row_without_a_goal_is_never_judged_and_keeps_its_note_and_sizes() {
        // As the backups group renders its rows: a target text but no limit to judge.
        let measured = Target {
            text: "measured, no target",
            ..Target::NONE
        };
        let paired = Paired {
            nanika: ms(&[30_000]),
            raw: ms(&[20_000]),
        };
        let mut row = Row::paired("`backup now --type full`", "pg_dump -Fc", measured, &paired);
        row.note = Some("a different kind of backup".into());
        assert_eq!(row.met, None);
        let text = render(
            &Options {
                quick: false,
                pairs: 1,
                out: None,
                only: vec!["backups".into()],
            },
            "m",
            &Report {
                rows: vec![row],
                also: vec!["Backup sizes: 120.0 MiB in the repository".into()],
                skipped: vec![],
            },
        );
        assert!(
            text.contains(
                "| `backup now --type full` | pg_dump -Fc | 1 | 30000.0 (30000.0–30000.0) | 20000.0 (20000.0–20000.0) | 1.50 (1.50–1.50); a different kind of backup | measured, no target | — |"
            ),
            "{text}"
        );
        assert!(text.contains("Produced by `cargo xtask bench --only backups`"));
        assert!(text.contains("## Also measured\n\n- Backup sizes: 120.0 MiB in the repository\n"));
    }
}
