//! The export pipeline: one call sets up logging, the spanmetrics layer, OTLP traces and
//! metrics, the Prometheus endpoint and process metrics, configured by `OTEL_*` variables.

mod env;
mod guard;
mod live_env;
mod names;
mod otlp;
mod process;
mod prometheus;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer as _;

pub use guard::{ShutdownError, TelemetryGuard};

use self::env::{Env, Protocol, Settings};
use self::live_env::LiveEnv;
use self::otlp::ExportStats;
use crate::live::api::Api;
use crate::live::LiveStats;
use crate::HealthObjectives;

/// Default interval of `/api/stream` summaries.
const DEFAULT_STREAM_INTERVAL: Duration = Duration::from_secs(1);
/// Default floor of the slow threshold of `/api/commands/recent?outcome=slow`.
const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_millis(100);
/// Clients of `/api/stream` at a time.
const MAX_STREAM_CLIENTS: usize = 16;

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
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}: {source}. Check the OTEL_EXPORTER_OTLP_* variables")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The endpoint it was built for.
        endpoint: String,
        /// What the exporter reported.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The Prometheus endpoint could not listen on its address.
    #[error("the Prometheus endpoint cannot listen on {addr}: {source}. Set SPANMETRICS_PROMETHEUS_LISTEN to a free address (port 0 picks one) or to `off`")]
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
    /// A global `tracing` subscriber is already set (by an earlier `init`, or another crate).
    #[error("a global tracing subscriber is already installed; call spanmetrics::init() once, at the start of main, instead of other subscriber set-up")]
    AlreadyInstalled,
}

/// Sets up everything from the environment.
///
/// | Variable | Accepted values | Default |
/// |---|---|---|
/// | `OTEL_SDK_DISABLED` | `true`, `false` | `false` (`true`: no OTLP export; Prometheus stays) |
/// | `OTEL_SERVICE_NAME` | any text | `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else [`TelemetryBuilder::with_service_name`], else `unknown_service:<executable>` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,…` (values percent-decoded) | none; `service.instance.id` (random per process), `host.name` and `process.pid` are added unless set |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http(s)://host:port[/base]`; for HTTP `/v1/traces` and `/v1/metrics` are appended | unset: **no OTLP export** (the start-up log says how to turn it on) |
/// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `…_METRICS_ENDPOINT` | full URL, used as given | the generic one |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL` (and `_TRACES_`/`_METRICS_`) | `grpc`, `http/protobuf` | `grpc` |
/// | `OTEL_EXPORTER_OTLP_HEADERS` (and `_TRACES_`/`_METRICS_`) | `key=value,…` | none |
/// | `OTEL_EXPORTER_OTLP_TIMEOUT` (and `_TRACES_`/`_METRICS_`) | milliseconds > 0 | `10000` |
/// | `OTEL_TRACES_SAMPLER` | `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio` | `parentbased_always_on` (command metrics always count 100% of commands) |
/// | `OTEL_TRACES_SAMPLER_ARG` | ratio `0`…`1` | `1` |
/// | `OTEL_METRIC_EXPORT_INTERVAL` | milliseconds > 0 | `60000` |
/// | `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` | `cumulative`, `delta`, `lowmemory` | `cumulative` |
/// | `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION` | `base2_exponential_bucket_histogram`, `explicit_bucket_histogram` (100 µs … 60 s) | `base2_exponential_bucket_histogram` |
/// | `SPANMETRICS_PROMETHEUS_LISTEN` | `host:port` (port `0` picks a free one), `off` | `127.0.0.1:9464` |
/// | `RUST_LOG` | `tracing` directives; filters only the log output, never the metrics or traces | `info` |
/// | `SPANMETRICS_HTTP_TOKEN` | 8…256 printable ASCII characters: bearer token for every endpoint but `/health/live` and `/health/ready` | none |
/// | `SPANMETRICS_HEALTH_*`, `SPANMETRICS_STREAM_INTERVAL_MS`, `SPANMETRICS_SLOW_MS` | see [`HealthObjectives`] and the README | |
///
/// The listener also serves `/health`, `/health/live`, `/health/ready`, `/api/commands`,
/// `/api/commands/recent`, `/api/stream` and a dashboard page at `/`, from per-command
/// statistics kept in bounded rolling windows (1 s / 10 s / 1 min buckets; percentiles from a
/// log-linear histogram with 4 bins per doubling, within about ±9%).
///
/// A bad value gives [`InitError::InvalidEnv`] naming the variable, the value and what is
/// accepted. Logs go to stderr.
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

    /// Reads the settings from these variables instead of the process environment.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = Some(vars.into_iter().collect());
        self
    }

    /// Sets everything up and installs the global `tracing` subscriber (and, when none is set
    /// yet, the global `metrics` recorder and OpenTelemetry providers).
    pub fn install(mut self) -> Result<TelemetryGuard, InitError> {
        let env = match self.env.take() {
            Some(vars) => Env::from_map(vars),
            None => Env::from_process()?,
        };
        let settings = env.settings()?;
        let live_env = live_env::settings(&env)?;
        if tracing::dispatcher::has_been_set() {
            return Err(InitError::AlreadyInstalled);
        }
        Installer {
            builder: self,
            settings,
            live_env,
        }
        .install()
    }
}

