//! Load and scale: what exporting many series costs, and how many command-bot calls per second
//! each way of getting telemetry leaves.
//!
//! Everything runs under scoped dispatchers and explicit recorders/meter/tracer providers built
//! for each benchmark; nothing leaves the process.
//!
//! Groups:
//! - `export`: one OpenTelemetry collection + export cycle (`SdkMeterProvider::force_flush` with
//!   an in-memory exporter) and one Prometheus render (`PrometheusHandle::render`), with 100 and
//!   with 10,000 live `command.duration` series created through spanmetrics (50 or 5,000
//!   commands × `ok`/`error`).
//! - `handlers`: calls per second of sync command-bot handlers (parse a dice spec or a list of
//!   choices, format a reply) on 1 and 2 threads: no telemetry; spanmetrics (both sinks) +
//!   tracing-opentelemetry with a 10 % trace-id-ratio sampler and a batch span processor
//!   around a no-op exporter; the same tracing-opentelemetry layer + its `MetricsLayer`, the
//!   handler timing itself and emitting the `histogram.` event `MetricsLayer` needs.
//!
//! Run: `cargo bench --bench load -- --warm-up-time 1 --measurement-time 3`

mod support;

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::testing::trace::NoopSpanExporter;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use spanmetrics::names::{OTEL_DURATION, PROM_DURATION};
use spanmetrics::{SpanMetricsHandle, SpanMetricsLayer};
use tracing::dispatcher::{self, Dispatch};
use tracing_subscriber::layer::SubscriberExt;

/// Above the 10,000 series of the largest case, for spanmetrics' cap and the SDK's.
const MAX_SERIES: usize = 20_000;

/// A meter provider whose reader exports to memory only when flushed (its interval is an
/// hour), with the SDK's per-instrument cardinality limit raised to [`MAX_SERIES`].
fn meter_provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let reader = PeriodicReader::builder(exporter.clone())
        .with_interval(Duration::from_secs(3600))
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
            Stream::builder()
                .with_cardinality_limit(MAX_SERIES)
                .build()
                .ok()
        })
        .build();
    (provider, exporter)
}

/// spanmetrics with both sinks, holding `commands` × (`ok`, `error`) duration series.
struct ExportSetup {
    series: usize,
    handle: SpanMetricsHandle,
    prometheus: PrometheusHandle,
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    _dispatch: Dispatch,
}

fn export_setup(commands: usize) -> ExportSetup {
    let recorder = PrometheusBuilder::new()
        .set_buckets(spanmetrics::names::DEFAULT_BUCKETS)
        .expect("the default buckets are valid")
        .build_recorder();
    let prometheus = recorder.handle();
    let (provider, exporter) = meter_provider();
    let layer = SpanMetricsLayer::builder()
        .with_recorder(recorder)
        .with_meter_provider(&provider)
        .with_max_series(MAX_SERIES)
        .expect("a valid cap")
        .build();
    let handle = layer.handle();
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    dispatcher::with_default(&dispatch, || {
        for i in 0..commands {
            let name = format!("cmd-{i:05}");
            drop(tracing::info_span!("handler", command = %name));
            drop(tracing::info_span!("handler", command = %name, outcome = "error"));
        }
    });
    handle.flush();
    let setup = ExportSetup {
        series: 2 * commands,
        handle,
        prometheus,
        provider,
        exporter,
        _dispatch: dispatch,
    };
    setup.check();
    setup
}

impl ExportSetup {
    /// Checks both sinks really hold the series the benchmark claims to export.
    fn check(&self) {
        let text = self.prometheus.render();
        let prom = text
            .lines()
            .filter(|l| l.starts_with(&format!("{PROM_DURATION}_count{{")))
            .count();
        assert_eq!(prom, self.series, "Prometheus duration series");
        eprintln!(
            "{} duration series: Prometheus page {} lines, {} KiB",
            self.series,
            text.lines().count(),
            text.len() / 1024
        );
        self.provider.force_flush().expect("an in-memory flush");
        let exported = self.exporter.get_finished_metrics().expect("exported data");
        let points = exported
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .filter(|m| m.name() == OTEL_DURATION)
            .map(|m| match m.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => h.data_points().count(),
                _ => 0,
            })
            .sum::<usize>();
        assert_eq!(points, self.series, "OpenTelemetry duration data points");
        assert_eq!(self.handle.dropped(), 0, "records dropped while seeding");
        self.exporter.reset();
    }
}

