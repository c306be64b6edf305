//! [`TelemetryGuard`]: keeps the pipeline running; dropping it flushes and shuts it down.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::endpoint::Running;
use super::runtime::ExportRuntime;
use crate::SpanMetricsHandle;

/// Upper bound on how long shutting down may take before the guard gives up waiting.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// Errors from [`TelemetryGuard::shutdown`]. Shutting down never panics; these only say what
/// could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The last export of a signal failed (typically: no collector is listening).
    #[error("the final OTLP {signal} export failed: {message}; data recorded since the last successful export is lost. Check that the collector at OTEL_EXPORTER_OTLP_ENDPOINT is running")]
    Export {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// What the exporter reported.
        message: String,
    },
    /// Shutting down took longer than the bound; it goes on in the background.
    #[error("shutting down telemetry did not finish within {0:?}; it continues in the background and may not complete before the process exits")]
    TimedOut(Duration),
    /// The shutdown thread could not be started or died.
    #[error("the telemetry shutdown thread failed: {0}")]
    Thread(String),
}

/// The parts to stop, in order.
pub(crate) struct Parts {
    pub(crate) tracer: Option<SdkTracerProvider>,
    pub(crate) meter: Option<SdkMeterProvider>,
    pub(crate) logger: Option<SdkLoggerProvider>,
    /// The HTTP endpoints.
    pub(crate) server: Option<Running>,
    /// The runtime the gRPC exporters run on; stopped last, on the shutdown thread.
    pub(crate) runtime: Option<ExportRuntime>,
}

/// Returned by [`crate::init`] and [`crate::TelemetryBuilder::install`]: keep it alive for as
/// long as the program should export telemetry, typically in `main`.
///
/// Dropping it (or calling [`TelemetryGuard::shutdown`]) forwards what is buffered, exports
/// the last spans and metrics, stops the Prometheus endpoint and the export threads. The work
/// runs on a plain thread with a bounded wait, so it is safe in a multi-thread or
/// current-thread tokio runtime and without any runtime; errors are logged, never panicked on.
#[must_use = "dropping the guard shuts telemetry down at once"]
pub struct TelemetryGuard {
    spanmetrics: SpanMetricsHandle,
    prometheus_addr: Option<SocketAddr>,
    parts: Option<Parts>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("prometheus_addr", &self.prometheus_addr)
            .field("running", &self.parts.is_some())
            .finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    pub(crate) fn new(
        spanmetrics: SpanMetricsHandle,
        prometheus_addr: Option<SocketAddr>,
        parts: Parts,
    ) -> Self {
        Self {
            spanmetrics,
            prometheus_addr,
            parts: Some(parts),
        }
    }

    /// The address the Prometheus `/metrics` endpoint listens on (with the real port when
    /// port 0 was asked for), or `None` when it is off.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// The handle of the spanmetrics layer, e.g. to flush before reading metrics.
    pub fn spanmetrics(&self) -> &SpanMetricsHandle {
        &self.spanmetrics
    }

    /// Flushes and shuts everything down, reporting the first problem.
    pub fn shutdown(mut self) -> Result<(), ShutdownError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ShutdownError> {
        let Some(parts) = self.parts.take() else {
            return Ok(());
        };
        self.spanmetrics.flush();
        let (done, result) = mpsc::channel();
        std::thread::Builder::new()
            .name("spanmetrics-shutdown".into())
            .spawn(move || {
                let outcome = tracing::subscriber::with_default(
                    tracing::subscriber::NoSubscriber::default(),
                    || stop_parts(parts),
                );
                let _ = done.send(outcome);
            })
            .map_err(|e| ShutdownError::Thread(e.to_string()))?;
        match result.recv_timeout(SHUTDOWN_BOUND) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ShutdownError::TimedOut(SHUTDOWN_BOUND)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(ShutdownError::Thread("it ended without reporting".into()))
            }
        }
    }
}

fn stop_parts(parts: Parts) -> Result<(), ShutdownError> {
    let Parts {
        tracer,
        meter,
        logger,
        mut server,
        runtime,
    } = parts;
    let mut first = None;
    if let Some(logger) = logger {
        if let Err(e) = logger.shutdown() {
            first.get_or_insert(ShutdownError::Export {
                signal: "logs",
                message: e.to_string(),
            });
        }
    }
    if let Some(tracer) = tracer {
        if let Err(e) = tracer.shutdown() {
            first.get_or_insert(ShutdownError::Export {
                signal: "traces",
                message: e.to_string(),
            });
        }
    }
    if let Some(meter) = meter {
        // The final collection forwards what the layer still buffers (its callback drains).
        if let Err(e) = meter.shutdown() {
            first.get_or_insert(ShutdownError::Export {
                signal: "metrics",
                message: e.to_string(),
            });
        }
    }
    if let Some(server) = server.as_mut() {
        server.stop();
    }
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    first.map_or(Ok(()), Err)
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(target: "spanmetrics::telemetry", "{error}");
        }
    }
}
