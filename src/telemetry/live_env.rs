//! Settings of the HTTP endpoints besides `/metrics`: token, health objectives, stream
//! interval and slow threshold, from `SPANMETRICS_*` variables.

use std::time::Duration;

use super::env::{parse_positive_millis, Env, Parsed};
use super::error::InitError;
use crate::HealthObjectives;

/// What the environment sets; `None` leaves the builder's value.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveEnv {
    pub(crate) token: Option<String>,
    pub(crate) stream_interval: Option<Duration>,
    pub(crate) slow_threshold: Option<Duration>,
    window: Option<Duration>,
    success_warn: Option<f64>,
    success_fail: Option<f64>,
    min_calls: Option<u64>,
    p95_warn: Option<Duration>,
    p95_fail: Option<Duration>,
    in_flight_warn: Option<u64>,
    in_flight_fail: Option<u64>,
}

fn parse_window(v: &str) -> Parsed<Duration> {
    const EXPECTED: &str = "a duration from 1s to 1h: seconds with a unit, e.g. `30s`, `5m`, `1h`";
    let (number, unit) = v.split_at(v.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(EXPECTED),
    };
    let secs = number
        .parse::<u64>()
        .map_err(|_| EXPECTED)?
        .saturating_mul(scale);
    if (1..=3600).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(EXPECTED)
    }
}

fn parse_fraction(v: &str) -> Parsed<f64> {
    v.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or("a fraction from 0 to 1, e.g. 0.95")
}

fn parse_count(v: &str) -> Parsed<u64> {
    v.parse::<u64>().map_err(|_| "a whole number, e.g. 10")
}

fn parse_token(v: &str) -> Parsed<String> {
    if v.len() >= 8 && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(v.to_owned())
    } else {
        Err("8 to 256 printable ASCII characters without spaces")
    }
}

pub(crate) fn settings(env: &Env) -> Result<LiveEnv, InitError> {
    let stream_interval = env.get("SPANMETRICS_STREAM_INTERVAL_MS", |v| {
        parse_positive_millis(v).and_then(|d| {
            if (100..=60_000).contains(&d.as_millis()) {
                Ok(d)
            } else {
                Err("milliseconds from 100 to 60000")
            }
        })
    })?;
    Ok(LiveEnv {
        token: env.get("SPANMETRICS_HTTP_TOKEN", parse_token)?,
        stream_interval,
        slow_threshold: env.get("SPANMETRICS_SLOW_MS", parse_positive_millis)?,
        window: env.get("SPANMETRICS_HEALTH_WINDOW", parse_window)?,
        success_warn: env.get("SPANMETRICS_HEALTH_SUCCESS_WARN", parse_fraction)?,
        success_fail: env.get("SPANMETRICS_HEALTH_SUCCESS_FAIL", parse_fraction)?,
        min_calls: env.get("SPANMETRICS_HEALTH_MIN_CALLS", parse_count)?,
        p95_warn: env.get("SPANMETRICS_HEALTH_P95_WARN_MS", parse_positive_millis)?,
        p95_fail: env.get("SPANMETRICS_HEALTH_P95_FAIL_MS", parse_positive_millis)?,
        in_flight_warn: env.get("SPANMETRICS_HEALTH_IN_FLIGHT_WARN", parse_count)?,
        in_flight_fail: env.get("SPANMETRICS_HEALTH_IN_FLIGHT_FAIL", parse_count)?,
    })
}

impl LiveEnv {
    /// The first variable set that only the live HTTP endpoints read (the token is not one:
    /// it guards `/metrics` too).
    pub(crate) fn first_set(&self) -> Option<String> {
        [
            (
                "SPANMETRICS_STREAM_INTERVAL_MS",
                self.stream_interval.is_some(),
            ),
            ("SPANMETRICS_SLOW_MS", self.slow_threshold.is_some()),
            ("SPANMETRICS_HEALTH_WINDOW", self.window.is_some()),
            (
                "SPANMETRICS_HEALTH_SUCCESS_WARN",
                self.success_warn.is_some(),
            ),
            (
                "SPANMETRICS_HEALTH_SUCCESS_FAIL",
                self.success_fail.is_some(),
            ),
            ("SPANMETRICS_HEALTH_MIN_CALLS", self.min_calls.is_some()),
            ("SPANMETRICS_HEALTH_P95_WARN_MS", self.p95_warn.is_some()),
            ("SPANMETRICS_HEALTH_P95_FAIL_MS", self.p95_fail.is_some()),
            (
                "SPANMETRICS_HEALTH_IN_FLIGHT_WARN",
                self.in_flight_warn.is_some(),
            ),
            (
                "SPANMETRICS_HEALTH_IN_FLIGHT_FAIL",
                self.in_flight_fail.is_some(),
            ),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(name, _)| name.to_owned())
    }

    /// The builder's objectives with what the environment sets on top.
    pub(crate) fn objectives(&self, mut o: HealthObjectives) -> HealthObjectives {
        if let Some(window) = self.window {
            o = o.with_window(window);
        }
        if self.success_warn.is_some() || self.success_fail.is_some() {
            let warn = self.success_warn.unwrap_or(o.success_warn);
            let fail = self.success_fail.unwrap_or(o.success_fail.min(warn));
            o = o.with_success_rate(warn.max(fail), fail);
        }
        if let Some(calls) = self.min_calls {
            o = o.with_min_calls(calls);
        }
        if self.p95_warn.is_some() || self.p95_fail.is_some() {
            let warn = self.p95_warn.or(self.p95_fail).unwrap_or_default();
            let fail = self.p95_fail.unwrap_or(Duration::MAX);
            o = o.with_p95(warn.min(fail), fail);
        }
        if self.in_flight_warn.is_some() || self.in_flight_fail.is_some() {
            let warn = self
                .in_flight_warn
                .or(self.in_flight_fail)
                .unwrap_or_default();
            let fail = self.in_flight_fail.unwrap_or(u64::MAX);
            o = o.with_max_in_flight(warn.min(fail), fail);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_windows_need_a_unit_and_stay_within_an_hour() {
        assert_eq!(parse_window("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_window("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_window("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "30", "0s", "2h", "-1m", "m", "1.5m"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_objectives_override_the_builder() {
        let env = Env::from_map([
            (
                "SPANMETRICS_HEALTH_SUCCESS_WARN".to_owned(),
                "0.99".to_owned(),
            ),
            (
                "SPANMETRICS_HEALTH_P95_FAIL_MS".to_owned(),
                "250".to_owned(),
            ),
        ]);
        let o = settings(&env)
            .unwrap()
            .objectives(HealthObjectives::default());
        assert_eq!((o.success_warn, o.success_fail), (0.99, 0.90));
        assert_eq!(
            o.p95,
            Some((Duration::from_millis(250), Duration::from_millis(250)))
        );
        let bad = Env::from_map([(
            "SPANMETRICS_HEALTH_SUCCESS_FAIL".to_owned(),
            "95".to_owned(),
        )]);
        assert!(matches!(settings(&bad), Err(InitError::InvalidEnv { .. })));
    }
}
