//! No record is lost: under hostile scheduling (more recording threads than cores, and another
//! process burning every core), with a sink that blocks, and for spans that close while their
//! thread is being torn down. `flush()` returns only once every span closed before it is in
//! the sinks. A sink that panics loses only the records it panicked on, and never reaches the
//! application.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::two_sinks::{self, failed, ok, Fixture, Labels};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use spanmetrics::names::{OTEL_BUSY, OTEL_DROPPED, OTEL_DURATION};
use spanmetrics::SpanMetricsLayer;
use tracing_subscriber::prelude::*;

/// How long the test waits for anything that must happen.
const DEADLINE: Duration = Duration::from_secs(60);

/// Processes that keep every core busy until dropped (stopped by their PID), or until this
/// process is gone.
struct Burners(Vec<Child>);

impl Burners {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let burners = (0..cores)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while kill -0 $PPID 2>/dev/null; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("a shell to burn a core")
            })
            .collect();
        Self(burners)
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug)]
enum CallError {
    Busy,
}

#[tracing::instrument(skip_all, fields(command = command), err(Debug))]
fn call(command: &'static str, i: u64) -> Result<(), CallError> {
    if i.is_multiple_of(10) {
        Err(CallError::Busy)
    } else {
        Ok(())
    }
}

/// 8 threads on busy cores, each running `CALLS` commands (a tenth failing), counted exactly in
/// both sinks by a layer built with `configure`.
fn eight_threads_on_busy_cores(
    configure: impl FnOnce(spanmetrics::Builder) -> spanmetrics::Builder,
) {
    const THREADS: usize = 8;
    const CALLS: u64 = 60_000;
    const COMMANDS: [&str; 4] = ["roll", "help", "stats", "ask"];
    let fx = Fixture::with(configure);
    let burners = Burners::start();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let fx = &fx;
            s.spawn(move || {
                fx.run(|| {
                    for i in 0..CALLS {
                        let _ = call(COMMANDS[t % COMMANDS.len()], i);
                    }
                })
            });
        }
    });
    let snap = fx.snapshot();
    drop(burners);
    let mut want: BTreeMap<Labels, u64> = BTreeMap::new();
    for t in 0..THREADS {
        let command = COMMANDS[t % COMMANDS.len()];
        *want.entry(ok(command)).or_default() += CALLS - CALLS / 10;
        *want.entry(failed(command, "Busy")).or_default() += CALLS / 10;
    }
    assert_eq!(fx.handle.dropped(), 0, "records dropped");
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    assert_eq!(snap.values(OTEL_DROPPED).into_values().sum::<f64>(), 0.0);
    assert!(
        snap.active().values().all(|v| *v == 0.0),
        "{:?}",
        snap.active()
    );
}

#[test]
fn eight_threads_on_busy_cores_count_exactly_in_both_sinks() {
    eight_threads_on_busy_cores(|b| b);
}

/// Without a backlog, only waiting for the background thread keeps the counts exact: a thread
/// that stopped waiting would have to drop. (The wait for a stalled background thread is at its
/// longest, so that no scheduling delay of a loaded machine counts as a stall.)
#[test]
fn waiting_alone_keeps_eight_threads_on_busy_cores_exact() {
    eight_threads_on_busy_cores(|b| {
        b.with_overload_memory(0)
            .expect("a valid bound")
            .with_overload_wait(Duration::from_secs(60))
            .expect("a valid wait")
    });
}

/// A `metrics` recorder whose duration histogram is `H`; everything else is a no-op.
struct DurationOnly<H>(Arc<H>);

impl<H: HistogramFn + Send + Sync + 'static> Recorder for DurationOnly<H> {
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
            Histogram::from_arc(Arc::clone(&self.0))
        } else {
            Histogram::noop()
        }
    }
}

