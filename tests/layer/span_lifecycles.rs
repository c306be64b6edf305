//! Spans entered on several threads, re-entered many times, closed on another thread, never
//! closed, nested; and the in-flight gauge through all of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};

use crate::two_sinks::{self, failed, ok, Fixture};
use spanmetrics::names::{self, OTEL_BUSY, OTEL_DURATION};
use tracing::Instrument;

fn active(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn commands_in_flight_are_counted_while_open_and_back_to_zero_after_close() {
    let fx = Fixture::new();
    let open: Vec<_> = fx.run(|| {
        (0..3)
            .map(|_| tracing::info_span!("h", command = "chat"))
            .chain(std::iter::once(tracing::info_span!("h", command = "roll")))
            .collect()
    });
    assert_eq!(
        fx.snapshot().active(),
        active(&[("chat", 3.0), ("roll", 1.0)])
    );
    let mut open = open;
    open.truncate(1);
    assert_eq!(
        fx.snapshot().active(),
        active(&[("chat", 1.0), ("roll", 0.0)])
    );
    drop(open);
    let snap = fx.snapshot();
    assert_eq!(snap.active(), active(&[("chat", 0.0), ("roll", 0.0)]));
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("chat"), 3), (ok("roll"), 1)].into_iter().collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_never_closed_span_keeps_one_in_flight_for_its_command_only() {
    let fx = Fixture::new();
    fx.run(|| {
        let stuck = tracing::info_span!("h", command = "stuck");
        let entered = stuck.clone().entered();
        // The handler hangs forever: its span is never closed.
        std::mem::forget(entered);
        std::mem::forget(stuck);
        for _ in 0..4 {
            let _s = tracing::info_span!("h", command = "fine");
            let _t = tracing::info_span!("h", command = "stuck_sibling");
        }
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.active(),
        active(&[("stuck", 1.0), ("fine", 0.0), ("stuck_sibling", 0.0)])
    );
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("fine"), 4), (ok("stuck_sibling"), 4)]
            .into_iter()
            .collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_span_entered_on_many_threads_counts_once() {
    let fx = Fixture::new();
    let threads = 4;
    let span = fx.run(|| tracing::info_span!("h", command = "shared"));
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (span, barrier, dispatch) = (span.clone(), barrier.clone(), fx.dispatch.clone());
            s.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    barrier.wait();
                    for _ in 0..500 {
                        span.in_scope(|| tracing::info!("working"));
                    }
                })
            });
        }
    });
    assert_eq!(fx.snapshot().active(), active(&[("shared", 1.0)]));
    drop(span);
    let snap = fx.snapshot();
    let want: BTreeMap<_, _> = [(ok("shared"), 1)].into_iter().collect();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    let busy = snap.sums(OTEL_BUSY)[&ok("shared")];
    let duration = snap.sums(OTEL_DURATION)[&ok("shared")];
    assert!(busy <= duration, "busy {busy} > duration {duration}");
    assert_eq!(snap.active(), active(&[("shared", 0.0)]));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_span_reentered_many_times_counts_once() {
    let fx = Fixture::new();
    fx.run(|| {
        let span = tracing::info_span!("h", command = "poll");
        for i in 0..10_000 {
            span.in_scope(|| {
                if i == 5_000 {
                    tracing::error!(error.type = "Midway", "one poll failed");
                }
            });
        }
    });
    let snap = fx.snapshot();
    let want: BTreeMap<_, _> = [(failed("poll", "Midway"), 1)].into_iter().collect();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn spans_closed_on_another_thread_count_once_each() {
    let fx = Fixture::new();
    let spans: Vec<_> = fx.run(|| {
        (0..8)
            .map(|i| {
                let span =
                    tracing::info_span!("h", command = "handoff", outcome = tracing::field::Empty);
                if i % 2 == 0 {
                    span.record("outcome", "error");
                }
                span
            })
            .collect()
    });
    // Each span is dropped (closed) on a thread of its own, which then exits.
    std::thread::scope(|s| {
        for span in spans {
            s.spawn(move || drop(span));
        }
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (ok("handoff"), 4),
            (failed("handoff", names::DEFAULT_ERROR_TYPE), 4)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(snap.active(), active(&[("handoff", 0.0)]));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn nested_command_spans_each_count_once() {
    let fx = Fixture::new();
    fx.run(|| {
        let outer = tracing::info_span!("h", command = "session");
        let _o = outer.enter();
        for i in 0..3 {
            let inner = tracing::info_span!("h", command = "roll");
            inner.in_scope(|| {
                if i == 1 {
                    // Fails the inner command only.
                    tracing::error!(error.type = "BadDice", "cannot parse");
                }
            });
        }
        // After the inner commands closed, an error belongs to the outer one.
        tracing::error!(error.type = "SessionLost", "gone");
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (ok("roll"), 2),
            (failed("roll", "BadDice"), 1),
            (failed("session", "SessionLost"), 1)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(snap.active(), active(&[("session", 0.0), ("roll", 0.0)]));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_command_renamed_with_record_moves_its_in_flight_count() {
    let fx = Fixture::new();
    let span = fx.run(|| tracing::info_span!("dispatch", command = tracing::field::Empty));
    assert_eq!(fx.snapshot().active(), active(&[("dispatch", 1.0)]));
    span.record("command", "roll");
    assert_eq!(
        fx.snapshot().active(),
        active(&[("dispatch", 0.0), ("roll", 1.0)])
    );
    drop(span);
    let snap = fx.snapshot();
    assert_eq!(snap.active(), active(&[("dispatch", 0.0), ("roll", 0.0)]));
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("roll"), 1)].into_iter().collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

/// A future that returns `Pending` `n` times before finishing, waking itself each time.
struct YieldTimes(u32);

impl Future for YieldTimes {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[tracing::instrument(fields(command = "fetch"), err(Debug))]
async fn fetch(polls: u32, fail: bool) -> Result<(), std::io::ErrorKind> {
    YieldTimes(polls).await;
    tracing::info!(mark = "halfway");
    YieldTimes(polls).await;
    if fail {
        Err(std::io::ErrorKind::TimedOut)
    } else {
        Ok(())
    }
}

#[test]
fn instrumented_futures_on_a_multi_thread_runtime_count_exactly() {
    let fx = Fixture::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tasks = 40;
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|i| {
                use tracing::instrument::WithSubscriber;
                tokio::spawn(fetch(50, i % 4 == 0).with_subscriber(fx.dispatch.clone()))
            })
            .collect();
        for h in handles {
            let _ = h.await.unwrap();
        }
    });
    drop(runtime);
    let snap = fx.snapshot();
    let failures = (0..tasks).filter(|i| i % 4 == 0).count() as u64;
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (ok("fetch"), tasks - failures),
            (failed("fetch", "TimedOut"), failures)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        snap.counts(names::OTEL_MARK),
        [(two_sinks::mark("fetch", "halfway"), tasks)]
            .into_iter()
            .collect()
    );
    assert_eq!(snap.active(), active(&[("fetch", 0.0)]));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_future_polled_by_hand_is_one_command_however_often_it_is_polled() {
    let fx = Fixture::new();
    fx.run(|| {
        let span = tracing::info_span!("h", command = "manual");
        let mut fut = Box::pin(YieldTimes(1000).instrument(span));
        let mut cx = Context::from_waker(Waker::noop());
        while fut.as_mut().poll(&mut cx).is_pending() {}
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_BUSY),
        [(ok("manual"), 1)].into_iter().collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

/// Splits `items` into `parts` vectors of about equal length.
fn split<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..parts).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        out[i % parts].push(item);
    }
    out
}

#[test]
fn more_command_spans_in_flight_than_the_fast_table_holds_count_exactly() {
    // The layer keeps command-span state in a table of a few thousand slots and, past that, in
    // the spans' extensions. Twenty thousand spans in flight use both; each must count the same.
    let fx = Fixture::new();
    let n = 20_000;
    let mut spans: Vec<_> = fx.run(|| {
        (0..n)
            .map(|i| {
                let span =
                    tracing::info_span!("h", command = "crowd", outcome = tracing::field::Empty);
                span.in_scope(|| {
                    if i % 4 == 0 {
                        tracing::error!(error.type = "Crowded", "no room");
                    }
                });
                if i % 4 == 1 {
                    span.record("outcome", "error");
                }
                span
            })
            .collect()
    });
    // The last few are certainly past the table: their busy time must still add up.
    let slow: Vec<_> = fx.run(|| {
        (0..5)
            .map(|_| {
                let span = tracing::info_span!("h", command = "crowd_slow");
                span.in_scope(|| std::thread::sleep(std::time::Duration::from_millis(2)));
                span
            })
            .collect()
    });
    assert_eq!(
        fx.snapshot().active(),
        active(&[("crowd", n as f64), ("crowd_slow", 5.0)])
    );
    spans.extend(slow);
    // Closed on four threads while each also runs short commands of its own.
    std::thread::scope(|s| {
        for part in split(spans, 4) {
            let fx = &fx;
            s.spawn(move || {
                fx.run(|| {
                    for span in part {
                        drop(span);
                        tracing::info_span!("h", command = "after").in_scope(|| {});
                    }
                })
            });
        }
    });
    let snap = fx.snapshot();
    let want: BTreeMap<_, _> = [
        (ok("crowd"), n / 2),
        (failed("crowd", "Crowded"), n / 4),
        (failed("crowd", names::DEFAULT_ERROR_TYPE), n / 4),
        (ok("crowd_slow"), 5),
        (ok("after"), n + 5),
    ]
    .into_iter()
    .collect();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    let busy = snap.sums(OTEL_BUSY)[&ok("crowd_slow")];
    assert!(busy >= 0.010, "5 spans entered for 2 ms each, busy {busy}");
    assert_eq!(
        snap.active(),
        active(&[("crowd", 0.0), ("crowd_slow", 0.0), ("after", 0.0)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_span_closed_while_its_thread_is_torn_down_still_counts() {
    thread_local! {
        // Dropped during the thread's teardown, before or after the layer's own thread-locals.
        static HELD: std::cell::RefCell<Vec<tracing::Span>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let fx = Fixture::new();
    std::thread::scope(|s| {
        let thread = s.spawn(|| {
            // Thread-locals are torn down in the reverse order of their first use: touching this
            // one before the layer's makes the held spans close after the layer's are gone.
            HELD.with(|_| {});
            fx.run(|| {
                tracing::info_span!("h", command = "warmup").in_scope(|| {});
                let failing = tracing::info_span!("h", command = "teardown");
                failing.in_scope(|| tracing::error!(error.type = "Late", "failed"));
                HELD.with(|held| {
                    held.borrow_mut().push(failing);
                    held.borrow_mut()
                        .push(tracing::info_span!("h", command = "teardown"));
                });
            });
        });
        thread.join().expect("the thread ran");
    });
    // The held spans close in the thread's thread-local destructors, which neither the end of
    // the scope nor `join` is taken to have finished: poll (each snapshot flushes) until both
    // are closed, then check everything exactly.
    two_sinks::poll_until(
        std::time::Duration::from_secs(30),
        "the spans held by the thread's thread-locals to close",
        || (fx.snapshot().active().get("teardown") == Some(&0.0)).then_some(()),
    );
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (ok("warmup"), 1),
            (ok("teardown"), 1),
            (failed("teardown", "Late"), 1)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(snap.active(), active(&[("warmup", 0.0), ("teardown", 0.0)]));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn after_a_burst_the_background_thread_alone_forwards_everything_and_settles_the_gauge() {
    // A long flush interval: only the background thread's pacing under load forwards here.
    let fx = Fixture::with(|b| {
        b.with_flush_interval(std::time::Duration::from_secs(60))
            .expect("a valid interval")
    });
    let per_thread = 50_000u64;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                fx.run(|| {
                    for _ in 0..per_thread {
                        tracing::info_span!("h", command = "burst").in_scope(|| {});
                    }
                })
            });
        }
    });
    // No flush: what the Prometheus recorder holds is what the background thread forwarded.
    // The deadline stays below the 60 s flush interval, so the periodic flush cannot be what
    // forwards the rest.
    two_sinks::poll_until(
        std::time::Duration::from_secs(30),
        "every call forwarded and nothing in flight",
        || {
            let view = fx.render_prometheus();
            let count = view.counts(OTEL_DURATION).get(&ok("burst")).copied();
            let in_flight = view
                .values(names::OTEL_ACTIVE)
                .into_iter()
                .find(|(series, _)| {
                    series.get(names::ATTR_COMMAND).map(String::as_str) == Some("burst")
                })
                .map(|(_, value)| value);
            (count == Some(2 * per_thread) && in_flight == Some(0.0)).then_some(())
        },
    );
    assert_eq!(fx.handle.dropped(), 0);
}
