//! The export pipeline: one call sets up logging, the spanmetrics layer, OTLP traces and
//! metrics, the Prometheus endpoint and process metrics, configured by `OTEL_*` variables.
//!
//! Every setting is read and checked in every build; in a build that leaves a part out (a
//! cargo feature off), what only that part would use is left unused.
#![cfg_attr(
    not(all(
        feature = "otlp-grpc",
        feature = "otlp-http",
        feature = "prometheus",
        feature = "http"
    )),
    allow(dead_code)
)]

#[cfg(feature = "prometheus")]
mod endpoint;
#[cfg(not(feature = "prometheus"))]
#[path = "no_endpoint.rs"]
mod endpoint;
mod env;
mod error;
mod export_stats;
mod guard;
mod live_env;
mod metric_names;
mod objectives_env;
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
mod otlp;
mod process;
#[cfg(feature = "prometheus")]
mod prometheus;
mod providers;
mod runtime;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "no_tls.rs"]
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use tracing_core::Subscriber;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub use self::error::InitError;
pub use self::guard::{ShutdownError, TelemetryGuard};

use self::endpoint::Endpoint;
use self::env::{Env, Settings};
use self::export_stats::Signals;
use self::live_env::LiveEnv;
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
use self::otlp::build as build_otlp;
use self::providers::{Destination, Destinations, Otlp};
use crate::live::DEFAULT_SLOW_THRESHOLD;
use crate::{HealthObjectives, SpanMetricsLayer};

/// Default interval of `/api/stream` summaries.
const DEFAULT_STREAM_INTERVAL: Duration = Duration::from_secs(1);

/// A secret kept out of `Debug` output.
#[derive(Clone, Default)]
struct Secret(Option<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<redacted>)"
        } else {
            "None"
        })
    }
}

