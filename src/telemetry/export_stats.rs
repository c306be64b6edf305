//! Export failure counts per signal: kept by the OTLP exporters' wrappers, read by the health
//! probe, the Prometheus page and two OpenTelemetry counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;

use super::metric_names as names;

/// Export failure counts of one signal, shared by its exporter and the metrics that report them.
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    /// Failed export calls.
    pub(crate) failures: AtomicU64,
    /// Spans or log records lost (not metrics: a failed metric export is retried with the
    /// next collection): in failed exports, or refused because the export queue was full.
    pub(crate) dropped: AtomicU64,
    failing: AtomicBool,
}

impl ExportStats {
    /// Whether the latest export of this signal failed.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub(crate) fn observe(
        &self,
        signal: &'static str,
        endpoint: &str,
        result: &OTelSdkResult,
        items: usize,
    ) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        target: "spanmetrics::telemetry",
                        "OTLP {signal} export to {endpoint} works again (failed exports so far: {})",
                        self.failures.load(Ordering::Relaxed)
                    );
                }
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(items as u64, Ordering::Relaxed);
                // One warning per outage; the counters say how long it lasted.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "spanmetrics::telemetry",
                        "OTLP {signal} export to {endpoint} failed: {error}. The application \
                         keeps running; exports are retried every interval, and this is logged \
                         once until they succeed again"
                    );
                }
            }
        }
    }
}

/// The export statistics of every signal.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    pub(crate) traces: Arc<ExportStats>,
    pub(crate) metrics: Arc<ExportStats>,
    pub(crate) logs: Arc<ExportStats>,
}

impl Signals {
    /// Each signal with its name.
    pub(crate) fn each(&self) -> [(&'static str, &Arc<ExportStats>); 3] {
        [
            ("traces", &self.traces),
            ("metrics", &self.metrics),
            ("logs", &self.logs),
        ]
    }

    /// The signals whose latest export failed.
    pub(crate) fn failing(&self) -> Vec<&'static str> {
        self.each()
            .into_iter()
            .filter(|(_, s)| s.is_failing())
            .map(|(name, _)| name)
            .collect()
    }
}

/// Observable counters reporting the export failure counts through `meter`.
pub(crate) fn register_export_metrics(meter: &opentelemetry::metrics::Meter, signals: &Signals) {
    let all = signals.clone();
    meter
        .u64_observable_counter(names::OTEL_EXPORT_FAILURES)
        .with_description("Failed OTLP export calls, by signal.")
        .with_callback(move |observer| {
            for (signal, stats) in all.each() {
                observer.observe(
                    stats.failures.load(Ordering::Relaxed),
                    &[KeyValue::new("signal", signal)],
                );
            }
        })
        .build();
    for (name, description, stats) in [
        (
            names::OTEL_DROPPED_SPANS,
            "Spans lost: their OTLP export failed, or the export queue was full.",
            &signals.traces,
        ),
        (
            names::OTEL_DROPPED_LOGS,
            "Log records lost: their OTLP export failed, or the export queue was full.",
            &signals.logs,
        ),
    ] {
        let stats = Arc::clone(stats);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |observer| {
                observer.observe(stats.dropped.load(Ordering::Relaxed), &[]);
            })
            .build();
    }
}
