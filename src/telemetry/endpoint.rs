//! The pipeline's HTTP endpoint: the Prometheus recorder the layer feeds, and the server on
//! the bound listener (`/metrics`, and with the `http` feature the live endpoints).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusRecorder;

use super::error::InitError;
use super::export_stats::Signals;
use super::prometheus;
use crate::http::router::Routes;
use crate::http::scrape::Scrape;
use crate::http::server::Server;
use crate::{Builder, SpanMetricsHandle};

/// Clients of `/api/stream` at a time.
#[cfg(feature = "http")]
const MAX_STREAM_CLIENTS: usize = 16;

/// What the endpoint's live API needs besides the layer's live statistics.
#[cfg(feature = "http")]
pub(crate) struct ApiSettings {
    pub(crate) objectives: crate::HealthObjectives,
    pub(crate) stream_interval: std::time::Duration,
}

/// A bound listener and the recorder it will serve.
pub(crate) struct Endpoint {
    listener: TcpListener,
    recorder: Arc<PrometheusRecorder>,
}

/// The running server.
pub(crate) struct Running {
    server: Server,
    recorder: Arc<PrometheusRecorder>,
}

impl Endpoint {
    /// The recorder (with its upkeep thread and histogram `bounds`) for `listener`.
    pub(crate) fn new(listener: TcpListener, bounds: &[f64]) -> Result<Self, InitError> {
        let recorder = Arc::new(prometheus::recorder(bounds));
        prometheus::spawn_upkeep(&recorder).map_err(|source| InitError::Start {
            what: "Prometheus upkeep thread",
            source,
        })?;
        Ok(Self { listener, recorder })
    }

    /// Points the layer's `metrics` sink at this recorder.
    pub(crate) fn feed(&self, layer: Builder) -> Builder {
        layer.with_recorder(Arc::clone(&self.recorder))
    }

    /// Starts serving: `/metrics`, and the live endpoints when the layer keeps live statistics.
    pub(crate) fn start(
        self,
        spanmetrics: &SpanMetricsHandle,
        token: Option<String>,
        stats: &Signals,
        #[cfg(feature = "http")] api: ApiSettings,
    ) -> Result<Running, InitError> {
        prometheus::describe(&*self.recorder);
        let (r, signals) = (Arc::clone(&self.recorder), stats.clone());
        let scrape = Scrape {
            handle: self.recorder.handle(),
            spanmetrics: spanmetrics.clone(),
            before_render: Box::new(move || prometheus::update(&*r, &signals)),
        };
        #[cfg(feature = "http")]
        let api = {
            let signals = stats.clone();
            spanmetrics.live().map(|live| crate::http::api::Api {
                live,
                objectives: api.objectives,
                failing_exports: Box::new(move || signals.failing()),
                stream_interval: api.stream_interval,
                max_stream_clients: MAX_STREAM_CLIENTS,
                stream_clients: Arc::default(),
            })
        };
        let routes = Routes {
            scrape,
            token,
            #[cfg(feature = "http")]
            api,
        };
        let server =
            Server::start(self.listener, Arc::new(routes)).map_err(|source| InitError::Start {
                what: "Prometheus endpoint",
                source,
            })?;
        Ok(Running {
            server,
            recorder: self.recorder,
        })
    }
}

impl Running {
    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The recorder as the global `metrics` recorder, unless one is set already.
    pub(crate) fn install_global(&self) {
        if metrics::set_global_recorder(Arc::clone(&self.recorder)).is_err() {
            tracing::debug!(target: "spanmetrics::telemetry", "a global metrics recorder is already set; spanmetrics uses its own Prometheus recorder");
        }
    }

    /// Stops accepting and waits for the server thread.
    pub(crate) fn stop(&mut self) {
        self.server.stop();
    }
}
