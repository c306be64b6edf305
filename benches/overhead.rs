//! What one call of a trivial command handler costs under each way of getting its metrics.
//!
//! Every configuration runs the same handler, `ping()`, a sync function instrumented with
//! `#[tracing::instrument(fields(command = "ping"))]`, under a scoped dispatcher built for that
//! benchmark alone (no global subscriber, recorder or meter provider). Nothing leaves the
//! process: the tracer provider has no exporter, the meter providers an in-memory one that
//! is never due during a run.
//!
//! Groups, in the order they run:
//! - `throughput`: the same total number of calls split over 1 or 2 threads (wall time per call).
//!   First, because the registry stops scaling once the main thread has used tracing.
//! - `overhead`: caller's cost per call, single thread, configurations 1–8 (see `BENCHMARKS.md`).
//! - `failing`: the same handler failing on every call (`err(Debug)`), registry vs spanmetrics,
//!   and spanmetrics with the pipeline's OTLP log bridge (the ERROR event becomes a log record
//!   handed to a batch processor whose exporter discards it).
//! - `forwarding`: spanmetrics' background cost, i.e. `SpanMetricsHandle::flush()` time per
//!   forwarded call (one `Finished` record), which the `overhead` group does not see because it
//!   happens on the layer's own thread.
//!
//! Run: `cargo bench --bench overhead -- --warm-up-time 1 --measurement-time 3`

mod support;

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use spanmetrics::{SpanMetricsHandle, SpanMetricsLayer};
use tracing::dispatcher::{self, Dispatch};
use tracing_core::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The trivial handler every tracing configuration calls.
#[tracing::instrument(fields(command = "ping"))]
fn ping() -> u64 {
    black_box(42)
}

/// The same handler without any tracing, for the hand-timed `metrics` baseline.
#[inline(never)]
fn ping_plain() -> u64 {
    black_box(42)
}

/// What a tracing-opentelemetry user writes to get a duration histogram out of `MetricsLayer`:
/// time the handler by hand and emit a `histogram.`-prefixed event with the attributes.
#[tracing::instrument(fields(command = "ping"))]
fn ping_self_timed() -> u64 {
    let start = Instant::now();
    let out = black_box(42);
    tracing::info!(
        histogram.command.duration = start.elapsed().as_secs_f64(),
        command = "ping",
        outcome = "ok"
    );
    out
}

/// What the failing handler returns.
#[derive(Debug)]
enum PingError {
    Timeout {
        #[allow(dead_code)]
        after_ms: u64,
    },
}

impl std::fmt::Display for PingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

/// The same handler failing every time: `#[instrument(err(Debug))]` emits an ERROR event with
/// the error's `Debug` text, from which spanmetrics derives `error.type = "Timeout"`.
#[tracing::instrument(fields(command = "fail"), err(Debug))]
fn fail() -> Result<u64, PingError> {
    Err(PingError::Timeout {
        after_ms: black_box(5),
    })
}

/// A layer that does nothing: the registry's own cost.
struct NoopLayer;

impl<S> Layer<S> for NoopLayer where S: tracing::Subscriber + for<'a> LookupSpan<'a> {}

/// A lock-free log2-bucketed histogram of nanoseconds.
struct AtomicHistogram {
    buckets: [AtomicU64; 65],
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - ns.leading_zeros()) as usize;
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// The least a span-timing layer can do: an `Instant` in the span's extensions at creation,
/// one atomic histogram record at close.
struct MinimalTimingLayer {
    histogram: Arc<AtomicHistogram>,
}

struct StartedAt(Instant);

impl<S> Layer<S> for MinimalTimingLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(StartedAt(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(StartedAt(start)) = span.extensions_mut().remove::<StartedAt>() {
                self.histogram.record(start.elapsed());
            }
        }
    }
}

fn prometheus_recorder() -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new()
        .set_buckets(spanmetrics::names::DEFAULT_BUCKETS)
        .expect("the default buckets are valid")
        .build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// A meter provider whose reader aggregates in memory and exports (to memory) only once an
