//! The benchmarks, one module per group of operations. Each group appends its rows (or why it
//! could not measure them) to the [`Report`](crate::report::Report).

pub mod backups;
pub mod data;
pub mod docker;
pub mod lifecycle;
pub mod monitoring;
pub mod scale;
pub mod supervisor;
pub mod topology;

use crate::options::Options;
use crate::pairing::Plan;
use std::path::PathBuf;

/// What every group needs.
pub struct Context {
    /// The user's options.
    pub options: Options,
    /// The release-built `nanika`.
    pub nanika: PathBuf,
}

impl Context {
    /// The plan for an operation of about a second or less.
    pub fn fast(&self) -> Plan {
        Plan {
            pairs: self.options.fast_pairs(),
            warm_up: self.options.warm_up(),
        }
    }

    /// The plan for a longer operation.
    pub fn slow(&self) -> Plan {
        Plan {
            pairs: self.options.slow_pairs(),
            warm_up: self.options.warm_up(),
        }
    }
}
