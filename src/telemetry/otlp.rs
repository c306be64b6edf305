//! The OTLP side: a tracer provider and a meter provider exporting over gRPC or HTTP/protobuf,
//! each exporter wrapped to count failures and log one warning per outage.

#[cfg(feature = "otlp-http")]
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::WithExportConfig;
#[cfg(feature = "otlp-http")]
use opentelemetry_otlp::WithHttpConfig;
#[cfg(feature = "otlp-grpc")]
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::error::OTelSdkResult;
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
use super::export_stats::ExportStats;
use super::providers::Otlp;
use super::runtime::ExportRuntime;

/// A span exporter that counts failures and dropped spans.
#[derive(Debug)]
struct WatchedSpans<E> {
    inner: E,
    endpoint: String,
    stats: Arc<ExportStats>,
    /// Spans handed to the batch processor and not yet to this exporter.
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for WatchedSpans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let items = batch.len();
        // These spans left the processor's queue.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(items))
            });
        let result = self.inner.export(batch).await;
        self.stats.observe("traces", &self.endpoint, &result, items);
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

/// In front of the SDK's batch span processor: admits a span only while fewer than the
/// processor's queue capacity are waiting for export, and counts the others in
/// `dropped_spans`. The processor itself drops spans silently when its queue is full (e.g.
/// while the collector hangs); with this gate its queue never fills, so every lost span is
/// counted. Never blocks: one atomic update per span.
#[derive(Debug)]
struct CountedQueue<P> {
    inner: P,
    capacity: usize,
    queued: Arc<AtomicUsize>,
    stats: Arc<ExportStats>,
}

impl<P: SpanProcessor> SpanProcessor for CountedQueue<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            self.stats.dropped_spans.fetch_add(1, Ordering::Relaxed);
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

/// The batch processor's queue capacity, read as the SDK reads it.
fn span_queue_capacity() -> usize {
    std::env::var(opentelemetry_sdk::trace::OTEL_BSP_MAX_QUEUE_SIZE)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(opentelemetry_sdk::trace::OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT)
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

#[cfg(feature = "otlp-grpc")]
fn compressed_tonic<B: WithTonicConfig>(builder: B, target: &OtlpTarget) -> B {
    match compression(target) {
        Some(c) => builder.with_compression(c),
        None => builder,
    }
}

#[cfg(feature = "otlp-http")]
fn compressed_http<B: WithHttpConfig>(builder: B, target: &OtlpTarget) -> B {
    match compression(target) {
        Some(c) => builder.with_compression(c),
        None => builder,
    }
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
    target: &OtlpTarget,
    settings: &Settings,
    resource: Resource,
    stats: Arc<ExportStats>,
) -> Result<SdkTracerProvider, InitError> {
    let exporter = match target.protocol {
        #[cfg(feature = "otlp-grpc")]
        Protocol::Grpc => compressed_tonic(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(target.endpoint.clone())
                .with_timeout(target.timeout)
                .with_metadata(metadata(&target.headers)),
            target,
        )
        .build(),
        #[cfg(feature = "otlp-http")]
        Protocol::HttpProtobuf => compressed_http(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(target.endpoint.clone())
                .with_timeout(target.timeout)
                .with_headers(target.headers.iter().cloned().collect::<HashMap<_, _>>()),
            target,
        )
        .build(),
        // Refused when the settings were read; kept for builds with one protocol.
        #[allow(unreachable_patterns)]
        _ => return Err(not_built_in(target)),
    }
    .map_err(exporter_error("traces", target))?;
    let capacity = span_queue_capacity();
    let queued = Arc::new(AtomicUsize::new(0));
    // The other `OTEL_BSP_*` settings are read by the SDK; the capacity is set explicitly so
    // that the processor and the gate in front of it agree on it.
    let processor = BatchSpanProcessor::builder(WatchedSpans {
        inner: exporter,
        endpoint: target.endpoint.clone(),
        stats: stats.clone(),
        queued: queued.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build(),
    )
    .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(CountedQueue {
            inner: processor,
            capacity,
            queued,
            stats,
        })
        .with_sampler(sampler(settings.sampler))
        .with_resource(resource)
        .build())
}

/// Builds the meter provider; without a target it has no reader (it only feeds callbacks).
pub(crate) fn meter_provider(
    target: Option<&OtlpTarget>,
    settings: &Settings,
    resource: Resource,
    stats: Arc<ExportStats>,
) -> Result<SdkMeterProvider, InitError> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    if let Some(target) = target {
        let temporality = match settings.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
            Temporality::LowMemory => opentelemetry_sdk::metrics::Temporality::LowMemory,
        };
        let exporter = match target.protocol {
            #[cfg(feature = "otlp-grpc")]
            Protocol::Grpc => compressed_tonic(
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_temporality(temporality)
                    .with_endpoint(target.endpoint.clone())
                    .with_timeout(target.timeout)
                    .with_metadata(metadata(&target.headers)),
                target,
            )
            .build(),
            #[cfg(feature = "otlp-http")]
            Protocol::HttpProtobuf => compressed_http(
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_temporality(temporality)
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(target.endpoint.clone())
                    .with_timeout(target.timeout)
                    .with_headers(target.headers.iter().cloned().collect::<HashMap<_, _>>()),
                target,
            )
            .build(),
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
    traces: Option<&OtlpTarget>,
    metrics: Option<&OtlpTarget>,
    settings: &Settings,
    resource: &Resource,
    trace_stats: &Arc<ExportStats>,
    metric_stats: &Arc<ExportStats>,
) -> Result<Otlp, InitError> {
    #[cfg(feature = "otlp-grpc")]
    let runtime = export_runtime(traces, metrics)?;
    #[cfg(not(feature = "otlp-grpc"))]
    let runtime: Option<ExportRuntime> = None;
    // Only the gRPC exporters are built inside the runtime.
    #[cfg(feature = "otlp-grpc")]
    let in_runtime = |target: &OtlpTarget| {
        runtime
            .as_ref()
            .filter(|_| target.protocol == Protocol::Grpc)
            .and_then(ExportRuntime::enter)
    };
    #[cfg(not(feature = "otlp-grpc"))]
    let in_runtime = |_: &OtlpTarget| ();
    let tracer = traces
        .map(|t| {
            let _entered = in_runtime(t);
            tracer_provider(t, settings, resource.clone(), trace_stats.clone())
        })
        .transpose()?;
    let meter = metrics
        .map(|t| {
            let _entered = in_runtime(t);
            meter_provider(Some(t), settings, resource.clone(), metric_stats.clone())
        })
        .transpose()?;
    Ok(Otlp {
        tracer,
        meter,
        runtime,
    })
}

/// The runtime for the gRPC exporters, when a signal is exported over gRPC.
#[cfg(feature = "otlp-grpc")]
fn export_runtime(
    traces: Option<&OtlpTarget>,
    metrics: Option<&OtlpTarget>,
) -> Result<Option<ExportRuntime>, InitError> {
    let is_grpc = |t: Option<&OtlpTarget>| t.is_some_and(|t| t.protocol == Protocol::Grpc);
    Ok(if is_grpc(traces) || is_grpc(metrics) {
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