/// hour, so no collection happens during a benchmark.
fn meter_provider() -> SdkMeterProvider {
    let reader = PeriodicReader::builder(InMemoryMetricExporter::default())
        .with_interval(Duration::from_secs(3600))
        .build();
    SdkMeterProvider::builder().with_reader(reader).build()
}

fn tracer_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .build()
}

type SharedSubscriber = Arc<dyn tracing::Subscriber + Send + Sync>;

/// spanmetrics feeding a Prometheus recorder and an OpenTelemetry meter provider.
struct SpanMetricsSetup {
    layer: Option<SpanMetricsLayer>,
    handle: SpanMetricsHandle,
    prometheus: PrometheusHandle,
    _provider: SdkMeterProvider,
    /// Calls counted and records dropped at the last report.
    reported: (u64, u64),
    /// Whether a benchmark using this layer ran since the last report (a filter may skip it).
    ran: Cell<bool>,
}

fn spanmetrics_setup(
    configure: impl FnOnce(spanmetrics::Builder) -> spanmetrics::Builder,
) -> SpanMetricsSetup {
    let (recorder, prometheus) = prometheus_recorder();
    let provider = meter_provider();
    let builder = SpanMetricsLayer::builder()
        .with_recorder(recorder)
        .with_meter_provider(&provider);
    let layer = configure(builder).build();
    let handle = layer.handle();
    SpanMetricsSetup {
        layer: Some(layer),
        handle,
        prometheus,
        _provider: provider,
        reported: (0, 0),
        ran: Cell::new(false),
    }
}

impl SpanMetricsSetup {
    fn take_layer(&mut self) -> SpanMetricsLayer {
        self.layer.take().expect("the layer is used once")
    }

    /// A dispatcher over `registry + spanmetrics`, built like the other configurations.
    fn dispatch(&mut self) -> Dispatch {
        Dispatch::new(tracing_subscriber::registry().with(self.take_layer()))
    }

    /// The same subscriber behind an `Arc`, to build several dispatchers from.
    fn shared_subscriber(&mut self) -> SharedSubscriber {
        Arc::new(tracing_subscriber::registry().with(self.take_layer()))
    }

