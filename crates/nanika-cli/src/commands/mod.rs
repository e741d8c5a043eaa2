//! One module a group of commands.

pub mod config;
pub mod env;
pub mod init;
pub mod services;
