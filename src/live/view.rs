//! What the live statistics report, as plain public types: read them in process (a bot's
//! `!stats` command answering with its own p95) or serialise them (the HTTP API writes these
//! very structs as JSON).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// `2024-05-01T12:34:56.789Z`.
/// Clamped to 1970 … 9999 (humantime formats no other years; a clock set that far off is
/// wrong anyway).
fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    const LAST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    let since = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    serializer.collect_str(&humantime::format_rfc3339_millis(UNIX_EPOCH + since))
}

/// A number as the API has always written it: whole values without a fraction (`3`, not
/// `3.0`, so that a client reading an integer gets one), others as they are, and `null` for
/// non-finite values.
fn num<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    let v = *value;
    if !v.is_finite() {
        serializer.serialize_none()
    } else if v == v.trunc() && v.abs() < 1e15 {
        serializer.serialize_i64(v as i64)
    } else {
        serializer.serialize_f64(v)
    }
}

/// [`num`] for an optional number; `None` is `null`.
fn opt_num<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => num(v, serializer),
        None => serializer.serialize_none(),
    }
}

/// Every command's figures over one rolling window ([`crate::live::LiveStats::summary`]).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The window's name: `1m`, `5m` or `1h`.
    pub window: &'static str,
    /// The window's length in seconds.
    pub window_s: u64,
    /// When the summary was taken.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// Seconds since the statistics started.
    #[serde(serialize_with = "num")]
    pub uptime_s: f64,
    /// How the percentiles are computed, and how exact they are.
    pub percentile_resolution: &'static str,
    /// All commands together.
    pub totals: Totals,
    /// Each command, sorted by name (at most 256; further ones are folded into `_OTHER`).
    pub commands: Vec<CommandStats>,
}

impl Summary {
    /// The figures of one command, if it ran.
    pub fn command(&self, name: &str) -> Option<&CommandStats> {
        self.commands.iter().find(|c| c.command == name)
    }
}

/// Calls, errors and latency over a window.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Figures {
    /// Calls that finished in the window.
    pub calls: u64,
    /// Of these, failed ones.
    pub errors: u64,
    /// Share of calls that succeeded (0…1); `None` without calls.
    #[serde(serialize_with = "opt_num")]
    pub success_rate: Option<f64>,
    /// Calls per second over the part of the window the process has been up for.
    #[serde(serialize_with = "num")]
    pub calls_per_s: f64,
    /// Median latency in seconds; `None` without calls.
    #[serde(serialize_with = "opt_num")]
    pub p50_s: Option<f64>,
    /// 95th percentile latency in seconds.
    #[serde(serialize_with = "opt_num")]
    pub p95_s: Option<f64>,
    /// 99th percentile latency in seconds.
    #[serde(serialize_with = "opt_num")]
    pub p99_s: Option<f64>,
    /// Largest latency in seconds.
    #[serde(serialize_with = "opt_num")]
    pub max_s: Option<f64>,
}

/// All commands together over a window.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Totals {
    /// Their figures over the window.
    #[serde(flatten)]
    pub window: Figures,
    /// Commands running now.
    pub in_flight: u64,
    /// Counts since the statistics started.
    pub since_start: SinceStart,
}

/// Counts since the statistics started, for all commands.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SinceStart {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
}

/// One command's figures over a window.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct CommandStats {
    /// The command name.
    pub command: String,
    /// Its figures over the window.
    #[serde(flatten)]
    pub window: Figures,
    /// Calls of this command running now.
    pub in_flight: u64,
    /// Failed calls in the window by error type.
    pub errors_by_type: BTreeMap<String, u64>,
    /// Counts since the statistics started.
    pub since_start: CommandSinceStart,
}

/// One command's counts since the statistics started.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct CommandSinceStart {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Largest latency in seconds (0 without calls).
    #[serde(serialize_with = "num")]
    pub max_s: f64,
    /// Failed calls by error type.
    pub errors_by_type: BTreeMap<String, u64>,
}

