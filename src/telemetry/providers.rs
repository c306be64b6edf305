//! What the OTLP side is given (each signal's destination) and what it builds (the
//! OpenTelemetry providers, and the runtime their gRPC exporters run on).

use std::sync::Arc;

use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::env::OtlpTarget;
use super::runtime::ExportRuntime;
use super::tls::ClientTls;

/// Where one signal is exported, and the checked TLS files to get there.
#[derive(Clone, Debug)]
pub(crate) struct Destination {
    pub(crate) target: OtlpTarget,
    /// `Some` for `https://` endpoints (and whenever TLS files are set).
    pub(crate) tls: Option<Arc<ClientTls>>,
}

/// The destinations of the signals that are exported.
#[derive(Clone, Debug, Default)]
pub(crate) struct Destinations {
    pub(crate) traces: Option<Destination>,
    pub(crate) metrics: Option<Destination>,
    pub(crate) logs: Option<Destination>,
}

impl Destinations {
    /// Whether any signal is exported over gRPC.
    pub(crate) fn any_grpc(&self) -> bool {
        [&self.traces, &self.metrics, &self.logs]
            .into_iter()
            .flatten()
            .any(|d| d.target.protocol == super::env::Protocol::Grpc)
    }
}

/// The OTLP providers and the runtime their gRPC exporters run on.
pub(crate) struct Otlp {
    pub(crate) tracer: Option<SdkTracerProvider>,
    pub(crate) meter: Option<SdkMeterProvider>,
    pub(crate) logger: Option<SdkLoggerProvider>,
    pub(crate) runtime: Option<ExportRuntime>,
}
