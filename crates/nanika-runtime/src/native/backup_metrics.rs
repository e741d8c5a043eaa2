//! The backup schedule's record as Prometheus metrics, served by the supervisor on loopback when
//! `nanika.toml` turns on both `[monitoring]` and scheduled `[backups]`: no exporter Debian ships
//! reads pgBackRest, and the alert rules `BackupFailing` and `BackupTooOld` need these two series.
//! The server answers every request with the metrics and reads nothing of it but its head.

use super::backup_schedule::{self, ScheduleStatus};
use super::layout::StateLayout;
use super::supervisor::{self, Plan};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The metrics of the record `status` (none yet: no series, rather than invented values).
pub fn render(status: Option<&ScheduleStatus>) -> String {
    let mut text = String::from(
        "# HELP nanika_backup_last_run_success Whether the last scheduled pgBackRest backup worked (1) or failed (0).\n\
         # TYPE nanika_backup_last_run_success gauge\n",
    );
    let Some(status) = status else {
        return text;
    };
    if status.last_attempt.is_some() || status.last_label.is_some() {
        let success = u8::from(status.last_error.is_none());
        text += &format!("nanika_backup_last_run_success{{kind=\"postgres\"}} {success}\n");
    }
    text += "# HELP nanika_backup_last_success_timestamp_seconds When the last good backup ended (Unix time).\n\
             # TYPE nanika_backup_last_success_timestamp_seconds gauge\n";
    if let Some(last) = [status.last_full, status.last_diff, status.last_incr]
        .into_iter()
        .flatten()
        .max()
    {
        text +=
            &format!("nanika_backup_last_success_timestamp_seconds{{kind=\"postgres\"}} {last}\n");
    }
    text
}

/// How long one client may take to send its request's head: the server answers one client at
/// a time, so a slow one must not keep Prometheus (or a stopping supervisor) waiting.
const REQUEST_DEADLINE: Duration = Duration::from_millis(500);

/// Answers one connection with the metrics, within [`REQUEST_DEADLINE`] and a write of the
/// same bound, whatever the client does.
fn answer(mut stream: TcpStream, layout: &StateLayout) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
    // The request's head, at most 4 KiB, is read so that the client is not reset mid-request.
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while head.len() < 4096 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let body = render(backup_schedule::read_status(layout).as_ref());
    let _ = write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// The server's loop, until `stop` is raised: it listens on the port the plan names (none, no
/// listener), follows the plan when `nanika up` changes it, and parks between looks, so that
/// whoever raises `stop` unparks it.
pub fn serve(layout: StateLayout, stop: Arc<AtomicBool>) {
    let mut listening: Option<(u16, TcpListener)> = None;
    // The plan is read once a second, as the backup scheduler reads it: a supervisor at rest
    // should not parse it ten times a second to learn that nothing changed.
    let mut plan_read: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if plan_read.is_none_or(|at| at.elapsed() >= PLAN_EVERY) {
            plan_read = Some(Instant::now());
            let wanted = supervisor::read_json::<Plan>(&supervisor::plan_file(&layout))
                .and_then(|plan| plan.backup_metrics_port);
            if listening.as_ref().map(|(port, _)| *port) != wanted {
                listening = wanted.and_then(|port| {
                    let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
                    listener.set_nonblocking(true).ok()?;
                    Some((port, listener))
                });
            }
        }
        // Without a listener there is only the plan to look at again.
        let pause = match &listening {
            Some((_, listener)) => {
                while !stop.load(Ordering::SeqCst)
                    && let Ok((stream, _)) = listener.accept()
                {
                    answer(stream, &layout);
                }
                ACCEPT_EVERY
            }
            None => PLAN_EVERY,
        };
        std::thread::park_timeout(pause);
    }
}

/// How often the server looks at the plan.
const PLAN_EVERY: Duration = Duration::from_secs(1);

/// How often a listening server takes the connections waiting: well within a scrape's timeout.
const ACCEPT_EVERY: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_sends_its_request_slowly_is_dropped_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(b"G").unwrap();
        let (stream, _) = listener.accept().unwrap();
        let state = tempfile::tempdir().unwrap();
        let started = Instant::now();
        answer(stream, &StateLayout::new(state.path(), None));
        let took = started.elapsed();
        assert!(took < REQUEST_DEADLINE * 2, "{took:?}");
        // The slow client got nothing: the connection is closed.
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }

    #[test]
    fn the_record_becomes_the_two_series_the_rules_read() {
        assert!(!render(None).contains("{kind"));
        let worked = ScheduleStatus {
            last_full: Some(100),
            last_incr: Some(300),
            last_attempt: Some(290),
            last_label: Some("x".into()),
            ..ScheduleStatus::default()
        };
        let text = render(Some(&worked));
        assert!(
            text.contains("nanika_backup_last_run_success{kind=\"postgres\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nanika_backup_last_success_timestamp_seconds{kind=\"postgres\"} 300\n"),
            "{text}"
        );
        let failed = ScheduleStatus {
            last_error: Some("disk full".into()),
            ..worked
        };
        assert!(
            render(Some(&failed)).contains("nanika_backup_last_run_success{kind=\"postgres\"} 0\n")
        );
    }
}
