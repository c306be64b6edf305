//! Which spans are commands (command field, span name, target prefix, predicate), what their
//! command name is (field value, also recorded later, else the span name), and builder errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::two_sinks::{self, ok, Fixture, Labels};
use spanmetrics::names::OTEL_DURATION;
use spanmetrics::{BuildError, SpanMetricsLayer};
use tracing::field::Empty;

fn counts(entries: &[(&str, u64)]) -> BTreeMap<Labels, u64> {
    entries.iter().map(|(c, n)| (ok(c), *n)).collect()
}

#[test]
fn by_default_only_spans_with_a_command_field_are_commands() {
    let fx = Fixture::new();
    fx.run(|| {
        let _plain = tracing::info_span!("handle_message", user = 7);
        let _other = tracing::info_span!("db_query");
        let _cmd = tracing::info_span!("handle_message", command = "roll");
        tracing::info!(command = "not_a_span");
    });
    assert_eq!(fx.snapshot().counts(OTEL_DURATION), counts(&[("roll", 1)]));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn the_command_name_is_the_field_value_else_the_span_name() {
    let fx = Fixture::new();
    fx.run(|| {
        let _a = tracing::info_span!("handler", command = "roll");
        let _b = tracing::info_span!("handler", command = %"help");
        let _c = tracing::info_span!("handler", command = ?"stats"); // Debug quotes are removed
        let _d = tracing::info_span!("handler", command = 42);
        let _e = tracing::info_span!("never_named", command = Empty);
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[
            ("roll", 1),
            ("help", 1),
            ("stats", 1),
            ("42", 1),
            ("never_named", 1)
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_command_recorded_later_names_the_command() {
    let fx = Fixture::new();
    fx.run(|| {
        for name in ["roll", "roll", "help"] {
            let span = tracing::info_span!("dispatch", command = Empty);
            span.record("command", name);
        }
        // Renamed twice: the last value counts.
        let span = tracing::info_span!("dispatch", command = "first");
        span.record("command", "second");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[("roll", 2), ("help", 1), ("second", 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_custom_command_field_replaces_the_default_one() {
    let fx = Fixture::with(|b| b.with_command_field("cmd").unwrap());
    fx.run(|| {
        let _a = tracing::info_span!("h", cmd = "roll");
        let _b = tracing::info_span!("h", command = "ignored");
        let c = tracing::info_span!("h", cmd = Empty);
        c.record("cmd", "help");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[("roll", 1), ("help", 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn spans_with_a_selected_name_are_commands_named_after_the_span() {
    let fx = Fixture::with(|b| b.with_span_name("handle_message").unwrap());
    fx.run(|| {
        let _a = tracing::info_span!("handle_message", user = 1);
        let _b = tracing::info_span!("handle_message", user = 2);
        let _c = tracing::info_span!("handle_other");
        // A command field still names it.
        let _d = tracing::info_span!("handle_message", command = "roll");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[("handle_message", 2), ("roll", 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn spans_below_a_target_prefix_are_commands() {
    let fx = Fixture::with(|b| b.with_target_prefix("my_bot::commands").unwrap());
    fx.run(|| {
        let _a = tracing::info_span!(target: "my_bot::commands", "top");
        let _b = tracing::info_span!(target: "my_bot::commands::roll", "roll");
        let _c = tracing::info_span!(target: "my_bot::commands::roll::dice", "dice");
        // Not below the prefix.
        let _d = tracing::info_span!(target: "my_bot::commandsx", "lookalike");
        let _e = tracing::info_span!(target: "my_bot", "parent");
        let _f = tracing::info_span!(target: "other::my_bot::commands", "elsewhere");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[("top", 1), ("roll", 1), ("dice", 1)])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_predicate_selects_commands_and_runs_once_per_callsite() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let fx = Fixture::with(move |b| {
        b.with_filter(move |meta| {
            if meta.name() == "cmd_counted" {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            meta.name().starts_with("cmd_")
        })
    });
    fx.run(|| {
        for _ in 0..50 {
            let _a = tracing::info_span!("cmd_counted");
            let _b = tracing::info_span!("plain");
        }
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[("cmd_counted", 50)])
    );
    // Once per callsite, not per call. Two registrations of the callsite can race (its own
    // first use here, and an interest rebuild when a test on another thread creates a
    // dispatcher); both may classify it, and neither waits for the other, since waiting there
    // could deadlock with a predicate that logs.
    let calls = calls.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&calls),
        "{calls} predicate calls for one callsite used 50 times"
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn the_selection_rules_add_up() {
    let fx = Fixture::with(|b| {
        b.with_span_name("by_name")
            .unwrap()
            .with_target_prefix("sel::cmds")
            .unwrap()
            .with_filter(|meta| meta.name() == "by_predicate")
    });
    fx.run(|| {
        let _a = tracing::info_span!("by_name");
        let _b = tracing::info_span!(target: "sel::cmds::x", "by_target");
        let _c = tracing::info_span!("by_predicate");
        let _d = tracing::info_span!("by_field", command = "by_field");
        let _e = tracing::info_span!("none_of_them");
    });
    assert_eq!(
        fx.snapshot().counts(OTEL_DURATION),
        counts(&[
            ("by_name", 1),
            ("by_target", 1),
            ("by_predicate", 1),
            ("by_field", 1)
        ])
    );
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn the_builder_rejects_bad_settings_when_they_are_made() {
    let b = SpanMetricsLayer::builder;
    for reserved in ["command", "outcome", "otel.status_code", "error.type"] {
        assert!(
            matches!(b().with_label(reserved), Err(BuildError::ReservedLabel(l)) if l == reserved),
            "{reserved}"
        );
    }
    assert!(matches!(
        b().with_command_field("cmd").unwrap().with_label("cmd"),
        Err(BuildError::ReservedLabel(_))
    ));
    assert!(matches!(
        b().with_label("a").unwrap().with_label("a"),
        Err(BuildError::DuplicateLabel(_))
    ));
    assert!(matches!(b().with_label(""), Err(BuildError::Empty(_))));
    assert!(matches!(b().with_span_name(""), Err(BuildError::Empty(_))));
    assert!(matches!(
        b().with_target_prefix(""),
        Err(BuildError::Empty(_))
    ));
    assert!(matches!(
        b().with_command_field(""),
        Err(BuildError::Empty(_))
    ));
    let mut many = b();
    let mut too_many = None;
    for i in 0..64 {
        match many.clone().with_label(format!("l{i}")) {
            Ok(next) => many = next,
            Err(e) => {
                too_many = Some(e);
                break;
            }
        }
    }
    assert!(matches!(too_many, Some(BuildError::TooManyLabels)));
    assert!(matches!(
        b().with_max_series(0),
        Err(BuildError::OutOfRange { .. })
    ));
    assert!(matches!(
        b().with_max_error_types(0),
        Err(BuildError::OutOfRange { .. })
    ));
    assert!(matches!(
        b().with_buffer_capacity(1),
        Err(BuildError::OutOfRange { .. })
    ));
    for reserved in [
        "error_type",
        "le",
        "mark",
        "otel.metric.overflow",
        "instance",
    ] {
        assert!(
            matches!(b().with_label(reserved), Err(BuildError::ReservedLabel(_))),
            "{reserved} must be refused"
        );
    }
    assert!(matches!(
        b().with_label("chat.platform")
            .unwrap()
            .with_label("chat_platform"),
        Err(BuildError::DuplicateLabel(_))
    ));
    assert!(matches!(
        b().with_command_field("cmd").unwrap().with_label("command"),
        Err(BuildError::ReservedLabel(_))
    ));
    assert!(matches!(
        b().with_overload_wait(std::time::Duration::from_secs(61)),
        Err(BuildError::OutOfRange { .. })
    ));
    assert!(b().with_overload_wait(std::time::Duration::ZERO).is_ok());
    assert!(matches!(
        b().with_overload_memory(5 << 30),
        Err(BuildError::OutOfRange { .. })
    ));
    assert!(b().with_overload_memory(0).is_ok());
    assert!(b().with_buckets(&[]).is_err());
    assert!(b().with_buckets(&[1.0, 0.5]).is_err());
    assert!(b().with_buckets(&[0.1, f64::NAN]).is_err());
}

#[test]
fn an_empty_command_value_falls_back_to_the_span_name() {
    let fx = two_sinks::Fixture::new();
    fx.run(|| {
        let span = tracing::info_span!("greet", command = "");
        let _entered = span.enter();
    });
    let counts = fx.snapshot().counts(OTEL_DURATION);
    assert_eq!(counts.get(&ok("greet")), Some(&1), "{counts:?}");
    assert_eq!(counts.len(), 1, "no series for an empty name: {counts:?}");
    assert_eq!(fx.handle.dropped(), 0);
}

/// `command_duration_seconds_count` per (command, outcome) in a Prometheus page.
fn prometheus_counts(page: &str) -> BTreeMap<String, u64> {
    page.lines()
        .filter(|l| l.starts_with("command_duration_seconds_count{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

#[test]
fn two_layers_on_one_subscriber_each_count_every_command() {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tracing_subscriber::prelude::*;

    let build = |field: &str| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(spanmetrics::names::DEFAULT_BUCKETS)
            .expect("valid buckets")
            .build_recorder();
        let page = recorder.handle();
        let layer = SpanMetricsLayer::builder()
            .with_command_field(field)
            .expect("a valid field name")
            .with_recorder(recorder)
            .without_meter()
            .build();
        (layer.handle(), page, layer)
    };
    let (first, first_page, first_layer) = build("command");
    let (second, second_page, second_layer) = build("command");
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(first_layer)
            .with(second_layer),
    );
    // Enough spans in flight at once that both layers also keep some in span extensions.
    tracing::dispatcher::with_default(&dispatch, || {
        let open: Vec<_> = (0..6_000)
            .map(|i| {
                let span = tracing::info_span!("h", command = "twice");
                if i % 3 == 0 {
                    span.in_scope(|| tracing::error!(error = "Timeout", "failed"));
                }
                span
            })
            .collect();
        drop(open);
    });
    first.flush();
    second.flush();
    let want: BTreeMap<String, u64> = [
        (
            "command_duration_seconds_count{command=\"twice\",outcome=\"error\",error_type=\"Timeout\"}"
                .to_owned(),
            2_000,
        ),
        (
            "command_duration_seconds_count{command=\"twice\",outcome=\"ok\"}".to_owned(),
            4_000,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(prometheus_counts(&first_page.render()), want);
    assert_eq!(prometheus_counts(&second_page.render()), want);
    assert_eq!(first.dropped(), 0);
    assert_eq!(second.dropped(), 0);
}