/// Sets up everything from the environment.
///
/// | Variable | Accepted values | Default |
/// |---|---|---|
/// | `OTEL_SDK_DISABLED` | `true`, `false` | `false` (`true`: no OTLP export; Prometheus stays) |
/// | `OTEL_SERVICE_NAME` | any text | `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else `TelemetryBuilder::with_service_name`, else `unknown_service:<executable>` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,…` (values percent-decoded) | none; `service.instance.id` (random per process), `host.name` and `process.pid` are added unless set |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://host:port[/base]` or `https://…` (needs the `tls` feature); for HTTP `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended; for gRPC also `host:port` (TLS unless `…_INSECURE=true`) | unset: **no OTLP export** (the start-up log says how to turn it on) |
/// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `…_METRICS_ENDPOINT`, `…_LOGS_ENDPOINT` | full URL, used as given | the generic one |
/// | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER` | `otlp`, `none` (`none`: that signal is not exported over OTLP) | `otlp` |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL` (and `_TRACES_`/`_METRICS_`/`_LOGS_`) | `grpc`, `http/protobuf` | `grpc` (`http/protobuf` in a build without the `otlp-grpc` feature) |
/// | `OTEL_EXPORTER_OTLP_HEADERS` (and per signal) | `key=value,…` (values percent-decoded); keys valid HTTP header names, values without control characters | none |
/// | `OTEL_EXPORTER_OTLP_TIMEOUT` (and per signal) | milliseconds > 0 | `10000` |
/// | `OTEL_EXPORTER_OTLP_COMPRESSION` (and per signal) | `gzip`, `zstd`, `none` | `none` |
/// | `OTEL_EXPORTER_OTLP_CERTIFICATE` (and per signal) | path of a PEM file of CA certificates that replaces the bundled roots | none: the bundled Mozilla roots |
/// | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY` (and per signal) | paths of the PEM client certificate chain and its private key, for mutual TLS; both or neither | none |
/// | `OTEL_EXPORTER_OTLP_INSECURE` (and per signal) | `true`, `false`: for a gRPC endpoint without a scheme, `true` means plain text | `false` |
/// | `SPANMETRICS_OBJECTIVES`, `SPANMETRICS_OBJECTIVES_FILE` (one or the other) | a JSON list of objectives, in the variable or in the named file: `[{"name": "roll-ok", "commands": ["roll"], "success_rate": 0.995, "latency": {"ratio": 0.99, "under_ms": 250}, "window_days": 30}]` (or `"label": {"tier": "vip"}` instead of `"commands"`); added to the layer's own and checked as `with_objective` checks them (`InitError::Objectives`) | none |
/// | `SPANMETRICS_OTLP_LOGS_FILTER` | `tracing` directives: which events are exported as OTLP logs (separate from `RUST_LOG`) | `info` |
/// | `OTEL_TRACES_SAMPLER` | `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio` | `parentbased_always_on` (command metrics always count 100% of commands) |
/// | `OTEL_TRACES_SAMPLER_ARG` | ratio `0`…`1` | `1` |
/// | `OTEL_METRIC_EXPORT_INTERVAL` | milliseconds > 0 | `60000` |
/// | `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` | `cumulative`, `delta`, `lowmemory` | `cumulative` |
/// | `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION` | `base2_exponential_bucket_histogram`, `explicit_bucket_histogram` (100 µs … 60 s) | `base2_exponential_bucket_histogram` |
/// | `SPANMETRICS_PROMETHEUS_LISTEN` | `host:port` (port `0` picks a free one), `off` (`off`: no Prometheus recorder is built and no global `metrics` recorder installed) | `127.0.0.1:9464` (off in a build without the `prometheus` feature) |
/// | `SPANMETRICS_BEST_EFFORT` | `true`, `false` (`true`: a Prometheus address that cannot be listened on is logged as a warning and the rest of the telemetry starts without the endpoint, instead of `InitError::PrometheusListen`) | `TelemetryBuilder::with_best_effort`, else `false` |
/// | `RUST_LOG` | `tracing` directives; filters only the log output, never the metrics or traces | `TelemetryBuilder::with_default_log_filter`, else `info` |
/// | `SPANMETRICS_HTTP_TOKEN` | 8…256 printable ASCII characters: bearer token for every endpoint but `/health/live` and `/health/ready` | none |
/// | `SPANMETRICS_HEALTH_*`, `SPANMETRICS_STREAM_INTERVAL_MS`, `SPANMETRICS_SLOW_MS` | see [`HealthObjectives`] and the README | |
/// | `OTEL_BSP_*`, `OTEL_BLRP_*`, `OTEL_SPAN_*_COUNT_LIMIT` | not checked here: the OpenTelemetry SDK reads them from the process environment itself | the SDK's |
///
/// The OTLP exporter itself also reads `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_COMPRESSION` (and their per-signal forms) from the process environment, even when the settings come from `TelemetryBuilder::with_env`: process headers are added to the configured ones, and when the settings give no compression (`none` or unset) the process's value applies.
///
/// The listener also serves `/health`, `/health/live`, `/health/ready`, `/api/commands`,
/// `/api/commands/recent`, `/api/stream` and a dashboard page at `/`, from per-command
/// statistics kept in bounded rolling windows (1 s / 10 s / 1 min buckets; percentiles from a
/// log-linear histogram with 4 bins per doubling, within about ±9%).
///
/// `tracing` events become OTLP log records (with the trace and span ids of their span) as
/// `SPANMETRICS_OTLP_LOGS_FILTER` says; what is printed on stderr is `RUST_LOG`'s business.
/// `https://` endpoints are verified against the bundled Mozilla roots, or the CA of
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (see the README's "Sending to a hosted endpoint").
///
/// A bad value gives [`InitError::InvalidEnv`] naming the variable, the value and what is
/// accepted; a bad TLS file [`InitError::TlsFile`] naming the variable and the file.
///
/// ```no_run
/// fn main() -> Result<(), spanmetrics::InitError> {
///     let _telemetry = spanmetrics::init()?;
///     // ... run the application; dropping the guard flushes and shuts down.
///     Ok(())
/// }
/// ```
pub fn init() -> Result<TelemetryGuard, InitError> {
    Telemetry::builder().install()
}

/// Entry point of the pipeline builder.
#[derive(Debug)]
pub struct Telemetry {
    _private: (),
}

impl Telemetry {
    /// A builder with everything taken from the environment unless set on it.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }
}

/// Configures the pipeline; [`TelemetryBuilder::install`] sets it up.
#[derive(Debug, Default)]
#[must_use]
pub struct TelemetryBuilder {
    service_name: Option<String>,
    service_version: Option<String>,
    layer: Option<crate::Builder>,
    prometheus_listen: Option<Option<SocketAddr>>,
    env: Option<Vec<(String, String)>>,
    default_log_filter: Option<String>,
    http_token: Secret,
    health: Option<HealthObjectives>,
    stream_interval: Option<Duration>,
    slow_threshold: Option<Duration>,
    best_effort: Option<bool>,
}

impl TelemetryBuilder {
    /// The `service.name` used when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES`
    /// sets one (the environment wins, so operators can override it).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The `service.version` used unless `OTEL_RESOURCE_ATTRIBUTES` sets one.
    pub fn with_service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// Customises the spanmetrics layer (selection, labels, caps). Its sinks are replaced by
    /// the pipeline's Prometheus recorder and OTLP meter provider.
    pub fn with_layer(mut self, layer: crate::Builder) -> Self {
        self.layer = Some(layer);
        self
    }

    /// Where the Prometheus `/metrics` endpoint listens (`None`: off). Overrides
    /// `SPANMETRICS_PROMETHEUS_LISTEN`; the default is `127.0.0.1:9464`.
    pub fn with_prometheus_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.prometheus_listen = Some(addr);
        self
    }

    /// Log filter directives used when `RUST_LOG` is not set (default `info`). Like `RUST_LOG`,
    /// they filter only the log output, never the metrics or traces.
    pub fn with_default_log_filter(mut self, directives: impl Into<String>) -> Self {
        self.default_log_filter = Some(directives.into());
        self
    }

    /// Bearer token required by every endpoint of the listener except `/health/live` and
    /// `/health/ready` (as `Authorization: Bearer <token>`, or a `token` query parameter).
    /// `SPANMETRICS_HTTP_TOKEN` wins over it. Without a token, binding to an address other
    /// than loopback logs a warning.
    pub fn with_http_token(mut self, token: impl Into<String>) -> Self {
        self.http_token = Secret(Some(token.into()));
        self
    }

    /// Objectives of `/health` (default: [`HealthObjectives::default`]). The
    /// `SPANMETRICS_HEALTH_*` variables win over them.
    pub fn with_health_objectives(mut self, objectives: HealthObjectives) -> Self {
        self.health = Some(objectives);
        self
    }

    /// How often `/api/stream` sends a summary (default 1 s, clamped to 100 ms … 60 s;
    /// `SPANMETRICS_STREAM_INTERVAL_MS` wins).
    pub fn with_stream_interval(mut self, interval: Duration) -> Self {
        self.stream_interval =
            Some(interval.clamp(Duration::from_millis(100), Duration::from_secs(60)));
        self
    }

    /// Commands taking at least this long (and at least their own p95 over 5 minutes) are
    /// listed by `/api/commands/recent?outcome=slow` (default 100 ms; `SPANMETRICS_SLOW_MS`
    /// wins).
    pub fn with_slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow_threshold = Some(threshold);
        self
    }

    /// Best-effort mode (default off): when the Prometheus endpoint cannot listen on its
    /// address (port taken, address not on this host), [`TelemetryBuilder::install`] logs a
    /// warning and sets up everything else without the endpoint (no Prometheus recorder, no
    /// global `metrics` recorder, `TelemetryGuard::prometheus_addr` is `None`) instead of
    /// returning [`InitError::PrometheusListen`]. Invalid settings are still errors.
    /// `SPANMETRICS_BEST_EFFORT` wins over it.
    pub fn with_best_effort(mut self, best_effort: bool) -> Self {
        self.best_effort = Some(best_effort);
        self
    }

    /// Reads the settings from these variables instead of the process environment.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = Some(vars.into_iter().collect());
        self
    }

    /// Sets everything up and installs globally:
    /// - the `tracing` subscriber (an error if one is already set);
    /// - when the Prometheus endpoint is on, its recorder as the global `metrics` recorder,
    ///   unless one is already set (then only the spanmetrics layer feeds it);
    /// - the OpenTelemetry tracer and meter providers, for each signal exported over OTLP,
    ///   replacing whatever global provider was set before.
    ///
    /// The globals stay after the guard is dropped (they cannot be uninstalled): the
    /// Prometheus recorder then keeps its values, and a small background thread keeps
    /// draining its histogram buffers every few seconds, so memory stays bounded.
    pub fn install(self) -> Result<TelemetryGuard, InitError> {
        let installer = self.prepare()?;
        if tracing::dispatcher::has_been_set() {
            return Err(InitError::AlreadyInstalled);
        }
        installer.install()
    }

    /// Sets everything up as parts, for a subscriber of your own, and installs **nothing
    /// global**: no subscriber, no global `metrics` recorder, no global OpenTelemetry
    /// providers. Returns one layer (the spanmetrics layer and tracing-opentelemetry's span
    /// layer, already combined) to add to your subscriber, beside your own `fmt` layer and its
    /// per-layer filter, and the guard that owns the exporters, the Prometheus endpoint and the
    /// shutdown. [`TelemetryBuilder::install`] is this plus a `fmt` layer, installed globally.
    ///
    /// ```no_run
    /// use tracing_subscriber::prelude::*;
    /// use tracing_subscriber::EnvFilter;
    ///
    /// # fn main() -> Result<(), spanmetrics::InitError> {
    /// let (layer, _guard) = spanmetrics::Telemetry::builder()
    ///     .with_service_name("bot")
    ///     .build()?; // installs nothing global
    /// tracing_subscriber::registry()
    ///     .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("warn")))
    ///     .with(layer)
    ///     .init();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Keep the filtering per layer, as above: a global filter (an `EnvFilter` added with
    /// `.with(filter)`, or a level filter on the whole subscriber) hides spans from the metrics
    /// and the traces too. The pipeline's start-up lines are logged while `build` runs, so only
    /// a subscriber already in place shows them. `RUST_LOG` and
    /// [`TelemetryBuilder::with_default_log_filter`] are checked as always (an invalid one is
    /// an [`InitError`]) but not used: your `fmt` layer decides what is logged.
    pub fn build<S>(self) -> Result<(TelemetryLayer<S>, TelemetryGuard), InitError>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
    {
        self.prepare()?.build()
    }

    /// Reads and checks every setting.
    fn prepare(mut self) -> Result<Installer, InitError> {
        if let Some(directives) = &self.default_log_filter {
            if let Err(error) = EnvFilter::builder().parse(directives) {
                return Err(InitError::InvalidDefaultLogFilter {
                    directives: directives.clone(),
                    message: error.to_string(),
                });
            }
        }
        let env = match self.env.take() {
            Some(vars) => Env::from_map(vars),
            None => Env::from_process()?,
        };
        let settings = env.settings()?;
        let live_env = live_env::settings(&env)?;
        // The environment's objectives join the layer's; each is checked as the builder checks.
        let objectives_env::FromEnv { objectives, source } = objectives_env::objectives(&env)?;
        if let Some((variable, value)) = source {
            let mut layer = self.layer.take().unwrap_or_default();
            for objective in objectives {
                layer = layer
                    .with_objective(objective)
                    .map_err(|e| InitError::Objectives {
                        variable: variable.clone(),
                        value: value.clone(),
                        problem: e.to_string(),
                    })?;
            }
            self.layer = Some(layer);
        }
        if !cfg!(feature = "http") {
            let builder_live = [
                (
                    "TelemetryBuilder::with_health_objectives",
                    self.health.is_some(),
                ),
                (
                    "TelemetryBuilder::with_stream_interval",
                    self.stream_interval.is_some(),
                ),
                (
                    "TelemetryBuilder::with_slow_threshold",
                    self.slow_threshold.is_some(),
                ),
            ];
            let asked = live_env.first_set().or_else(|| {
                builder_live
                    .iter()
                    .find(|(_, set)| *set)
                    .map(|(n, _)| n.to_string())
            });
            if let Some(setting) = asked {
                return Err(InitError::NotBuiltIn {
                    setting,
                    what: "the live HTTP endpoints (/health, /api/*, the dashboard)",
                    feature: "http",
                });
            }
        }
        let destinations = destinations(&settings)?;
        Ok(Installer {
            builder: self,
            settings,
            live_env,
            destinations,
        })
    }
}

