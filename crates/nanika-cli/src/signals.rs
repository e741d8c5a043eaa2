//! Ctrl-C, SIGTERM and SIGHUP during the database commands that write files or change data
//! (`db backup`, `restore`, `seed`, `migrate`, `reset`). Instead of dying half-way and leaving
//! their tools running, those commands catch the signals into an [`Interrupt`]; the operation
//! stops its tools, undoes what it had begun and says what it cleaned, and nanika exits with
//! 128 + the signal. This crate is the only one that installs signal handlers.

use crate::error::{CliError, CliResult};
use nanika_ops::Interrupt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Catches SIGINT, SIGTERM and SIGHUP from now on; each raises the returned flag with its
/// number. Call it after any question to the user: at a prompt, Ctrl-C must still end nanika.
/// A signal during the cleanup that follows changes nothing (the flag is raised already): that
/// cleanup is bounded, and stopping it would leave things worse.
pub fn catch() -> CliResult<Interrupt> {
    let interrupt = Interrupt::new();
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        let value = usize::try_from(signal).unwrap_or(usize::MAX);
        signal_hook::flag::register_usize(signal, interrupt.flag(), value)
            .map_err(|e| CliError::failure("cannot catch Ctrl-C and SIGTERM").caused_by(e))?;
    }
    Ok(interrupt)
}

/// Says so when a signal came after `what` was already complete (its point of no return): the
/// work was kept, and the command ends as if no signal had come.
pub fn note_if_late(interrupt: &Interrupt, what: &str) {
    if let Some(signal) = interrupt.signal() {
        let name = nix::sys::signal::Signal::try_from(signal)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {signal}"));
        eprintln!("note: {name} came after {what} was complete; it was kept");
    }
}
