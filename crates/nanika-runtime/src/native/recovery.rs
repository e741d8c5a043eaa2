//! Stopping what this project runs, whatever state its records are in.
//!
//! Normally `down` asks the supervisor (proven by its record in the status file) to stop its
//! servers. This is also what handles the rest: a supervisor that is itself hung or stopped,
//! servers left running by a supervisor that was killed, and a `.nanika/run` deleted under
//! running servers, where nothing is recorded and this project's processes are found from the
//! processes themselves ([`super::ownership`]). Every process is proven before it is signalled
//! and stopped on its ladder ([`super::shutdown`]); nothing of the project may be left after.

use super::layout::StateLayout;
use super::ownership::{self, Role};
use super::procfs::{Mismatch, ProcessRecord, SignalError};
use super::shutdown::{self, Ladder, Outcome};
use super::supervisor::{self, Status};
use crate::Service;
use crate::error::{Result, RuntimeError};

/// What is done with servers found running without a supervisor, once stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// `up`: they start again under a new supervisor.
    StartAgain,
    /// `down`: they stay stopped.
    StayStopped,
}

/// Turns a refused or failed signal into the runtime's error, naming the process.
pub(crate) fn signal_error(process: String, error: SignalError) -> RuntimeError {
    match error {
        SignalError::NotProven(why) => RuntimeError::NotProven {
            process,
            reason: why.to_string(),
        },
        SignalError::Failed { signal, source, .. } => {
            RuntimeError::io(format!("cannot send {signal} to {process}"))(source)
        }
    }
}

/// The supervisor's last status.
pub(crate) fn read_status(layout: &StateLayout) -> Option<Status> {
    supervisor::read_json(&supervisor::status_file(layout))
}

/// The running supervisor, proven: its record in the status file (pid, start time and the
/// command line nanika gave it) matches the live process, and that command line makes it
/// this project's supervisor. When the record is missing or proves nothing, the one process
/// whose command line makes it this project's supervisor, and why the record was not used.
/// The pid file is not trusted for anything.
pub(crate) fn supervisor_record(layout: &StateLayout) -> Result<(ProcessRecord, Option<String>)> {
    let status_file = supervisor::status_file(layout);
    let recorded = read_status(layout).and_then(|s| s.supervisor);
    let unproven = match &recorded {
        None => format!("{} records no supervisor", status_file.display()),
        Some(record) => match record.check() {
            Ok(()) if ownership::is_this_projects(layout, Role::Supervisor, record) => {
                return Ok((record.clone(), None));
            }
            Ok(()) => format!(
                "{} records pid {} as the supervisor, but it runs `{}`, which is not this project's supervisor; nanika left it alone",
                status_file.display(),
                record.pid,
                record.cmdline.join(" ")
            ),
            Err(why) => format!(
                "{} records pid {} as the supervisor, but {why}; nanika left it alone",
                status_file.display(),
                record.pid
            ),
        },
    };
    let mut found = ownership::discover(layout).supervisors;
    match found.len() {
        1 => Ok((found.remove(0), recorded.map(|_| unproven))),
        n => Err(RuntimeError::NotProven {
            process: "this project's supervisor".into(),
            reason: format!(
                "{unproven}, and {n} processes run as its supervisor (`nanika --project-dir {} __supervise`)",
                layout.project.display()
            ),
        }),
    }
}

/// Stops the supervisor on its ladder; it stops its servers on theirs first. Returns what
/// those stops had to say beyond a plain graceful stop.
pub(crate) fn stop_supervisor(layout: &StateLayout) -> Result<Vec<String>> {
    if !supervisor::is_running(layout) {
        return Ok(Vec::new());
    }
    let (mut record, unproven) = supervisor_record(layout)?;
    let stopped = shutdown::stop("the supervisor", &mut record, &shutdown::SUPERVISOR);
    if let Outcome::NotProven(reason) = stopped.outcome {
        return Err(RuntimeError::NotProven {
            process: format!("the supervisor (pid {})", record.pid),
            reason,
        });
    }
    let mut notes: Vec<String> = unproven.into_iter().collect();
    // It wrote how each server's stop went before it exited.
    notes.extend(
        read_status(layout)
            .into_iter()
            .flat_map(|s| s.services.into_values().filter_map(|r| r.stop_note)),
    );
    notes.extend(stopped.account.map(|account| {
        if stopped.killed {
            format!("{account}; its servers are stopped directly")
        } else {
            account
        }
    }));
    Ok(notes)
}

