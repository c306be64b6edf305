//! [`Builder`]: validates each setting as it is made, chooses the sinks, and builds the layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing_core::Metadata;

use crate::capture::callsite::{ERROR_TYPE_FIELD, OUTCOME_FIELD, STATUS_CODE_FIELD};
use crate::config::{Config, MAX_LABELS};
use crate::handoff::notable::Notables;
use crate::layer::engine::Targets;
use crate::layer::SpanMetricsLayer;
use crate::live::windows::Windows;
use crate::names;
use crate::sink::metrics::RecorderTarget;
use crate::sink::otel::MeterTarget;
use crate::spelling::prometheus_label;

/// Errors from [`Builder`] setters, raised when the setting is made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A label would shadow a field spanmetrics already reads.
    #[error(
        "`{0}` cannot be a label: spanmetrics reads that field itself; pick another field name"
    )]
    ReservedLabel(String),
    /// The same label was allow-listed twice (compared as Prometheus spells names: `a.b` and
    /// `a_b` are the same label there).
    #[error("label `{0}` is already allow-listed (Prometheus spells `.` and `_` alike)")]
    DuplicateLabel(String),
    /// More labels than a layer supports.
    #[error("at most {MAX_LABELS} labels can be allow-listed; each label multiplies the number of series")]
    TooManyLabels,
    /// An empty field, span name or target prefix.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// An objective that cannot be measured, or a second objective of the same name.
    #[error("{0}")]
    Objective(String),
    /// A numeric setting outside its range.
    #[error("{setting} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// Which setting.
        setting: &'static str,
        /// The value given.
        value: u128,
        /// Smallest accepted value.
        min: u128,
        /// Largest accepted value.
        max: u128,
    },
}

/// Builds a [`SpanMetricsLayer`]. Start from [`SpanMetricsLayer::builder`].
///
/// ```
/// use spanmetrics::SpanMetricsLayer;
///
/// let layer = SpanMetricsLayer::builder()
///     .with_target_prefix("my_bot::commands")?
///     .with_label("platform")?
///     .with_max_series(500)?
///     .build();
/// # Ok::<(), spanmetrics::BuildError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct Builder {
    config: Config,
    recorder: Option<RecorderTarget>,
    meter: Option<MeterTarget>,
    /// The slow threshold of the live statistics, when they are on.
    live: Option<Duration>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            config: Config::default(),
            recorder: Some(RecorderTarget::Global),
            meter: Some(MeterTarget::Global),
            live: None,
        }
    }
}

fn check_range(setting: &'static str, value: u128, min: u128, max: u128) -> Result<(), BuildError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(BuildError::OutOfRange {
            setting,
            value,
            min,
            max,
        })
    }
}

fn non_empty(what: &'static str, value: impl Into<String>) -> Result<String, BuildError> {
    let value = value.into();
    if value.is_empty() {
        Err(BuildError::Empty(what))
    } else {
        Ok(value)
    }
}

impl Builder {
    /// Name of the field that marks a span as a command and carries its name
    /// (default `command`).
    pub fn with_command_field(mut self, field: impl Into<String>) -> Result<Self, BuildError> {
        self.config.selection.command_field = non_empty("the command field", field)?;
        Ok(self)
    }

    /// Also treat spans with this name as commands (the command is then the span name unless a
    /// `command` field says otherwise).
    pub fn with_span_name(mut self, name: impl Into<String>) -> Result<Self, BuildError> {
        let name = non_empty("a span name", name)?;
        self.config.selection.span_names.push(name);
        Ok(self)
    }

    /// Also treat every span whose target is this module path, or below it, as a command
    /// (`my_bot::commands` selects `my_bot::commands` and `my_bot::commands::roll`).
    pub fn with_target_prefix(mut self, prefix: impl Into<String>) -> Result<Self, BuildError> {
        let prefix = non_empty("a target prefix", prefix)?;
        self.config.selection.target_prefixes.push(prefix);
        Ok(self)
    }

    /// Also treat spans for which `predicate` returns `true` as commands. It is called once per
    /// callsite, not per span, while tracing registers the callsite: it must not emit tracing
    /// events itself (tracing-core can deadlock when a callsite registers another from inside
    /// registration while a dispatcher is being created on another thread).
    pub fn with_filter<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Metadata<'_>) -> bool + Send + Sync + 'static,
    {
        self.config.selection.predicate = Some(Arc::new(predicate));
        self
    }

