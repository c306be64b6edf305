//! Health objectives and their evaluation over a sliding window, into a typed [`Health`].

use std::time::{Duration, SystemTime};

use super::view::{Check, CheckStatus, Health, HealthStatus, Summary};
use super::windows::ObjectiveCounts;
use crate::objectives::{Commands, Objective};

/// The burn rate above which an objective's health check fails: the page rate of the
/// generated alerts (14.4× spends 2 % of a 30-day budget in an hour). Above 1× it warns.
pub const FAIL_BURN_RATE: f64 = 14.4;

/// The health checks of the layer's objectives: each SLI's burn rate (bad share over the error
/// budget) over the health window, warning above 1×, failing above [`FAIL_BURN_RATE`], `no_data`
/// without calls. `counts` gives an objective's counts over the window (`None` when it cannot
/// be judged in process: commands selected by label).
pub(crate) fn objective_checks(
    objectives: &[Objective],
    counts: impl Fn(&Objective) -> Option<ObjectiveCounts>,
) -> Vec<(String, Check)> {
    let mut checks = Vec::new();
    for objective in objectives {
        let counts = match objective.commands() {
            Commands::Named(_) => counts(objective),
            _ => None,
        };
        let slis = [
            (
                "success",
                objective.success_target(),
                counts.map(|c| c.errors),
            ),
            (
                "latency",
                objective.latency_target().map(|l| l.ratio),
                counts.map(|c| c.slow),
            ),
        ];
        for (sli, target, bad) in slis {
            let Some(target) = target else { continue };
            let budget = 1.0 - target;
            let calls = counts.map_or(0, |c| c.calls);
            let burn = bad
                .filter(|_| calls > 0)
                .map(|bad| bad as f64 / calls as f64 / budget);
            let mut result = above(burn, 1.0, FAIL_BURN_RATE, "burn rate");
            if burn.is_none() {
                result.status = CheckStatus::NoData;
            }
            checks.push((format!("objective:{}:{sli}", objective.name()), result));
        }
    }
    checks
}

/// What `/health` checks, evaluated over a sliding window (default 5 minutes), so the status
/// recovers by itself once a problem stops.
///
/// | Check | Default | Environment |
/// |---|---|---|
/// | `success_rate` (all commands) | warn below 0.95, fail below 0.90, judged from 10 calls in the window | `SPANMETRICS_HEALTH_SUCCESS_WARN`, `SPANMETRICS_HEALTH_SUCCESS_FAIL`, `SPANMETRICS_HEALTH_MIN_CALLS` |
/// | `p95_latency` (all commands) | off | `SPANMETRICS_HEALTH_P95_WARN_MS`, `SPANMETRICS_HEALTH_P95_FAIL_MS` |
/// | `p95_latency:<command>` | off | builder only ([`HealthObjectives::with_command_p95`]) |
/// | `in_flight` (commands running now) | off | `SPANMETRICS_HEALTH_IN_FLIGHT_WARN`, `SPANMETRICS_HEALTH_IN_FLIGHT_FAIL` |
/// | `export` (OTLP exporters) | warn while an exporter is failing | |
///
/// The window is `SPANMETRICS_HEALTH_WINDOW` (`30s`, `5m`, `1h`; 1 s … 1 h); windows up to a
/// minute have 1 s steps, up to 5 minutes 10 s steps, beyond that 1 minute steps. The
/// environment wins over the builder. Any failing check makes the status `unhealthy` (HTTP
/// 503), any warning `degraded` (HTTP 200).
///
/// ```
/// use std::time::Duration;
/// use spanmetrics::HealthObjectives;
///
/// let objectives = HealthObjectives::default()
///     .with_window(Duration::from_secs(120))
///     .with_success_rate(0.99, 0.95)
///     .with_p95(Duration::from_millis(500), Duration::from_secs(2))
///     .with_command_p95("roll", Duration::from_millis(50), Duration::from_millis(200));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct HealthObjectives {
    pub(crate) window: Duration,
    pub(crate) success_warn: f64,
    pub(crate) success_fail: f64,
    pub(crate) min_calls: u64,
    pub(crate) p95: Option<(Duration, Duration)>,
    pub(crate) command_p95: Vec<(String, Duration, Duration)>,
    pub(crate) in_flight: Option<(u64, u64)>,
}

impl Default for HealthObjectives {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            success_warn: 0.95,
            success_fail: 0.90,
            min_calls: 10,
            p95: None,
            command_p95: Vec::new(),
            in_flight: None,
        }
    }
}

/// At most this many per-command latency objectives.
const MAX_COMMAND_OBJECTIVES: usize = 64;