    /// Checks the measured path really produced metrics, and says how many records were dropped
    /// since the last report (a dropped record is about as cheap for the caller as a buffered
    /// one, but is lost: the background thread fell behind).
    fn report(&mut self, name: &str) {
        if !self.ran.replace(false) {
            return;
        }
        self.handle.flush();
        let text = self.prometheus.render();
        let count = text
            .lines()
            .find(|l| {
                l.starts_with("command_duration_seconds_count")
                    && l.contains("command=\"ping\"")
                    && l.contains("outcome=\"ok\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let dropped = self.handle.dropped();
        let new_count = count.saturating_sub(self.reported.0);
        let new_dropped = dropped.saturating_sub(self.reported.1);
        self.reported = (count, dropped);
        assert!(
            new_count > 0,
            "{name}: no command_duration_seconds count for ping; the bench measured nothing"
        );
        eprintln!(
            "{name}: {new_count} calls reached the Prometheus recorder, {new_dropped} records \
             dropped ({:.1}% of records; 1 per call)",
            100.0 * new_dropped as f64 / (new_dropped + new_count) as f64
        );
    }
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("overhead");

    // (1) No subscriber at all.
    {
        let dispatch = Dispatch::none();
        dispatcher::with_default(&dispatch, || {
            group.bench_function("1_no_subscriber", |b| b.iter(ping));
        });
    }

    // (2) Registry with a layer that does nothing.
    {
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(NoopLayer));
        dispatcher::with_default(&dispatch, || {
            group.bench_function("2_registry_noop_layer", |b| b.iter(ping));
        });
    }

    // (3) Hand-written minimal span-timing layer.
    {
        let histogram = Arc::new(AtomicHistogram::new());
        let layer = MinimalTimingLayer {
            histogram: Arc::clone(&histogram),
        };
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        let ran = Cell::new(false);
        dispatcher::with_default(&dispatch, || {
            group.bench_function("3_minimal_timing_layer", |b| {
                ran.set(true);
                b.iter(ping)
            });
        });
        assert!(
            !ran.get() || histogram.count() > 0,
            "the minimal layer recorded nothing"
        );
    }

    // (4) Pre-registered `metrics` handle, timed by hand, no tracing.
    {
        let (recorder, prometheus) = prometheus_recorder();
        static METADATA: metrics::Metadata<'static> =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let key = Key::from_parts(
            spanmetrics::names::PROM_DURATION,
            vec![Label::new("command", "ping"), Label::new("outcome", "ok")],
        );
        let histogram = recorder.register_histogram(&key, &METADATA);
        let ran = Cell::new(false);
        group.bench_function("4_metrics_handle_by_hand", |b| {
            ran.set(true);
            b.iter(|| {
                let start = Instant::now();
                let out = ping_plain();
                histogram.record(start.elapsed().as_secs_f64());
                out
            })
        });
        assert!(
            !ran.get()
                || prometheus
                    .render()
                    .contains("command_duration_seconds_count{command=\"ping\",outcome=\"ok\"}"),
            "the hand-timed metrics handle recorded nothing"
        );
    }

    // (5) tracing-opentelemetry's OpenTelemetryLayer (SDK tracer, always-on, no exporter).
    {
        let provider = tracer_provider();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        dispatcher::with_default(&dispatch, || {
            group.bench_function("5_tracing_opentelemetry", |b| b.iter(ping));
        });
    }

    // (6) OpenTelemetryLayer + MetricsLayer; the handler times itself and emits the histogram
    // event, since MetricsLayer only turns `histogram.*` event fields into measurements.
    {
        let tracer = tracer_provider();
        let meters = meter_provider();
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("bench")))
                .with(tracing_opentelemetry::MetricsLayer::new(meters.clone())),
        );
        dispatcher::with_default(&dispatch, || {
            group.bench_function("6_tracing_opentelemetry_metrics_layer", |b| {
                b.iter(ping_self_timed)
            });
        });
    }

    // (7) spanmetrics, both sinks, defaults otherwise (busy time on).
    bench_spanmetrics(&mut group, "7_spanmetrics_both_sinks", |b| b);
    // (8) spanmetrics, both sinks, busy time off.
    bench_spanmetrics(&mut group, "8_spanmetrics_no_busy_time", |b| {
        b.with_busy_time(false)
    });

    group.finish();
}

/// `ping` under registry + spanmetrics with both sinks, configured by `configure`, then the
/// check that the calls reached the Prometheus recorder.
fn bench_spanmetrics(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    configure: impl FnOnce(spanmetrics::Builder) -> spanmetrics::Builder,
) {
    let mut setup = spanmetrics_setup(configure);
    let dispatch = setup.dispatch();
    dispatcher::with_default(&dispatch, || {
        group.bench_function(name, |b| {
            setup.ran.set(true);
            b.iter(ping)
        });
    });
    setup.report(name);
}

/// The error path: a handler that fails on every call, with and without spanmetrics.
fn failing(c: &mut Criterion) {
    let mut group = c.benchmark_group("failing");
    {
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(NoopLayer));
        dispatcher::with_default(&dispatch, || {
            group.bench_function("registry_noop_layer", |b| b.iter(fail));
        });
    }
    {
        let mut setup = spanmetrics_setup(|b| b);
        let dispatch = setup.dispatch();
        let ran = Cell::new(false);
        dispatcher::with_default(&dispatch, || {
            group.bench_function("spanmetrics_both_sinks", |b| {
                ran.set(true);
                b.iter(fail)
            });
        });
        setup.handle.flush();
        assert!(
            !ran.get()
                || setup.prometheus.render().contains(
                    "command_duration_seconds_count{command=\"fail\",outcome=\"error\",error_type=\"Timeout\"}"
                ),
            "the failing handler's error series is missing"
        );
    }
    {
        // The pipeline's log bridge (OTLP logs on): every ERROR event becomes a log record.
        let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_batch_exporter(DiscardLogs)
            .build();
        let mut setup = spanmetrics_setup(|b| b);
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(setup.take_layer())
                .with(
                    opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                        &provider,
                    ),
                ),
        );
        dispatcher::with_default(&dispatch, || {
            group.bench_function("spanmetrics_both_sinks_and_log_bridge", |b| b.iter(fail));
        });
        let _ = provider.shutdown();
    }
    group.finish();
}

