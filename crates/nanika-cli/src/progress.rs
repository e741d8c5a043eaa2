//! Progress while services start and stop: a spinner per service on a terminal, plain lines
//! otherwise (CI logs, pipes).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nanika_runtime::{Progress, Service};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// Shows progress on stderr.
pub struct Spinners {
    bars: Option<(MultiProgress, Mutex<BTreeMap<Service, ProgressBar>>)>,
}

impl Spinners {
    /// Spinners on a terminal, plain lines elsewhere.
    pub fn new() -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(BTreeMap::new()),
            )
        });
        Spinners { bars }
    }

    /// Stops every spinner that is still turning.
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.lock().expect("progress lock").values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

impl Progress for Spinners {
    fn step(&self, service: Service, message: &str) {
        let Some((multi, bars)) = &self.bars else {
            eprintln!("{service}: {message}");
            return;
        };
        let mut bars = bars.lock().expect("progress lock");
        let bar = bars.entry(service).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:8} {msg}").expect("valid template"),
            );
            bar.set_prefix(service.as_str());
            bar.enable_steady_tick(Duration::from_millis(80));
            bar
        });
        let done = matches!(message, "healthy" | "stopped");
        if done {
            bar.set_style(
                ProgressStyle::with_template("✔ {prefix:8} {msg}").expect("valid template"),
            );
            bar.finish_with_message(message.to_string());
        } else {
            bar.set_message(message.to_string());
        }
    }

    fn note(&self, message: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(message);
            }
            None => eprintln!("{message}"),
        }
    }
}