/// The layer [`TelemetryBuilder::build`] returns: the spanmetrics layer and the
/// OpenTelemetry span layer, combined, for a subscriber `S` of your own.
pub type TelemetryLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// The parts of the pipeline, built and running, before anything global is installed.
struct Assembled {
    layer: SpanMetricsLayer,
    running: Running,
}

/// What the guard takes over, and what is left to log.
struct Running {
    otlp: Otlp,
    server: Option<endpoint::Running>,
    listen_warning: Option<String>,
}

struct Installer {
    builder: TelemetryBuilder,
    settings: Settings,
    live_env: LiveEnv,
    /// The exported signals, with their TLS files read and checked.
    destinations: Destinations,
}

/// Each exported signal's destination; every TLS file is read and checked here, before
/// anything is built (also with `OTEL_SDK_DISABLED=true`, so that a mistake shows at once).
fn destinations(settings: &Settings) -> Result<Destinations, InitError> {
    let load = |target: &Option<env::OtlpTarget>| -> Result<Option<Destination>, InitError> {
        target
            .as_ref()
            .map(|target| {
                Ok(Destination {
                    tls: tls::load(&target.tls, target.is_https())?,
                    target: target.clone(),
                })
            })
            .transpose()
    };
    let all = Destinations {
        traces: load(&settings.traces)?,
        metrics: load(&settings.metrics)?,
        logs: load(&settings.logs)?,
    };
    Ok(if settings.sdk_disabled {
        Destinations::default()
    } else {
        all
    })
}

