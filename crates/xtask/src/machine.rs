//! One line about the machine and the server versions, for the report's header.

use crate::process::{pg_tool, run, server_user};
use fs_err as fs;
use std::process::Command;

/// OS, kernel, cores, memory, PostgreSQL and Redis versions, and which account ran the servers.
pub fn describe() -> String {
    let uname = run(Command::new("uname").arg("-srm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
        / 1024;
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("?")
        .trim_matches('"')
        .to_string();
    let pg = run(pg_tool("postgres").arg("--version"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "postgres ?".into());
    let redis = run(Command::new("redis-server").arg("--version"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).map(String::from))
        .unwrap_or_else(|| "?".into());
    let account = if server_user().is_some() {
        "root (servers as postgres)"
    } else {
        "a normal user"
    };
    format!("{os}, {uname}, {cores} cores, {memory_gib} GiB; {pg}; Redis {redis}; run as {account}")
}
