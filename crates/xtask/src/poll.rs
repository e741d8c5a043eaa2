//! Polling schedules, copied from nanika's own so that a raw baseline waits no worse than it.

use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// Sleeps that start at `first` and grow by half each time, up to `cap`: the schedule of
/// nanika's readiness wait (`wait_healthy`, native and docker).
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// nanika's readiness schedule: 5 ms, ×1.5, at most 100 ms.
    pub fn readiness() -> Self {
        Backoff {
            next: Duration::from_millis(5),
            cap: Duration::from_millis(100),
        }
    }

    /// The same pause every time: for measuring nanika itself, where a coarse poll would add
    /// its own delay to the figure.
    pub fn every(pause: Duration) -> Self {
        Backoff {
            next: pause,
            cap: pause,
        }
    }

    /// The next pause; the one after it is half as long again, up to the cap.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        // The same integer arithmetic as nanika, so both sides sleep the same nanoseconds.
        self.next = (self.next * 3 / 2).min(self.cap);
        pause
    }
}

/// Polls `ready` on `schedule` until it holds; `gone` is asked between polls and ends the wait
/// with its reason (a server that exited will not get ready). Gives up after `limit`.
pub fn until(
    what: &str,
    limit: Duration,
    mut schedule: Backoff,
    mut ready: impl FnMut() -> bool,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(why) = gone() {
            return Err(Error::new(format!("{what} did not get ready: {why}")));
        }
        if Instant::now() > deadline {
            return Err(Error::new(format!(
                "{what} not ready within {} s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(schedule.pause());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_schedule_is_nanikas() {
        let mut schedule = Backoff::readiness();
        let pauses: Vec<u128> = (0..10).map(|_| schedule.pause().as_micros()).collect();
        assert_eq!(
            pauses,
            [
                5000, 7500, 11250, 16875, 25312, 37968, 56953, 85429, 100000, 100000
            ]
        );
    }

    #[test]
    fn a_poll_ends_when_ready_or_with_the_reason_it_cannot_be() {
        let mut polls = 0;
        let ok = until(
            "x",
            Duration::from_secs(5),
            Backoff::readiness(),
            || {
                polls += 1;
                polls == 3
            },
            || None,
        );
        assert!(ok.is_ok() && polls == 3);
        let gone = until(
            "x",
            Duration::from_secs(5),
            Backoff::readiness(),
            || false,
            || Some("it exited".into()),
        );
        assert_eq!(
            gone.unwrap_err().to_string(),
            "x did not get ready: it exited"
        );
    }
}
