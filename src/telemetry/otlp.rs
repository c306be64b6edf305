//! The OTLP side: tracer, meter and logger providers exporting over gRPC or HTTP/protobuf
//! (with compression and TLS), each exporter wrapped to count failures and log one warning per
//! outage, and every queue gated so that what it cannot take is counted.

#[cfg(feature = "otlp-http")]
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::WithExportConfig;
#[cfg(feature = "otlp-http")]
use opentelemetry_otlp::WithHttpConfig;
#[cfg(feature = "otlp-grpc")]
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchLogProcessor, LogBatch, LogExporter, LogProcessor, SdkLogRecord, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

use super::env::{
    Compression, HistogramAggregation, OtlpTarget, Protocol, Sampler, Settings, Temporality,
};
use super::error::InitError;
use super::export_stats::{ExportStats, Signals};
use super::providers::{Destination, Destinations, Otlp};
use super::runtime::ExportRuntime;

/// The admission gate in front of an SDK batch processor (spans or log records): admits an
/// item only while fewer than the processor's queue capacity are waiting for export, and
/// counts the others as dropped. The processor itself drops items silently when its queue is
/// full (e.g. while the collector hangs); with this gate its queue never fills, so every lost
/// item is counted. Never blocks: one atomic update per item.
#[derive(Debug)]
struct Gate {
    capacity: usize,
    /// Items handed to the processor and not yet to its exporter.
    queued: AtomicUsize,
    stats: Arc<ExportStats>,
}

impl Gate {
    fn new(capacity: usize, stats: Arc<ExportStats>) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            queued: AtomicUsize::new(0),
            stats,
        })
    }

    /// Whether one more item may enter the processor's queue; counted as dropped if not.
    fn admit(&self) -> bool {
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// `items` left the processor's queue for its exporter.
    fn left(&self, items: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(items))
            });
    }
}

/// An exporter (of spans or log records) that empties its gate and counts failures.
#[derive(Debug)]
struct Watched<E> {
    inner: E,
    signal: &'static str,
    endpoint: String,
    gate: Arc<Gate>,
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let items = batch.len();
        self.gate.left(items);
        let result = self.inner.export(batch).await;
        self.gate
            .stats
            .observe(self.signal, &self.endpoint, &result, items);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Watched<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let items = batch.iter().count();
        self.gate.left(items);
        let result = self.inner.export(batch).await;
        self.gate
            .stats
            .observe(self.signal, &self.endpoint, &result, items);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A batch processor behind its [`Gate`].
#[derive(Debug)]
struct Gated<P> {
    inner: P,
    gate: Arc<Gate>,
}

impl<P: SpanProcessor> SpanProcessor for Gated<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.gate.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<P: LogProcessor> LogProcessor for Gated<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if self.gate.admit() {
            self.inner.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A batch processor's queue capacity, read from `variable` as the SDK reads it.
fn queue_capacity(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A metric exporter that counts failures.
struct WatchedMetrics<E> {
    inner: E,
    endpoint: String,
    stats: Arc<ExportStats>,
}

impl<E: PushMetricExporter> PushMetricExporter for WatchedMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.stats.observe("metrics", &self.endpoint, &result, 0);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.inner.temporality()
    }
}

fn exporter_error<'a>(
    signal: &'static str,
    target: &'a OtlpTarget,
) -> impl FnOnce(opentelemetry_otlp::ExporterBuildError) -> InitError + 'a {
    move |source| InitError::Exporter {
        signal,
        endpoint: target.endpoint.clone(),
        source,
    }
}

#[cfg(feature = "otlp-grpc")]
/// The gRPC metadata of `headers`, which `env.rs` checked with these same conversions (an
/// invalid header is an `InitError` there), so none is left out here.
fn metadata(
    headers: &[(String, String)],
) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    let map: http::HeaderMap = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                http::HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map)
}

/// The exporter's compression (`OTEL_EXPORTER_OTLP_COMPRESSION`), as the settings give it.
fn compression(target: &OtlpTarget) -> Option<opentelemetry_otlp::Compression> {
    match target.compression {
        Compression::None => None,
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        Compression::Zstd => Some(opentelemetry_otlp::Compression::Zstd),
    }
}

