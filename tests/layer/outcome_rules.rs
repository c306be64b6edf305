//! Every rule that decides `outcome` and `error.type`, checked with exact counts in both sinks.

use std::collections::BTreeMap;

use crate::two_sinks::{self, failed, ok, Fixture};
use spanmetrics::names::{self, OTEL_BUSY, OTEL_DURATION};
use tracing::field::Empty;

#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug
enum BotError {
    Timeout { after: u32 },
    Io(std::io::Error),
    NotFound,
}

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the dice service did not answer in time")
    }
}

impl std::error::Error for BotError {}

#[tracing::instrument(fields(command = "roll"), err(Debug))]
fn roll_debug(error: Option<BotError>) -> Result<u32, BotError> {
    match error {
        Some(e) => Err(e),
        None => Ok(4),
    }
}

#[tracing::instrument(fields(command = "roll"), err)]
fn roll_display(fail: bool) -> Result<u32, BotError> {
    if fail {
        Err(BotError::NotFound)
    } else {
        Ok(4)
    }
}

fn expect(entries: &[(two_sinks::Labels, u64)]) -> BTreeMap<two_sinks::Labels, u64> {
    entries.iter().cloned().collect()
}

#[test]
fn error_event_marks_command_failed_and_other_levels_do_not() {
    let fx = Fixture::new();
    let (mut errors, mut oks) = (0, 0);
    fx.run(|| {
        for i in 0..9 {
            let span = tracing::info_span!("handler", command = "chat");
            let _entered = span.enter();
            tracing::warn!("slow upstream");
            tracing::info!("working");
            if i % 3 == 0 {
                tracing::error!("upstream failed");
                errors += 1;
            } else {
                oks += 1;
            }
        }
    });
    let snap = fx.snapshot();
    let want = expect(&[
        (ok("chat"), oks),
        (failed("chat", names::DEFAULT_ERROR_TYPE), errors),
    ]);
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn instrument_err_debug_gives_the_leading_identifier_of_the_debug_text() {
    let fx = Fixture::new();
    fx.run(|| {
        for _ in 0..2 {
            let _ = roll_debug(Some(BotError::Timeout { after: 5 }));
        }
        let _ = roll_debug(Some(BotError::Io(std::io::Error::other("disk gone"))));
        let _ = roll_debug(Some(BotError::NotFound));
        for _ in 0..3 {
            let _ = roll_debug(None);
        }
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (ok("roll"), 3),
            (failed("roll", "Timeout"), 2),
            (failed("roll", "Io"), 1),
            (failed("roll", "NotFound"), 1),
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn instrument_err_with_prose_display_gives_the_default_error_type() {
    let fx = Fixture::new();
    fx.run(|| {
        let _ = roll_display(true);
        let _ = roll_display(true);
        let _ = roll_display(false);
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (ok("roll"), 1),
            (failed("roll", names::DEFAULT_ERROR_TYPE), 2)
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

/// A handler whose error is a plain message.
#[tracing::instrument(fields(command = "lookup"), err(Debug))]
fn lookup(message: &str) -> Result<(), String> {
    Err(message.to_owned())
}

#[test]
fn instrument_err_debug_of_a_string_error_uses_its_text() {
    let fx = Fixture::new();
    fx.run(|| {
        let _ = lookup("NotFound");
        let _ = lookup("connection refused");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (failed("lookup", "NotFound"), 1),
            (failed("lookup", names::DEFAULT_ERROR_TYPE), 1)
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn error_field_recorded_as_dyn_error_gives_its_debug_identifier() {
    let fx = Fixture::new();
    fx.run(|| {
        let span = tracing::info_span!("h", command = "fetch");
        let _entered = span.enter();
        let e = BotError::Timeout { after: 1 };
        tracing::error!(
            error = &e as &(dyn std::error::Error + 'static),
            "fetch failed"
        );
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[(failed("fetch", "Timeout"), 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn status_code_error_in_any_case_marks_command_failed() {
    let fx = Fixture::new();
    let spellings = ["ERROR", "error", "Error", "eRRoR"];
    fx.run(|| {
        for s in spellings {
            // At creation.
            let _span = tracing::info_span!("h", command = "status", otel.status_code = s);
        }
        for s in spellings {
            // Recorded later.
            let span = tracing::info_span!("h", command = "status", otel.status_code = Empty);
            span.record("otel.status_code", s);
        }
        // Not an error: OK, and values that are neither.
        let _a = tracing::info_span!("h", command = "status", otel.status_code = "OK");
        let _b = tracing::info_span!("h", command = "status", otel.status_code = "UNSET");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (ok("status"), 2),
            (
                failed("status", names::DEFAULT_ERROR_TYPE),
                2 * spellings.len() as u64
            )
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn outcome_field_error_marks_command_failed_at_creation_or_later() {
    let fx = Fixture::new();
    fx.run(|| {
        let _a = tracing::info_span!("h", command = "pay", outcome = "error");
        let b = tracing::info_span!("h", command = "pay", outcome = Empty);
        b.record("outcome", "error");
        let _c = tracing::info_span!("h", command = "pay", outcome = "ok");
        let _d = tracing::info_span!("h", command = "pay", outcome = "something else");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (ok("pay"), 2),
            (failed("pay", names::DEFAULT_ERROR_TYPE), 2)
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn outcome_ok_recorded_after_an_error_wins() {
    let fx = Fixture::new();
    fx.run(|| {
        // Retry succeeded: error event, then outcome = "ok".
        let span = tracing::info_span!("h", command = "retry", outcome = Empty);
        span.in_scope(|| tracing::error!("first attempt failed"));
        span.record("outcome", "ok");
        drop(span);
        // Same with the OpenTelemetry status.
        let span = tracing::info_span!("h", command = "retry", otel.status_code = Empty);
        span.in_scope(|| tracing::error!("first attempt failed"));
        span.record("otel.status_code", "OK");
        drop(span);
        // The other order: ok first, then an error event — the error is the latest.
        let span = tracing::info_span!("h", command = "retry", outcome = "ok");
        span.in_scope(|| tracing::error!(error.type = "Late", "failed after all"));
        drop(span);
        // outcome = "error" then "ok".
        let span = tracing::info_span!("h", command = "retry", outcome = "error");
        span.record("outcome", "ok");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[(ok("retry"), 3), (failed("retry", "Late"), 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn panic_inside_a_command_gives_error_type_panic() {
    let fx = Fixture::new();
    fx.run(|| {
        for _ in 0..2 {
            let result = std::panic::catch_unwind(|| {
                let span = tracing::info_span!("h", command = "explode");
                let _entered = span.enter();
                panic!("handler bug");
            });
            assert!(result.is_err());
        }
        // A span created before, closed normally, is unaffected.
        let _fine = tracing::info_span!("h", command = "explode");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (ok("explode"), 1),
            (failed("explode", names::PANIC_ERROR_TYPE), 2)
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn error_type_field_on_the_span_wins_over_the_event() {
    let fx = Fixture::new();
    fx.run(|| {
        // Span field at creation, event says otherwise.
        let span = tracing::info_span!("h", command = "q", error.type = "Quota");
        span.in_scope(|| tracing::error!(error.type = "Other", "denied"));
        drop(span);
        // Span field recorded after the event.
        let span = tracing::info_span!("h", command = "q", error.type = Empty);
        span.in_scope(|| tracing::error!(error = ?BotError::NotFound, "denied"));
        span.record("error.type", "Quota");
        drop(span);
        // Span field recorded before the event.
        let span = tracing::info_span!("h", command = "q", error.type = Empty);
        span.record("error.type", "Quota");
        span.in_scope(|| tracing::error!(error = ?BotError::NotFound, "denied"));
        drop(span);
        // An error.type on a span that never fails is not an error.
        let _fine = tracing::info_span!("h", command = "q", error.type = "Quota");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[(ok("q"), 1), (failed("q", "Quota"), 3)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn error_type_field_on_the_event_wins_over_the_error_text() {
    let fx = Fixture::new();
    fx.run(|| {
        let span = tracing::info_span!("h", command = "limit");
        span.in_scope(|| {
            tracing::error!(error.type = "RateLimited", error = ?BotError::Timeout { after: 2 }, "slow down")
        });
        drop(span);
        let span = tracing::info_span!("h", command = "limit");
        span.in_scope(|| tracing::error!(error.type = "RateLimited", "slow down"));
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[(failed("limit", "RateLimited"), 2)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn error_event_in_a_plain_child_span_fails_the_enclosing_command() {
    let fx = Fixture::new();
    fx.run(|| {
        let command = tracing::info_span!("h", command = "outer");
        let _c = command.enter();
        let child = tracing::info_span!("db_query");
        let _q = child.enter();
        tracing::error!(error = ?BotError::Timeout { after: 3 }, "query failed");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[(failed("outer", "Timeout"), 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn error_event_outside_any_command_changes_nothing() {
    let fx = Fixture::new();
    fx.run(|| {
        tracing::error!("no span at all");
        let plain = tracing::info_span!("not_a_command");
        plain.in_scope(|| tracing::error!("inside a plain span"));
        let _cmd = tracing::info_span!("h", command = "calm");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[(ok("calm"), 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn more_than_32_error_types_per_command_become_other() {
    let fx = Fixture::new();
    let distinct = 40;
    let cap = 32;
    fx.run(|| {
        for i in 0..distinct {
            let span = tracing::info_span!("h", command = "many");
            span.in_scope(|| tracing::error!(error.type = format!("E{i}").as_str(), "failed"));
        }
        // Every type beyond the cap is folded, also when it repeats.
        let span = tracing::info_span!("h", command = "many");
        span.in_scope(|| tracing::error!(error.type = "E39", "failed"));
        drop(span);
        // Already-seen types keep their own series after the cap is reached.
        let span = tracing::info_span!("h", command = "many");
        span.in_scope(|| tracing::error!(error.type = "E0", "failed"));
        drop(span);
        // The cap is per command: another command still gets its own types.
        let span = tracing::info_span!("h", command = "other");
        span.in_scope(|| tracing::error!(error.type = "E39", "failed"));
    });
    let mut want: BTreeMap<_, u64> = (0..cap)
        .map(|i| (failed("many", &format!("E{i}")), 1))
        .collect();
    *want.get_mut(&failed("many", "E0")).unwrap() += 1;
    want.insert(failed("many", names::OTHER), distinct - cap + 1);
    want.insert(failed("other", "E39"), 1);
    assert_eq!(fx.snapshot().counts(OTEL_DURATION), want);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn the_error_type_cap_is_configurable() {
    let fx = Fixture::with(|b| b.with_max_error_types(2).unwrap());
    fx.run(|| {
        for t in ["A", "B", "C", "D", "A"] {
            let span = tracing::info_span!("h", command = "capped");
            span.in_scope(|| tracing::error!(error.type = t, "failed"));
        }
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        expect(&[
            (failed("capped", "A"), 2),
            (failed("capped", "B"), 1),
            (failed("capped", names::OTHER), 2),
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

/// A `metrics` recorder that logs an error whenever a histogram is registered, as a sink with
/// its own diagnostics might, and counts nothing itself.
struct LoggingRecorder;

impl metrics::Recorder for LoggingRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        tracing::error!(metric = key.name(), "sink could not persist a new series");
        metrics::Histogram::noop()
    }
}

#[test]
fn an_error_a_sink_logs_while_forwarding_does_not_fail_the_command_around_it() {
    // A long flush interval: the background thread must not forward `inner` first, outside
    // the `outer` span, or the test would pass without checking anything.
    let fx = Fixture::with(|b| {
        b.with_recorder(LoggingRecorder)
            .with_flush_interval(std::time::Duration::from_secs(60))
            .expect("a valid interval")
    });
    let handle = fx.handle.clone();
    fx.run(|| {
        let outer = tracing::info_span!("outer", command = "outer");
        let _entered = outer.enter();
        drop(tracing::info_span!("inner", command = "inner"));
        // Forwarding here registers the `inner` series, and the recorder logs an error from
        // inside the `outer` command span.
        handle.flush();
    });
    let counts = fx.collect_otel().counts(OTEL_DURATION);
    assert_eq!(counts.get(&ok("outer")), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&ok("inner")), Some(&1), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(fx.handle.dropped(), 0);
}