/// A log exporter that discards what it is given (the bridge's cost on the caller's thread is
/// what is measured; the export runs on the batch processor's thread).
#[derive(Debug)]
struct DiscardLogs;

impl opentelemetry_sdk::logs::LogExporter for DiscardLogs {
    async fn export(
        &self,
        _batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// `threads` dispatchers for one subscriber: either clones of one `Dispatch` (whose reference
/// count every span touches, as with any scoped dispatcher) or one `Dispatch` per thread around
/// the same `Arc`'d subscriber, which behaves like a global subscriber (no shared counter).
fn dispatchers(subscriber: &SharedSubscriber, threads: usize, per_thread: bool) -> Vec<Dispatch> {
    let shared = Dispatch::new(Arc::clone(subscriber));
    (0..threads)
        .map(|_| {
            if per_thread {
                Dispatch::new(Arc::clone(subscriber))
            } else {
                shared.clone()
            }
        })
        .collect()
}

/// Pure computation of roughly a traced call's length, no tracing: how much parallelism the
/// machine offers at the moment (2 threads ≈ 2× on an idle 2-core machine).
fn spin() -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15_u64);
    for _ in 0..64 {
        x = x.rotate_left(7).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ black_box(1);
    }
    x
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(1));

    for threads in [1, 2] {
        let dispatchers = vec![Dispatch::none(); threads];
        group.bench_function(format!("cpu_only/{threads}_threads"), |b| {
            b.iter_custom(|iters| support::split_over_threads(&dispatchers, iters, |_| spin()))
        });
    }

    let registry: SharedSubscriber = Arc::new(tracing_subscriber::registry().with(NoopLayer));
    let mut setup = spanmetrics_setup(|b| b);
    let spanmetrics = setup.shared_subscriber();
    let configurations = [
        ("registry_noop_layer", &registry),
        ("spanmetrics_both_sinks", &spanmetrics),
    ];
    for (label, subscriber) in configurations {
        for (per_thread, dispatch_kind) in
            [(true, "dispatch_per_thread"), (false, "shared_dispatch")]
        {
            for threads in [1, 2] {
                let dispatchers = dispatchers(subscriber, threads, per_thread);
                let name = format!("{label}/{dispatch_kind}/{threads}_threads");
                group.bench_function(&name, |b| {
                    setup.ran.set(true);
                    b.iter_custom(|iters| {
                        support::split_over_threads(&dispatchers, iters, |_| ping())
                    })
                });
                if label == "spanmetrics_both_sinks" {
                    setup.report(&name);
                }
            }
        }
    }

    // The same hot path with both sinks off, so the background thread has little to do: how
    // the calling side itself scales when forwarding does not compete for the two cores.
    let no_sinks: SharedSubscriber = Arc::new(
        tracing_subscriber::registry().with(
            SpanMetricsLayer::builder()
                .without_recorder()
                .without_meter()
                .build(),
        ),
    );
    for threads in [1, 2] {
        let dispatchers = dispatchers(&no_sinks, threads, true);
        group.bench_function(
            format!("spanmetrics_no_sinks/dispatch_per_thread/{threads}_threads"),
            |b| b.iter_custom(|iters| support::split_over_threads(&dispatchers, iters, |_| ping())),
        );
    }

    group.finish();
}

