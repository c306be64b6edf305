//! [`InitError`]: why the pipeline could not be set up.

use std::net::SocketAddr;

/// Why the pipeline could not be set up. Nothing is installed when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// An environment variable has a value that is not accepted.
    #[error("environment variable {variable}={value:?} is invalid: expected {expected}. Fix or unset it")]
    InvalidEnv {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An OTLP exporter could not be built.
    #[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}: {source}. Check the OTEL_EXPORTER_OTLP_* variables")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The endpoint it was built for.
        endpoint: String,
        /// What the exporter reported.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A TLS file named by an `OTEL_EXPORTER_OTLP_*CERTIFICATE` or `*CLIENT_KEY` variable
    /// cannot be read or used.
    #[error("{variable}={path:?}: {problem}. Point it at a readable PEM file, or unset it")]
    TlsFile {
        /// The variable.
        variable: String,
        /// The file it names.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `SPANMETRICS_OBJECTIVES` or `SPANMETRICS_OBJECTIVES_FILE` does not give objectives that
    /// can be measured.
    #[error("{variable}={value:?}: {problem}")]
    Objectives {
        /// The variable.
        variable: String,
        /// Its value (the JSON, or the file's path).
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// The TLS library refused to set up a client configuration.
    #[error("cannot set up TLS for OTLP export: {0}")]
    Tls(String),
    /// The Prometheus endpoint could not listen on its address.
    #[error("the Prometheus endpoint cannot listen on {addr}: {source}. Set SPANMETRICS_PROMETHEUS_LISTEN to a free address (port 0 picks one) or to `off`, or SPANMETRICS_BEST_EFFORT=true to start without the endpoint")]
    PrometheusListen {
        /// The address.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A background thread or runtime could not be started.
    #[error("cannot start the telemetry {what}: {source}. The system may be out of threads or file descriptors")]
    Start {
        /// What could not be started.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The directives given to [`crate::TelemetryBuilder::with_default_log_filter`] do not parse
    /// (checked whether or not `RUST_LOG` is set, so the mistake shows up at once).
    #[error("the default log filter {directives:?} given to with_default_log_filter is invalid: {message}. Use comma-separated `target=level` directives, e.g. `info` or `my_app=debug,info`")]
    InvalidDefaultLogFilter {
        /// The directives.
        directives: String,
        /// What the parser reported.
        message: String,
    },
    /// A global `tracing` subscriber is already set (by an earlier `init`, or another crate).
    #[error("a global tracing subscriber is already installed; call spanmetrics::init() once, at the start of main, instead of other subscriber set-up")]
    AlreadyInstalled,
    /// A setting asks for a part of spanmetrics that this build leaves out.
    #[error("{setting} needs {what}, which this build of spanmetrics leaves out: enable its `{feature}` cargo feature, or change the setting")]
    NotBuiltIn {
        /// The variable or builder call, with its value.
        setting: String,
        /// What it needs.
        what: &'static str,
        /// The cargo feature that builds it in.
        feature: &'static str,
    },
}
