//! What can go wrong in an operation; every variant says what to do about it.

/// A failed operation.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The database could not be reached.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Where (password masked).
        target: String,
        /// Why.
        reason: String,
    },
    /// Redis could not be reached or refused a command.
    #[error("Redis at {target}: {reason}")]
    Redis {
        /// Where (password masked).
        target: String,
        /// Why.
        reason: String,
    },
    /// A statement failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The migrations cannot be applied as they are.
    #[error("{message}")]
    Migration {
        /// What is wrong.
        message: String,
        /// How to repair it.
        hint: String,
    },
    /// A PostgreSQL or Redis tool failed.
    #[error("`{command}` failed ({status}){}", if stderr.trim().is_empty() { String::new() } else { format!(":\n{}", stderr.trim_end()) })]
    Tool {
        /// The command (no secrets: they go through the environment).
        command: String,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The operation was refused to protect data; the hint says how to proceed.
    #[error("{message}")]
    Refused {
        /// Why.
        message: String,
        /// What to do.
        hint: String,
    },
    /// A runtime problem (binaries, state).
    #[error(transparent)]
    Runtime(#[from] nanika_runtime::RuntimeError),
    /// A signal stopped the operation before it was done; what it had begun was undone as
    /// `cleaned` says, and `state` is where that left the data.
    #[error("interrupted{}: {}", by_signal(*signal), cleaned_then_state(cleaned, state))]
    Interrupted {
        /// The signal that stopped it, by number, when a signal did.
        signal: Option<i32>,
        /// What was stopped, removed, dropped or rolled back, in order.
        cleaned: Vec<String>,
        /// The state the data is in now.
        state: String,
        /// What to do next, when anything is left to do.
        hint: Option<String>,
    },
}

/// ` by SIGINT`, or nothing when no signal is known.
fn by_signal(signal: Option<i32>) -> String {
    signal
        .map(|n| match nix::sys::signal::Signal::try_from(n) {
            Ok(signal) => format!(" by {}", signal.as_str()),
            Err(_) => format!(" by signal {n}"),
        })
        .unwrap_or_default()
}

fn cleaned_then_state(cleaned: &[String], state: &str) -> String {
    if cleaned.is_empty() {
        state.to_string()
    } else {
        format!("{}; {state}", cleaned.join(", "))
    }
}

impl OpsError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpsError {
        let context = context.into();
        move |source| OpsError::Io { context, source }
    }

    /// Wraps a database error with what was being done.
    pub fn sql(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> OpsError {
        let context = context.into();
        move |source| OpsError::Sql { context, source }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            OpsError::Connect { .. } => Some(
                "is it running? `nanika up` starts it, `nanika doctor` says what is wrong".into(),
            ),
            OpsError::Redis { .. } => Some(
                "is it running? `nanika up redis` starts it, `nanika doctor` says what is wrong"
                    .into(),
            ),
            OpsError::Migration { hint, .. } | OpsError::Refused { hint, .. } => Some(hint.clone()),
            OpsError::Runtime(error) => error.hint(),
            OpsError::Interrupted { hint, .. } => hint.clone(),
            _ => None,
        }
    }
}

/// Shorthand for the operations' results.
pub type Result<T, E = OpsError> = std::result::Result<T, E>;
