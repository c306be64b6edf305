//! Names of the metrics the export pipeline adds (the layer's own live in `crate::names`).

/// OpenTelemetry counter of failed OTLP export calls, attribute `signal`
/// (`traces`|`metrics`|`logs`).
pub(crate) const OTEL_EXPORT_FAILURES: &str = "spanmetrics.export.failures";
/// OpenTelemetry counter of spans lost in failed exports.
pub(crate) const OTEL_DROPPED_SPANS: &str = "spanmetrics.export.dropped_spans";
/// Prometheus name of [`OTEL_EXPORT_FAILURES`].
pub(crate) const PROM_EXPORT_FAILURES: &str = "spanmetrics_export_failures_total";
/// Prometheus name of [`OTEL_DROPPED_SPANS`].
pub(crate) const PROM_DROPPED_SPANS: &str = "spanmetrics_export_dropped_spans_total";
/// OpenTelemetry counter of log records lost in failed exports or to a full queue.
pub(crate) const OTEL_DROPPED_LOGS: &str = "spanmetrics.export.dropped_logs";
/// Prometheus name of [`OTEL_DROPPED_LOGS`].
pub(crate) const PROM_DROPPED_LOGS: &str = "spanmetrics_export_dropped_logs_total";

/// OpenTelemetry (semantic conventions) process metrics.
pub(crate) const OTEL_PROCESS_MEMORY: &str = "process.memory.usage";
pub(crate) const OTEL_PROCESS_CPU: &str = "process.cpu.time";
pub(crate) const OTEL_PROCESS_FDS: &str = "process.unix.file_descriptor.count";
pub(crate) const OTEL_PROCESS_THREADS: &str = "process.thread.count";
pub(crate) const OTEL_PROCESS_UPTIME: &str = "process.uptime";

/// Prometheus (client-library conventions) process metrics.
pub(crate) const PROM_PROCESS_MEMORY: &str = "process_resident_memory_bytes";
pub(crate) const PROM_PROCESS_CPU: &str = "process_cpu_seconds_total";
pub(crate) const PROM_PROCESS_FDS: &str = "process_open_fds";
pub(crate) const PROM_PROCESS_THREADS: &str = "process_threads";
pub(crate) const PROM_PROCESS_UPTIME: &str = "process_uptime_seconds";
pub(crate) const PROM_PROCESS_START: &str = "process_start_time_seconds";
