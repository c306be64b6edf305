//! The live statistics as a program reads them in process (`SpanMetricsHandle::live`), with
//! no HTTP: figures per command and in total, recent failures, slow commands and health.

use std::time::Duration;

use spanmetrics::live::{CheckStatus, HealthStatus, Window};
use spanmetrics::{HealthObjectives, SpanMetricsLayer};
use tracing_subscriber::prelude::*;

#[derive(Debug)]
enum BotError {
    Timeout,
}

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

#[tracing::instrument(fields(command = "roll"), err(Debug))]
fn roll(fail: bool) -> Result<u32, BotError> {
    if fail {
        Err(BotError::Timeout)
    } else {
        Ok(4)
    }
}

#[test]
fn a_program_reads_its_own_figures_failures_and_health() {
    let layer = SpanMetricsLayer::builder()
        // Every command counts as slow: the floor is zero.
        .with_live_stats(Duration::ZERO)
        .without_recorder()
        .without_meter()
        .build();
    let handle = layer.handle();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for fail in [false, true, false, true, false] {
            let _ = roll(fail);
        }
        tracing::info_span!("ping", command = "ping").in_scope(|| {});
    });
    let live = handle.live().expect("live statistics were asked for");

    let summary = live.summary(Window::OneMinute);
    assert_eq!(summary.window, "1m");
    assert_eq!(summary.window_s, 60);
    assert_eq!(summary.totals.window.calls, 6);
    assert_eq!(summary.totals.window.errors, 2);
    assert_eq!(summary.totals.since_start.calls, 6);
    assert_eq!(summary.totals.in_flight, 0);
    let roll = summary.command("roll").expect("roll ran");
    assert_eq!((roll.window.calls, roll.window.errors), (5, 2));
    assert_eq!(roll.window.success_rate, Some(0.6));
    assert_eq!(roll.errors_by_type.get("Timeout"), Some(&2));
    assert!(roll.window.p95_s.is_some() && roll.window.max_s.is_some());
    assert_eq!(summary.command("ping").map(|c| c.window.calls), Some(1));
    assert!(summary.command("nope").is_none());
    let names: Vec<&str> = summary
        .commands
        .iter()
        .map(|c| c.command.as_str())
        .collect();
    assert_eq!(names, ["ping", "roll"], "sorted by name");

    let failures = live.recent_failures(10);
    assert_eq!(failures.len(), 2);
    assert!(failures
        .iter()
        .all(|f| f.command == "roll" && f.error_type.as_deref() == Some("Timeout")));
    assert!(failures[0].time >= failures[1].time, "newest first");
    assert_eq!(live.recent_failures(1).len(), 1, "the limit holds");
    assert_eq!(
        live.recent_slow(100).len(),
        6,
        "every command is over a zero floor"
    );

    // 60% success: under a 70% failing threshold, judged from 5 calls.
    let objectives = HealthObjectives::default()
        .with_success_rate(0.9, 0.7)
        .with_min_calls(5);
    let health = live.health(&objectives);
    assert_eq!(health.status, HealthStatus::Unhealthy);
    let check = health.check("success_rate").expect("always checked");
    assert_eq!(check.status, CheckStatus::Fail);
    assert_eq!(check.value, Some(4.0 / 6.0));
    assert_eq!(health.calls_in_window, 6);
    // Not yet judged with fewer calls than asked for.
    let patient = objectives.with_min_calls(100);
    assert_eq!(live.health(&patient).status, HealthStatus::Healthy);

    // The same types are what the HTTP API writes.
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["totals"]["calls"], 6);
    assert_eq!(json["commands"][1]["command"], "roll");
    assert_eq!(json["commands"][1]["errors_by_type"]["Timeout"], 2);
    assert_eq!(json["commands"][1]["since_start"]["calls"], 5);
}

#[test]
fn without_live_stats_there_is_nothing_to_read() {
    let layer = SpanMetricsLayer::builder()
        .without_recorder()
        .without_meter()
        .build();
    assert!(layer.handle().live().is_none());
}