/// A failed or slow command from the recent lists ([`crate::live::LiveStats::recent_failures`],
/// [`crate::live::LiveStats::recent_slow`]).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RecentCommand {
    /// The command name.
    pub command: String,
    /// Its latency in seconds.
    #[serde(serialize_with = "num")]
    pub duration_s: f64,
    /// Its error type; `None` for a slow command that succeeded.
    pub error_type: Option<String>,
    /// When it finished.
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The trace id (32 hex digits) when its trace was sampled, to look it up in a tracing UI.
    pub trace_id: Option<String>,
    /// The span id (16 hex digits) when its trace was sampled.
    pub span_id: Option<String>,
}

/// The overall health ([`crate::live::LiveStats::health`]): the worst of the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Every check passes.
    Healthy,
    /// A check warns (HTTP 200 on `/health`).
    Degraded,
    /// A check fails (HTTP 503 on `/health`).
    Unhealthy,
}

/// The result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CheckStatus {
    /// Within the objective.
    Pass,
    /// Nothing to judge: no call of the commands it covers in the window (or, for an
    /// objective that selects commands by label, never judged in process). Not a pass; the
    /// service's status is not lowered by it.
    #[serde(rename = "no_data")]
    NoData,
    /// Past the warning threshold.
    Warn,
    /// Past the failing threshold.
    Fail,
}

/// One checked objective.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// Its result.
    pub status: CheckStatus,
    /// The measured value; `None` when there is nothing to measure yet.
    #[serde(serialize_with = "opt_num")]
    pub value: Option<f64>,
    /// The threshold that decided the status (the failing one when failing, else the warning
    /// one).
    #[serde(serialize_with = "num")]
    pub threshold: f64,
    /// The warning threshold.
    #[serde(serialize_with = "num")]
    pub warn: f64,
    /// The failing threshold (`null` in JSON when it cannot fail).
    #[serde(serialize_with = "num")]
    pub fail: f64,
    /// The unit of the value and thresholds.
    pub unit: &'static str,
}

/// The health of the service, judged against [`crate::HealthObjectives`] over a sliding window.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The worst of the checks.
    pub status: HealthStatus,
    /// When it was evaluated.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// Seconds since the statistics started.
    #[serde(serialize_with = "num")]
    pub uptime_s: f64,
    /// The window the objectives are judged over, in seconds.
    pub window_s: u64,
    /// Calls that finished in the window.
    pub calls_in_window: u64,
    /// Each check by name (`success_rate`, `p95_latency`, `p95_latency:<command>`,
    /// `in_flight`, `export`), in that order; with objectives declared on the layer,
    /// `objective:<name>:success` and `objective:<name>:latency` (their burn rates) take the
    /// place of `success_rate`.
    #[serde(serialize_with = "ordered_map")]
    pub checks: Vec<(String, Check)>,
}

impl Health {
    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
}

fn ordered_map<S: Serializer>(
    checks: &[(String, Check)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(checks.iter().map(|(name, check)| (name, check)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        let item = super::RecentCommand {
            command: "roll".into(),
            duration_s: 0.25,
            error_type: None,
            time: t,
            trace_id: None,
            span_id: None,
        };
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["time"], "2024-02-29T12:34:56.789Z");
        assert_eq!(json["error_type"], serde_json::Value::Null);
        assert_eq!(json["duration_s"], 0.25);
        // A clock before 1970, or past 9999, is clamped rather than a panic.
        for (time, shown) in [
            (
                UNIX_EPOCH - Duration::from_secs(5),
                "1970-01-01T00:00:00.000Z",
            ),
            (
                UNIX_EPOCH + Duration::from_secs(400_000_000_000),
                "9999-12-31T23:59:59.000Z",
            ),
        ] {
            let item = super::RecentCommand {
                time,
                ..item.clone()
            };
            assert_eq!(serde_json::to_value(&item).unwrap()["time"], shown);
        }
    }

    #[test]
    fn whole_numbers_are_written_as_integers_and_infinity_as_null() {
        let check = super::Check {
            status: super::CheckStatus::Warn,
            value: Some(2.0),
            threshold: 0.0,
            warn: 0.0,
            fail: f64::INFINITY,
            unit: "failing exporters",
        };
        assert_eq!(
            serde_json::to_string(&check).unwrap(),
            r#"{"status":"warn","value":2,"threshold":0,"warn":0,"fail":null,"unit":"failing exporters"}"#
        );
    }
}
