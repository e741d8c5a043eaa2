//! `doctor`'s checks of `nanika.toml`'s `[monitoring]`: the stack runs, Prometheus scrapes every
//! target, and which alerts are pending or firing.

use super::{Check, fail, ok, warn};

/// With `[monitoring]` on (native runtime): every monitoring service answers; Prometheus, once
/// proven nanika's own, reports every target up; no alert is pending or firing.
pub fn monitoring_checks(native: &nanika_runtime::native::control::Native<'_>) -> Vec<Check> {
    use nanika_runtime::{Service, ServiceState};
    let statuses: Vec<_> = native
        .status()
        .into_iter()
        .filter(|s| s.service.is_monitor())
        .collect();
    let down: Vec<String> = statuses
        .iter()
        .filter(|s| s.state != ServiceState::Healthy)
        .map(|s| format!("{} ({})", s.service, s.state))
        .collect();
    let mut checks = vec![if down.is_empty() {
        ok(
            "monitoring.services",
            format!(
                "{} answer",
                statuses
                    .iter()
                    .map(|s| s.service.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        fail(
            "monitoring.services",
            format!("not answering: {}", down.join(", ")),
            "`nanika up` starts them; `nanika logs SERVICE` shows why one stopped",
        )
    }];
    // Prometheus's API is read only once `status` has proven its listener nanika's: another
    // project's Prometheus on the port would report its own targets.
    let prometheus_proven = statuses
        .iter()
        .any(|s| s.service == Service::Prometheus && s.state == ServiceState::Healthy);
    let report = prometheus_proven
        .then(|| native.prometheus_report())
        .flatten();
    let Some(report) = report else {
        checks.push(fail(
            "monitoring.targets",
            "Prometheus does not answer, so nothing is known of the targets",
            "`nanika up` starts it; `nanika logs prometheus` shows why it stopped",
        ));
        return checks;
    };
    checks.push(targets_check(&report.targets));
    checks.push(alerts_check(&report.alerts, native.prometheus_url()));
    checks
}

fn targets_check(targets: &[nanika_runtime::native::control::TargetReport]) -> Check {
    let not_up: Vec<String> = targets
        .iter()
        .filter(|t| t.health != "up")
        .map(|t| {
            let why = if t.last_error.is_empty() {
                String::new()
            } else {
                format!(": {}", t.last_error)
            };
            format!("{} ({}) is {}{why}", t.job, t.instance, t.health)
        })
        .collect();
    if targets.is_empty() {
        fail(
            "monitoring.targets",
            "Prometheus scrapes nothing",
            "`nanika up` writes its scrape configuration again",
        )
    } else if not_up.is_empty() {
        ok(
            "monitoring.targets",
            format!("all {} targets up", targets.len()),
        )
    } else {
        fail(
            "monitoring.targets",
            not_up.join("; "),
            "a target just started is `unknown` until its first scrape; otherwise `nanika logs` of its exporter says why it cannot be read",
        )
    }
}

fn alerts_check(
    alerts: &[nanika_runtime::native::control::AlertReport],
    url: Option<String>,
) -> Check {
    if alerts.is_empty() {
        return ok("monitoring.alerts", "no alert pending or firing");
    }
    let listed: Vec<String> = alerts
        .iter()
        .map(|a| {
            if a.summary.is_empty() {
                format!("{} ({})", a.name, a.state)
            } else {
                format!("{} ({}): {}", a.name, a.state, a.summary)
            }
        })
        .collect();
    warn(
        "monitoring.alerts",
        listed.join("; "),
        format!(
            "the checks above say what is wrong; the rules and their state: {}/alerts",
            url.unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;
    use nanika_runtime::native::control::{AlertReport, TargetReport};

    fn target(job: &str, health: &str, error: &str) -> TargetReport {
        TargetReport {
            job: job.into(),
            instance: "127.0.0.1:9187".into(),
            health: health.into(),
            last_error: error.into(),
        }
    }

    #[test]
    fn a_target_down_fails_with_its_error_and_all_up_is_ok() {
        let down = targets_check(&[
            target("postgres", "up", ""),
            target("redis", "down", "connection refused"),
        ]);
        assert_eq!(down.verdict, Verdict::Fail);
        assert!(
            down.seen
                .contains("redis (127.0.0.1:9187) is down: connection refused"),
            "{}",
            down.seen
        );
        assert_eq!(
            targets_check(&[target("postgres", "up", "")]).verdict,
            Verdict::Ok
        );
        assert_eq!(targets_check(&[]).verdict, Verdict::Fail);
    }

    #[test]
    fn alerts_pending_or_firing_warn_by_name() {
        let check = alerts_check(
            &[AlertReport {
                name: "RedisDown".into(),
                state: "firing".into(),
                summary: "Redis at x is down".into(),
            }],
            Some("http://127.0.0.1:9090".into()),
        );
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(
            check
                .seen
                .contains("RedisDown (firing): Redis at x is down")
        );
        assert!(check.fix.unwrap().contains("http://127.0.0.1:9090/alerts"));
        assert_eq!(alerts_check(&[], None).verdict, Verdict::Ok);
    }
}