/// Crates of the export machinery (as `tracing` targets: the crate name, or the package name
/// for events logged with `target: env!("CARGO_PKG_NAME")`).
const EXPORT_CRATES: [&str; 13] = [
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry-otlp",
    "opentelemetry_http",
    "opentelemetry-http",
    "tonic",
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "reqwest",
    "opentelemetry_proto",
];

/// The export crate `target` belongs to: the crate name itself or `crate::…`, never a crate
/// that merely starts with the same letters (`hyperbot`, `h2o_app`).
fn export_crate(target: &str) -> Option<&'static str> {
    EXPORT_CRATES
        .into_iter()
        .find(|name| crate::config::in_module(target, name))
}

/// Targets of the export machinery: never exported as spans (that would feed back into
/// itself) and their internal logs are not shown unless `RUST_LOG` names their crate.
fn is_export_internal(target: &str) -> bool {
    export_crate(target).is_some()
}

/// The export crates that log directives name as a target (`h2=debug`, `hyper::proto=trace`),
/// so their logs are shown; `auth2=debug` or a bare `debug` names none.
fn named_export_crates(directives: &str) -> Vec<&'static str> {
    directives
        .split(',')
        .filter_map(|directive| {
            let target = directive.split(['[', '=']).next()?.trim();
            export_crate(target)
        })
        .collect()
}

