//! What every parser returns: the value it read, where each key stood, and what was wrong.

use crate::finding::Finding;
use std::collections::BTreeMap;

/// A file read into `T`, with the line of each key and the findings met on the way.
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    /// The value read; settings that could not be read keep the spec's value.
    pub value: T,
    /// The 1-based line where each key was (last) set.
    pub lines: BTreeMap<String, usize>,
    /// Every problem found, in file order.
    pub findings: Vec<Finding>,
}

impl<T> Parsed<T> {
    /// The line of `key`, when the file sets it.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }
}
