//! How findings and tables are printed, for people and as `--json`.

use nanika_config::{Finding, Severity};
use serde::Serialize;

/// Counts of findings by severity.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// Information.
    pub infos: usize,
}

impl Summary {
    /// Counts `findings`.
    pub fn of(findings: &[Finding]) -> Self {
        let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
        Summary {
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            infos: count(Severity::Info),
        }
    }
}

/// `1 error`, `2 errors`: `words` is (singular, plural).
fn count(n: usize, words: (&str, &str)) -> String {
    format!("{n} {}", if n == 1 { words.0 } else { words.1 })
}

/// Writes to stdout; a reader that went away (`nanika … | head`) ends the program quietly
/// instead of with a panic.
pub fn emit(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("nanika: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`emit`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::emit(format_args!($($arg)*)) };
}

/// Prints findings, most severe first, then a summary line naming `infos_as` for the info count.
pub fn print_findings(findings: &[Finding], json: bool, infos_as: (&str, &str)) {
    let summary = Summary::of(findings);
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            findings: &'a [Finding],
            #[serde(flatten)]
            summary: &'a Summary,
        }
        let report = Report {
            findings,
            summary: &summary,
        };
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&report).expect("findings serialize")
        );
        return;
    }
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for finding in sorted {
        crate::say!("{finding}");
    }
    crate::say!(
        "{}, {}, {}",
        count(summary.errors, ("error", "errors")),
        count(summary.warnings, ("warning", "warnings")),
        count(summary.infos, infos_as)
    );
}

/// Prints rows as left-aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        crate::say!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