impl Installer {
    fn resource(&self) -> Resource {
        let settings = &self.settings;
        let from_attrs = |key: &str| {
            settings
                .resource_attributes
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let service_name = settings
            .service_name
            .clone()
            .or_else(|| from_attrs("service.name"))
            .or_else(|| self.builder.service_name.clone())
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().ok();
                let name = exe
                    .as_deref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("unknown_service:{name}")
            });
        let mut attributes: Vec<KeyValue> = Vec::new();
        if let Some(version) = self.builder.service_version.clone() {
            attributes.push(KeyValue::new("service.version", version));
        }
        if from_attrs("service.instance.id").is_none() {
            attributes.push(KeyValue::new("service.instance.id", instance_id()));
        }
        if let Some(host) = host_name() {
            attributes.push(KeyValue::new("host.name", host));
        }
        attributes.push(KeyValue::new("process.pid", i64::from(std::process::id())));
        // The environment's attributes win over the defaults above.
        attributes.extend(
            settings
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        Resource::builder_empty()
            .with_detector(Box::new(
                opentelemetry_sdk::resource::TelemetryResourceDetector,
            ))
            .with_attributes(attributes)
            .with_service_name(service_name)
            .build()
    }

    /// The pipeline, in steps: each builds one part; nothing global is installed.
    fn assemble(&mut self) -> Result<Assembled, InitError> {
        let settings = self.settings.clone();
        let resource = self.resource();

        let (listener, listen_warning) = self.bind_listener()?;
        // Without the endpoint there is no recorder at all: nothing would ever read it.
        let bounds = self.builder.layer.as_ref().map_or_else(
            || crate::names::DEFAULT_BUCKETS.to_vec(),
            |b| b.histogram_bounds(),
        );
        let endpoint = listener
            .map(|listener| Endpoint::new(listener, &bounds))
            .transpose()?;
        let stats = Signals::default();
        let otlp = build_otlp(&self.destinations, &settings, &resource, &stats)?;
        let layer = self.spanmetrics_layer(endpoint.as_ref(), &otlp);
        let spanmetrics = layer.handle();
        if let Some(provider) = &otlp.meter {
            use opentelemetry::metrics::MeterProvider as _;
            let meter = provider.meter_with_scope(crate::scope());
            process::register_otel(&meter);
            export_stats::register_export_metrics(&meter, &stats);
        }
        let server = endpoint
            .map(|endpoint| {
                endpoint.start(
                    &spanmetrics,
                    self.token(),
                    &stats,
                    #[cfg(feature = "http")]
                    self.api_settings(),
                )
            })
            .transpose()?;
        Ok(Assembled {
            layer,
            running: Running {
                otlp,
                server,
                listen_warning,
            },
        })
    }

    /// The parts, then the global subscriber (with a `fmt` layer), the global `metrics`
    /// recorder and the global OpenTelemetry providers.
    fn install(mut self) -> Result<TelemetryGuard, InitError> {
        // The endpoint starts before anything global is installed, so that its failure
        // leaves nothing behind.
        let Assembled { layer, running } = self.assemble()?;
        let spanmetrics = layer.handle();
        self.install_subscriber(layer, &running.otlp)?;
        if let Some(server) = &running.server {
            server.install_global();
        }
        install_providers(&running.otlp);
        Ok(self.finish(spanmetrics, running))
    }

