//! `nanika logs --json`: the logs as one JSON record a line, read by
//! [`nanika_runtime::log_records`] from the same lines the text mode prints.

use super::runtime_error;
use crate::context;
use crate::error::CliResult;
use nanika_runtime::Service;
use nanika_runtime::compose::RuntimeKind;
use nanika_runtime::log_records::{self, LocalZone, LogRecord, Records};
use nanika_runtime::runtime::RuntimeState;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a followed record waits for more of its lines before it is printed. PostgreSQL
/// writes a record's lines (DETAIL, HINT, STATEMENT) in one write and the follower reads the
/// log every 100 ms, so a record with no new line for this long is whole.
const QUIET: Duration = Duration::from_millis(250);

/// One service's record in the making while following.
struct Open {
    records: Records,
    last_line: Instant,
}

/// Prints the last `tail` lines of each of `services`' logs as records, then, with `follow`,
/// each new record until the logs end or the process is stopped.
pub fn run(state: &dyn RuntimeState, services: &[Service], follow: bool, tail: usize) -> CliResult {
    let zone = redis_zone(state.kind());
    for service in services {
        let lines = state.log_tail(*service, tail).map_err(runtime_error)?;
        let records = log_records::parse_lines(*service, zone, lines.iter().map(String::as_str));
        records.iter().for_each(print);
    }
    if follow {
        follow_records(state, services, zone)?;
    }
    Ok(())
}

fn follow_records(state: &dyn RuntimeState, services: &[Service], zone: LocalZone) -> CliResult {
    // Shared with the sink, which the runtime takes as `'static`.
    let open: Arc<Mutex<BTreeMap<Service, Open>>> = Arc::default();
    let ended = AtomicBool::new(false);
    let in_sink = Arc::clone(&open);
    let sink = move |service: Service, line: &str| {
        let Ok(mut open) = in_sink.lock() else { return };
        let entry = open.entry(service).or_insert_with(|| Open {
            records: Records::new(service, zone),
            last_line: Instant::now(),
        });
        entry.last_line = Instant::now();
        if let Some(record) = entry.records.push(line) {
            print(&record);
        }
    };
    let followed = std::thread::scope(|scope| {
        // The last record of a burst has no next line to complete it: print it once the log
        // has been quiet for a while.
        scope.spawn(|| {
            while !ended.load(Ordering::Relaxed) {
                std::thread::sleep(QUIET / 2);
                flush(&open, Some(QUIET));
            }
        });
        let followed = state.follow_logs(services, &sink);
        ended.store(true, Ordering::Relaxed);
        followed
    });
    flush(&open, None);
    followed.map_err(runtime_error)
}

/// Prints the records in the making that had no line for `quiet` (all of them when `None`).
fn flush(open: &Mutex<BTreeMap<Service, Open>>, quiet: Option<Duration>) {
    let Ok(mut open) = open.lock() else { return };
    for entry in open.values_mut() {
        if quiet.is_none_or(|quiet| entry.last_line.elapsed() >= quiet)
            && let Some(record) = entry.records.flush()
        {
            print(&record);
        }
    }
}

fn print(record: &LogRecord) {
    match serde_json::to_string(record) {
        Ok(line) => crate::say!("{line}"),
        // Not reachable with these plain fields; reported rather than dropped silently.
        Err(e) => eprintln!("nanika: cannot write a log record as JSON: {e}"),
    }
}

/// The zone Redis's zoneless times are in. The official images run in UTC; a native server
/// writes the local time of the environment `nanika up` started it from, taken to be this one.
fn redis_zone(kind: RuntimeKind) -> LocalZone {
    match kind {
        RuntimeKind::Docker => LocalZone::Utc,
        RuntimeKind::Native if context::local_time_is_utc() => LocalZone::Utc,
        RuntimeKind::Native => LocalZone::Unknown,
    }
}