/// A duration histogram that blocks every record call while its gate is closed, then counts
/// the records.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// Record calls that found the gate closed.
    blocked: AtomicU64,
    recorded: AtomicU64,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl HistogramFn for Gate {
    fn record(&self, _value: f64) {
        let mut open = self.open.lock().unwrap();
        if !*open {
            self.blocked.fetch_add(1, Ordering::SeqCst);
        }
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        self.recorded.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `calls` commands on a thread of their own while the sink's gate is closed, and
/// returns once they have all run (the gate still closed) with the layer's handle.
fn run_against_a_blocked_sink(
    calls: u64,
    configure: impl FnOnce(spanmetrics::Builder) -> spanmetrics::Builder,
) -> (Arc<Gate>, spanmetrics::SpanMetricsHandle) {
    let gate = Arc::new(Gate::default());
    let layer = configure(
        SpanMetricsLayer::builder()
            .with_recorder(DurationOnly(Arc::clone(&gate)))
            .without_meter()
            // A small ring, so that it fills long before the calls are done.
            .with_buffer_capacity(64)
            .expect("a valid capacity"),
    )
    .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..calls {
                tracing::info_span!("h", command = "gated").in_scope(|| {});
            }
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(DEADLINE)
        .expect("the commands finish while the sink blocks: the application was blocked");
    two_sinks::poll_until(
        DEADLINE,
        "the background thread inside the blocked sink",
        || (gate.blocked.load(Ordering::SeqCst) >= 1).then_some(()),
    );
    assert_eq!(gate.recorded.load(Ordering::SeqCst), 0);
    (gate, handle)
}

#[test]
fn a_blocking_sink_neither_blocks_the_application_nor_loses_records_within_the_backlog() {
    let calls = 50_000;
    let (gate, handle) = run_against_a_blocked_sink(calls, |b| b);
    assert_eq!(
        handle.dropped(),
        0,
        "nothing dropped while the backlog has room"
    );
    gate.open();
    handle.flush();
    assert_eq!(gate.recorded.load(Ordering::SeqCst), calls);
    assert_eq!(handle.dropped(), 0);
}

#[test]
fn past_the_backlog_bound_records_are_dropped_and_every_one_is_counted() {
    let calls = 50_000;
    let memory = 64 * 1024;
    let (gate, handle) = run_against_a_blocked_sink(calls, |b| {
        b.with_overload_memory(memory).expect("a valid bound")
    });
    let dropped = handle.dropped();
    assert!(
        dropped > 0,
        "the backlog of {memory} bytes cannot hold {calls} records"
    );
    gate.open();
    handle.flush();
    let recorded = gate.recorded.load(Ordering::SeqCst);
    assert_eq!(
        recorded + dropped,
        calls,
        "each record arrives or is counted"
    );
    assert_eq!(
        handle.dropped(),
        dropped,
        "nothing dropped once the sink moves again"
    );
    // The ring (64) and the backlog (64 KiB, at most 64 bytes a record) held these.
    assert!(recorded >= 64 + 1024, "{recorded} records kept");
}

/// What a thread leaves in a thread-local: spans to close during its teardown, then a signal
/// that they are closed, then a wait until the test has flushed and looked.
struct Teardown {
    spans: Vec<tracing::Span>,
    closed: mpsc::Sender<()>,
    looked: mpsc::Receiver<()>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.spans.clear();
        let _ = self.closed.send(());
        // The thread stays in its teardown while the test flushes.
        let _ = self.looked.recv_timeout(DEADLINE);
    }
}

thread_local! {
    static TEARDOWN: std::cell::RefCell<Option<Teardown>> = const { std::cell::RefCell::new(None) };
}

/// `flush()` from another thread, while a thread is still tearing down its thread-locals, sees
/// the spans that thread closed in the teardown: with the layer's thread-locals already gone
/// (`before_the_layer`) or still there.
fn flush_sees_spans_closed_in_a_teardown(before_the_layer: bool) {
    // No periodic drain during the test: what the snapshot sees, `flush()` forwarded.
    let fx = Arc::new(Fixture::with(|b| {
        b.with_flush_interval(Duration::from_secs(60))
            .expect("a valid interval")
    }));
    let (closed_tx, closed) = mpsc::channel();
    let (looked, looked_rx) = mpsc::channel();
    let thread = {
        let fx = Arc::clone(&fx);
        std::thread::spawn(move || {
            let mut teardown = Some(Teardown {
                spans: Vec::new(),
                closed: closed_tx,
                looked: looked_rx,
            });
            let mut keep = || TEARDOWN.with(|t| *t.borrow_mut() = teardown.take());
            // Thread-locals are torn down in the reverse order of their first use.
            if before_the_layer {
                keep();
            }
            fx.run(|| {
                tracing::info_span!("h", command = "warmup").in_scope(|| {});
                if !before_the_layer {
                    keep();
                }
                let spans = (0..3).map(|_| tracing::info_span!("h", command = "late"));
                TEARDOWN.with(|t| t.borrow_mut().as_mut().unwrap().spans.extend(spans));
            });
        })
    };
    closed
        .recv_timeout(DEADLINE)
        .expect("the thread closes its spans in its teardown");
    // The thread has returned (its closure's result is in), and it is still in its teardown,
    // waiting for `looked`.
    let snap = fx.snapshot();
    assert!(thread.is_finished(), "only the thread's teardown is left");
    let _ = looked.send(());
    thread.join().expect("the thread ran");
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("warmup"), 1), (ok("late"), 3)].into_iter().collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn flush_sees_spans_closed_in_a_teardown_after_the_layers_thread_locals_are_gone() {
    flush_sees_spans_closed_in_a_teardown(true);
}