    /// The parts alone, for the caller's own subscriber.
    fn build<S>(mut self) -> Result<(TelemetryLayer<S>, TelemetryGuard), InitError>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
    {
        let Assembled { layer, running } = self.assemble()?;
        let spanmetrics = layer.handle();
        let combined = layer
            .and_then(otel_layer::<S>(&running.otlp))
            .and_then(log_layer::<S>(&running.otlp, &self.settings.logs_filter))
            .boxed();
        Ok((combined, self.finish(spanmetrics, running)))
    }

    /// Logs the start-up lines and hands the running parts to the guard.
    fn finish(&self, spanmetrics: crate::SpanMetricsHandle, running: Running) -> TelemetryGuard {
        let Running {
            otlp,
            server,
            listen_warning,
        } = running;
        if let Some(error) = listen_warning {
            tracing::warn!(target: "spanmetrics::telemetry", "{error}; best-effort mode (SPANMETRICS_BEST_EFFORT): the rest of the telemetry runs without the Prometheus endpoint. Set SPANMETRICS_PROMETHEUS_LISTEN to a free address (port 0 picks one) to get it");
        }
        let prometheus_addr = server.as_ref().map(endpoint::Running::addr);
        // Before the start-up lines, so whoever reads those has seen it too.
        if let Some(addr) = prometheus_addr {
            if !addr.ip().is_loopback() && self.token().is_none() {
                tracing::warn!(target: "spanmetrics::telemetry", "the HTTP endpoints on {addr} are reachable from other hosts and no token is set: anyone who can connect sees the metrics and the dashboard. Set SPANMETRICS_HTTP_TOKEN (or TelemetryBuilder::with_http_token), or listen on 127.0.0.1");
            }
        }
        self.log_start(prometheus_addr);
        TelemetryGuard::new(
            spanmetrics,
            prometheus_addr,
            guard::Parts {
                tracer: otlp.tracer,
                meter: otlp.meter,
                logger: otlp.logger,
                server,
                runtime: otlp.runtime,
            },
        )
    }

    /// Binds the Prometheus address first, so that a busy port is reported before anything is
    /// installed; in best-effort mode, a failure is a warning to log once logging is up.
    fn bind_listener(&self) -> Result<(Option<TcpListener>, Option<String>), InitError> {
        let listen = match self.builder.prometheus_listen {
            Some(addr) => addr,
            None => self
                .settings
                .prometheus_listen
                .unwrap_or_else(env::default_prometheus_listen),
        };
        if let Some(addr) = listen {
            env::built_in(
                cfg!(feature = "prometheus"),
                format!("TelemetryBuilder::with_prometheus_listen(Some({addr}))"),
                "the Prometheus endpoint",
                "prometheus",
            )?;
        }
        let best_effort = self
            .settings
            .best_effort
            .or(self.builder.best_effort)
            .unwrap_or(false);
        match listen.map(|addr| (addr, TcpListener::bind(addr))) {
            None => Ok((None, None)),
            Some((_, Ok(listener))) => Ok((Some(listener), None)),
            Some((addr, Err(source))) if !best_effort => {
                Err(InitError::PrometheusListen { addr, source })
            }
            Some((addr, Err(source))) => Ok((
                None,
                Some(format!(
                    "the Prometheus endpoint cannot listen on {addr}: {source}"
                )),
            )),
        }
    }

    /// The spanmetrics layer, feeding the Prometheus recorder and the OTLP meter provider,
    /// with live statistics when there is an endpoint to serve them.
    fn spanmetrics_layer(&mut self, endpoint: Option<&Endpoint>, otlp: &Otlp) -> SpanMetricsLayer {
        let mut layer = self.builder.layer.take().unwrap_or_default();
        layer = match endpoint {
            Some(endpoint) => endpoint.feed(layer),
            None => layer.without_recorder(),
        };
        if endpoint.is_some() && cfg!(feature = "http") {
            let slow = self
                .live_env
                .slow_threshold
                .or(self.builder.slow_threshold)
                .unwrap_or(DEFAULT_SLOW_THRESHOLD);
            layer = layer.with_live_stats(slow);
        }
        layer = match &otlp.meter {
            Some(provider) => layer.with_meter_provider(provider),
            None => layer.without_meter(),
        };
        layer.build()
    }

    /// The bearer token of the HTTP endpoints: the environment's, else the builder's.
    fn token(&self) -> Option<String> {
        self.live_env
            .token
            .clone()
            .or_else(|| self.builder.http_token.0.clone())
    }

