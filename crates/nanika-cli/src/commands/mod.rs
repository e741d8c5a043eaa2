//! One module a group of commands.

pub mod backup;
pub mod cache;
pub mod config;
pub mod db;
pub mod doctor;
pub mod env;
pub mod export;
pub mod failover;
pub mod init;
pub mod redis_cmds;
pub mod services;
pub mod top;
