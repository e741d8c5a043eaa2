//! What is done to the running services: migrations, seed data, backups and restores, Redis
//! administration, the session backup, and `nanika doctor`.
//!
//! # Layout
//! - [`pg`]: connecting with bounded retries, from the spec's `DATABASE_URL`.
//! - [`migrate`], [`seed`], [`reset`], [`dump`] (backup and restore), [`maintain`]: the database.
//! - [`interrupt`]: the flag the caller's signal handlers raise, and what the operations undo
//!   when it is raised; [`tool`] runs pg_dump, pg_restore and psql so that they can be stopped.
//! - [`redis_admin`], [`sessions`]: Redis, and copying its sessions into PostgreSQL and back.
//! - [`top`]: the counters behind `nanika top`, read from the servers themselves.
//! - [`doctor`]: every check of the spec's troubleshooting section, as findings.
//!
//! Functions return data; they never print or exit. Long work reports through callbacks.

pub mod doctor;
pub mod dump;
pub mod error;
pub mod interrupt;
pub mod maintain;
pub mod migrate;
pub mod pg;
pub mod pgbackrest;
pub mod redis_admin;
pub mod reset;
pub mod seed;
pub mod sessions;
mod tool;
pub mod top;

pub use error::OpsError;
pub use interrupt::Interrupt;
