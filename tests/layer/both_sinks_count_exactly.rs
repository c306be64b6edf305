//! A mixed workload gives the same exact counts per command / outcome / error.type in the
//! Prometheus page and in the OpenTelemetry export, whichever way the records get there.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::two_sinks::{failed, ok, poll_until, Fixture, Labels};
use spanmetrics::names::{OTEL_ACTIVE, OTEL_BUSY, OTEL_DROPPED, OTEL_DURATION};

#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug
enum BotError {
    Timeout { after: u32 },
    NotFound,
}

const COMMANDS: [&str; 3] = ["roll", "help", "stats"];

#[tracing::instrument(skip_all, fields(command = command), err(Debug))]
fn handle(command: &str, i: u32) -> Result<(), BotError> {
    tracing::debug!(i, "handling");
    outcome_of(i)
}

/// The outcome of call `i`, by a rule the expectation below derives from independently.
fn outcome_of(i: u32) -> Result<(), BotError> {
    if i.is_multiple_of(5) {
        Err(BotError::Timeout { after: i })
    } else if i.is_multiple_of(7) {
        Err(BotError::NotFound)
    } else {
        Ok(())
    }
}

/// Runs calls `range` and returns the series each should land in.
fn workload(range: std::ops::Range<u32>) -> BTreeMap<Labels, u64> {
    let mut want = BTreeMap::new();
    for i in range {
        let command = COMMANDS[(i % 3) as usize];
        let _ = handle(command, i);
        let series = match outcome_of(i) {
            Ok(()) => ok(command),
            Err(BotError::Timeout { .. }) => failed(command, "Timeout"),
            Err(BotError::NotFound) => failed(command, "NotFound"),
        };
        *want.entry(series).or_insert(0) += 1;
    }
    want
}

fn merged(a: &BTreeMap<Labels, u64>, b: &BTreeMap<Labels, u64>) -> BTreeMap<Labels, u64> {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_insert(0) += v;
    }
    out
}

#[test]
fn mixed_workload_counts_exactly_in_both_sinks() {
    let fx = Fixture::new();
    let want = fx.run(|| workload(0..211));
    let snap = fx.snapshot();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    // Nothing in flight, nothing dropped.
    let active = snap.active();
    assert_eq!(active.len(), COMMANDS.len(), "{active:?}");
    assert!(active.values().all(|v| *v == 0.0), "{active:?}");
    assert_eq!(snap.values(OTEL_DROPPED).into_values().sum::<f64>(), 0.0);
    assert_eq!(fx.handle.dropped(), 0);
    // Prometheus spelling of the error type label.
    assert!(
        snap.prom_text.contains(
            "command_duration_seconds_count{command=\"roll\",outcome=\"error\",error_type=\"Timeout\"}"
        ),
        "{}",
        snap.prom_text
    );
}

#[test]
fn repeated_snapshots_are_cumulative_and_never_double_count() {
    let fx = Fixture::new();
    let first = fx.run(|| workload(0..50));
    assert_eq!(fx.snapshot().counts(OTEL_DURATION), first);
    assert_eq!(fx.snapshot().counts(OTEL_DURATION), first);
    let second = fx.run(|| workload(50..120));
    assert_eq!(fx.snapshot().counts(OTEL_DURATION), merged(&first, &second));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn an_opentelemetry_collection_sees_every_record_without_a_flush() {
    let fx = Fixture::new();
    let want = fx.run(|| workload(0..64));
    // No `handle.flush()`: the collection itself forwards what is buffered.
    let otel = fx.collect_otel();
    assert_eq!(otel.counts(OTEL_DURATION), want);
    assert_eq!(otel.counts(OTEL_BUSY), want);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn the_background_thread_forwards_to_prometheus_on_its_own() {
    let fx = Fixture::with(|b| b.with_flush_interval(Duration::from_millis(10)).unwrap());
    let want = fx.run(|| workload(0..40));
    // No flush and no collection: poll the rendered page until the counts arrive.
    poll_until(Duration::from_secs(60), "the background flush", || {
        let counts = fx.render_prometheus().counts(OTEL_DURATION);
        (counts == want).then_some(())
    });
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn records_from_many_threads_all_arrive_in_both_sinks() {
    let fx = Fixture::new();
    let threads = 4;
    let per_thread = 100;
    let wants: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let dispatch = fx.dispatch.clone();
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        workload(t * per_thread..(t + 1) * per_thread)
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = wants.iter().fold(BTreeMap::new(), |acc, w| merged(&acc, w));
    assert_eq!(want.values().sum::<u64>(), u64::from(threads * per_thread));
    let snap = fx.snapshot();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn without_recorder_only_opentelemetry_is_fed() {
    let fx = Fixture::with(|b| b.without_recorder());
    let want = fx.run(|| workload(0..30));
    let snap = fx.snapshot();
    assert_eq!(snap.otel.counts(OTEL_DURATION), want);
    assert!(snap.prom.histograms.is_empty(), "{:?}", snap.prom);
    assert!(snap.prom.values.is_empty(), "{:?}", snap.prom);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn without_meter_only_prometheus_is_fed() {
    let fx = Fixture::with(|b| b.without_meter());
    let want = fx.run(|| workload(0..30));
    let snap = fx.snapshot();
    assert_eq!(snap.prom.counts(OTEL_DURATION), want);
    assert!(snap.otel.histograms.is_empty(), "{:?}", snap.otel);
    assert!(snap.otel.values.is_empty(), "{:?}", snap.otel);
    assert_eq!(
        snap.prom.values(OTEL_ACTIVE).len(),
        COMMANDS.len(),
        "the gauge is still kept for Prometheus"
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn two_layers_in_two_subscribers_keep_their_counts_apart() {
    let a = Fixture::new();
    let b = Fixture::new();
    let want_a = a.run(|| workload(0..20));
    let want_b = b.run(|| workload(100..133));
    assert_eq!(a.snapshot().counts(OTEL_DURATION), want_a);
    assert_eq!(b.snapshot().counts(OTEL_DURATION), want_b);
    assert_eq!(a.handle.dropped(), 0);
    assert_eq!(b.handle.dropped(), 0);
}

#[test]
fn a_full_buffer_is_forwarded_by_the_recording_thread_and_nothing_is_lost() {
    // A tiny ring and a background thread that practically never runs: the recording thread
    // must forward what it buffered itself instead of dropping records.
    let fx = Fixture::with(|b| {
        b.with_buffer_capacity(64)
            .unwrap()
            .with_flush_interval(Duration::from_secs(60))
            .unwrap()
    });
    let spans = 20_000u64;
    fx.run(|| {
        for _ in 0..spans {
            let _s = tracing::info_span!("h", command = "burst");
        }
    });
    let snap = fx.snapshot();
    let recorded: u64 = snap.counts(OTEL_DURATION).values().sum();
    assert_eq!(recorded, spans, "every span is counted");
    assert_eq!(fx.handle.dropped(), 0, "nothing was dropped");
    let exported = snap.values(OTEL_DROPPED);
    assert_eq!(
        exported.values().copied().sum::<f64>() as u64,
        0,
        "both sinks export the (zero) dropped count"
    );
    assert_eq!(snap.active().get("burst").copied(), Some(0.0));
}
