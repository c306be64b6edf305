//! With objectives declared on the layer, health is judged by their burn rates over the health
//! window (the share of bad commands over the error budget): healthy at or below 1×, degraded
//! above it, unhealthy above the page rate; an objective whose commands never ran (or that
//! selects commands by label) is `no_data`, not a pass.

use std::time::Duration;

use spanmetrics::live::{CheckStatus, HealthStatus, FAIL_BURN_RATE};
use spanmetrics::objectives::Objective;
use spanmetrics::{HealthObjectives, SpanMetricsLayer};
use tracing_subscriber::prelude::*;

#[derive(Debug)]
struct Failed;

#[tracing::instrument(fields(command = "roll"), err(Debug))]
fn roll(fail: bool) -> Result<(), Failed> {
    if fail {
        Err(Failed)
    } else {
        Ok(())
    }
}

#[tracing::instrument(fields(command = "fetch"))]
fn fetch(slow: bool) {
    if slow {
        // Far past the 50 ms threshold, however the machine schedules it.
        std::thread::sleep(Duration::from_millis(120));
    }
}

#[test]
fn burn_rates_of_the_objectives_decide_health() {
    let layer = SpanMetricsLayer::builder()
        .with_label("tier")
        .unwrap()
        .with_objective(
            Objective::new("roll-ok")
                .for_commands(["roll"])
                .success_rate(0.99),
        )
        .unwrap()
        .with_objective(
            Objective::new("fetch-fast")
                .for_commands(["fetch"])
                .latency(0.9, Duration::from_millis(50)),
        )
        .unwrap()
        .with_objective(
            Objective::new("never-runs")
                .for_commands(["nope"])
                .success_rate(0.99),
        )
        .unwrap()
        .with_objective(
            Objective::new("vip")
                .for_label("tier", "vip")
                .success_rate(0.9),
        )
        .unwrap()
        .with_live_stats(Duration::from_secs(10))
        .without_recorder()
        .without_meter()
        .build();
    let handle = layer.handle();
    let live = handle.live().expect("live statistics are on");
    let objectives = HealthObjectives::default();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..200 {
            let _ = roll(false);
            fetch(false);
        }
        let health = live.health(&objectives);
        let status = |name: &str| {
            health
                .check(name)
                .unwrap_or_else(|| panic!("no check {name}: {health:?}"))
                .status
        };
        assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
        assert_eq!(status("objective:roll-ok:success"), CheckStatus::Pass);
        assert_eq!(
            health.check("objective:roll-ok:success").unwrap().value,
            Some(0.0)
        );
        assert_eq!(status("objective:fetch-fast:latency"), CheckStatus::Pass);
        assert_eq!(status("objective:never-runs:success"), CheckStatus::NoData);
        assert_eq!(status("objective:vip:success"), CheckStatus::NoData);
        assert!(
            health.check("success_rate").is_none(),
            "the objectives take the place of the generic success rate: {health:?}"
        );

        // 5 failures in 205: 2.4 % bad against a 1 % budget, a burn rate of 2.4.
        for _ in 0..5 {
            let _ = roll(true);
        }
        let health = live.health(&objectives);
        let check = health.check("objective:roll-ok:success").unwrap();
        assert_eq!(check.status, CheckStatus::Warn, "{health:?}");
        let burn = check.value.unwrap();
        assert!((burn - 5.0 / 205.0 / 0.01).abs() < 1e-6, "{burn}");
        assert_eq!(health.status, HealthStatus::Degraded);

        // 30 slow fetches in 230: 13 % slow against a 10 % budget.
        for _ in 0..30 {
            fetch(true);
        }
        let health = live.health(&objectives);
        let check = health.check("objective:fetch-fast:latency").unwrap();
        assert_eq!(check.status, CheckStatus::Warn, "{health:?}");
        assert!((check.value.unwrap() - 30.0 / 230.0 / 0.1).abs() < 1e-6);

        // 100 more failures: 105 in 305 bad, a burn rate of 34, past the page rate.
        for _ in 0..100 {
            let _ = roll(true);
        }
        let health = live.health(&objectives);
        let check = health.check("objective:roll-ok:success").unwrap();
        assert_eq!(check.status, CheckStatus::Fail, "{health:?}");
        assert!(check.value.unwrap() > FAIL_BURN_RATE);
        assert_eq!(health.status, HealthStatus::Unhealthy);
    });
}
