//! Hostile span shapes: deep nesting, events aimed at closed spans, spans entered, failed and
//! closed on other threads, spans never closed, and a flood of distinct hostile command
//! names. Nothing panics, every command counts exactly once, labels come only from the
//! allow-list, and the series stay at the cap.

use std::collections::BTreeMap;

use crate::two_sinks::{failed, ok, Fixture, Labels};
use proptest::prelude::*;
use spanmetrics::names::{self, OTEL_BUSY, OTEL_DURATION};

/// The one allow-listed label.
const LABEL: &str = "system";

#[test]
fn a_thousand_nested_command_spans_each_count_once() {
    const DEPTH: usize = 1000;
    let fx = Fixture::new();
    fx.run(|| {
        let mut stack = Vec::with_capacity(DEPTH);
        for _ in 0..DEPTH {
            stack.push(tracing::info_span!("deep", command = "deep").entered());
        }
        tracing::error!(error.type = "Bottom", "innermost fails");
        while let Some(span) = stack.pop() {
            drop(span);
        }
    });
    let snap = fx.snapshot();
    let want: BTreeMap<Labels, u64> = [(failed("deep", "Bottom"), 1), (ok("deep"), 999)]
        .into_iter()
        .collect();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    assert_eq!(snap.active().get("deep"), Some(&0.0));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn events_aimed_at_a_closed_span_change_nothing() {
    let fx = Fixture::new();
    fx.run(|| {
        let span = tracing::info_span!("gone", command = "gone");
        let id = span.id().expect("the span is enabled");
        drop(span);
        // The id is stale now; tracing lets an event name it as its parent all the same.
        tracing::error!(parent: &id, error.type = "Late", "after close");
        tracing::info!(parent: &id, mark = "late", "after close");
        tracing::info!(parent: &id, outcome = "error", "after close");
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("gone"), 1)].into_iter().collect()
    );
    assert!(snap.counts(names::OTEL_MARK).is_empty());
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_hundred_thousand_hostile_command_names_stay_at_the_series_cap() {
    const NAMES: usize = 100_000;
    const CAP: usize = 2000;
    // Creating thousands of series makes each drain slow; recording threads wait for it with
    // the defaults, so the totals are exact.
    let fx = Fixture::with(|b| b.with_label(LABEL).expect("a valid label"));
    let rss_before = resident_kib();
    let mut rss_half = 0;
    fx.run(|| {
        for i in 0..NAMES {
            if i == NAMES / 2 {
                fx.handle.flush();
                rss_half = resident_kib();
            }
            let name = format!("{i}\\\"\n\u{0}{}", "é".repeat(i % 64));
            let span = tracing::info_span!(
                "flood",
                command = name.as_str(),
                system = name.as_str(),
                user = name.as_str()
            );
            drop(span);
        }
    });
    fx.handle.flush();
    let rss_end = resident_kib();
    let snap = fx.snapshot();
    let overflow: Labels = [(names::ATTR_OVERFLOW.to_owned(), "true".to_owned())]
        .into_iter()
        .collect();
    // The sinks spell the hostile names differently (backslashes, control characters), so
    // each is checked on its own.
    let mut named = 0;
    for view in [&snap.prom, &snap.otel] {
        let counts = view.counts(OTEL_DURATION);
        named = counts.keys().filter(|l| **l != overflow).count();
        assert_eq!(named, CAP, "distinct series below the cap");
        assert_eq!(counts.values().sum::<u64>(), NAMES as u64, "no record lost");
        assert_eq!(counts[&overflow], (NAMES - CAP) as u64);
        let active = view.values(names::OTEL_ACTIVE);
        assert!(active.len() <= CAP + 1, "{} in-flight series", active.len());
        assert!(active.values().all(|v| *v == 0.0));
    }
    assert_eq!(snap.folded(OTEL_DURATION), (NAMES - CAP) as u64);
    assert_eq!(fx.handle.dropped(), 0);
    for keys in [snap.prom.label_keys(), snap.otel.label_keys()] {
        for key in keys {
            assert!(
                [
                    names::ATTR_COMMAND,
                    names::ATTR_OUTCOME,
                    names::ATTR_OVERFLOW,
                    names::ATTR_METRIC,
                    LABEL
                ]
                .contains(&key.as_str()),
                "label {key} is not allow-listed"
            );
        }
    }
    eprintln!(
        "flood: {NAMES} distinct names, {named} series + overflow, {} folded, resident memory \
         {rss_before} KiB before, {rss_half} KiB half-way, {rss_end} KiB at the end",
        snap.folded(OTEL_DURATION),
    );
}

/// This process's resident memory, from `/proc`.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One step of a span's life, on one of a few threads.
#[derive(Clone, Debug)]
enum Step {
    /// Enter and exit the span on this thread, with a child span inside.
    Enter { span: usize, thread: usize },
    /// An error event inside the span, on this thread.
    Fail { span: usize, thread: usize },
    /// A clone of the span moves to this thread and is dropped there.
    CloneAway { span: usize, thread: usize },
    /// The last handle is dropped on this thread: the span closes.
    Close { span: usize, thread: usize },
    /// The span is forgotten: it never closes.
    Leak { span: usize },
}

const SPANS: usize = 6;
const THREADS: usize = 3;

fn step() -> impl Strategy<Value = Step> {
    let (s, t) = (0..SPANS, 0..THREADS);
    prop_oneof![
        3 => (s.clone(), t.clone()).prop_map(|(span, thread)| Step::Enter { span, thread }),
        2 => (s.clone(), t.clone()).prop_map(|(span, thread)| Step::Fail { span, thread }),
        2 => (s.clone(), t.clone()).prop_map(|(span, thread)| Step::CloneAway { span, thread }),
        2 => (s.clone(), t).prop_map(|(span, thread)| Step::Close { span, thread }),
        1 => s.prop_map(|span| Step::Leak { span }),
    ]
}

/// Runs `f` on a fresh thread numbered `thread`, with the fixture's subscriber.
fn on_thread<R: Send>(fx: &Fixture, thread: usize, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("shape-{thread}"))
            .spawn_scoped(s, || fx.run(f))
            .expect("a thread")
            .join()
            .expect("no panic")
    })
}