impl HealthObjectives {
    /// The sliding window (clamped to 1 s … 1 h).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.clamp(Duration::from_secs(1), Duration::from_secs(3600));
        self
    }

    /// Success rate (0…1) below which the status is degraded (`warn`) or unhealthy (`fail`).
    /// Values are clamped to 0…1, and `fail` to at most `warn`.
    pub fn with_success_rate(mut self, warn: f64, fail: f64) -> Self {
        let clamp = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        self.success_warn = clamp(warn);
        self.success_fail = clamp(fail).min(self.success_warn);
        self
    }

    /// Calls needed in the window before the success rate is judged (default 10).
    pub fn with_min_calls(mut self, calls: u64) -> Self {
        self.min_calls = calls.max(1);
        self
    }

    /// p95 latency of all commands above which the status is degraded or unhealthy.
    pub fn with_p95(mut self, warn: Duration, fail: Duration) -> Self {
        self.p95 = Some((warn, fail.max(warn)));
        self
    }

    /// p95 latency objective of one command (at most 64 such objectives; more are ignored).
    pub fn with_command_p95(
        mut self,
        command: impl Into<String>,
        warn: Duration,
        fail: Duration,
    ) -> Self {
        if self.command_p95.len() < MAX_COMMAND_OBJECTIVES {
            self.command_p95
                .push((command.into(), warn, fail.max(warn)));
        }
        self
    }

    /// Commands in flight above which the status is degraded or unhealthy.
    pub fn with_max_in_flight(mut self, warn: u64, fail: u64) -> Self {
        self.in_flight = Some((warn, fail.max(warn)));
        self
    }
}

/// Higher is worse: `value > warn` warns, `value > fail` fails.
fn above(value: Option<f64>, warn: f64, fail: f64, unit: &'static str) -> Check {
    let status = match value {
        Some(v) if v > fail => CheckStatus::Fail,
        Some(v) if v > warn => CheckStatus::Warn,
        _ => CheckStatus::Pass,
    };
    check(status, value, warn, fail, unit)
}

fn check(
    status: CheckStatus,
    value: Option<f64>,
    warn: f64,
    fail: f64,
    unit: &'static str,
) -> Check {
    Check {
        status,
        value,
        threshold: if status == CheckStatus::Fail {
            fail
        } else {
            warn
        },
        warn,
        fail,
        unit,
    }
}

/// Evaluates the objectives on `summary`, taken over [`HealthObjectives`]'s window;
/// `failing_exports` names the OTLP signals currently failing.
pub(crate) fn evaluate(
    summary: &Summary,
    objectives: &HealthObjectives,
    failing_exports: &[&'static str],
    objective_checks: Vec<(String, Check)>,
) -> Health {
    let mut checks = Vec::new();
    let all = &summary.totals;
    let rate = all.window.success_rate;
    let judged = all.window.calls >= objectives.min_calls;
    let status = match rate {
        Some(r) if judged && r < objectives.success_fail => CheckStatus::Fail,
        Some(r) if judged && r < objectives.success_warn => CheckStatus::Warn,
        _ => CheckStatus::Pass,
    };
    // Declared objectives judge success (and latency) themselves, as the alerts do.
    if objective_checks.is_empty() {
        checks.push((
            "success_rate".to_owned(),
            check(
                status,
                rate,
                objectives.success_warn,
                objectives.success_fail,
                "ratio",
            ),
        ));
    } else {
        checks.extend(objective_checks);
    }
    if let Some((warn, fail)) = objectives.p95 {
        checks.push((
            "p95_latency".to_owned(),
            above(
                all.window.p95_s,
                warn.as_secs_f64(),
                fail.as_secs_f64(),
                "seconds",
            ),
        ));
    }
    for (command, warn, fail) in &objectives.command_p95 {
        let value = summary.command(command).and_then(|c| c.window.p95_s);
        checks.push((
            format!("p95_latency:{command}"),
            above(value, warn.as_secs_f64(), fail.as_secs_f64(), "seconds"),
        ));
    }
    if let Some((warn, fail)) = objectives.in_flight {
        checks.push((
            "in_flight".to_owned(),
            above(
                Some(all.in_flight as f64),
                warn as f64,
                fail as f64,
                "commands",
            ),
        ));
    }
    let exports = if failing_exports.is_empty() {
        CheckStatus::Pass
    } else {
        CheckStatus::Warn
    };
    checks.push((
        "export".to_owned(),
        check(
            exports,
            Some(failing_exports.len() as f64),
            0.0,
            f64::INFINITY,
            "failing exporters",
        ),
    ));
    let worst = checks
        .iter()
        .map(|(_, c)| c.status)
        .max()
        .unwrap_or(CheckStatus::Pass);
    Health {
        status: match worst {
            CheckStatus::Pass | CheckStatus::NoData => HealthStatus::Healthy,
            CheckStatus::Warn => HealthStatus::Degraded,
            CheckStatus::Fail => HealthStatus::Unhealthy,
        },
        timestamp: SystemTime::now(),
        uptime_s: summary.uptime_s,
        window_s: summary.window_s,
        calls_in_window: all.window.calls,
        checks,
    }
}
