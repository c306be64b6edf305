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
    /// Spans lost (traces only): in failed exports, or refused because the export queue was
    /// full.
    pub(crate) dropped_spans: AtomicU64,
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
                if signal == "traces" {
                    self.dropped_spans
                        .fetch_add(items as u64, Ordering::Relaxed);
                }
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

/// Observable counters reporting the export failure counts through `meter`.
pub(crate) fn register_export_metrics(
    meter: &opentelemetry::metrics::Meter,
    traces: Arc<ExportStats>,
    metrics: Arc<ExportStats>,
) {
    let (t, m) = (traces.clone(), metrics);
    meter
        .u64_observable_counter(names::OTEL_EXPORT_FAILURES)
        .with_description("Failed OTLP export calls, by signal.")
        .with_callback(move |observer| {
            observer.observe(
                t.failures.load(Ordering::Relaxed),
                &[KeyValue::new("signal", "traces")],
            );
            observer.observe(
                m.failures.load(Ordering::Relaxed),
                &[KeyValue::new("signal", "metrics")],
            );
        })
        .build();
    meter
        .u64_observable_counter(names::OTEL_DROPPED_SPANS)
        .with_description("Spans lost: their OTLP export failed, or the export queue was full.")
        .with_callback(move |observer| {
            observer.observe(traces.dropped_spans.load(Ordering::Relaxed), &[]);
        })
        .build();
}
