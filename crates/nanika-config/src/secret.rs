//! Values that must never be printed.

use serde::{Serialize, Serializer};
use std::fmt;

/// What a masked secret shows instead of itself.
pub const MASK: &str = "****";

/// A password or key. `Display`, `Debug` and `Serialize` all print [`MASK`]; only
/// [`Secret::expose`] gives the value, so printing one by accident cannot leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the few places that must hand it to a server or a child process.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (no password set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_formatting_shows_the_value() {
        let secret = Secret::new("hunter2-visible");
        assert_eq!(format!("{secret} {secret:?} {secret:#?}"), "**** **** ****");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"****\"");
        assert_eq!(secret.expose(), "hunter2-visible");
    }
}
