//! Everything the commands take from outside: arguments, the process environment, the machine.
//! The only place that reads the process environment.

use crate::error::CliResult;
use nanika_config::env_vars;
use nanika_config::{LoadedProject, Project, Rejected, ValidProject};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The variables of nanika's registry that are set in the process environment.
pub fn process_env() -> BTreeMap<String, String> {
    env_vars::ALL
        .iter()
        .filter_map(|var| {
            std::env::var(var.name)
                .ok()
                .map(|value| (var.name.to_string(), value))
        })
        .collect()
}

/// The project named by `--project-dir` (or `NANIKA_PROJECT_DIR`), else the nearest one above
/// the current directory.
pub fn project(project_dir: Option<&PathBuf>) -> CliResult<Project> {
    match project_dir {
        Some(dir) => Ok(Project::at(dir)?),
        None => {
            let cwd = std::env::current_dir().map_err(|e| {
                crate::error::CliError::usage("cannot read the current directory").caused_by(e)
            })?;
            Ok(Project::discover(&cwd)?)
        }
    }
}

/// The project with all its files loaded.
pub fn load(project_dir: Option<&PathBuf>) -> CliResult<LoadedProject> {
    Ok(project(project_dir)?.load(&process_env())?)
}

/// The project with what the services and operations need loaded (not the compose file).
pub fn load_for_services(project_dir: Option<&PathBuf>) -> CliResult<LoadedProject> {
    Ok(project(project_dir)?.load_for_services(&process_env())?)
}

/// The project with what the services need loaded, refused with every error it has: the only
/// way the commands that connect to or change a server get a project.
pub fn valid(project_dir: Option<&PathBuf>) -> CliResult<ValidProject> {
    load_for_services(project_dir)?
        .validate()
        .map_err(|rejected| rejected_error(&rejected))
}

/// The error for a project refused for its configuration: every error finding, and that
/// nothing was done.
pub fn rejected_error(rejected: &Rejected) -> crate::error::CliError {
    let mut message = format!("{rejected}; nothing was done");
    for finding in rejected.errors() {
        message += &format!("\n{finding}");
    }
    crate::error::CliError::failure(message)
        .hint("fix them; `nanika config check` lists every finding with the spec's values")
}

/// The machine's memory, from `/proc/meminfo`, when it can be read.
pub fn machine_memory() -> Option<nanika_config::units::MemorySize> {
    let meminfo = fs_err::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(nanika_config::units::MemorySize(kib * 1024))
}

/// The kernel's ephemeral port range, when it can be read.
pub fn ephemeral_ports() -> Option<nanika_config::ports::PortRange> {
    let text = fs_err::read_to_string(nanika_config::ports::EPHEMERAL_RANGE_FILE).ok()?;
    nanika_config::ports::PortRange::parse(&text)
}

/// Where to look for the server binaries: `NANIKA_PG_BIN_DIR`, `NANIKA_REDIS_BIN`, the `PATH`.
pub fn binary_search() -> nanika_runtime::native::binaries::BinarySearch {
    nanika_runtime::native::binaries::BinarySearch {
        pg_bin_dir: std::env::var_os(env_vars::NANIKA_PG_BIN_DIR).map(PathBuf::from),
        redis_server: std::env::var_os(env_vars::NANIKA_REDIS_BIN).map(PathBuf::from),
        path: std::env::var_os("PATH"),
    }
}

/// The value of `NANIKA_CACHE_DIR` that turns the cluster cache off.
pub const CACHE_OFF: &str = "off";

/// The cache of pristine clusters: `NANIKA_CACHE_DIR`, else the default for this user (see
/// [`ClusterCache::default_root`]); `None` when it is `off` or there is no default (no `HOME`):
/// then every new cluster runs its own initdb.
///
/// [`ClusterCache::default_root`]: nanika_runtime::native::cluster_cache::ClusterCache::default_root
pub fn cluster_cache() -> Option<nanika_runtime::native::cluster_cache::ClusterCache> {
    use nanika_runtime::native::cluster_cache::ClusterCache;
    match std::env::var_os(env_vars::NANIKA_CACHE_DIR).filter(|v| !v.is_empty()) {
        Some(value) if value == CACHE_OFF => None,
        Some(value) => Some(ClusterCache::at(value)),
        None => ClusterCache::default_root(
            nix::unistd::Uid::effective().is_root(),
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
        .map(ClusterCache::at),
    }
}

/// Whether this process's local time is UTC: `TZ` names UTC (or is empty), or, without `TZ`,
/// `/etc/localtime` is UTC's zone file or missing (the C library's default is then UTC).
/// Any other zone is `false`: converting it would need the zone database.
pub fn local_time_is_utc() -> bool {
    fn names_utc(zone: &str) -> bool {
        let zone = zone.trim_start_matches(':');
        let zone = zone
            .strip_prefix("Etc/")
            .or_else(|| zone.rsplit_once("/zoneinfo/").map(|(_, z)| z))
            .map_or(zone, |z| z.trim_start_matches("Etc/"));
        matches!(
            zone,
            "" | "UTC" | "UTC0" | "UCT" | "GMT" | "GMT0" | "GMT+0" | "GMT-0" | "Universal" | "Zulu"
        )
    }
    match std::env::var("TZ") {
        Ok(zone) => names_utc(&zone),
        Err(std::env::VarError::NotUnicode(_)) => false,
        Err(std::env::VarError::NotPresent) => match std::fs::read_link("/etc/localtime") {
            Ok(target) => target.to_str().is_some_and(names_utc),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        },
    }
}
