//! This checkout (`current`) against an earlier revision (`baseline`, unpacked by
//! `scripts/bench-compare.sh`) in one run: the single-thread overhead, calls per second of 1, 4
//! and 8 threads flooding the machine's cores, the latency of one command while 8 threads
//! flood, and memory under a sustained flood (also with a sink that blocks).
//!
//! Both build the same subscriber: the registry and spanmetrics with both sinks (a
//! metrics-exporter-prometheus recorder with buckets, an OpenTelemetry SDK meter provider that
//! exports to memory once an hour), otherwise the defaults.
//!
//! Run: `scripts/bench-compare.sh 8482fbf --warm-up-time 1 --measurement-time 3`

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tracing::dispatcher::{self, Dispatch};
use tracing_subscriber::layer::SubscriberExt;

type SharedSubscriber = Arc<dyn tracing::Subscriber + Send + Sync>;

#[tracing::instrument(fields(command = "ping"))]
fn ping() -> u64 {
    black_box(42)
}

/// What the bench needs of either version's handle.
trait Handle: Send + Sync {
    fn flush(&self);
    fn dropped(&self) -> u64;
}

impl Handle for spanmetrics::SpanMetricsHandle {
    fn flush(&self) {
        spanmetrics::SpanMetricsHandle::flush(self)
    }
    fn dropped(&self) -> u64 {
        spanmetrics::SpanMetricsHandle::dropped(self)
    }
}

impl Handle for baseline::SpanMetricsHandle {
    fn flush(&self) {
        baseline::SpanMetricsHandle::flush(self)
    }
    fn dropped(&self) -> u64 {
        baseline::SpanMetricsHandle::dropped(self)
    }
}

/// One version's subscriber, with what reads it.
struct Setup {
    name: &'static str,
    subscriber: SharedSubscriber,
    handle: Box<dyn Handle>,
    prometheus: Option<PrometheusHandle>,
    _provider: SdkMeterProvider,
}

fn meter_provider() -> SdkMeterProvider {
    let reader = PeriodicReader::builder(InMemoryMetricExporter::default())
        .with_interval(Duration::from_secs(3600))
        .build();
    SdkMeterProvider::builder().with_reader(reader).build()
}

/// Builds `$krate`'s layer over both sinks (or over `$recorder` and no meter).
macro_rules! setup {
    ($krate:ident, $name:expr) => {{
        let recorder = PrometheusBuilder::new()
            .set_buckets($krate::names::DEFAULT_BUCKETS)
            .expect("valid buckets")
            .build_recorder();
        let prometheus = recorder.handle();
        let provider = meter_provider();
        let layer = $krate::SpanMetricsLayer::builder()
            .with_recorder(recorder)
            .with_meter_provider(&provider)
            .build();
        Setup {
            name: $name,
            handle: Box::new(layer.handle()),
            subscriber: Arc::new(tracing_subscriber::registry().with(layer)),
            prometheus: Some(prometheus),
            _provider: provider,
        }
    }};
    ($krate:ident, $name:expr, $recorder:expr) => {{
        let provider = meter_provider();
        let layer = $krate::SpanMetricsLayer::builder()
            .with_recorder($recorder)
            .without_meter()
            .build();
        Setup {
            name: $name,
            handle: Box::new(layer.handle()),
            subscriber: Arc::new(tracing_subscriber::registry().with(layer)),
            prometheus: None,
            _provider: provider,
        }
    }};
}

fn both() -> [Setup; 2] {
    [setup!(baseline, "baseline"), setup!(spanmetrics, "current")]
}

/// Folds the Prometheus recorder's raw samples every 100 ms while `f` runs, as scrapes would:
/// otherwise they pile up for the whole run.
fn with_upkeep<R>(setup: &Setup, f: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        if let Some(prometheus) = &setup.prometheus {
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    prometheus.run_upkeep();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let out = f();
        stop.store(true, Ordering::Relaxed);
        out
    })
}

fn dispatchers(setup: &Setup, threads: usize) -> Vec<Dispatch> {
    (0..threads)
        .map(|_| Dispatch::new(Arc::clone(&setup.subscriber)))
        .collect()
}

/// Drops since the last call, printed under `what`.
fn report_drops(setup: &Setup, what: &str, last: &mut u64) {
    setup.handle.flush();
    let dropped = setup.handle.dropped();
    eprintln!("{}/{what}: {} records dropped", setup.name, dropped - *last);
    *last = dropped;
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("overhead7");
    for setup in both() {
        let dispatch = Dispatch::new(Arc::clone(&setup.subscriber));
        with_upkeep(&setup, || {
            dispatcher::with_default(&dispatch, || {
                group.bench_function(setup.name, |b| b.iter(ping));
            })
        });
        report_drops(&setup, "overhead7", &mut 0);
    }
    group.finish();
}

