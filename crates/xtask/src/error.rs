//! The one error type of the benchmarks: a sentence saying what failed, with its cause.

use std::fmt;

/// Why a benchmark could not go on: what was being done and what went wrong, as one message
/// (a failed command carries its command line, exit status and output).
#[derive(Debug)]
pub struct Error(String);

/// A result whose error is an [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with `message` as its whole text.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

// fs-err's I/O errors already name the path, so the message alone is enough.
impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error(error.to_string())
    }
}
