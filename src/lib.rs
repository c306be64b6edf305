//! spanmetrics: command metrics from `tracing` spans.
#![deny(missing_docs)]
#![warn(
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod buffer;
mod callsite;
mod clock;
mod config;
mod error_type;
mod export;
mod fields;
mod layer;
pub mod names;
mod registry;
mod telemetry;

pub use config::{BuildError, Builder};
pub use layer::{SpanMetricsHandle, SpanMetricsLayer};
pub use telemetry::{init, InitError, ShutdownError, Telemetry, TelemetryBuilder, TelemetryGuard};

/// A layer with the default configuration: every span with a `command` field is a command,
/// measurements go to the global `metrics` recorder and the global OpenTelemetry meter provider.
pub fn layer() -> SpanMetricsLayer {
    Builder::default().build()
}

/// The instrumentation scope of the OpenTelemetry meter.
pub(crate) fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