    #[cfg(feature = "http")]
    fn api_settings(&self) -> endpoint::ApiSettings {
        endpoint::ApiSettings {
            objectives: self
                .live_env
                .objectives(self.builder.health.clone().unwrap_or_default()),
            stream_interval: self
                .live_env
                .stream_interval
                .or(self.builder.stream_interval)
                .unwrap_or(DEFAULT_STREAM_INTERVAL),
        }
    }

    /// Logs filtered per layer (so that spans still reach the metrics and tracing layers), the
    /// spanmetrics layer and the OpenTelemetry tracing layer, as the global subscriber.
    fn install_subscriber(&self, layer: SpanMetricsLayer, otlp: &Otlp) -> Result<(), InitError> {
        let directives = self
            .settings
            .rust_log
            .clone()
            .or_else(|| self.builder.default_log_filter.clone())
            .unwrap_or_else(|| "info".to_owned());
        let shown_internal = named_export_crates(&directives);
        // Both sources were checked in `install`; `info` is only a fallback that cannot happen.
        let env_filter = EnvFilter::builder()
            .parse(&directives)
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let fmt_layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(env_filter.and(filter_fn(move |m| {
                export_crate(m.target()).is_none_or(|c| shown_internal.contains(&c))
            })));
        let subscriber = tracing_subscriber::registry().with(fmt_layer);
        let subscriber = subscriber
            .with(layer)
            .with(otel_layer(otlp))
            .with(log_layer(otlp, &self.settings.logs_filter));
        tracing::subscriber::set_global_default(subscriber).map_err(|_| InitError::AlreadyInstalled)
    }

    fn log_start(&self, prometheus: Option<SocketAddr>) {
        let s = &self.settings;
        const T: &str = "spanmetrics::telemetry";
        match prometheus {
            Some(addr) => {
                if cfg!(feature = "http") {
                    tracing::info!(target: T, "Prometheus metrics on http://{addr}/metrics, health on http://{addr}/health, dashboard on http://{addr}/")
                } else {
                    tracing::info!(target: T, "Prometheus metrics on http://{addr}/metrics")
                }
            }
            None => tracing::info!(target: T, "Prometheus endpoint off"),
        }
        if s.sdk_disabled {
            tracing::info!(target: T, "OTLP export off: OTEL_SDK_DISABLED=true");
            return;
        }
        for (signal, target, none, variable) in [
            (
                "traces",
                &s.traces,
                s.traces_exporter_none,
                "OTEL_TRACES_EXPORTER",
            ),
            (
                "metrics",
                &s.metrics,
                s.metrics_exporter_none,
                "OTEL_METRICS_EXPORTER",
            ),
            ("logs", &s.logs, s.logs_exporter_none, "OTEL_LOGS_EXPORTER"),
        ] {
            match target {
                Some(t) => {
                    tracing::info!(target: T, "OTLP {signal} export to {} ({:?})", t.endpoint, t.protocol)
                }
                None if none => {
                    tracing::info!(target: T, "OTLP {signal} export off: {variable}=none")
                }
                None => {
                    tracing::info!(target: T, "OTLP {signal} export off: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4317) to turn it on")
                }
            }
        }
    }
}

/// tracing-opentelemetry's span layer on the pipeline's tracer, when traces are exported;
/// the export machinery's own spans are never exported (they would feed back into it).
fn otel_layer<S>(otlp: &Otlp) -> Option<impl Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    otlp.tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer_with_scope(crate::scope()))
            .with_filter(filter_fn(|m| !is_export_internal(m.target())))
    })
}

/// The OpenTelemetry log bridge on the pipeline's logger, when logs are exported: the events
/// `directives` (`SPANMETRICS_OTLP_LOGS_FILTER`) pass become OTLP log records, with the trace
/// and span ids of the span they happen in. The export machinery's own events, and the
/// pipeline's warnings about it, are never exported (they would feed back into it).
#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
fn log_layer<S>(otlp: &Otlp, directives: &str) -> Option<impl Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    // Checked when the settings were read; `info` is only a fallback that cannot happen.
    let filter = EnvFilter::builder()
        .parse(directives)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    otlp.logger.as_ref().map(|provider| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(provider)
            .with_filter(filter.and(filter_fn(|m| {
                !is_export_internal(m.target())
                    && !crate::config::in_module(m.target(), "spanmetrics::telemetry")
            })))
    })
}

/// No OTLP exporter is built in: no logs to export.
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
fn log_layer<S>(_otlp: &Otlp, _directives: &str) -> Option<TelemetryLayer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    None
}

