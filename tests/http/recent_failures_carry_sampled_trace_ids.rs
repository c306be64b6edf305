//! End-to-end: `/api/commands/recent` gives the trace id of each failed command whose trace
//! is sampled, the same id a real rotel collector receives, and none when it is not sampled.

use std::collections::BTreeSet;

use crate::http_client::get;
use crate::processes::*;

fn recent_errors(addr: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let reply = get(addr, "/api/commands/recent?outcome=error&limit=100");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["items"].as_array().unwrap().clone()
}

#[test]
fn failed_commands_link_to_the_traces_the_collector_received() {
    let Some(rotel) = rotel() else {
        return;
    };
    let grpc = rotel.grpc;
    let mut driver = driver(
        "multi-thread",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_SERVICE_NAME", "dice-bot".to_owned()),
            ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
        ],
    );
    let addr = driver.prometheus_addr();
    driver.send("run roll:ok:4,roll:Timeout:2,fetch:NotFound:1");
    driver.wait_for_lines("done", 1);

    let items = recent_errors(addr);
    assert_eq!(items.len(), 3, "{items:?}");
    let mut from_api = BTreeSet::new();
    for item in &items {
        let trace = item["trace_id"]
            .as_str()
            .expect("a sampled trace has an id");
        let span = item["span_id"].as_str().expect("and a span id");
        assert_eq!(trace.len(), 32);
        assert_eq!(span.len(), 16);
        assert!(trace.chars().all(|c| c.is_ascii_hexdigit()) && trace != "0".repeat(32));
        from_api.insert((
            item["command"].as_str().unwrap().to_owned(),
            trace.to_owned(),
        ));
    }

    driver.send("exit");
    assert!(driver.wait_exit().success(), "{}", driver.stderr());
    let received = poll("the 7 spans at the collector", || {
        let received = parse_rotel(&rotel.stdout());
        (received.spans.len() >= 7).then_some(received)
    });
    let at_collector: BTreeSet<(String, String)> = received
        .spans
        .iter()
        .filter(|s| s.status == "STATUS_CODE_ERROR")
        .map(|s| (s.name.clone(), s.trace_id.to_ascii_lowercase()))
        .collect();
    assert_eq!(from_api, at_collector);
}

#[test]
fn unsampled_failures_have_no_trace_id() {
    let Some(rotel) = rotel() else {
        return;
    };
    let grpc = rotel.grpc;
    let mut driver = driver(
        "none",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc}"),
            ),
            ("OTEL_TRACES_SAMPLER", "always_off".to_owned()),
            ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
        ],
    );
    let addr = driver.prometheus_addr();
    driver.send("run fetch:NotFound:2");
    driver.wait_for_lines("done", 1);
    let items = recent_errors(addr);
    assert_eq!(items.len(), 2, "{items:?}");
    for item in items {
        assert_eq!(item["error_type"], "NotFound");
        assert!(
            item["trace_id"].is_null() && item["span_id"].is_null(),
            "{item}"
        );
    }
}
