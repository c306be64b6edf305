//! [`SpanMetricsHandle`]: what a program keeps of a layer once the layer is in a subscriber.

use std::fmt;
use std::sync::Arc;

use super::engine::Engine;
use crate::live::LiveStats;

/// A cheap, cloneable handle to a layer's background side.
#[derive(Clone)]
pub struct SpanMetricsHandle {
    pub(crate) engine: Arc<Engine>,
}

impl SpanMetricsHandle {
    /// Forwards every measurement buffered so far to the sinks, at once.
    ///
    /// The background thread does this every flush interval, and an OpenTelemetry collection
    /// does it first; call it before reading a `metrics` recorder directly (in tests, or
    /// before rendering a Prometheus page yourself). With the global `metrics` recorder, call
    /// it outside `metrics::with_local_recorder` scopes: new series are registered on the
    /// recorder the calling thread sees.
    pub fn flush(&self) {
        self.engine.flush();
    }

    /// Number of measurements dropped so far: 0 unless the background thread stalled long
    /// enough for the overload backlog to fill ([`crate::Builder::with_overload_memory`]), or a
    /// sink panicked while recording them.
    pub fn dropped(&self) -> u64 {
        self.engine.buffers.dropped()
    }

    /// The live statistics (rolling windows, recent failures, health), when the layer keeps
    /// them: [`crate::Builder::with_live_stats`], or the telemetry pipeline with its HTTP
    /// endpoints on. See [`crate::live`].
    pub fn live(&self) -> Option<LiveStats> {
        let windows = Arc::clone(self.engine.windows.as_ref()?);
        let engine = Arc::downgrade(&self.engine);
        let flush = Arc::new(move || {
            if let Some(engine) = engine.upgrade() {
                engine.flush();
            }
        });
        Some(LiveStats::new(windows, flush))
    }
}

impl fmt::Debug for SpanMetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanMetricsHandle").finish_non_exhaustive()
    }
}