struct Installer {
    builder: TelemetryBuilder,
    settings: Settings,
    live_env: LiveEnv,
}

/// Targets of the export machinery: never exported as spans (that would feed back into
/// itself) and their internal logs are not shown unless `RUST_LOG` asks for them.
fn is_export_internal(target: &str) -> bool {
    ["opentelemetry", "tonic", "h2", "hyper", "tower", "reqwest"]
        .iter()
        .any(|p| target.starts_with(p))
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

    fn install(mut self) -> Result<TelemetryGuard, InitError> {
        let settings = self.settings.clone();
        let otel = !settings.sdk_disabled;
        let traces_target = settings.traces.clone().filter(|_| otel);
        let metrics_target = settings.metrics.clone().filter(|_| otel);
        let resource = self.resource();

        // Prometheus: bind first, so a busy port is reported before anything is installed.
        let listen = match self.builder.prometheus_listen {
            Some(addr) => addr,
            None => settings
                .prometheus_listen
                .unwrap_or_else(|| env::DEFAULT_PROMETHEUS_LISTEN.parse().ok()),
        };
        let listener = listen
            .map(|addr| {
                TcpListener::bind(addr)
                    .map_err(|source| InitError::PrometheusListen { addr, source })
            })
            .transpose()?;
        let recorder = Arc::new(prometheus::recorder());
        let prometheus_handle = recorder.handle();

        // gRPC exporters need a tokio runtime; they get their own, whose threads are not
        // traced (so the export machinery never records itself).
        let needs_runtime = [&traces_target, &metrics_target]
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.protocol == Protocol::Grpc));
        let runtime = if needs_runtime {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("spanmetrics-otlp")
                .on_thread_start(|| {
                    std::mem::forget(tracing::subscriber::set_default(
                        tracing::subscriber::NoSubscriber::default(),
                    ));
                })
                .enable_all()
                .build()
                .map_err(|source| InitError::Start {
                    what: "export runtime",
                    source,
                })?;
            Some(runtime)
        } else {
            None
        };
        let trace_stats = Arc::new(ExportStats::default());
        let metric_stats = Arc::new(ExportStats::default());
        let (tracer_provider, meter_provider) = {
            let _entered = runtime.as_ref().map(|r| r.enter());
            let tracer_provider = traces_target
                .as_ref()
                .map(|t| otlp::tracer_provider(t, &settings, resource.clone(), trace_stats.clone()))
                .transpose()?;
            let meter_provider = metrics_target
                .as_ref()
                .map(|t| {
                    otlp::meter_provider(Some(t), &settings, resource.clone(), metric_stats.clone())
                })
                .transpose()?;
            (tracer_provider, meter_provider)
        };

        // The spanmetrics layer feeds the Prometheus recorder and the OTLP meter provider.
        let mut layer = self.builder.layer.take().unwrap_or_default();
        layer = layer.with_recorder(Arc::clone(&recorder));
        // Live statistics for the HTTP endpoints, when there is a listener to serve them.
        let live = listener.as_ref().map(|_| {
            let slow = self
                .live_env
                .slow_threshold
                .or(self.builder.slow_threshold)
                .unwrap_or(DEFAULT_SLOW_THRESHOLD);
            Arc::new(LiveStats::new(layer.max_series(), slow))
        });
        if let Some(live) = &live {
            layer = layer.with_live(Arc::clone(live));
        }
        layer = match &meter_provider {
            Some(provider) => layer.with_meter_provider(provider),
            None => layer.without_meter(),
        };
        let layer = layer.build();
        let spanmetrics = layer.handle();
        if let Some(provider) = &meter_provider {
            use opentelemetry::metrics::MeterProvider as _;
            let meter = provider.meter_with_scope(crate::scope());
            process::register_otel(&meter);
            otlp::register_export_metrics(&meter, trace_stats.clone(), metric_stats.clone());
        }

        // Logs: filtered per layer, so spans still reach the metrics and tracing layers.
        let directives = settings
            .rust_log
            .clone()
            .or_else(|| self.builder.default_log_filter.clone())
            .unwrap_or_else(|| "info".to_owned());
        let show_internal = directives.contains("opentelemetry")
            || ["tonic", "h2", "hyper", "tower", "reqwest"]
                .iter()
                .any(|t| directives.contains(t));
        let env_filter = EnvFilter::builder()
            .parse(&directives)
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let fmt_layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(env_filter.and(filter_fn(move |m| {
                show_internal || !is_export_internal(m.target())
            })));
        let otel_layer = tracer_provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer_with_scope(crate::scope()))
                .with_filter(filter_fn(|m| !is_export_internal(m.target())))
        });
        let subscriber = tracing_subscriber::registry()
            .with(fmt_layer)
            .with(layer)
            .with(otel_layer);
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| InitError::AlreadyInstalled)?;

        // Global facades, when nobody else set them.
        if metrics::set_global_recorder(Arc::clone(&recorder)).is_err() {
            tracing::debug!(target: "spanmetrics::telemetry", "a global metrics recorder is already set; spanmetrics uses its own Prometheus recorder");
        }
        if let Some(provider) = &tracer_provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        if let Some(provider) = &meter_provider {
            opentelemetry::global::set_meter_provider(provider.clone());
        }

        let server = match listener {
            Some(listener) => {
                let api = live.map(|live| {
                    let (traces, metrics) = (trace_stats.clone(), metric_stats.clone());
                    Arc::new(Api {
                        live,
                        spanmetrics: spanmetrics.clone(),
                        objectives: self
                            .live_env
                            .objectives(self.builder.health.clone().unwrap_or_default()),
                        token: self
                            .live_env
                            .token
                            .clone()
                            .or_else(|| self.builder.http_token.0.clone()),
                        failing_exports: Box::new(move || {
                            [("traces", &traces), ("metrics", &metrics)]
                                .into_iter()
                                .filter(|(_, s)| s.is_failing())
                                .map(|(name, _)| name)
                                .collect()
                        }),
                        stream_interval: self
                            .live_env
                            .stream_interval
                            .or(self.builder.stream_interval)
                            .unwrap_or(DEFAULT_STREAM_INTERVAL),
                        max_stream_clients: MAX_STREAM_CLIENTS,
                        stream_clients: Arc::default(),
                    })
                });
                let scrape = Arc::new(prometheus::Scrape {
                    api,
                    handle: prometheus_handle,
                    recorder,
                    spanmetrics: spanmetrics.clone(),
                    traces: trace_stats,
                    metrics: metric_stats,
                });
                scrape.describe();
                Some(
                    prometheus::Server::start(listener, scrape).map_err(|source| {
                        InitError::Start {
                            what: "Prometheus endpoint",
                            source,
                        }
                    })?,
                )
            }
            None => None,
        };
        let prometheus_addr = server.as_ref().map(|s| s.addr);
        // Before the start-up lines, so whoever reads those has seen it too.
        if let Some(addr) = prometheus_addr {
            let token = self.live_env.token.is_some() || self.builder.http_token.0.is_some();
            if !addr.ip().is_loopback() && !token {
                tracing::warn!(target: "spanmetrics::telemetry", "the HTTP endpoints on {addr} are reachable from other hosts and no token is set: anyone who can connect sees the metrics and the dashboard. Set SPANMETRICS_HTTP_TOKEN (or TelemetryBuilder::with_http_token), or listen on 127.0.0.1");
            }
        }
        self.log_start(prometheus_addr);
        Ok(TelemetryGuard::new(
            spanmetrics,
            prometheus_addr,
            guard::Parts {
                tracer: tracer_provider,
                meter: meter_provider,
                server,
                runtime,
            },
        ))
    }

    fn log_start(&self, prometheus: Option<SocketAddr>) {
        let s = &self.settings;
        const T: &str = "spanmetrics::telemetry";
        match prometheus {
            Some(addr) => {
                tracing::info!(target: T, "Prometheus metrics on http://{addr}/metrics, health on http://{addr}/health, dashboard on http://{addr}/")
            }
            None => tracing::info!(target: T, "Prometheus endpoint off"),
        }
        if s.sdk_disabled {
            tracing::info!(target: T, "OTLP export off: OTEL_SDK_DISABLED=true");
            return;
        }
        for (signal, target) in [("traces", &s.traces), ("metrics", &s.metrics)] {
            match target {
                Some(t) => {
                    tracing::info!(target: T, "OTLP {signal} export to {} ({:?})", t.endpoint, t.protocol)
                }
                None => {
                    tracing::info!(target: T, "OTLP {signal} export off: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4317) to turn it on")
                }
            }
        }
    }
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
