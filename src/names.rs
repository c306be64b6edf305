//! Metric and attribute names. They are a contract: dashboards and alert rules depend on them.

/// OpenTelemetry name of the command latency histogram (span creation → close), in seconds.
pub const OTEL_DURATION: &str = "command.duration";
/// OpenTelemetry name of the busy-time histogram (time the span was entered), in seconds.
pub const OTEL_BUSY: &str = "command.busy";
/// OpenTelemetry name of the commands-in-flight up-down counter.
pub const OTEL_ACTIVE: &str = "command.active";
/// OpenTelemetry name of the time-to-mark histogram (span start → a `mark` event), in seconds.
pub const OTEL_MARK: &str = "command.mark";
/// OpenTelemetry name of the counter of records folded into an overflow series.
pub const OTEL_OVERFLOW: &str = "spanmetrics.overflow";
/// OpenTelemetry name of the counter of records dropped (the overload backlog was full, or a
/// sink panicked on them).
pub const OTEL_DROPPED: &str = "spanmetrics.dropped";

/// Prometheus name of [`OTEL_DURATION`].
pub const PROM_DURATION: &str = "command_duration_seconds";
/// Prometheus name of [`OTEL_BUSY`].
pub const PROM_BUSY: &str = "command_busy_seconds";
/// Prometheus name of [`OTEL_ACTIVE`].
pub const PROM_ACTIVE: &str = "command_active";
/// Prometheus name of [`OTEL_MARK`].
pub const PROM_MARK: &str = "command_mark_seconds";
/// Prometheus name of [`OTEL_OVERFLOW`].
pub const PROM_OVERFLOW: &str = "spanmetrics_overflow_records_total";
/// Prometheus name of [`OTEL_DROPPED`].
pub const PROM_DROPPED: &str = "spanmetrics_dropped_records_total";

/// Attribute holding the command name.
pub const ATTR_COMMAND: &str = "command";
/// Attribute holding the outcome, `ok` or `error`.
pub const ATTR_OUTCOME: &str = "outcome";
/// OpenTelemetry attribute holding the error type, present only on errors.
pub const ATTR_ERROR_TYPE: &str = "error.type";
/// Prometheus label holding the error type, present only on errors.
pub const PROM_ERROR_TYPE: &str = "error_type";
/// Attribute holding the mark name on [`OTEL_MARK`].
pub const ATTR_MARK: &str = "mark";
/// Attribute naming the metric on the overflow counter.
pub const ATTR_METRIC: &str = "metric";
/// Attribute set on the one series that collects records beyond the cardinality cap.
pub const ATTR_OVERFLOW: &str = "otel.metric.overflow";
/// Prometheus spelling of [`ATTR_OVERFLOW`].
pub const PROM_OVERFLOW_LABEL: &str = "otel_metric_overflow";

/// Value that stands for every error type (or mark) beyond the per-command cap.
pub const OTHER: &str = "_OTHER";
/// Error type used when nothing more specific is known.
pub const DEFAULT_ERROR_TYPE: &str = "error";
/// Error type of a span closed while its thread was panicking.
pub const PANIC_ERROR_TYPE: &str = "panic";

/// Default histogram bucket bounds in seconds, 100 µs … 60 s, for both sinks.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
