//! `command.mark` (span start → a `mark` event) and `command.busy` (time the span was entered).
//! Only ordering relations are asserted, never absolute timings.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::two_sinks::{mark, ok, Fixture};
use spanmetrics::names::{self, OTEL_BUSY, OTEL_DURATION, OTEL_MARK};

/// quanta's calibrated TSC and the OS clock behind `thread::sleep` may differ by a little.
const CLOCK_SLACK: f64 = 0.98;

#[test]
fn mark_events_record_time_to_mark_per_command_and_mark() {
    let fx = Fixture::new();
    let calls = 5;
    fx.run(|| {
        for _ in 0..calls {
            let span = tracing::info_span!("h", command = "chat");
            let _entered = span.enter();
            tracing::info!(mark = "first_token", "streaming");
            tracing::debug!("no mark here");
            tracing::info!(mark = "done", "finished");
        }
        let span = tracing::info_span!("h", command = "roll");
        span.in_scope(|| tracing::info!(mark = "first_token"));
    });
    let snap = fx.snapshot();
    let want: BTreeMap<_, _> = [
        (mark("chat", "first_token"), calls),
        (mark("chat", "done"), calls),
        (mark("roll", "first_token"), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(snap.counts(OTEL_MARK), want);
    // The mark series carry exactly `command` and `mark`, in Prometheus too.
    assert!(snap
        .prom_text
        .contains("command_mark_seconds_count{command=\"chat\",mark=\"first_token\"} 5"));
    // A mark is never later than a later mark of the same span, nor than the span's end.
    let marks = snap.sums(OTEL_MARK);
    let durations = snap.sums(OTEL_DURATION);
    let first = marks[&mark("chat", "first_token")];
    let done = marks[&mark("chat", "done")];
    assert!(first <= done, "first_token {first} > done {done}");
    assert!(done <= durations[&ok("chat")], "mark beyond duration");
    assert!(marks[&mark("roll", "first_token")] <= durations[&ok("roll")]);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_mark_measures_from_span_creation_not_from_the_event() {
    let fx = Fixture::new();
    let wait = Duration::from_millis(20);
    fx.run(|| {
        let span = tracing::info_span!("h", command = "slow_start");
        std::thread::sleep(wait);
        span.in_scope(|| tracing::info!(mark = "first_token"));
    });
    let marks = fx.snapshot().sums(OTEL_MARK);
    let value = marks[&mark("slow_start", "first_token")];
    assert!(
        value >= wait.as_secs_f64() * CLOCK_SLACK,
        "mark {value}s is shorter than the {wait:?} before it"
    );
}

#[test]
fn marks_inside_plain_child_spans_belong_to_the_command_and_marks_outside_are_ignored() {
    let fx = Fixture::new();
    fx.run(|| {
        tracing::info!(mark = "orphan");
        tracing::info_span!("plain").in_scope(|| tracing::info!(mark = "orphan"));
        let span = tracing::info_span!("h", command = "chat");
        let _entered = span.enter();
        tracing::info_span!("llm_call").in_scope(|| tracing::info!(mark = "first_token"));
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_MARK),
        [(mark("chat", "first_token"), 1)].into_iter().collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn marks_of_nested_commands_go_to_the_nearest_command() {
    let fx = Fixture::new();
    fx.run(|| {
        let outer = tracing::info_span!("h", command = "session");
        let _o = outer.enter();
        tracing::info!(mark = "opened");
        let inner = tracing::info_span!("h", command = "roll");
        inner.in_scope(|| tracing::info!(mark = "rolled"));
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_MARK),
        [(mark("session", "opened"), 1), (mark("roll", "rolled"), 1)]
            .into_iter()
            .collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn distinct_marks_beyond_the_cap_become_other() {
    let fx = Fixture::with(|b| b.with_max_marks(2).unwrap());
    fx.run(|| {
        let span = tracing::info_span!("h", command = "m");
        let _entered = span.enter();
        for m in ["a", "b", "c", "d", "a"] {
            tracing::info!(mark = m);
        }
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_MARK),
        [
            (mark("m", "a"), 2),
            (mark("m", "b"), 1),
            (mark("m", names::OTHER), 2)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn busy_time_of_an_async_style_span_excludes_the_idle_gap() {
    let fx = Fixture::new();
    let gap = Duration::from_millis(30);
    fx.run(|| {
        // Like a future polled twice: entered, idle (awaiting), entered again.
        let span = tracing::info_span!("h", command = "fetch");
        span.in_scope(|| std::hint::black_box(1 + 1));
        std::thread::sleep(gap);
        span.in_scope(|| std::hint::black_box(2 + 2));
    });
    let snap = fx.snapshot();
    assert_eq!(snap.counts(OTEL_BUSY), snap.counts(OTEL_DURATION));
    let busy = snap.sums(OTEL_BUSY)[&ok("fetch")];
    let duration = snap.sums(OTEL_DURATION)[&ok("fetch")];
    assert!(busy < duration, "busy {busy} >= duration {duration}");
    assert!(
        duration - busy >= gap.as_secs_f64() * CLOCK_SLACK,
        "the idle gap of {gap:?} is missing from duration {duration} - busy {busy}"
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn busy_time_of_a_sync_span_covers_the_time_it_was_entered() {
    let fx = Fixture::new();
    let work = Duration::from_millis(30);
    fx.run(|| {
        let span = tracing::info_span!("h", command = "compute");
        let _entered = span.enter();
        std::thread::sleep(work);
    });
    let snap = fx.snapshot();
    let busy = snap.sums(OTEL_BUSY)[&ok("compute")];
    let duration = snap.sums(OTEL_DURATION)[&ok("compute")];
    assert!(busy <= duration, "busy {busy} > duration {duration}");
    assert!(
        busy >= work.as_secs_f64() * CLOCK_SLACK,
        "busy {busy} misses the {work:?} spent entered"
    );
}

#[test]
fn nested_enters_of_the_same_span_are_not_counted_twice() {
    let fx = Fixture::new();
    let work = Duration::from_millis(20);
    fx.run(|| {
        let span = tracing::info_span!("h", command = "nested");
        let _a = span.enter();
        {
            let _b = span.enter();
            let _c = span.enter();
            std::thread::sleep(work);
        }
    });
    let snap = fx.snapshot();
    let busy = snap.sums(OTEL_BUSY)[&ok("nested")];
    let duration = snap.sums(OTEL_DURATION)[&ok("nested")];
    // Counting overlapping enters separately would make busy about three times the work.
    assert!(busy <= duration, "busy {busy} > duration {duration}");
    assert!(busy >= work.as_secs_f64() * CLOCK_SLACK);
}

#[test]
fn busy_time_can_be_turned_off() {
    let fx = Fixture::with(|b| b.with_busy_time(false));
    fx.run(|| {
        let span = tracing::info_span!("h", command = "lean");
        span.in_scope(|| ());
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("lean"), 1)].into_iter().collect()
    );
    assert!(snap.counts(OTEL_BUSY).is_empty());
    assert_eq!(fx.handle.dropped(), 0);
}
