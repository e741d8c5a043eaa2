//! The native runtime: the host's own servers, supervised, with their state under `.nanika/`.

pub mod backup_metrics;
pub mod backup_schedule;
pub mod backups;
pub mod binaries;
pub mod cluster_cache;
pub mod control;
pub mod jsonlog;
pub mod layout;
pub mod logs;
pub mod ownership;
pub mod postgres;
pub mod procfs;
pub mod recovery;
pub mod redis;
pub mod safe_fs;
pub mod shutdown;
pub mod supervisor;