fn export(c: &mut Criterion) {
    let mut group = c.benchmark_group("export");
    group.sample_size(20);
    for commands in [50, 5_000] {
        let setup = export_setup(commands);
        let series = setup.series;
        group.bench_function(format!("otel_collect_export/{series}_series"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    setup.provider.force_flush().expect("an in-memory flush");
                    spent += start.elapsed();
                    // Dropping the exported copy is the exporter's business, not the cycle's.
                    setup.exporter.reset();
                }
                spent
            })
        });
        group.bench_function(format!("prometheus_render/{series}_series"), |b| {
            b.iter(|| setup.prometheus.render())
        });
        setup.check();
    }
    group.finish();
}

/// Why a command failed (its variant name becomes `error.type`).
#[derive(Debug)]
enum BotError {
    BadDice { spec: &'static str },
    NoChoices,
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadDice { spec } => write!(f, "cannot roll {spec:?}"),
            Self::NoChoices => f.write_str("nothing to choose from"),
        }
    }
}

impl std::error::Error for BotError {}

/// SplitMix64 step.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Dice specs the `roll` handler sees; one in ten is invalid, so 10 % of rolls fail.
const SPECS: [&str; 10] = [
    "4d6", "1d20", "3d8", "10d4", "2d100", "5d10", "6d6", "3d12", "8d3", "2x6",
];

/// Choice lists the `choose` handler sees; the last is empty, so 1 in 8 fails.
const CHOICES: [&str; 8] = [
    "pizza|sushi|tacos",
    "red|green|blue|yellow",
    "yes|no",
    "heads|tails",
    "rock|paper|scissors",
    "north|south|east|west",
    "tea|coffee",
    "",
];

fn roll_body(spec: &'static str, seed: u64) -> Result<String, BotError> {
    let bad = || BotError::BadDice { spec };
    let (count, sides) = spec.split_once('d').ok_or_else(bad)?;
    let count: u64 = count.parse().map_err(|_| bad())?;
    let sides: u64 = sides.parse().map_err(|_| bad())?;
    if !(1..=100).contains(&count) || !(2..=1000).contains(&sides) {
        return Err(bad());
    }
    // The reply lists every die: `@viewer rolled 3d8: 4 + 8 + 1 = 13`.
    let mut reply = format!("@viewer rolled {spec}: ");
    let mut state = seed;
    let mut total = 0;
    for n in 0..count {
        state = mix(state);
        let die = 1 + state % sides;
        total += die;
        let sep = if n == 0 { "" } else { " + " };
        let _ = write!(reply, "{sep}{die}");
    }
    let _ = write!(reply, " = {total}");
    Ok(reply)
}

fn choose_body(options: &'static str, seed: u64) -> Result<String, BotError> {
    let options: Vec<&str> = options.split('|').filter(|o| !o.is_empty()).collect();
    if options.is_empty() {
        return Err(BotError::NoChoices);
    }
    let pick = options[(mix(seed) % options.len() as u64) as usize];
    Ok(format!(
        "@viewer I choose {pick} (out of {})",
        options.len()
    ))
}

#[tracing::instrument(skip_all, fields(command = "roll"), err(Debug))]
fn roll(spec: &'static str, seed: u64) -> Result<String, BotError> {
    roll_body(spec, seed)
}

#[tracing::instrument(skip_all, fields(command = "choose"), err(Debug))]
fn choose(options: &'static str, seed: u64) -> Result<String, BotError> {
    choose_body(options, seed)
}

/// What a tracing-opentelemetry `MetricsLayer` user writes to get the same histogram: time the
/// handler by hand and emit a `histogram.`-prefixed event with the attributes.
fn emit_duration<T, E>(command: &'static str, start: Instant, result: &Result<T, E>) {
    tracing::info!(
        histogram.command.duration = start.elapsed().as_secs_f64(),
        command,
        outcome = if result.is_ok() { "ok" } else { "error" }
    );
}