fn flood(c: &mut Criterion) {
    let mut group = c.benchmark_group("flood");
    group.throughput(Throughput::Elements(1));
    for setup in both() {
        let mut last = 0;
        for threads in [1, 4, 8] {
            let dispatchers = dispatchers(&setup, threads);
            let name = format!("{}/{threads}_threads", setup.name);
            with_upkeep(&setup, || {
                group.bench_function(&name, |b| {
                    b.iter_custom(|iters| {
                        support::split_over_threads(&dispatchers, iters, |_| ping())
                    })
                });
            });
            report_drops(&setup, &format!("flood/{threads}_threads"), &mut last);
        }
    }
    group.finish();
}

/// Runs `threads` threads calling `ping` until `stop`, returning the calls made.
fn flood_until(setup: &Setup, threads: usize, stop: &AtomicBool) -> u64 {
    let calls = AtomicU64::new(0);
    std::thread::scope(|s| {
        for dispatch in dispatchers(setup, threads) {
            let calls = &calls;
            s.spawn(move || {
                dispatcher::with_default(&dispatch, || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            ping();
                        }
                        n += 64;
                    }
                    calls.fetch_add(n, Ordering::Relaxed);
                })
            });
        }
    });
    calls.load(Ordering::Relaxed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The latency of one command, called about every 200 µs on a thread of its own while 8
/// threads flood: what an interactive command sees while a batch job floods the service.
fn latency_under_flood() {
    const SAMPLES: usize = 10_000;
    println!("\nOne command's latency while 8 threads flood (µs), and the flood's calls/s:");
    println!("| version | p50 | p99 | p99.9 | max | flood calls/s | dropped |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for setup in both() {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (mut samples, calls) = with_upkeep(&setup, || {
            std::thread::scope(|s| {
                let flood = s.spawn(|| flood_until(&setup, 8, &stop));
                let dispatch = Dispatch::new(Arc::clone(&setup.subscriber));
                let samples = dispatcher::with_default(&dispatch, || {
                    let mut samples = Vec::with_capacity(SAMPLES);
                    for _ in 0..SAMPLES {
                        let next = Instant::now() + Duration::from_micros(200);
                        let start = Instant::now();
                        ping();
                        samples.push(start.elapsed());
                        while Instant::now() < next {
                            std::hint::spin_loop();
                        }
                    }
                    samples
                });
                stop.store(true, Ordering::Relaxed);
                (samples, flood.join().expect("the flood ran"))
            })
        });
        let seconds = started.elapsed().as_secs_f64();
        samples.sort();
        setup.handle.flush();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2e} | {} |",
            setup.name,
            us(percentile(&samples, 0.5)),
            us(percentile(&samples, 0.99)),
            us(percentile(&samples, 0.999)),
            us(samples[samples.len() - 1]),
            calls as f64 / seconds,
            setup.handle.dropped(),
        );
    }
}

/// Resident memory of this process.
fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A recorder whose histograms block while the gate is closed.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// Threads inside a record call now, other than the background thread.
    inside: AtomicU64,
}

struct GatedHistogram(Arc<Gate>);

impl HistogramFn for GatedHistogram {
    fn record(&self, _value: f64) {
        let mut open = self.0.open.lock().unwrap();
        let background = std::thread::current().name() == Some("spanmetrics");
        if !*open && !background {
            self.0.inside.fetch_add(1, Ordering::SeqCst);
        }
        let counted = !*open && !background;
        while !*open {
            open = self.0.opened.wait(open).unwrap();
        }
        if counted {
            self.0.inside.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct GatedRecorder(Arc<Gate>);

impl Recorder for GatedRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(GatedHistogram(Arc::clone(&self.0))))
    }
}

/// Floods with 8 threads for `seconds`, sampling resident memory; returns (calls, peak MiB
/// above the start, records dropped by then). `release` runs once the flood is told to stop,
/// before it is joined: a flood thread stuck inside a blocked sink needs it to finish.
fn sustained(setup: &Setup, seconds: u64, release: impl FnOnce()) -> (u64, f64, u64) {
    let before = resident_mib();
    let stop = AtomicBool::new(false);
    let mut peak = before;
    let mut dropped = 0;
    let calls = with_upkeep(setup, || {
        std::thread::scope(|s| {
            let flood = s.spawn(|| flood_until(setup, 8, &stop));
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                peak = peak.max(resident_mib());
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
            dropped = setup.handle.dropped();
            release();
            flood.join().expect("the flood ran")
        })
    });
    (calls, peak - before, dropped)
}

