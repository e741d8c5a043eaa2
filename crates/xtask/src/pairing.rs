//! Runs two sides of a comparison in pairs, in ABBA order, and collects their times.

use crate::error::Result;
use std::time::{Duration, Instant};

/// What a side is asked to do: get ready untimed, or do the timed work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Untimed: bring the side to its starting state (servers stopped, old files removed, …).
    Prepare,
    /// Timed: the operation itself.
    Run,
}

/// One side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// nanika's command.
    Nanika,
    /// The raw commands it is compared with.
    Raw,
}

/// How many pairs to time, and whether each side first runs once untimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Timed pairs.
    pub pairs: usize,
    /// One untimed run of each side first (caches, first-connection costs).
    pub warm_up: bool,
}

/// The sides of pair `index` in the order they run: nanika first in even pairs, raw first in
/// odd ones, so the runs read A B B A A B B A … and a drift in the machine's speed, or whatever
/// one run leaves behind for the next, falls on both sides alike.
pub fn order(index: usize) -> [Side; 2] {
    if index.is_multiple_of(2) {
        [Side::Nanika, Side::Raw]
    } else {
        [Side::Raw, Side::Nanika]
    }
}

/// The timed runs of both sides, one of each per pair, in pair order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Paired {
    /// nanika's times.
    pub nanika: Vec<Duration>,
    /// The raw commands' times.
    pub raw: Vec<Duration>,
}

/// Times `nanika` against `raw` by `plan`. Each side is one closure called with
/// [`Step::Prepare`] (untimed) and then [`Step::Run`] (timed); its own state stays in it. The
/// first error of either side ends the measurement.
pub fn measure(
    plan: Plan,
    mut nanika: impl FnMut(Step) -> Result<()>,
    mut raw: impl FnMut(Step) -> Result<()>,
) -> Result<Paired> {
    let mut once = |side: Side| -> Result<Duration> {
        let work: &mut dyn FnMut(Step) -> Result<()> = match side {
            Side::Nanika => &mut nanika,
            Side::Raw => &mut raw,
        };
        work(Step::Prepare)?;
        let start = Instant::now();
        work(Step::Run)?;
        Ok(start.elapsed())
    };
    if plan.warm_up {
        // In odd-pair order, so the warm-up continues the ABBA pattern: B A | A B B A …
        for side in order(1) {
            once(side)?;
        }
    }
    let mut paired = Paired::default();
    for index in 0..plan.pairs {
        for side in order(index) {
            let elapsed = once(side)?;
            match side {
                Side::Nanika => paired.nanika.push(elapsed),
                Side::Raw => paired.raw.push(elapsed),
            }
        }
    }
    Ok(paired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::RefCell;

    #[test]
    fn pairs_alternate_which_side_goes_first() {
        let runs: Vec<Side> = (0..4).flat_map(order).collect();
        use Side::{Nanika as A, Raw as B};
        assert_eq!(runs, [A, B, B, A, A, B, B, A]);
    }

    #[test]
    fn each_run_is_prepared_and_the_warm_up_is_not_counted() {
        let log = RefCell::new(Vec::new());
        let side = |name: &'static str| {
            let log = &log;
            move |step: Step| -> Result<()> {
                log.borrow_mut().push((name, step));
                Ok(())
            }
        };
        let paired = measure(
            Plan {
                pairs: 3,
                warm_up: true,
            },
            side("a"),
            side("b"),
        )
        .unwrap();
        assert_eq!((paired.nanika.len(), paired.raw.len()), (3, 3));
        let runs: Vec<&str> = log
            .borrow()
            .chunks(2)
            .map(|c| {
                assert_eq!([c[0].1, c[1].1], [Step::Prepare, Step::Run]);
                assert_eq!(c[0].0, c[1].0);
                c[0].0
            })
            .collect();
        assert_eq!(runs, ["b", "a", "a", "b", "b", "a", "a", "b"]);
    }

    #[test]
    fn a_failing_run_ends_the_measurement() {
        let mut raw_runs = 0;
        let result = measure(
            Plan {
                pairs: 5,
                warm_up: false,
            },
            |step| match step {
                Step::Run => Err(Error::new("backup failed")),
                Step::Prepare => Ok(()),
            },
            |_| {
                raw_runs += 1;
                Ok(())
            },
        );
        assert_eq!(result.unwrap_err().to_string(), "backup failed");
        assert_eq!(raw_runs, 0);
    }
}