/// A gRPC exporter builder (of any signal) set up for `to`: endpoint, timeout, headers,
/// compression and TLS.
#[cfg(feature = "otlp-grpc")]
fn tonic<B: WithExportConfig + WithTonicConfig>(builder: B, to: &Destination) -> B {
    let target = &to.target;
    let mut builder = builder
        .with_endpoint(target.endpoint.clone())
        .with_timeout(target.timeout)
        .with_metadata(metadata(&target.headers));
    if let Some(c) = compression(target) {
        builder = builder.with_compression(c);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = to.tls.as_deref().filter(|_| target.is_https()) {
        builder = builder.with_tls_config(super::tls::tonic_config(tls));
    }
    builder
}

/// An HTTP/protobuf exporter builder (of any signal) set up for `to`: endpoint, timeout,
/// headers, compression and, in builds with TLS, the HTTP client.
#[cfg(feature = "otlp-http")]
fn http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    to: &Destination,
) -> Result<B, InitError> {
    let target = &to.target;
    let mut builder = builder
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(target.endpoint.clone())
        .with_timeout(target.timeout)
        .with_headers(target.headers.iter().cloned().collect::<HashMap<_, _>>());
    if let Some(c) = compression(target) {
        builder = builder.with_compression(c);
    }
    #[cfg(feature = "tls")]
    {
        let client =
            super::tls::http_client(to.tls.as_deref(), target.timeout).map_err(InitError::Tls)?;
        builder = builder.with_http_client(client);
    }
    Ok(builder)
}

/// The error for a protocol this build leaves out.
fn not_built_in(target: &OtlpTarget) -> InitError {
    InitError::NotBuiltIn {
        setting: format!("OTLP export to {} ({:?})", target.endpoint, target.protocol),
        what: "this OTLP protocol",
        feature: if target.protocol == Protocol::Grpc {
            "otlp-grpc"
        } else {
            "otlp-http"
        },
    }
}

fn sampler(sampler: Sampler) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as S;
    match sampler {
        Sampler::AlwaysOn => S::AlwaysOn,
        Sampler::AlwaysOff => S::AlwaysOff,
        Sampler::TraceIdRatio(r) => S::TraceIdRatioBased(r),
        Sampler::ParentBasedAlwaysOn => S::ParentBased(Box::new(S::AlwaysOn)),
        Sampler::ParentBasedAlwaysOff => S::ParentBased(Box::new(S::AlwaysOff)),
        Sampler::ParentBasedTraceIdRatio(r) => S::ParentBased(Box::new(S::TraceIdRatioBased(r))),
    }
}

/// Builds the tracer provider. Must run inside the export runtime (tonic needs one).
pub(crate) fn tracer_provider(
    to: &Destination,
    settings: &Settings,
    resource: Resource,
    stats: Arc<ExportStats>,
) -> Result<SdkTracerProvider, InitError> {
    let target = &to.target;
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match target.protocol {
        #[cfg(feature = "otlp-grpc")]
        Protocol::Grpc => tonic(builder.with_tonic(), to).build(),
        #[cfg(feature = "otlp-http")]
        Protocol::HttpProtobuf => http(builder.with_http(), to)?.build(),
        // Refused when the settings were read; kept for builds with one protocol.
        #[allow(unreachable_patterns)]
        _ => return Err(not_built_in(target)),
    }
    .map_err(exporter_error("traces", target))?;
    let capacity = queue_capacity(
        opentelemetry_sdk::trace::OTEL_BSP_MAX_QUEUE_SIZE,
        opentelemetry_sdk::trace::OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT,
    );
    let gate = Gate::new(capacity, stats);
    // The other `OTEL_BSP_*` settings are read by the SDK; the capacity is set explicitly so
    // that the processor and the gate in front of it agree on it.
    let processor = BatchSpanProcessor::builder(Watched {
        inner: exporter,
        signal: "traces",
        endpoint: target.endpoint.clone(),
        gate: gate.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build(),
    )
    .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Gated {
            inner: processor,
            gate,
        })
        .with_sampler(sampler(settings.sampler))
        .with_resource(resource)
        .build())
}

/// Builds the logger provider (the OTLP logs the `tracing` events become). Must run inside
/// the export runtime (tonic needs one).
pub(crate) fn logger_provider(
    to: &Destination,
    resource: Resource,
    stats: Arc<ExportStats>,
) -> Result<SdkLoggerProvider, InitError> {
    let target = &to.target;
    let builder = opentelemetry_otlp::LogExporter::builder();
    let exporter = match target.protocol {
        #[cfg(feature = "otlp-grpc")]
        Protocol::Grpc => tonic(builder.with_tonic(), to).build(),
        #[cfg(feature = "otlp-http")]
        Protocol::HttpProtobuf => http(builder.with_http(), to)?.build(),
        #[allow(unreachable_patterns)]
        _ => return Err(not_built_in(target)),
    }
    .map_err(exporter_error("logs", target))?;
    let capacity = queue_capacity(
        opentelemetry_sdk::logs::OTEL_BLRP_MAX_QUEUE_SIZE,
        opentelemetry_sdk::logs::OTEL_BLRP_MAX_QUEUE_SIZE_DEFAULT,
    );
    let gate = Gate::new(capacity, stats);
    let processor = BatchLogProcessor::builder(Watched {
        inner: exporter,
        signal: "logs",
        endpoint: target.endpoint.clone(),
        gate: gate.clone(),
    })
    .with_batch_config(
        opentelemetry_sdk::logs::BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build(),
    )
    .build();
    Ok(SdkLoggerProvider::builder()
        .with_log_processor(Gated {
            inner: processor,
            gate,
        })
        .with_resource(resource)
        .build())
}

