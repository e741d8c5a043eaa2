//! The CLI's error: a message, a hint, the cause chain, and the exit code it maps to.

use std::process::ExitCode;

/// What kind of failure ended the command; each has its own exit code (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit 1: the command ran and failed, or found errors.
    Failure,
    /// Exit 2: the command could not run: bad usage, no project, unreadable files.
    Usage,
    /// Exit 128 + the signal (130 for Ctrl-C): a signal stopped the command, which undid what
    /// it had begun, as a shell reports a program the signal ended.
    Interrupted(i32),
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Failure => ExitCode::from(1),
            Exit::Usage => ExitCode::from(2),
            Exit::Interrupted(signal) => {
                ExitCode::from(u8::try_from(128 + signal.clamp(1, 127)).unwrap_or(u8::MAX))
            }
        }
    }
}

/// A failure to report to the user.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
pub struct CliError {
    message: String,
    #[help]
    hint: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The exit code class.
    pub exit: Exit,
}

impl CliError {
    /// A failure of the command itself (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            source: None,
            exit: Exit::Failure,
        }
    }

    /// The command could not run (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            source: None,
            exit: Exit::Usage,
        }
    }

    /// A command a signal stopped (exit 128 + `signal`).
    pub fn interrupted(message: impl Into<String>, signal: i32) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            source: None,
            exit: Exit::Interrupted(signal),
        }
    }

    /// Adds what to do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds the underlying cause.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl From<nanika_config::ProjectError> for CliError {
    fn from(error: nanika_config::ProjectError) -> Self {
        match error {
            nanika_config::ProjectError::NotFound { .. } => CliError::usage(error.to_string())
                .hint("run nanika inside a project, pass --project-dir DIR, or create one with `nanika init DIR`"),
            nanika_config::ProjectError::Unreadable { .. } => {
                let message = error.to_string();
                let source = std::error::Error::source(&error).map(|s| s.to_string());
                let error = CliError::usage(message).hint("check the file's permissions");
                match source {
                    Some(source) => error.caused_by(std::io::Error::other(source)),
                    None => error,
                }
            }
        }
    }
}

/// Shorthand for the CLI's results.
pub type CliResult<T = ()> = Result<T, CliError>;