/// The OpenTelemetry providers, for each signal exported over OTLP, replacing whatever
/// global provider was set before.
fn install_providers(otlp: &Otlp) {
    if let Some(provider) = &otlp.tracer {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    if let Some(provider) = &otlp.meter {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
}

/// No OTLP exporter is built in: no providers.
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
fn build_otlp(
    _to: &Destinations,
    _settings: &Settings,
    _resource: &Resource,
    _stats: &Signals,
) -> Result<Otlp, InitError> {
    Ok(Otlp {
        tracer: None,
        meter: None,
        logger: None,
        runtime: None,
    })
}

fn instance_id() -> String {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let hex = format!("{:032x}", RandomIdGenerator::default().new_trace_id());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run by CI in the builds without the `http` feature.
    #[cfg(not(feature = "http"))]
    #[test]
    fn live_endpoint_settings_need_the_http_feature() {
        let from_env = Telemetry::builder()
            .with_env([("SPANMETRICS_HEALTH_WINDOW".to_owned(), "5m".to_owned())])
            .prepare();
        match from_env {
            Err(InitError::NotBuiltIn {
                setting, feature, ..
            }) => assert_eq!(
                (setting.as_str(), feature),
                ("SPANMETRICS_HEALTH_WINDOW", "http")
            ),
            Err(other) => panic!("expected NotBuiltIn, got {other}"),
            Ok(_) => panic!("expected NotBuiltIn, got settings"),
        }
        let from_builder = Telemetry::builder()
            .with_env(Vec::new())
            .with_slow_threshold(Duration::from_millis(5))
            .prepare();
        assert!(matches!(
            from_builder,
            Err(InitError::NotBuiltIn {
                feature: "http",
                ..
            })
        ));
        assert!(Telemetry::builder().with_env(Vec::new()).prepare().is_ok());
    }

    #[test]
    fn only_the_export_crates_and_their_modules_are_internal() {
        for internal in [
            "h2",
            "h2::codec::framed_read",
            "hyper",
            "hyper::proto::h1::conn",
            "hyper_util::client::legacy",
            "tonic::transport",
            "tower::buffer::worker",
            "reqwest::connect",
            "opentelemetry",
            "opentelemetry_sdk",
            "opentelemetry-otlp",
            "opentelemetry_otlp::exporter",
            "opentelemetry-http",
        ] {
            assert!(is_export_internal(internal), "{internal}");
        }
        for user in [
            "hyperbot",
            "hyperbot::commands",
            "tower_defense",
            "h2o_app",
            "tonicity",
            "reqwests",
            "opentelemetry_extra_app",
            "my_app::h2",
            "spanmetrics::telemetry",
        ] {
            assert!(!is_export_internal(user), "{user}");
        }
    }

    #[test]
    fn log_directives_show_only_the_export_crates_they_name() {
        assert_eq!(named_export_crates("auth2=debug,hyperbot=trace"), [""; 0]);
        assert_eq!(named_export_crates("debug"), [""; 0]);
        assert_eq!(named_export_crates("trace,tower_defense=info"), [""; 0]);
        assert_eq!(
            named_export_crates("info,h2=debug, hyper::proto=trace"),
            ["h2", "hyper"]
        );
        assert_eq!(
            named_export_crates("opentelemetry_sdk[export]=debug,tonic"),
            ["opentelemetry_sdk", "tonic"]
        );
    }

    #[cfg(feature = "otlp-grpc")]
    /// The gRPC runtime is built before the exporters; an exporter error after that must come
    /// back as an `InitError` even inside the caller's tokio runtime, where dropping a runtime
    /// panics ("Cannot drop a runtime in a context where blocking is not allowed").
    #[tokio::test]
    async fn an_exporter_error_inside_a_tokio_runtime_is_returned_not_panicked() {
        let mut settings = Env::from_map([(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            "http://127.0.0.1:4317".to_owned(),
        )])
        .settings()
        .expect("valid settings");
        // The traces exporter (and the runtime) are built, then the metrics exporter fails.
        if let Some(metrics) = settings.metrics.as_mut() {
            metrics.endpoint = "http://not a host:4317".to_owned();
        }
        let result = build_otlp(
            &destinations(&settings).expect("no TLS files"),
            &settings,
            &Resource::builder_empty().build(),
            &Signals::default(),
        );
        match result {
            Err(InitError::Exporter { signal, .. }) => assert_eq!(signal, "metrics"),
            Err(other) => panic!("expected an exporter error, got {other}"),
            Ok(_) => panic!("expected an exporter error, got providers"),
        }
    }
}
