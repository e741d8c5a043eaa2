//! `cargo xtask bench [--quick] [--pairs N] [--only GROUP,…] [--out PATH]`, parsed into one value.

use std::path::PathBuf;

/// Operations that take about a second or less get at least this many pairs: their spread is
/// wide next to their median, so fewer pairs say little.
pub const FAST_PAIRS_MIN: usize = 7;

/// Pairs of the longer operations (backup, restore, seed, docker `up`) when `--pairs` is absent.
const DEFAULT_PAIRS: usize = 5;

/// The usage line, for errors.
pub const USAGE: &str = "usage: cargo xtask bench [--quick] [--pairs N] [--only GROUP,…] [--out PATH]\n  groups: lifecycle, data, supervisor, scale, backups, topology, monitoring, docker";

/// The groups of benchmarks, in the order they run.
pub const GROUPS: [&str; 8] = [
    "lifecycle",
    "data",
    "supervisor",
    "scale",
    "backups",
    "topology",
    "monitoring",
    "docker",
];

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A smoke run: one pair each, no warm-up, small data, report to stdout unless `--out`.
    pub quick: bool,
    /// Pairs of the longer operations; the fast ones get at least [`FAST_PAIRS_MIN`].
    pub pairs: usize,
    /// Where the report goes besides stdout (default: docs/BENCHMARKS.md, except with `--quick`
    /// or `--only`: a partial run never replaces the whole report).
    pub out: Option<PathBuf>,
    /// The groups to run (`--only`); all of them when empty.
    pub only: Vec<String>,
}

impl Options {
    /// Parses the arguments after the program name; `Err` holds the message for the user.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        if args.next().as_deref() != Some("bench") {
            return Err(USAGE.into());
        }
        let mut options = Options {
            quick: false,
            pairs: DEFAULT_PAIRS,
            out: None,
            only: Vec::new(),
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--pairs" => {
                    options.pairs = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .ok_or("--pairs needs a number above 0")?;
                }
                "--out" => options.out = Some(args.next().ok_or("--out needs a path")?.into()),
                "--only" => {
                    let list = args.next().ok_or("--only needs a list of groups")?;
                    for group in list.split(',') {
                        if !GROUPS.contains(&group) {
                            return Err(format!("unknown group {group}\n{USAGE}"));
                        }
                        options.only.push(group.to_string());
                    }
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        Ok(options)
    }

    /// Whether `group` (one of [`GROUPS`]) runs.
    pub fn runs(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }

    /// Whether this run writes docs/BENCHMARKS.md when no `--out` is given: only a full one.
    pub fn is_full(&self) -> bool {
        !self.quick && self.only.is_empty()
    }

    /// Pairs for an operation of about a second or less.
    pub fn fast_pairs(&self) -> usize {
        if self.quick {
            1
        } else {
            self.pairs.max(FAST_PAIRS_MIN)
        }
    }

    /// Pairs for a longer operation.
    pub fn slow_pairs(&self) -> usize {
        if self.quick { 1 } else { self.pairs }
    }

    /// Whether each side runs once untimed before the pairs: skipped in a smoke run, whose
    /// figures mean nothing anyway, to keep CI short.
    pub fn warm_up(&self) -> bool {
        !self.quick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn fast_operations_get_at_least_seven_pairs_and_quick_gets_one() {
        let full = parse(&["bench"]).unwrap();
        assert_eq!((full.fast_pairs(), full.slow_pairs()), (7, 5));
        let many = parse(&["bench", "--pairs", "9"]).unwrap();
        assert_eq!((many.fast_pairs(), many.slow_pairs()), (9, 9));
        let quick = parse(&["bench", "--quick", "--pairs", "9"]).unwrap();
        assert_eq!((quick.fast_pairs(), quick.slow_pairs()), (1, 1));
        assert!(!quick.warm_up());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["bench", "--pairs"]).is_err());
        assert!(parse(&["bench", "--pairs", "0"]).is_err());
        assert!(parse(&["bench", "--fast"]).is_err());
        assert_eq!(
            parse(&["bench", "--out", "/tmp/x.md"]).unwrap().out,
            Some(PathBuf::from("/tmp/x.md"))
        );
        assert!(parse(&["bench", "--only", "lifecycle,nope"]).is_err());
        assert!(parse(&["bench", "--only"]).is_err());
    }

    #[test]
    fn only_runs_the_groups_named_and_never_writes_the_whole_report() {
        let some = parse(&["bench", "--only", "lifecycle,scale"]).unwrap();
        assert!(some.runs("lifecycle") && some.runs("scale") && !some.runs("docker"));
        assert!(!some.is_full());
        let all = parse(&["bench"]).unwrap();
        assert!(GROUPS.iter().all(|g| all.runs(g)) && all.is_full());
        assert!(
            parse(&["bench", "--only", "backups"])
                .unwrap()
                .runs("backups")
        );
        let topology = parse(&["bench", "--only", "topology"]).unwrap();
        assert!(topology.runs("topology") && !topology.runs("docker"));
    }
}