#[tracing::instrument(skip_all, fields(command = "roll"), err(Debug))]
fn roll_self_timed(spec: &'static str, seed: u64) -> Result<String, BotError> {
    let start = Instant::now();
    let result = roll_body(spec, seed);
    emit_duration("roll", start, &result);
    result
}

#[tracing::instrument(skip_all, fields(command = "choose"), err(Debug))]
fn choose_self_timed(options: &'static str, seed: u64) -> Result<String, BotError> {
    let start = Instant::now();
    let result = choose_body(options, seed);
    emit_duration("choose", start, &result);
    result
}

/// A bot handler: its input text and a seed.
type Handler = fn(&'static str, u64) -> Result<String, BotError>;

/// Call number `i`: three rolls for one choose, inputs cycling through the tables, so every
/// configuration gets the same inputs whatever its handlers.
fn bot_call_with(i: u64, roll: Handler, choose: Handler) -> usize {
    let seed = mix(i);
    let result = if i % 4 == 3 {
        choose(CHOICES[(i / 4 % 8) as usize], seed)
    } else {
        roll(SPECS[(i % 10) as usize], seed)
    };
    result.map_or(0, |s| s.len())
}

fn bot_call(i: u64) -> usize {
    bot_call_with(i, roll, choose)
}

fn bot_call_self_timed(i: u64) -> usize {
    bot_call_with(i, roll_self_timed, choose_self_timed)
}

/// A tracer provider sampling 10 % of traces by trace id, its spans going through a batch
/// processor to an exporter that drops them.
fn tracer_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.1,
        ))))
        .with_batch_exporter(NoopSpanExporter::new())
        .build()
}

type SharedSubscriber = Arc<dyn tracing::Subscriber + Send + Sync>;

/// One `Dispatch` per thread around the same subscriber, as a global subscriber behaves.
fn dispatchers(subscriber: &SharedSubscriber, threads: usize) -> Vec<Dispatch> {
    (0..threads)
        .map(|_| Dispatch::new(Arc::clone(subscriber)))
        .collect()
}