    /// Allow-list a span field as a label on the duration and busy metrics. Nothing else ever
    /// becomes a label. Values may be given at span creation or later with `Span::record`.
    pub fn with_label(mut self, field: impl Into<String>) -> Result<Self, BuildError> {
        let field = non_empty("a label", field)?;
        let selection = &self.config.selection;
        // Compared as Prometheus spells them, so that no two labels of a series collide there
        // (`a.b` and `a_b`, or a label named `le` on a histogram).
        let spelled = prometheus_label(&field);
        let reserved = [
            names::ATTR_COMMAND,
            names::ATTR_OUTCOME,
            names::PROM_ERROR_TYPE,
            names::ATTR_MARK,
            names::ATTR_METRIC,
            names::PROM_OVERFLOW_LABEL,
            "le",
            "quantile",
            "job",
            "instance",
        ];
        if field == selection.command_field
            || [OUTCOME_FIELD, STATUS_CODE_FIELD, ERROR_TYPE_FIELD].contains(&field.as_str())
            || reserved.contains(&spelled.as_str())
            || spelled == prometheus_label(&selection.command_field)
        {
            return Err(BuildError::ReservedLabel(field));
        }
        if selection
            .labels
            .iter()
            .any(|l| prometheus_label(l) == spelled)
        {
            return Err(BuildError::DuplicateLabel(field));
        }
        if selection.labels.len() == MAX_LABELS {
            return Err(BuildError::TooManyLabels);
        }
        self.config.selection.labels.push(field);
        Ok(self)
    }

    /// Cap on distinct series per metric (default 2000, as in the OpenTelemetry SDK). Records
    /// beyond it go to one series marked `otel.metric.overflow="true"` and are counted.
    /// The OpenTelemetry SDK applies its own limit (2000 per instrument unless a view sets
    /// `with_cardinality_limit`): raising this cap above it needs such a view on your meter
    /// provider too, or the SDK folds the extra series without spanmetrics counting them.
    pub fn with_max_series(mut self, max: usize) -> Result<Self, BuildError> {
        check_range("max_series", max as u128, 1, 1_000_000)?;
        self.config.max_series = max;
        Ok(self)
    }

    /// Cap on distinct `error.type` values per command (default 32); further ones become
    /// `_OTHER`.
    pub fn with_max_error_types(mut self, max: usize) -> Result<Self, BuildError> {
        check_range("max_error_types", max as u128, 1, 1024)?;
        self.config.max_error_types = max;
        Ok(self)
    }

    /// Cap on distinct `mark` values (default 32); further ones become `_OTHER`.
    pub fn with_max_marks(mut self, max: usize) -> Result<Self, BuildError> {
        check_range("max_marks", max as u128, 1, 1024)?;
        self.config.max_marks = max;
        Ok(self)
    }

    /// Record `command.busy` (default on). Off saves two clock reads per enter/exit pair.
    pub fn with_busy_time(mut self, enabled: bool) -> Self {
        self.config.busy_time = enabled;
        self
    }

    /// Send the `metrics` facade measurements to this recorder instead of the global one.
    ///
    /// The recorder must not forward into the OpenTelemetry meter provider given to
    /// [`Builder::with_meter_provider`]: new series are registered on it while that provider
    /// collects, and a bridge back into the provider would wait on the collection itself.
    pub fn with_recorder<R>(mut self, recorder: R) -> Self
    where
        R: metrics::Recorder + Send + Sync + 'static,
    {
        self.recorder = Some(RecorderTarget::Recorder(Arc::new(recorder)));
        self
    }

    /// Do not feed the `metrics` facade.
    pub fn without_recorder(mut self) -> Self {
        self.recorder = None;
        self
    }

    /// Send the OpenTelemetry measurements to a meter of this provider instead of the global one.
    pub fn with_meter_provider<P>(mut self, provider: &P) -> Self
    where
        P: opentelemetry::metrics::MeterProvider + ?Sized,
    {
        self.meter = Some(MeterTarget::Meter(
            provider.meter_with_scope(crate::scope()),
        ));
        self
    }

    /// Do not feed OpenTelemetry.
    pub fn without_meter(mut self) -> Self {
        self.meter = None;
        self
    }

    /// Bucket bounds, in seconds, given to OpenTelemetry histograms as advice (a view can still
    /// replace them, e.g. by a base-2 exponential histogram) and, in the pipeline
    /// ([`crate::Telemetry`]), to the Prometheus recorder. Default: 100 µs … 60 s. Every
    /// objective's latency threshold is added to them ([`Builder::histogram_bounds`]), before or
    /// after this call.
    pub fn with_buckets(mut self, bounds: &[f64]) -> Result<Self, BuildError> {
        let sorted = bounds.windows(2).all(|w| w[0] < w[1]);
        if bounds.is_empty() || !sorted || bounds.iter().any(|b| !b.is_finite()) {
            return Err(BuildError::Empty(
                "the bucket list (finite, strictly increasing bounds)",
            ));
        }
        self.config.buckets = bounds.to_vec();
        Ok(self)
    }

    /// The longest the background thread waits before it forwards buffered measurements to the
    /// sinks (default 200 ms); under load it comes sooner, paced by how fast the buffers fill.
    /// Exports and [`crate::SpanMetricsHandle::flush`] forward at once.
    pub fn with_flush_interval(mut self, interval: Duration) -> Result<Self, BuildError> {
        check_range("flush_interval (ms)", interval.as_millis(), 1, 60_000)?;
        self.config.flush_interval = interval;
        Ok(self)
    }

