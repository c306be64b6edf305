//! A `metrics` recorder that panics while spanmetrics forwards to it: the panic stays inside
//! the forwarding, on the background thread or on a recording thread that forwards for itself,
//! and later records still arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use spanmetrics::SpanMetricsLayer;
use tracing_subscriber::prelude::*;

/// Panics on the first `panics` duration records, then counts them.
#[derive(Default)]
struct Flaky {
    panics: u64,
    seen: AtomicU64,
    recorded: AtomicU64,
}

struct FlakyHistogram(Arc<Flaky>);

impl HistogramFn for FlakyHistogram {
    fn record(&self, _value: f64) {
        if self.0.seen.fetch_add(1, Ordering::Relaxed) < self.0.panics {
            panic!("the sink failed");
        }
        self.0.recorded.fetch_add(1, Ordering::Relaxed);
    }
}

struct FlakyRecorder(Arc<Flaky>);

impl Recorder for FlakyRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == spanmetrics::names::PROM_DURATION {
            Histogram::from_arc(Arc::new(FlakyHistogram(Arc::clone(&self.0))))
        } else {
            Histogram::noop()
        }
    }
}

#[test]
fn a_panicking_sink_loses_only_its_records_and_never_the_callers_thread() {
    let flaky = Arc::new(Flaky {
        panics: 50,
        ..Flaky::default()
    });
    let layer = SpanMetricsLayer::builder()
        .with_recorder(FlakyRecorder(Arc::clone(&flaky)))
        .without_meter()
        // A tiny ring, so the recording thread fills it and forwards for itself.
        .with_buffer_capacity(64)
        .expect("a valid capacity")
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let calls = 20_000u64;
    // Silence the panic messages of the sink; the test checks what they did.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..calls {
                tracing::info_span!("h", command = "flaky").in_scope(|| {});
            }
        });
        handle.flush();
    }));
    std::panic::set_hook(hook);
    assert!(outcome.is_ok(), "a sink's panic reached the application");
    assert_eq!(flaky.seen.load(Ordering::Relaxed), calls);
    assert_eq!(flaky.recorded.load(Ordering::Relaxed), calls - 50);
    assert_eq!(handle.dropped(), 50, "each lost record is counted");
}