/// The `command.duration` count summed over all series of the Prometheus page.
fn prometheus_count(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{PROM_DURATION}_count{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn handlers(c: &mut Criterion) {
    let mut group = c.benchmark_group("handlers");
    group.throughput(Throughput::Elements(1));

    // No telemetry: the handlers are still instrumented, but no subscriber listens.
    for threads in [1, 2] {
        let dispatchers = vec![Dispatch::none(); threads];
        group.bench_function(format!("no_telemetry/{threads}_threads"), |b| {
            b.iter_custom(|iters| support::split_over_threads(&dispatchers, iters, bot_call))
        });
    }

    // spanmetrics (Prometheus recorder + OpenTelemetry meter), with and without
    // tracing-opentelemetry spans.
    for with_traces in [true, false] {
        let recorder = PrometheusBuilder::new()
            .set_buckets(spanmetrics::names::DEFAULT_BUCKETS)
            .expect("the default buckets are valid")
            .build_recorder();
        let prometheus = recorder.handle();
        let (meters, _exporter) = meter_provider();
        let tracer = tracer_provider();
        let layer = SpanMetricsLayer::builder()
            .with_recorder(recorder)
            .with_meter_provider(&meters)
            .build();
        let handle = layer.handle();
        let traces =
            with_traces.then(|| tracing_opentelemetry::layer().with_tracer(tracer.tracer("bench")));
        let subscriber: SharedSubscriber =
            Arc::new(tracing_subscriber::registry().with(traces).with(layer));
        let label = if with_traces {
            "spanmetrics_and_otel_traces"
        } else {
            "spanmetrics_only"
        };
        let mut ran = false;
        for threads in [1, 2] {
            let dispatchers = dispatchers(&subscriber, threads);
            group.bench_function(format!("{label}/{threads}_threads"), |b| {
                ran = true;
                b.iter_custom(|iters| support::split_over_threads(&dispatchers, iters, bot_call))
            });
        }
        if ran {
            handle.flush();
            let count = prometheus_count(&prometheus.render());
            assert!(count > 0.0, "spanmetrics recorded nothing");
            eprintln!(
                "{label}: {count} calls recorded, {} records dropped",
                handle.dropped()
            );
        }
        let _ = tracer.shutdown();
        let _ = meters.shutdown();
    }

    // tracing-opentelemetry spans alone (same sampler and exporter).
    {
        let tracer = tracer_provider();
        let subscriber: SharedSubscriber = Arc::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("bench"))),
        );
        for threads in [1, 2] {
            let dispatchers = dispatchers(&subscriber, threads);
            group.bench_function(format!("otel_traces_only/{threads}_threads"), |b| {
                b.iter_custom(|iters| support::split_over_threads(&dispatchers, iters, bot_call))
            });
        }
        let _ = tracer.shutdown();
    }

    // tracing-opentelemetry spans + MetricsLayer.
    {
        let (meters, exporter) = meter_provider();
        let tracer = tracer_provider();
        let subscriber: SharedSubscriber = Arc::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("bench")))
                .with(tracing_opentelemetry::MetricsLayer::new(meters.clone())),
        );
        let mut ran = false;
        for threads in [1, 2] {
            let dispatchers = dispatchers(&subscriber, threads);
            group.bench_function(
                format!("otel_traces_and_metrics_layer/{threads}_threads"),
                |b| {
                    ran = true;
                    b.iter_custom(|iters| {
                        support::split_over_threads(&dispatchers, iters, bot_call_self_timed)
                    })
                },
            );
        }
        if ran {
            meters.force_flush().expect("an in-memory flush");
            let exported = exporter.get_finished_metrics().expect("exported data");
            assert!(
                exported
                    .iter()
                    .flat_map(|rm| rm.scope_metrics())
                    .flat_map(|sm| sm.metrics())
                    .any(|m| m.name() == OTEL_DURATION),
                "MetricsLayer recorded nothing"
            );
        }
        let _ = tracer.shutdown();
        let _ = meters.shutdown();
    }

    group.finish();
}

/// Prints per-series costs, calls per second and the ratios, from the latest saved estimates.
fn print_ratios() {
    println!("\nLoad and scale (latest saved estimate of each benchmark):");
    for what in ["otel_collect_export", "prometheus_render"] {
        let small = support::estimate("export", &format!("{what}/100_series"));
        let large = support::estimate("export", &format!("{what}/10000_series"));
        if let (Some(small), Some(large)) = (small, large) {
            println!(
                "  {what}: 100 series {:.1} µs ({:.0} ns/series), 10,000 series {:.2} ms \
                 ({:.0} ns/series); 10,000 ÷ 100 = {:.0}×",
                small / 1e3,
                small / 100.0,
                large / 1e6,
                large / 10_000.0,
                large / small
            );
        }
    }
    let configs = [
        "no_telemetry",
        "spanmetrics_only",
        "otel_traces_only",
        "spanmetrics_and_otel_traces",
        "otel_traces_and_metrics_layer",
    ];
    for threads in [1, 2] {
        let Some(base) = support::estimate("handlers", &format!("no_telemetry/{threads}_threads"))
        else {
            continue;
        };
        for name in configs {
            if let Some(ns) = support::estimate("handlers", &format!("{name}/{threads}_threads")) {
                println!(
                    "  {threads} thread(s), {name}: {:.2} M calls/s, {:.2} of no telemetry",
                    1e3 / ns,
                    base / ns
                );
            }
        }
        if let (Some(ours), Some(theirs)) = (
            support::estimate(
                "handlers",
                &format!("spanmetrics_and_otel_traces/{threads}_threads"),
            ),
            support::estimate(
                "handlers",
                &format!("otel_traces_and_metrics_layer/{threads}_threads"),
            ),
        ) {
            println!(
                "  {threads} thread(s): spanmetrics+traces calls/s ÷ traces+MetricsLayer calls/s = {:.2}",
                theirs / ours
            );
        }
    }
}

criterion_group!(benches, export, handlers);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if support::is_measuring_run() {
        print_ratios();
    }
}
