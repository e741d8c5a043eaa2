//! The typed model of nanika's infrastructure and everything about its files.
//!
//! # Layout
//! - [`model`]: [`Infrastructure`] and its parts, with the spec's values as defaults.
//! - [`pgconf`], [`redisconf`], [`dotenv`], [`compose`]: one module a file format, each reading
//!   text into the model (with a [`Finding`] for every problem, on its line) and rendering the
//!   model back into text.
//! - [`settings`]: `nanika.toml`, nanika's own opt-in settings beyond the spec (backups).
//! - [`project`]: where a project's files are, and loading all of them at once.
//! - [`check`] and [`lint`]: what is wrong with a project's files, and what is risky in them;
//!   [`validate`]: what must hold across them before anything acts on a server ([`ValidProject`]).
//! - [`urls`], [`secret`], [`units`]: the value types the model is made of.
//! - [`ports`]: the kernel's ephemeral port range, which lint and the runtime judge ports by.
//! - [`kubernetes`]: the project as manifests for CloudNativePG and the redis-operator
//!   (`nanika export kubernetes`).
//!
//! Nothing here prints, spawns or reads the process environment: callers pass it in.

pub mod check;
pub mod compose;
pub mod dotenv;
pub mod env_vars;
pub mod finding;
pub mod kubernetes;
pub mod lint;
pub mod model;
pub mod monitoring;
pub mod parsed;
pub mod pgconf;
pub mod ports;
pub mod project;
pub mod redisconf;
pub mod secret;
pub mod settings;
pub mod units;
pub mod urls;
pub mod validate;

pub use finding::{Finding, Severity};
pub use model::Infrastructure;
pub use project::{LoadedProject, Project, ProjectError};
pub use secret::Secret;
pub use validate::{Rejected, ValidProject};
