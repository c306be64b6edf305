//! The OpenTelemetry providers the pipeline built, and the runtime their gRPC exporters run on.

use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::runtime::ExportRuntime;

/// The OTLP providers and the runtime their gRPC exporters run on.
pub(crate) struct Otlp {
    pub(crate) tracer: Option<SdkTracerProvider>,
    pub(crate) meter: Option<SdkMeterProvider>,
    pub(crate) runtime: Option<ExportRuntime>,
}