    /// Measurements each recording thread can buffer before the background thread forwards
    /// them (default 4096, 24 bytes each). A thread whose buffer is full waits for the
    /// background thread to make room (see [`Builder::with_overload_wait`]).
    pub fn with_buffer_capacity(mut self, capacity: usize) -> Result<Self, BuildError> {
        check_range("buffer_capacity", capacity as u128, 64, 1 << 24)?;
        self.config.buffer_capacity = capacity;
        Ok(self)
    }

    /// How long a recording thread whose buffer is full waits for a background thread that
    /// makes *no progress* (default 20 ms, at most 60 s). While the background thread forwards
    /// records (it shows progress every 16 records and after every drain), a
    /// thread with a full buffer waits for room as long as that takes: overload slows the
    /// threads that cause it and loses nothing. A background thread that forwards nothing for
    /// this long is taken as stalled (descheduled for long, or stuck in a sink that blocks):
    /// the thread stops waiting, and its records go to the overload backlog
    /// ([`Builder::with_overload_memory`]) until the background thread moves again. Zero: never
    /// wait, use the backlog at once.
    ///
    /// Before 0.2 this was the longest wait before a record was dropped; records are now
    /// dropped only when the backlog is full.
    pub fn with_overload_wait(mut self, wait: Duration) -> Result<Self, BuildError> {
        check_range("overload_wait (ms)", wait.as_millis(), 0, 60_000)?;
        self.config.overload_wait = wait;
        Ok(self)
    }

    /// Memory the layer may use for records that no thread's buffer could take while its
    /// background thread was stalled, or that spans closing during their thread's teardown
    /// leave (default 64 MiB, about 1.7 million records; at most 4 GiB). The backlog is
    /// allocated only as it fills and is forwarded by the next drain. Only past this bound is a
    /// record dropped: counted in `spanmetrics.dropped` ([`crate::SpanMetricsHandle::dropped`])
    /// and logged to standard error once.
    pub fn with_overload_memory(mut self, bytes: usize) -> Result<Self, BuildError> {
        check_range("overload_memory (bytes)", bytes as u128, 0, 4 << 30)?;
        self.config.overload_memory = bytes;
        Ok(self)
    }

    /// Keep live statistics in process (rolling windows of the last minute, 5 minutes and
    /// hour, recent failed and slow commands, health), read from
    /// [`crate::SpanMetricsHandle::live`]. Commands taking at least `slow_threshold` (and
    /// their own 5 minute p95) are listed as slow ([`crate::live::DEFAULT_SLOW_THRESHOLD`] is
    /// the pipeline's default). Off by default; when on, a failed or slow command takes a
    /// mutex and looks up its OpenTelemetry trace id on its thread as it closes (see the crate
    /// docs, "what a span costs").
    pub fn with_live_stats(mut self, slow_threshold: Duration) -> Self {
        self.live = Some(slow_threshold);
        self
    }

    /// Declares an objective ([`crate::objectives::Objective`]): its latency threshold becomes a
    /// bucket bound of both sinks, and [`crate::objectives::rules`] writes the rules, alerts and
    /// dashboard that measure it. A label-selected objective needs its label allow-listed
    /// first ([`Builder::with_label`]). Errors: a target outside (0, 1), a threshold of zero, a
    /// window outside 3…366 days, no command selected, or a name already used.
    pub fn with_objective(
        mut self,
        objective: crate::objectives::Objective,
    ) -> Result<Self, BuildError> {
        objective
            .check(&self.config.selection.labels)
            .map_err(BuildError::Objective)?;
        if self
            .config
            .objectives
            .iter()
            .any(|o| o.name() == objective.name())
        {
            return Err(BuildError::Objective(format!(
                "two objectives are named `{}`: each name labels its own rules and alerts",
                objective.name()
            )));
        }
        self.config.objectives.push(objective);
        Ok(self)
    }

    /// The declared objectives.
    pub fn objectives(&self) -> &[crate::objectives::Objective] {
        &self.config.objectives
    }

    /// The histogram bounds both sinks use: [`Builder::with_buckets`] (or the defaults) with
    /// every objective's latency threshold added. Give these to a Prometheus recorder of your
    /// own (`PrometheusBuilder::set_buckets`), so that the latency rules find their bucket.
    pub fn histogram_bounds(&self) -> Vec<f64> {
        self.config.histogram_bounds()
    }

    /// Builds the layer and starts its background thread.
    pub fn build(self) -> SpanMetricsLayer {
        let live = self.live.map(|slow| {
            let notables = Arc::new(Notables::new(slow));
            let windows = Windows::new(
                self.config.max_series,
                Arc::clone(&notables),
                self.config.objectives.clone(),
            );
            (Arc::new(windows), notables)
        });
        let targets = Targets {
            recorder: self.recorder,
            meter: self.meter,
            live,
        };
        SpanMetricsLayer::new(self.config, targets)
    }
}

impl SpanMetricsLayer {
    /// A builder with the default configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("selection", &self.config.selection)
            .field("max_series", &self.config.max_series)
            .field("max_error_types", &self.config.max_error_types)
            .field("busy_time", &self.config.busy_time)
            .field("live_stats", &self.live.is_some())
            .finish_non_exhaustive()
    }
}
