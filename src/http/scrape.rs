//! `/metrics`: the Prometheus text exposition of metrics-exporter-prometheus, rendered after
//! forwarding what the layer buffers, so a scrape includes every command finished before it.

use metrics_exporter_prometheus::PrometheusHandle;

use crate::SpanMetricsHandle;

/// What a scrape reads.
pub(crate) struct Scrape {
    pub(crate) handle: PrometheusHandle,
    pub(crate) spanmetrics: SpanMetricsHandle,
    /// Brings the pipeline's own gauges and counters (process, export failures) up to date.
    pub(crate) before_render: Box<dyn Fn() + Send + Sync>,
}

impl Scrape {
    /// The exposition text, with everything recorded so far.
    pub(crate) fn render(&self) -> String {
        self.spanmetrics.flush();
        (self.before_render)();
        self.handle.render()
    }
}
