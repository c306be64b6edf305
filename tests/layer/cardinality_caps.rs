//! Allow-listed labels only, and the per-metric series cap: series beyond it fold into one
//! `otel.metric.overflow="true"` series, the folded records are counted, nothing is lost.

use std::collections::{BTreeMap, BTreeSet};

use crate::two_sinks::{failed, labels, mark, ok, overflow, Fixture, Labels};
use spanmetrics::names::{self, OTEL_BUSY, OTEL_DURATION, OTEL_MARK};
use tracing::field::Empty;

fn with_label(mut series: Labels, key: &str, value: &str) -> Labels {
    series.insert(key.to_owned(), value.to_owned());
    series
}

#[test]
fn only_allow_listed_fields_become_labels() {
    let fx = Fixture::with(|b| b.with_label("system").unwrap());
    fx.run(|| {
        for (user, system) in [(1, "discord"), (2, "discord"), (3, "slack")] {
            let _s = tracing::info_span!(
                "h",
                command = "roll",
                system,
                user_id = user,
                message = "roll 2d6 please",
            );
        }
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (with_label(ok("roll"), "system", "discord"), 2),
            (with_label(ok("roll"), "system", "slack"), 1)
        ]
        .into_iter()
        .collect()
    );
    for view in [&snap.prom, &snap.otel] {
        let keys = view.label_keys();
        assert!(
            !keys.iter().any(|k| k == "user_id" || k == "message"),
            "not allow-listed, yet a label: {keys:?}"
        );
    }
    assert!(!snap.prom_text.contains("roll 2d6 please"));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn no_field_becomes_a_label_by_default() {
    let fx = Fixture::new();
    fx.run(|| {
        let _s = tracing::info_span!("h", command = "roll", system = "discord", user_id = 42);
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [(ok("roll"), 1)].into_iter().collect()
    );
    assert!(!snap.prom_text.contains("discord"));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn labels_recorded_later_apply_and_missing_labels_are_left_out() {
    let fx = Fixture::with(|b| b.with_label("system").unwrap().with_label("tier").unwrap());
    fx.run(|| {
        let span = tracing::info_span!("h", command = "roll", system = Empty, tier = Empty);
        span.record("system", "matrix");
        drop(span);
        let span = tracing::info_span!("h", command = "roll", system = "irc", tier = Empty);
        span.record("tier", "gold");
        span.in_scope(|| tracing::error!("failed"));
        drop(span);
        // Never recorded: no label at all, not an empty one.
        let _s = tracing::info_span!("h", command = "roll", system = Empty, tier = Empty);
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (with_label(ok("roll"), "system", "matrix"), 1),
            (
                with_label(
                    with_label(failed("roll", names::DEFAULT_ERROR_TYPE), "system", "irc"),
                    "tier",
                    "gold"
                ),
                1
            ),
            (ok("roll"), 1),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn labels_are_not_put_on_the_active_gauge_or_marks() {
    let fx = Fixture::with(|b| b.with_label("system").unwrap());
    fx.run(|| {
        let span = tracing::info_span!("h", command = "chat", system = "discord");
        span.in_scope(|| tracing::info!(mark = "first_token"));
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.values(names::OTEL_ACTIVE),
        [(labels(&[("command", "chat")]), 0.0)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        snap.counts(OTEL_MARK),
        [(mark("chat", "first_token"), 1)].into_iter().collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_dotted_label_is_spelled_with_underscores_in_prometheus() {
    let fx = Fixture::with(|b| b.with_label("chat.kind").unwrap());
    fx.run(|| {
        let _s = tracing::info_span!("h", command = "roll", chat.kind = "group");
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.otel.counts(OTEL_DURATION),
        [(with_label(ok("roll"), "chat.kind", "group"), 1)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        snap.prom.counts(OTEL_DURATION),
        [(with_label(ok("roll"), "chat_kind", "group"), 1)]
            .into_iter()
            .collect()
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn series_beyond_the_cap_fold_into_the_overflow_series_and_are_counted() {
    let cap = 3;
    let users = 10u64;
    let fx = Fixture::with(|b| b.with_label("user").unwrap().with_max_series(cap).unwrap());
    fx.run(|| {
        for u in 0..users {
            let _s = tracing::info_span!("h", command = "roll", user = u);
        }
    });
    let snap = fx.snapshot();
    let folded = users - cap as u64;
    let mut want: BTreeMap<Labels, u64> = (0..cap)
        .map(|u| (with_label(ok("roll"), "user", &u.to_string()), 1))
        .collect();
    want.insert(overflow(), folded);
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.counts(OTEL_BUSY), want);
    assert_eq!(snap.folded(OTEL_DURATION), folded);
    assert_eq!(want.values().sum::<u64>(), users, "nothing lost");
    assert!(snap.prom_text.contains(&format!(
        "command_duration_seconds_count{{otel_metric_overflow=\"true\"}} {folded}"
    )));
    assert!(snap.prom_text.contains(&format!(
        "spanmetrics_overflow_records_total{{metric=\"command_duration_seconds\"}} {folded}"
    )));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn outcomes_count_towards_the_cap_and_the_total_is_conserved() {
    let cap = 4;
    let fx = Fixture::with(|b| b.with_max_series(cap).unwrap());
    // Each (command, outcome, error.type) is a series; the order decides which ones fit.
    let calls: Vec<(&str, Option<&str>)> = vec![
        ("a", None),
        ("b", None),
        ("a", Some("Timeout")),
        ("c", None),
        ("b", Some("Timeout")), // fifth distinct series: folded
        ("a", None),            // known series: still its own
        ("c", Some("Gone")),    // folded
        ("b", Some("Timeout")), // folded again
    ];
    fx.run(|| {
        for (command, error) in &calls {
            let span = tracing::info_span!("h", command);
            if let Some(t) = error {
                span.in_scope(|| tracing::error!(error.type = t, "failed"));
            }
        }
    });
    // Expected from the rule: the first `cap` distinct series keep their own, later ones fold.
    let mut seen: BTreeSet<Labels> = BTreeSet::new();
    let mut want: BTreeMap<Labels, u64> = BTreeMap::new();
    let mut folded = 0;
    for (command, error) in &calls {
        let series = match error {
            None => ok(command),
            Some(t) => failed(command, t),
        };
        if seen.contains(&series) || seen.len() < cap {
            seen.insert(series.clone());
            *want.entry(series).or_insert(0) += 1;
        } else {
            *want.entry(overflow()).or_insert(0) += 1;
            folded += 1;
        }
    }
    assert_eq!(folded, 3, "the scenario folds something");
    let snap = fx.snapshot();
    assert_eq!(snap.counts(OTEL_DURATION), want);
    assert_eq!(snap.folded(OTEL_DURATION), folded);
    assert_eq!(
        snap.counts(OTEL_DURATION).values().sum::<u64>(),
        calls.len() as u64
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn mark_series_beyond_the_cap_fold_too() {
    let cap = 2;
    let fx = Fixture::with(|b| b.with_max_series(cap).unwrap());
    fx.run(|| {
        for m in ["a", "b", "c", "d", "a"] {
            let span = tracing::info_span!("h", command = "m");
            span.in_scope(|| tracing::info!(mark = m));
        }
    });
    let snap = fx.snapshot();
    assert_eq!(
        snap.counts(OTEL_MARK),
        [(mark("m", "a"), 2), (mark("m", "b"), 1), (overflow(), 2)]
            .into_iter()
            .collect()
    );
    assert_eq!(snap.folded(OTEL_MARK), 2);
    assert_eq!(snap.folded(OTEL_DURATION), 0);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn commands_beyond_the_cap_are_in_flight_under_the_overflow_series() {
    let cap = 2;
    let fx = Fixture::with(|b| b.with_max_series(cap).unwrap());
    let open: Vec<_> = fx.run(|| {
        ["a", "b", "c", "d"]
            .into_iter()
            .map(|command| tracing::info_span!("h", command))
            .collect()
    });
    let in_flight = fx.snapshot().active();
    assert_eq!(in_flight.values().sum::<f64>(), 4.0, "{in_flight:?}");
    assert_eq!(in_flight.get("a"), Some(&1.0), "{in_flight:?}");
    assert_eq!(in_flight.get("b"), Some(&1.0), "{in_flight:?}");
    assert_eq!(
        in_flight.get(names::ATTR_OVERFLOW),
        Some(&2.0),
        "{in_flight:?}"
    );
    drop(open);
    let snap = fx.snapshot();
    assert!(snap.active().values().all(|v| *v == 0.0));
    assert_eq!(snap.counts(OTEL_DURATION).values().sum::<u64>(), 4);
    assert_eq!(snap.folded(OTEL_DURATION), 2);
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn values_recorded_late_use_the_cap_only_for_the_series_they_end_in() {
    // Each span passes through partial keys (the span name while `command` is Empty, one label
    // without the other); only the series records end in count towards the cap.
    let cap = 3;
    let fx = Fixture::with(|b| {
        b.with_label("system")
            .unwrap()
            .with_label("tier")
            .unwrap()
            .with_max_series(cap)
            .unwrap()
    });
    fx.run(|| {
        for (command, system, tier) in [
            ("a", "irc", "gold"),
            ("b", "irc", "free"),
            ("c", "matrix", "gold"),
        ] {
            let span =
                tracing::info_span!("dispatch", command = Empty, system = Empty, tier = Empty);
            span.record("command", command);
            span.record("system", system);
            span.record("tier", tier);
        }
    });
    let snap = fx.snapshot();
    let series = |command: &str, system: &str, tier: &str| {
        with_label(with_label(ok(command), "system", system), "tier", tier)
    };
    assert_eq!(
        snap.counts(OTEL_DURATION),
        [
            (series("a", "irc", "gold"), 1),
            (series("b", "irc", "free"), 1),
            (series("c", "matrix", "gold"), 1),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(snap.folded(OTEL_DURATION), 0);
    assert_eq!(fx.handle.dropped(), 0);
}
