//! Objectives declared in code: which commands, a success-rate and/or latency target, and a
//! window. Plain data, checked when declared ([`crate::Builder::with_objective`]), which adds
//! every latency threshold to the histogram bounds of both sinks, and [`rules`] writes the
//! Prometheus rules and Grafana panels that measure them.

pub mod rules;

use std::time::Duration;

/// Which commands an objective covers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Commands {
    /// Commands by name (the `command` label).
    Named(Vec<String>),
    /// Every command whose allow-listed label `label` has the value `value`.
    Labelled {
        /// An allow-listed label (see [`crate::Builder::with_label`]).
        label: String,
        /// Its value.
        value: String,
    },
}

/// A latency target: `ratio` of the commands finish within `threshold`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyTarget {
    /// The share of commands that must be fast enough, in (0, 1), e.g. `0.99`.
    pub ratio: f64,
    /// How fast is fast enough. It becomes a histogram bucket boundary of both sinks.
    pub threshold: Duration,
}

/// A service level objective over commands.
///
/// ```
/// use std::time::Duration;
/// use spanmetrics::objectives::Objective;
///
/// let roll = Objective::new("roll-fast")
///     .for_commands(["roll"])
///     .success_rate(0.995)
///     .latency(0.99, Duration::from_millis(250));
/// let layer = spanmetrics::SpanMetricsLayer::builder()
///     .with_objective(roll)?
///     .build();
/// # Ok::<(), spanmetrics::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Objective {
    name: String,
    commands: Commands,
    success: Option<f64>,
    latency: Option<LatencyTarget>,
    window: Duration,
}

/// The default objective window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest objective window: the slowest burn-rate alert looks back 3 days.
pub const MIN_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);
/// The longest objective window.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

impl Objective {
    /// An objective named `name` (letters, digits, `-`, `_` and `.`; it labels the rules and
    /// alerts), over every command, with no target yet and a 30-day window.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            commands: Commands::Named(Vec::new()),
            success: None,
            latency: None,
            window: DEFAULT_WINDOW,
        }
    }

    /// Covers these commands (by name).
    pub fn for_commands<I, C>(mut self, commands: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<String>,
    {
        self.commands = Commands::Named(commands.into_iter().map(Into::into).collect());
        self
    }

    /// Covers the commands whose allow-listed label `label` is `value`.
    pub fn for_label(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.commands = Commands::Labelled {
            label: label.into(),
            value: value.into(),
        };
        self
    }

    /// At least `target` of the commands succeed, in (0, 1), e.g. `0.995`.
    pub fn success_rate(mut self, target: f64) -> Self {
        self.success = Some(target);
        self
    }

    /// At least `ratio` of the commands finish within `threshold`.
    pub fn latency(mut self, ratio: f64, threshold: Duration) -> Self {
        self.latency = Some(LatencyTarget { ratio, threshold });
        self
    }

    /// The period the targets hold over (the error budget's period); 30 days unless set.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The commands covered.
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// The success-rate target.
    pub fn success_target(&self) -> Option<f64> {
        self.success
    }

    /// The latency target.
    pub fn latency_target(&self) -> Option<LatencyTarget> {
        self.latency
    }

    /// The window.
    pub fn window_length(&self) -> Duration {
        self.window
    }

    /// What is wrong with this objective, if anything, given the allow-listed labels.
    pub(crate) fn check(&self, labels: &[String]) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "objective name {name:?} must be non-empty letters, digits, `-`, `_` or `.` (it labels the rules and alerts)"
            ));
        }
        let ratio_ok = |r: f64| r > 0.0 && r < 1.0;
        match &self.commands {
            Commands::Named(names) if names.is_empty() => {
                return Err(format!(
                    "objective `{name}` covers no command: name them with for_commands, or use for_label"
                ))
            }
            Commands::Named(names) => {
                if let Some(bad) = names.iter().find(|n| n.is_empty()) {
                    return Err(format!(
                        "objective `{name}` names an empty command {bad:?}"
                    ));
                }
            }
            Commands::Labelled { label, value } => {
                if !labels.iter().any(|l| l == label) {
                    return Err(format!(
                        "objective `{name}` selects commands by label `{label}`, which is not allow-listed: call with_label({label:?}) before with_objective"
                    ));
                }
                if value.is_empty() {
                    return Err(format!(
                        "objective `{name}` selects label `{label}` with an empty value"
                    ));
                }
            }
        }
        if self.success.is_none() && self.latency.is_none() {
            return Err(format!(
                "objective `{name}` has no target: set success_rate and/or latency"
            ));
        }
        if let Some(target) = self.success {
            if !ratio_ok(target) {
                return Err(format!(
                    "objective `{name}`: the success-rate target must be between 0 and 1 exclusive (e.g. 0.995), got {target}"
                ));
            }
        }
        if let Some(LatencyTarget { ratio, threshold }) = self.latency {
            if !ratio_ok(ratio) {
                return Err(format!(
                    "objective `{name}`: the latency ratio must be between 0 and 1 exclusive (e.g. 0.99), got {ratio}"
                ));
            }
            if threshold.is_zero() || threshold > Duration::from_secs(3600) {
                return Err(format!(
                    "objective `{name}`: the latency threshold must be above 0 and at most 1 h, got {threshold:?}"
                ));
            }
        }
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.window) {
            return Err(format!(
                "objective `{name}`: the window must be 3 to 366 days (the slowest burn-rate alert looks back 3 days), got {}",
                humantime::format_duration(self.window)
            ));
        }
        Ok(())
    }
}

/// `bounds` with every latency threshold of `objectives` added (sorted, without duplicates).
pub(crate) fn bounds_with_thresholds(bounds: &[f64], objectives: &[Objective]) -> Vec<f64> {
    let mut all: Vec<f64> = bounds
        .iter()
        .copied()
        .chain(
            objectives
                .iter()
                .filter_map(|o| o.latency)
                .map(|l| l.threshold.as_secs_f64()),
        )
        .collect();
    all.sort_by(f64::total_cmp);
    all.dedup_by(|a, b| (*a - *b).abs() <= f64::EPSILON * b.abs().max(1.0));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_join_the_bounds_once_and_in_order() {
        let objectives = [
            Objective::new("a").latency(0.99, Duration::from_millis(250)),
            Objective::new("b").latency(0.9, Duration::from_millis(300)),
            Objective::new("c").success_rate(0.9),
        ];
        assert_eq!(
            bounds_with_thresholds(&[0.1, 0.25, 1.0], &objectives),
            [0.1, 0.25, 0.3, 1.0]
        );
    }
}
