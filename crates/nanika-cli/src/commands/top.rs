//! `nanika top`: a live view of both servers, refreshed every interval, or one view (`--once`).

use super::db::block_on;
use crate::cli::RuntimeArg;
use crate::context;
use crate::error::{CliError, CliResult};
use nanika_ops::pg;
use nanika_ops::top::{Probe, Side, View};
use nanika_runtime::Service;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

/// Shows the view: once (`once`, after one interval, as text or JSON), or live until `q`.
pub fn run(
    project_dir: Option<&PathBuf>,
    runtime_arg: RuntimeArg,
    once: bool,
    json: bool,
    interval: Duration,
) -> CliResult {
    if json && !once {
        return Err(CliError::usage("--json prints one view: it needs --once")
            .hint("nanika top --once --json"));
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !once && !terminal {
        return Err(
            CliError::usage("the live view needs a terminal (it quits on q)")
                .hint("in a script: nanika top --once [--json]"),
        );
    }
    let valid = context::valid(project_dir)?;
    // Identity before action: a server that is not proven to be this project's is shown
    // down with the reason and never connected to.
    let (database, redis) = {
        let runtime = super::services::runtime(&valid, runtime_arg, false)?;
        let proven = |service: Service| {
            runtime
                .verify(service)
                .map_err(|e| super::services::runtime_error(e).to_string())
        };
        let env = &valid.infra.env;
        let database = proven(Service::Postgres).map(|()| {
            pg::admin_url(
                &env.database_url,
                super::db::admin_password(&valid).as_ref(),
            )
        });
        let redis = proven(Service::Redis).map(|()| env.redis_url.clone());
        (database, redis)
    };
    let mut probe = Probe::new(database, redis);
    if once {
        let view = block_on(async {
            let before = probe.read().await;
            tokio::time::sleep(interval).await;
            let after = probe.read().await;
            probe.view(&before, &after)
        });
        if json {
            crate::say!(
                "{}",
                serde_json::to_string_pretty(&view).expect("serializes")
            );
        } else {
            crate::say!("{}", render(&view));
        }
        return Ok(());
    }
    live(&mut probe, interval)
}

/// Redraws the view every `interval` until `q` (or Ctrl-C, which the raw terminal delivers
/// as a byte) is typed.
fn live(probe: &mut Probe, interval: Duration) -> CliResult {
    let _raw = RawTerminal::enter()?;
    let mut out = std::io::stdout();
    // Hide the cursor while drawing; the guard shows it again.
    let _ = write!(out, "\x1b[?25l");
    block_on(async {
        let mut before = probe.read().await;
        loop {
            if quit_typed_within(interval) {
                return Ok(());
            }
            let after = probe.read().await;
            let view = probe.view(&before, &after);
            before = after;
            let text = render(&view).replace('\n', "\r\n");
            let _ = write!(
                out,
                "\x1b[H\x1b[2J{text}\r\n\r\nrefreshes every {} ms; q quits",
                interval.as_millis()
            );
            let _ = out.flush();
        }
    })
}

/// Waits up to `interval` for a key; true when it asks to quit (`q`, `Q`, Ctrl-C, Ctrl-D).
fn quit_typed_within(interval: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    let deadline = std::time::Instant::now() + interval;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => {
                let mut byte = [0u8; 16];
                let read = nix::unistd::read(stdin.as_fd(), &mut byte).unwrap_or(0);
                if read == 0
                    || byte[..read]
                        .iter()
                        .any(|b| matches!(b, b'q' | b'Q' | 3 | 4))
                {
                    return true;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// The terminal in raw mode (keys arrive one at a time, unechoed) until dropped, which puts
/// it back as it was and shows the cursor.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> CliResult<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd())
            .map_err(|e| CliError::failure("cannot read the terminal's settings").caused_by(e))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // Output keeps its newline translation off; the view writes \r\n itself.
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| CliError::failure("cannot put the terminal in raw mode").caused_by(e))?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
        let mut out = std::io::stdout();
        let _ = write!(out, "\x1b[?25h\r\n");
        let _ = out.flush();
    }
}

/// The view as text: a block per server.
pub fn render(view: &View) -> String {
    let mut lines = Vec::new();
    match &view.postgres {
        Side::Up(pg) => {
            lines.push("postgres  up".to_string());
            lines.push(format!(
                "  connections   {} / {} ({:.0} %)",
                pg.connections, pg.max_connections, pg.connections_percent
            ));
            lines.push(format!(
                "  transactions  {:.1}/s",
                pg.transactions_per_second
            ));
            lines.push(format!(
                "  cache hits    {}",
                pg.cache_hit_ratio
                    .map(|r| format!("{:.2} %", r * 100.0))
                    .unwrap_or_else(|| "no block read yet".into())
            ));
            lines.push(format!("  deadlocks     {}", pg.deadlocks));
            lines.push(match &pg.longest_query {
                Some(q) => format!(
                    "  longest query {:.1} s, pid {} on {}: {}",
                    q.seconds, q.pid, q.database, q.query
                ),
                None => "  longest query none running".into(),
            });
            for replica in &pg.replicas {
                lines.push(format!(
                    "  replica       {} {} lag {} bytes, {} s",
                    replica.name,
                    replica.state,
                    replica
                        .lag_bytes
                        .map_or_else(|| "?".into(), |b| b.to_string()),
                    replica
                        .lag_seconds
                        .map_or_else(|| "?".into(), |s| format!("{s:.3}"))
                ));
            }
        }
        Side::Down { reason } => lines.push(format!("postgres  DOWN  {reason}")),
    }
    lines.push(String::new());
    match &view.redis {
        Side::Up(redis) => {
            lines.push(format!("redis     up ({})", redis.role));
            lines.push(format!("  ops           {:.1}/s", redis.ops_per_second));
            lines.push(format!("  clients       {}", redis.clients));
            lines.push(format!(
                "  memory        {} / {}{}",
                mib(redis.used_memory),
                if redis.maxmemory == 0 {
                    "no limit".to_string()
                } else {
                    mib(redis.maxmemory)
                },
                redis
                    .memory_percent
                    .map(|p| format!(" ({p:.1} %)"))
                    .unwrap_or_default()
            ));
            lines.push(format!("  evicted keys  {}", redis.evicted_keys));
            let mut prefixes: Vec<_> = redis.keys_by_prefix.iter().collect();
            prefixes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let shown: Vec<String> = prefixes
                .iter()
                .take(6)
                .map(|(prefix, n)| format!("{prefix} {n}"))
                .collect();
            lines.push(format!(
                "  keys          {}{}{}",
                redis.keys,
                if shown.is_empty() { "" } else { ": " },
                shown.join(", ")
            ));
            if redis.prefixes_sampled < redis.keys {
                lines.push(format!(
                    "                (prefixes counted over {} of them)",
                    redis.prefixes_sampled
                ));
            }
            for replica in &redis.replicas {
                lines.push(format!(
                    "  replica       {} {} lag {} bytes",
                    replica.address,
                    replica.state,
                    replica
                        .lag_bytes
                        .map_or_else(|| "?".into(), |b| b.to_string())
                ));
            }
        }
        Side::Down { reason } => lines.push(format!("redis     DOWN  {reason}")),
    }
    lines.join("\n")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