/// Builds the meter provider; without a target it has no reader (it only feeds callbacks).
pub(crate) fn meter_provider(
    to: Option<&Destination>,
    settings: &Settings,
    resource: Resource,
    stats: Arc<ExportStats>,
) -> Result<SdkMeterProvider, InitError> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    if let Some(to) = to {
        let target = &to.target;
        let temporality = match settings.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
            Temporality::LowMemory => opentelemetry_sdk::metrics::Temporality::LowMemory,
        };
        let exporter_builder =
            opentelemetry_otlp::MetricExporter::builder().with_temporality(temporality);
        let exporter = match target.protocol {
            #[cfg(feature = "otlp-grpc")]
            Protocol::Grpc => tonic(exporter_builder.with_tonic(), to).build(),
            #[cfg(feature = "otlp-http")]
            Protocol::HttpProtobuf => http(exporter_builder.with_http(), to)?.build(),
            #[allow(unreachable_patterns)]
            _ => return Err(not_built_in(target)),
        }
        .map_err(exporter_error("metrics", target))?;
        let reader = PeriodicReader::builder(WatchedMetrics {
            inner: exporter,
            endpoint: target.endpoint.clone(),
            stats,
        })
        .with_interval(settings.metric_export_interval)
        .build();
        builder = builder.with_reader(reader);
    }
    if settings.histogram_aggregation == HistogramAggregation::Base2Exponential {
        builder = builder.with_view(|instrument: &Instrument| {
            (instrument.kind() == InstrumentKind::Histogram && instrument.unit() == "s")
                .then(|| {
                    Stream::builder()
                        .with_aggregation(Aggregation::Base2ExponentialHistogram {
                            max_size: 160,
                            max_scale: 20,
                            record_min_max: true,
                        })
                        .build()
                        .ok()
                })
                .flatten()
        });
    }
    Ok(builder.build())
}

/// Builds the OTLP providers. gRPC exporters need a tokio runtime; they get their own, whose
/// threads are not traced (so the export machinery never records itself). On an error the
/// runtime is shut down in the background, so returning the error never panics, even
/// inside the caller's own tokio runtime.
pub(crate) fn build(
    to: &Destinations,
    settings: &Settings,
    resource: &Resource,
    stats: &Signals,
) -> Result<Otlp, InitError> {
    #[cfg(feature = "otlp-grpc")]
    let runtime = export_runtime(to)?;
    #[cfg(not(feature = "otlp-grpc"))]
    let runtime: Option<ExportRuntime> = None;
    // Only the gRPC exporters are built inside the runtime.
    #[cfg(feature = "otlp-grpc")]
    let in_runtime = |to: &Destination| {
        runtime
            .as_ref()
            .filter(|_| to.target.protocol == Protocol::Grpc)
            .and_then(ExportRuntime::enter)
    };
    #[cfg(not(feature = "otlp-grpc"))]
    let in_runtime = |_: &Destination| ();
    let tracer = to
        .traces
        .as_ref()
        .map(|t| {
            let _entered = in_runtime(t);
            tracer_provider(t, settings, resource.clone(), stats.traces.clone())
        })
        .transpose()?;
    let meter = to
        .metrics
        .as_ref()
        .map(|t| {
            let _entered = in_runtime(t);
            meter_provider(Some(t), settings, resource.clone(), stats.metrics.clone())
        })
        .transpose()?;
    let logger = to
        .logs
        .as_ref()
        .map(|t| {
            let _entered = in_runtime(t);
            logger_provider(t, resource.clone(), stats.logs.clone())
        })
        .transpose()?;
    Ok(Otlp {
        tracer,
        meter,
        logger,
        runtime,
    })
}

/// The runtime for the gRPC exporters, when a signal is exported over gRPC.
#[cfg(feature = "otlp-grpc")]
fn export_runtime(to: &Destinations) -> Result<Option<ExportRuntime>, InitError> {
    Ok(if to.any_grpc() {
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
        Some(ExportRuntime::new(runtime))
    } else {
        None
    })
}
