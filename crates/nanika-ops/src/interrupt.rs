//! Interrupts. Only the CLI installs signal handlers; they raise an [`Interrupt`], and the long
//! operations here look at it while they wait. An interrupted operation stops its children,
//! undoes what it had half done and returns [`OpsError::Interrupted`] naming what it cleaned and
//! the state it left, for the caller to print and exit on.
//!
//! Cleanup is not interrupted in turn: the flag is already raised, so a second signal changes
//! nothing, and every cleanup step has a time limit ([`CLEANUP_LIMIT`]). An interrupt that comes
//! after an operation's point of no return (a backup renamed into place, a restore swapped in, a
//! transaction committing) is not acted on: the operation completes and reports as usual.

use crate::error::OpsError;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

/// A flag a signal handler raises with the signal's number, and long operations poll.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
}

/// How often waiting work looks at the flag: a signal handler can do no more than set it.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// The longest one cleanup step (stopping a tool, ending a session, dropping a database) may take
/// before nanika gives up on it and says what is left.
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

impl Interrupt {
    /// A flag nothing has raised yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cell a signal handler stores the signal's number in (for
    /// `signal_hook::flag::register_usize`); any value but 0 raises the flag.
    pub fn flag(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.signal)
    }

    /// Raises the flag as `signal` would.
    pub fn raise(&self, signal: i32) {
        self.signal.store(
            usize::try_from(signal).unwrap_or(1).max(1),
            Ordering::SeqCst,
        );
    }

    /// The signal that raised the flag, if it is raised.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Some(i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.signal().is_some()
    }

    /// Completes once the flag is raised.
    pub async fn raised(&self) {
        while !self.is_raised() {
            tokio::time::sleep(POLL).await;
        }
    }

    /// The error of an operation this interrupt stopped.
    pub(crate) fn error(&self, cleaned: Vec<String>, state: impl Into<String>) -> OpsError {
        self.error_hinted(cleaned, state, None)
    }

    /// [`Interrupt::error`] with what to do next.
    pub(crate) fn error_hinted(
        &self,
        cleaned: Vec<String>,
        state: impl Into<String>,
        hint: Option<String>,
    ) -> OpsError {
        OpsError::Interrupted {
            signal: self.signal(),
            cleaned,
            state: state.into(),
            hint,
        }
    }
}

/// Runs `work` until it completes (`Some`) or `interrupt` is raised first (`None`, and `work` is
/// dropped where it stood). Work that is ready wins over an interrupt raised at the same time.
pub(crate) async fn race<F: Future>(interrupt: &Interrupt, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    let mut raised = pin!(interrupt.raised());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if raised.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(work: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    }

    #[test]
    fn the_flag_remembers_the_signal() {
        let interrupt = Interrupt::new();
        assert_eq!(interrupt.signal(), None);
        interrupt
            .flag()
            .store(nix::libc::SIGTERM as usize, Ordering::SeqCst);
        assert_eq!(interrupt.signal(), Some(nix::libc::SIGTERM));
        let error = interrupt.error(vec!["stopped pg_dump".into()], "nothing was written");
        assert_eq!(
            error.to_string(),
            "interrupted by SIGTERM: stopped pg_dump; nothing was written"
        );
    }

    #[test]
    fn a_race_ends_when_the_flag_is_raised_and_finished_work_wins() {
        let interrupt = Interrupt::new();
        let raiser = interrupt.clone();
        let ended = block_on(async {
            race(&interrupt, async {
                raiser.raise(nix::libc::SIGINT);
                // Work that would outlast any test: the interrupt must end it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })
            .await
        });
        assert_eq!(ended, None);
        // Raised already, but the work is ready at once: its result is kept.
        assert_eq!(block_on(race(&interrupt, async { 7 })), Some(7));
    }
}
