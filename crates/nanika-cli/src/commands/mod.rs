//! One module a command.

pub mod config;
pub mod init;