fn run_script(steps: &[Step]) {
    let fx = Fixture::with(|b| b.with_label(LABEL).expect("a valid label"));
    let mut spans: Vec<Option<tracing::Span>> = fx.run(|| {
        (0..SPANS)
            .map(|i| {
                Some(tracing::info_span!(
                    "shape",
                    command = format!("c{i}").as_str(),
                    system = "s",
                    user = "not-a-label"
                ))
            })
            .collect()
    });
    let mut failed_spans = [false; SPANS];
    let mut leaked = [false; SPANS];
    for step in steps {
        match *step {
            Step::Enter { span, thread } => {
                if let Some(s) = &spans[span] {
                    on_thread(&fx, thread, || {
                        let _entered = s.enter();
                        let _child = tracing::info_span!("child", user = "x").entered();
                    });
                }
            }
            Step::Fail { span, thread } => {
                if let Some(s) = &spans[span] {
                    on_thread(&fx, thread, || {
                        s.in_scope(|| tracing::error!(error.type = "Boom", "failed"))
                    });
                    failed_spans[span] = true;
                }
            }
            Step::CloneAway { span, thread } => {
                if let Some(s) = &spans[span] {
                    let clone = s.clone();
                    on_thread(&fx, thread, move || drop(clone));
                }
            }
            Step::Close { span, thread } => {
                if let Some(s) = spans[span].take() {
                    on_thread(&fx, thread, move || drop(s));
                }
            }
            Step::Leak { span } => {
                if let Some(s) = spans[span].take() {
                    std::mem::forget(s);
                    leaked[span] = true;
                }
            }
        }
    }
    // Spans still held are closed here, on this thread.
    drop(spans);
    let snap = fx.snapshot();
    let mut want: BTreeMap<Labels, u64> = BTreeMap::new();
    let mut want_active = BTreeMap::new();
    for i in 0..SPANS {
        let command = format!("c{i}");
        want_active.insert(command.clone(), if leaked[i] { 1.0 } else { 0.0 });
        if leaked[i] {
            continue;
        }
        let mut series = if failed_spans[i] {
            failed(&command, "Boom")
        } else {
            ok(&command)
        };
        series.insert(LABEL.to_owned(), "s".to_owned());
        *want.entry(series).or_default() += 1;
    }
    assert_eq!(snap.counts(OTEL_DURATION), want, "closed spans, once each");
    assert_eq!(snap.active(), want_active, "in flight: the leaked spans");
    assert_eq!(fx.handle.dropped(), 0);
}

proptest! {
    #![proptest_config(crate::proptest_config(64))]

    /// Any interleaving of enters, failures, clones and closes across threads, with spans
    /// never closed: each closed span counts once, with the right outcome.
    #[test]
    fn spans_entered_failed_and_closed_on_any_thread_count_exactly(
        steps in prop::collection::vec(step(), 0..24)
    ) {
        run_script(&steps);
    }
}
