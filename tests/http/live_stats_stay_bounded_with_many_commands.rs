//! In process, through `Telemetry::builder()`: however many distinct commands and failures
//! there are, the live statistics keep at most 256 rows (the rest folded into `_OTHER`, with
//! exact totals) and at most 100 recent failures; commands in flight and the builder's health
//! objectives show up in `/api/commands` and `/health`. A declared objective's latency threshold
//! is a bucket of the `/metrics` histograms beside the program's own buckets.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http_client::get;

#[derive(Debug)]
struct Failed;

#[tracing::instrument(fields(command = %name), err(Debug))]
fn command(name: &str, fail: bool) -> Result<(), Failed> {
    if fail {
        Err(Failed)
    } else {
        Ok(())
    }
}

#[test]
fn many_commands_fold_into_other_and_recent_failures_stay_capped() {
    let guard = spanmetrics::Telemetry::builder()
        .with_env(Vec::new())
        .with_prometheus_listen(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        .with_default_log_filter("off")
        .with_layer(
            spanmetrics::SpanMetricsLayer::builder()
                // Custom buckets without the objective's threshold: it is added all the same.
                .with_buckets(&[0.1, 1.0])
                .unwrap()
                .with_objective(
                    spanmetrics::objectives::Objective::new("cmd-fast")
                        .for_commands(["cmd-000"])
                        .latency(0.99, Duration::from_millis(250)),
                )
                .unwrap(),
        )
        .with_health_objectives(
            spanmetrics::HealthObjectives::default()
                .with_success_rate(0.2, 0.1)
                .with_max_in_flight(0, 10)
                // Far above any stall of a loaded machine: the check is to pass whatever its speed.
                .with_command_p95("cmd-000", Duration::from_secs(60), Duration::from_secs(120)),
        )
        .install()
        .expect("install");
    let addr = guard.prometheus_addr().expect("listening");

    // 400 distinct commands, 2 calls each; every command's second call fails.
    for i in 0..400 {
        let name = format!("cmd-{i:03}");
        let _ = command(&name, false);
        let _ = command(&name, true);
    }

    let s = get(addr, "/api/commands?window=1h").json();
    let rows = s["commands"].as_array().unwrap();
    assert_eq!(rows.len(), 256, "at most 256 rows");
    let other = rows
        .iter()
        .find(|r| r["command"] == "_OTHER")
        .expect("an _OTHER row");
    let named: u64 = rows
        .iter()
        .filter(|r| r["command"] != "_OTHER")
        .map(|r| {
            assert_eq!(r["calls"], 2, "{r}");
            assert_eq!(r["errors"], 1);
            2
        })
        .sum();
    assert_eq!(
        named + other["calls"].as_u64().unwrap(),
        800,
        "nothing lost"
    );
    assert_eq!(
        other["errors"].as_u64().unwrap() * 2,
        other["calls"].as_u64().unwrap()
    );
    assert_eq!(s["totals"]["calls"], 800);
    assert_eq!(s["totals"]["errors"], 400);
    assert_eq!(s["totals"]["since_start"]["calls"], 800);
    assert_eq!(guard.spanmetrics().dropped(), 0);

    // The Prometheus histogram has the program's buckets and the objective's threshold.
    guard.spanmetrics().flush();
    let page = get(addr, "/metrics").body;
    let bounds: Vec<&str> = page
        .lines()
        .filter(|l| {
            l.starts_with("command_duration_seconds_bucket{")
                && l.contains("command=\"cmd-000\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(bounds, ["0.1", "0.25", "1", "+Inf"], "{page}");

    let recent = get(addr, "/api/commands/recent?outcome=error&limit=100").json();
    let items = recent["items"].as_array().unwrap();
    assert_eq!(items.len(), 100, "the ring keeps the last 100");
    assert_eq!(items[0]["error_type"], "Failed");
    // Newest first, by their own names even when their rows are folded.
    assert_eq!(items[0]["command"], "cmd-399");
    assert_eq!(items[99]["command"], "cmd-300");

    // Health objectives from the builder; the declared objective's burn rate takes the place of
    // the generic success rate (cmd-000 is fast: nothing burns).
    let h = get(addr, "/health").json();
    assert!(h["checks"]["success_rate"].is_null(), "{h}");
    assert_eq!(
        h["checks"]["objective:cmd-fast:latency"]["status"], "pass",
        "{h}"
    );
    assert_eq!(h["checks"]["objective:cmd-fast:latency"]["value"], 0);
    assert_eq!(h["checks"]["p95_latency:cmd-000"]["status"], "pass");
    assert!(h["checks"]["p95_latency:cmd-000"]["value"]
        .as_f64()
        .is_some());
    assert_eq!(h["checks"]["in_flight"]["value"], 0);
    assert_eq!(h["status"], "healthy");

    // A command in flight: counted per command and in the totals, and over the objective.
    let span = tracing::info_span!("held", command = "held");
    let entered = span.enter();
    let s = get(addr, "/api/commands?window=1m").json();
    assert_eq!(s["totals"]["in_flight"], 1);
    let h = get(addr, "/health").json();
    assert_eq!(h["checks"]["in_flight"]["status"], "warn", "{h}");
    assert_eq!(h["status"], "degraded");
    drop(entered);
    drop(span);
    let s = get(addr, "/api/commands?window=1m").json();
    assert_eq!(s["totals"]["in_flight"], 0);
    assert_eq!(get(addr, "/health").json()["status"], "healthy");

    guard.shutdown().expect("shutdown");
}