/// Memory and calls under a sustained 8-thread flood, with working sinks and with a sink
/// that blocks for the whole flood.
fn memory_under_flood() {
    const SECONDS: u64 = 5;
    println!("\nSustained 8-thread flood, {SECONDS} s each:");
    println!("| version | sinks | calls | peak resident memory above start (MiB) | dropped |");
    println!("|---|---|---:|---:|---:|");
    for setup in both() {
        let (calls, mib, _) = sustained(&setup, SECONDS, || {});
        setup.handle.flush();
        println!(
            "| {} | working | {calls} | {mib:.1} | {} |",
            setup.name,
            setup.handle.dropped()
        );
    }
    let gates = [Arc::new(Gate::default()), Arc::new(Gate::default())];
    let blocked = [
        setup!(baseline, "baseline", GatedRecorder(Arc::clone(&gates[0]))),
        setup!(spanmetrics, "current", GatedRecorder(Arc::clone(&gates[1]))),
    ];
    for (setup, gate) in blocked.iter().zip(&gates) {
        let stuck = AtomicU64::new(0);
        let (calls, mib, dropped) = sustained(setup, SECONDS, || {
            // Flood threads still inside a call: stuck in the blocked sink themselves.
            stuck.store(gate.inside.load(Ordering::SeqCst), Ordering::SeqCst);
            *gate.open.lock().unwrap() = true;
            gate.opened.notify_all();
        });
        setup.handle.flush();
        println!(
            "| {} | blocked | {calls} | {mib:.1} | {dropped} (threads stuck in the sink: {}) |",
            setup.name,
            stuck.load(Ordering::SeqCst),
        );
    }
}

/// Runs `measure` on each version in turn for `rounds` rounds (flushing and folding the
/// Prometheus samples between, untimed), so that drift in the machine's speed hits both alike.
/// Returns each version's median and the median of the rounds' ratios (current ÷ baseline),
/// and the records each version dropped.
fn paired(rounds: usize, measure: impl Fn(&Setup) -> f64) -> (f64, f64, f64, [u64; 2]) {
    let setups = both();
    let mut values = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, setup) in setups.iter().enumerate() {
            values[i].push(measure(setup));
            setup.handle.flush();
            if let Some(prometheus) = &setup.prometheus {
                prometheus.run_upkeep();
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut ratios: Vec<f64> = values[1]
        .iter()
        .zip(&values[0])
        .map(|(n, o)| n / o)
        .collect();
    let ratio = median(&mut ratios);
    let dropped = [setups[0].handle.dropped(), setups[1].handle.dropped()];
    (
        median(&mut values[0]),
        median(&mut values[1]),
        ratio,
        dropped,
    )
}

/// Calls per second of `threads` threads flooding: 9 paired rounds of 800 000 calls.
fn paired_flood(threads: usize) -> (f64, f64, f64, [u64; 2]) {
    const CALLS: u64 = 800_000;
    paired(9, |setup| {
        let wall = support::split_over_threads(&dispatchers(setup, threads), CALLS, |_| ping());
        CALLS as f64 / wall.as_secs_f64()
    })
}

/// Single-thread ns per call: 15 paired rounds of 300 000 calls.
fn paired_overhead() -> (f64, f64, f64) {
    const CALLS: u32 = 300_000;
    let (old, new, ratio, _) = paired(15, |setup| {
        let dispatch = Dispatch::new(Arc::clone(&setup.subscriber));
        dispatcher::with_default(&dispatch, || {
            let start = Instant::now();
            for _ in 0..CALLS {
                black_box(ping());
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
    });
    (old, new, ratio)
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    overhead(&mut criterion);
    flood(&mut criterion);
    criterion.final_summary();
    if !support::is_measuring_run() {
        return;
    }
    let o = |name| support::estimate("overhead7", name);
    if let (Some(old), Some(new)) = (o("baseline"), o("current")) {
        println!(
            "\noverhead7, criterion (ns/call): baseline {old:.1}, current {new:.1}, current / baseline {:.3}",
            new / old
        );
    }
    let (old, new, ratio) = paired_overhead();
    println!(
        "overhead7, 15 alternating rounds (median ns/call): baseline {old:.1}, current {new:.1}, median of the rounds' current / baseline {ratio:.3}"
    );
    println!("\nFlood, calls/s (criterion estimate):");
    println!("| threads | baseline | current | current / baseline |");
    println!("|---:|---:|---:|---:|");
    for threads in [1, 4, 8] {
        let f = |name: &str| support::estimate("flood", &format!("{name}/{threads}_threads"));
        if let (Some(old), Some(new)) = (f("baseline"), f("current")) {
            println!(
                "| {threads} | {:.3e} | {:.3e} | {:.3} |",
                1e9 / old,
                1e9 / new,
                old / new
            );
        }
    }
    println!("\nFlood, 9 alternating rounds of 800 000 calls (median calls/s):");
    println!("| threads | baseline | current | median of the rounds' current / baseline | dropped, baseline / current |");
    println!("|---:|---:|---:|---:|---|");
    for threads in [1, 4, 8] {
        let (old, new, ratio, [old_dropped, new_dropped]) = paired_flood(threads);
        println!(
            "| {threads} | {old:.3e} | {new:.3e} | {ratio:.3} | {old_dropped} / {new_dropped} |"
        );
    }
    latency_under_flood();
    memory_under_flood();
}