/// Calls recorded between two flushes in the forwarding bench: 2 records each, well under half
/// the ring so the background thread is not woken and `flush()` does all the forwarding.
const CALLS_PER_FLUSH: u64 = 1000;

fn forwarding(c: &mut Criterion) {
    let mut group = c.benchmark_group("forwarding");
    let mut setup = spanmetrics_setup(|b| {
        b.with_flush_interval(Duration::from_secs(60))
            .and_then(|b| b.with_buffer_capacity(1 << 16))
            .expect("valid settings")
    });
    let dispatch = setup.dispatch();
    group.bench_function("spanmetrics_flush_per_call", |b| {
        setup.ran.set(true);
        b.iter_custom(|iters| {
            let mut flushing = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CALLS_PER_FLUSH);
                dispatcher::with_default(&dispatch, || {
                    for _ in 0..n {
                        black_box(ping());
                    }
                });
                let start = Instant::now();
                setup.handle.flush();
                flushing += start.elapsed();
                // Untimed: fold the recorder's raw samples into its histograms, as a scrape
                // would, so they do not pile up into hundreds of MB and page faults.
                setup.prometheus.run_upkeep();
                left -= n;
            }
            flushing
        })
    });
    setup.report("forwarding");
    group.finish();
}

/// Prints the ratios the issue sets targets for, from the latest saved estimates.
fn print_ratios() {
    let o = |name| support::estimate("overhead", name);
    let t = |name: &str, threads: u32| {
        support::estimate("throughput", &format!("{name}/{threads}_threads"))
    };
    let (Some(base), Some(minimal), Some(both), Some(no_busy), Some(otel), Some(otel_metrics)) = (
        o("2_registry_noop_layer"),
        o("3_minimal_timing_layer"),
        o("7_spanmetrics_both_sinks"),
        o("8_spanmetrics_no_busy_time"),
        o("5_tracing_opentelemetry"),
        o("6_tracing_opentelemetry_metrics_layer"),
    ) else {
        println!("ratios: run the `overhead` group to get them");
        return;
    };
    let added = |ns: f64| ns - base;
    println!("\nRatios (latest saved estimate of each benchmark; targets from the issue):");
    println!(
        "  spanmetrics added / minimal layer added:            {:5.2}  (target <= 1.5)",
        added(both) / added(minimal)
    );
    println!(
        "  same, busy time off:                                {:5.2}",
        added(no_busy) / added(minimal)
    );
    println!(
        "  (otel layer + MetricsLayer) added / spanmetrics added: {:5.2}  (target >= 10)",
        added(otel_metrics) / added(both)
    );
    println!(
        "  otel layer alone added / spanmetrics added:         {:5.2}",
        added(otel) / added(both)
    );
    if let (Some(base), Some(with)) = (
        support::estimate("failing", "registry_noop_layer"),
        support::estimate("failing", "spanmetrics_both_sinks"),
    ) {
        println!(
            "  failing handler: spanmetrics adds {:.0} ns (ok path: {:.0} ns)",
            with - base,
            added(both)
        );
    }
    if let Some(forward) = support::estimate("forwarding", "spanmetrics_flush_per_call") {
        println!(
            "  (spanmetrics added + forwarding) / minimal added:   {:5.2}  (all CPU spent per call)",
            (added(both) + forward) / added(minimal)
        );
    }
    for name in [
        "cpu_only",
        "registry_noop_layer/dispatch_per_thread",
        "registry_noop_layer/shared_dispatch",
        "spanmetrics_both_sinks/dispatch_per_thread",
        "spanmetrics_both_sinks/shared_dispatch",
        "spanmetrics_no_sinks/dispatch_per_thread",
    ] {
        if let (Some(one), Some(two)) = (t(name, 1), t(name, 2)) {
            println!(
                "  2-thread / 1-thread throughput, {name}: {:5.2}",
                one / two
            );
        }
    }
}

criterion_group!(benches, throughput, overhead, failing, forwarding);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if support::is_measuring_run() {
        print_ratios();
    }
}