#[test]
fn flush_sees_spans_closed_in_a_teardown_while_the_layers_thread_locals_remain() {
    flush_sees_spans_closed_in_a_teardown(false);
}

/// A duration histogram that panics on its first `panics` records, then counts them.
#[derive(Default)]
struct Flaky {
    panics: u64,
    seen: AtomicU64,
    recorded: AtomicU64,
}

impl HistogramFn for Flaky {
    fn record(&self, _value: f64) {
        if self.seen.fetch_add(1, Ordering::Relaxed) < self.panics {
            panic!("the sink failed");
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }
}

/// The panic stays inside the forwarding, on the background thread or in `flush()` on the
/// application's thread, and later records still arrive.
#[test]
fn a_panicking_sink_loses_only_its_records_and_never_the_callers_thread() {
    let flaky = Arc::new(Flaky {
        panics: 50,
        ..Flaky::default()
    });
    let layer = SpanMetricsLayer::builder()
        .with_recorder(DurationOnly(Arc::clone(&flaky)))
        .without_meter()
        // A tiny ring, so that the background thread forwards while the thread records.
        .with_buffer_capacity(64)
        .expect("a valid capacity")
        .build();
    let handle = layer.handle();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let calls = 20_000u64;
    // Silence the panic messages of the sink; the test checks what they did. Only those: the
    // hook is the process's, and the other tests of this binary run meanwhile.
    let hook = Arc::new(Mutex::new(Some(std::panic::take_hook())));
    let others = Arc::clone(&hook);
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"the sink failed") {
            if let Some(hook) = others.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                hook(info);
            }
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..calls {
                tracing::info_span!("h", command = "flaky").in_scope(|| {});
            }
        });
        handle.flush();
    }));
    drop(std::panic::take_hook());
    let hook = hook.lock().unwrap_or_else(|e| e.into_inner()).take();
    std::panic::set_hook(hook.expect("the hook that was set before"));
    assert!(outcome.is_ok(), "a sink's panic reached the application");
    assert_eq!(flaky.seen.load(Ordering::Relaxed), calls);
    assert_eq!(flaky.recorded.load(Ordering::Relaxed), calls - 50);
    assert_eq!(handle.dropped(), 50, "each lost record is counted");
}