/// Stops every process of this project that runs without a supervisor holding the lock: a
/// supervisor whose `.nanika/run` was deleted under it (it stops its own servers), and
/// servers whose supervisor is gone. Each is proven this project's first — by the record
/// its supervisor left, else from the process itself (see [`ownership`]) — and stopped on
/// its ladder. Fails, naming them, when a process nanika started is left running; a stray it
/// cannot prove it started is named in a note and left alone.
pub(crate) fn stop_unsupervised(layout: &StateLayout, then: Then) -> Result<Vec<String>> {
    let status = read_status(layout);
    // No status: `.nanika/run` was deleted (or never written) while processes ran.
    let lost = status.is_none();
    let run = layout.run.display().to_string();
    let mut notes = Vec::new();
    let mut details = Vec::new();
    let mut found = ownership::discover(layout);

    let supervisors = std::mem::take(&mut found.supervisors);
    for mut record in supervisors {
        let servers: Vec<String> = found
            .services()
            .iter()
            .filter_map(|s| found.server(*s).map(|r| format!("{s} (pid {})", r.pid)))
            .collect();
        let stopped = shutdown::stop("the supervisor", &mut record, &shutdown::SUPERVISOR);
        if let Outcome::NotProven(reason) = &stopped.outcome {
            details.push(format!("the supervisor (pid {}): {reason}", record.pid));
            continue;
        }
        let with = if servers.is_empty() {
            String::new()
        } else {
            format!(", and it stopped {} gracefully", servers.join(" and "))
        };
        notes.push(format!(
            "this project's supervisor (pid {}) was still running although {run} had been removed; nanika proved it is this project's from its command line (`… --project-dir {} __supervise`) and stopped it{with}{}",
            record.pid,
            layout.project.display(),
            match then {
                Then::StartAgain => "; they start again under a new supervisor (a server that is not a child of the new one cannot be supervised, so none is adopted)",
                Then::StayStopped => "",
            }
        ));
        notes.extend(stopped.account);
        found = ownership::discover(layout);
    }

    let mut targets = Vec::new();
    // The spec's servers, the topology's nodes the status records, and those found running.
    let mut services: Vec<Service> = Service::ALL.to_vec();
    for service in status
        .iter()
        .flat_map(|s| s.services.keys().copied())
        .chain(found.services())
    {
        if !services.contains(&service) {
            services.push(service);
        }
    }
    for service in services {
        let recorded = status
            .as_ref()
            .and_then(|s| s.services.get(&service))
            .and_then(|r| r.process.clone());
        let proven = recorded.filter(|record| match record.check() {
            Ok(()) if ownership::is_this_projects(layout, Role::Server(service), record) => true,
            Ok(()) => {
                notes.push(format!("{} records pid {} for {service}, but that process (`{}`) is not this project's {service}; nanika left it alone", supervisor::status_file(layout).display(), record.pid, record.cmdline.join(" ")));
                false
            }
            Err(why @ (Mismatch::Reused { .. } | Mismatch::OtherCommand { .. })) => {
                notes.push(format!("{} records pid {} for {service}, but {why}; nanika left it alone", supervisor::status_file(layout).display(), record.pid));
                false
            }
            Err(Mismatch::Gone { .. }) => false,
        });
        let by_record = proven.is_some();
        if let Some(record) = proven.or_else(|| found.server(service).cloned()) {
            targets.push((service, record, by_record));
        }
    }
    let stops: Vec<shutdown::Stopped> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(service, record, _)| {
                let mut record = record.clone();
                scope.spawn(move || {
                    shutdown::stop(service.as_str(), &mut record, &Ladder::of(*service))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a stop does not panic"))
            .collect()
    });
    for ((service, record, by_record), stopped) in targets.into_iter().zip(stops) {
        let pid = record.pid;
        if let Outcome::NotProven(reason) = &stopped.outcome {
            details.push(format!("{service} (pid {pid}): {reason}"));
            continue;
        }
        let how = if by_record || !lost {
            format!("{service} (pid {pid}) was running without its supervisor")
        } else {
            let proof = match service.kind() {
                Service::Postgres => format!("`postgres -D {}`", layout.postgres_data().display()),
                Service::Redis => {
                    format!("`redis-server` working in {}", layout.redis_dir.display())
                }
                monitor => format!(
                    "its program working in {}",
                    layout
                        .postgres_home
                        .join(super::control::data_dir_name(monitor))
                        .display()
                ),
            };
            format!(
                "{service} (pid {pid}) was running although {run} had been removed; nanika proved it is this project's from the process itself ({proof})"
            )
        };
        notes.push(match then {
            Then::StartAgain => format!("{how}; restarted it cleanly under a new supervisor"),
            Then::StayStopped => format!("{how}; stopped it"),
        });
        match stopped.account {
            Some(account) if stopped.outcome == Outcome::StillRunning => details.push(account),
            Some(account) => notes.push(account),
            None => {}
        }
    }
    // Nothing nanika started may outlive this: looked for again, from the processes.
    let left = ownership::discover(layout);
    if left.any_started() {
        return Err(RuntimeError::StillRunning {
            processes: left.describe(),
            details,
        });
    }
    notes.extend(details);
    // A stray was not started by nanika: named, not signalled, and not this command's failure
    // (`down --volumes` refuses to delete under it).
    notes.extend(
        left.describe()
            .into_iter()
            .map(|stray| format!("{stray} still runs; nanika left it alone")),
    );
    Ok(notes)
}
