//! End-to-end: a program using `spanmetrics::init()`, or the parts from
//! `TelemetryBuilder::build` in a subscriber of its own, exports to a real rotel collector.

use crate::processes::*;

const PLAN: &str = "roll:ok:7,roll:Timeout:3,fetch:ok:4,fetch:NotFound:2";

fn run_against_rotel(protocol: &str, mode: &str) {
    run_against_rotel_with(protocol, mode, &[]);
}

/// As [`run_against_rotel`], with further variables for the program.
fn run_against_rotel_with(protocol: &str, mode: &str, extra: &[(&str, &str)]) {
    let Some(rotel) = rotel() else {
        return;
    };
    let (grpc, http) = (rotel.grpc, rotel.http);
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{grpc}"),
        _ => format!("http://127.0.0.1:{http}"),
    };
    run_at(&rotel, endpoint, protocol, mode, extra);
}

/// Runs the driver's commands against `endpoint` (`rotel`, or a TLS terminator in front of it)
/// and checks that every command, span, log record and resource attribute arrives exactly.
pub fn run_at(rotel: &Rotel, endpoint: String, protocol: &str, mode: &str, extra: &[(&str, &str)]) {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_SERVICE_NAME", "dice-bot".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e,team=dice%20makers".to_owned(),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "60000".to_owned()),
        ("SPANMETRICS_PROMETHEUS_LISTEN", "off".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut driver = driver(mode, &env);
    driver.send(&format!("run {PLAN}"));
    driver.wait_for_lines("done", 1);
    // With the Prometheus endpoint off there is no recorder that nobody would drain.
    assert!(
        !global_recorder_taken(&mut driver),
        "SPANMETRICS_PROMETHEUS_LISTEN=off must not install a global metrics recorder"
    );
    driver.send("exit");
    // The long export interval means the data can only arrive through the guard's final flush.
    assert!(
        driver.wait_exit().success(),
        "driver failed: {}",
        driver.stderr()
    );
    assert!(
        driver.stdout().contains("shutdown ok"),
        "shutdown reported a problem: {}",
        driver.stdout()
    );
    if mode.starts_with("own-subscriber") {
        // The program's own fmt layer, filtered to warnings, decided what it logged.
        let stderr = driver.stderr();
        assert!(stderr.contains("ERROR"), "the errors are logged: {stderr}");
        assert!(
            !stderr.contains("INFO"),
            "only warnings and errors: {stderr}"
        );
    }

    let expected = expected(PLAN);
    let received = poll(
        "every command in the collector's metrics and traces",
        || {
            let received = parse_rotel(&rotel.stdout());
            let errors = received
                .logs
                .iter()
                .filter(|l| l.severity == "ERROR")
                .count();
            (received.duration_counts() == expected && received.spans.len() >= 16 && errors >= 5)
                .then_some(received)
        },
    );

    // Spans: names, statuses and attributes of the command spans.
    let spans = &received.spans;
    let count = |name: &str, status: &str| {
        spans
            .iter()
            .filter(|s| s.name == name && s.status == status)
            .count()
    };
    assert_eq!(count("roll", "STATUS_CODE_UNSET"), 7);
    assert_eq!(count("roll", "STATUS_CODE_ERROR"), 3);
    assert_eq!(count("fetch", "STATUS_CODE_UNSET"), 4);
    assert_eq!(count("fetch", "STATUS_CODE_ERROR"), 2);
    assert_eq!(
        spans.len(),
        16,
        "only command spans are exported: {spans:#?}"
    );
    for span in spans {
        let command = span.attributes.get("command").map(String::as_str);
        assert_eq!(command, Some(span.name.as_str()), "{span:?}");
        let user = if span.name == "roll" { "alice" } else { "bob" };
        assert_eq!(span.attributes.get("user").map(String::as_str), Some(user));
        if span.status == "STATUS_CODE_ERROR" {
            let wanted = span.attributes.get("wanted").cloned().unwrap_or_default();
            assert!(span.status_message.starts_with(&wanted), "{span:?}");
        }
    }
    let dice: Vec<_> = spans
        .iter()
        .filter_map(|s| s.attributes.get("dice"))
        .collect();
    assert_eq!(dice.len(), 10);
    assert!(dice.iter().all(|d| d.as_str() == "6"));

    // Logs: each failing command's ERROR event, in the failing span (its trace and span ids).
    let errors: Vec<_> = received
        .logs
        .iter()
        .filter(|l| l.severity == "ERROR")
        .collect();
    assert_eq!(errors.len(), 5, "one ERROR record per failure: {errors:#?}");
    for log in &errors {
        let span = spans
            .iter()
            .find(|s| s.trace_id == log.trace_id && s.id == log.span_id)
            .unwrap_or_else(|| panic!("no span for log record {log:?} in {spans:#?}"));
        assert_eq!(span.status, "STATUS_CODE_ERROR", "{log:?}");
        let error = log.attributes.get("error").cloned().unwrap_or_default();
        assert!(
            span.status_message.starts_with(&error) || error.starts_with(&span.status_message),
            "{log:?} in {span:?}"
        );
    }

    // Resource attributes, the same on traces, metrics and logs.
    assert!(received.resources.len() >= 2);
    for resource in &received.resources {
        let get = |k: &str| resource.get(k).map(String::as_str);
        assert_eq!(get("service.name"), Some("dice-bot"), "{resource:?}");
        assert_eq!(get("service.version"), Some("1.2.3"));
        assert_eq!(get("deployment.environment"), Some("e2e"));
        assert_eq!(get("team"), Some("dice makers"));
        assert!(get("host.name").is_some_and(|h| !h.is_empty()));
        assert!(get("service.instance.id").is_some_and(|id| id.len() == 36));
    }
    let ids: std::collections::BTreeSet<_> = received
        .resources
        .iter()
        .map(|r| r["service.instance.id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "one instance id per process");

    // Process metrics arrive on the OTLP path too.
    for name in [
        "process.memory.usage",
        "process.cpu.time",
        "process.unix.file_descriptor.count",
        "process.thread.count",
        "process.uptime",
    ] {
        assert!(
            received.metric_names.iter().any(|n| n == name),
            "{name} missing"
        );
    }
}

#[test]
fn grpc_export_from_a_program_without_a_runtime_reaches_the_collector() {
    run_against_rotel("grpc", "none");
}

#[test]
fn grpc_export_from_a_current_thread_runtime_reaches_the_collector() {
    run_against_rotel("grpc", "current-thread");
}

#[test]
fn http_protobuf_export_from_a_multi_thread_runtime_reaches_the_collector() {
    run_against_rotel("http/protobuf", "multi-thread");
}

/// The parts in the program's own subscriber, after its `fmt` layer with a filter of its own
/// (warnings only): that filter hides nothing from the metrics or the traces.
#[test]
fn the_parts_behind_the_programs_own_filtered_fmt_layer_export_everything_over_grpc() {
    run_against_rotel("grpc", "own-subscriber");
}

/// The same with the parts first in the subscriber, over HTTP.
#[test]
fn the_parts_before_the_programs_own_fmt_layer_export_everything_over_http() {
    run_against_rotel("http/protobuf", "own-subscriber-first");
}

/// gzip-compressed exports, over each protocol, decoded by the collector: exact counts.
#[test]
fn gzip_compressed_exports_reach_the_collector_over_both_protocols() {
    for protocol in ["grpc", "http/protobuf"] {
        run_against_rotel_with(
            protocol,
            "none",
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
        );
    }
}

/// zstd is applied too: rotel decodes only gzip, so it refuses a zstd-encoded export (gRPC
/// `Unimplemented`, HTTP 400 after failing to decode the body), which it would accept
/// uncompressed. The refusal is one warning per signal and a counted failure; the program runs
/// on and exits cleanly.
#[test]
fn zstd_compressed_exports_are_sent_compressed_and_a_refusal_only_warns() {
    for protocol in ["grpc", "http/protobuf"] {
        let Some(rotel) = rotel() else {
            return;
        };
        let endpoint = match protocol {
            "grpc" => format!("http://127.0.0.1:{}", rotel.grpc),
            _ => format!("http://127.0.0.1:{}", rotel.http),
        };
        let mut driver = driver(
            "none",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd".to_owned()),
                ("SPANMETRICS_PROMETHEUS_LISTEN", "off".to_owned()),
            ],
        );
        driver.send("run roll:ok:3,fetch:NotFound:1");
        driver.wait_for_lines("done", 1);
        driver.send("exit");
        assert!(driver.wait_exit().success(), "{}", driver.stderr());
        let stderr = driver.stderr();
        let refused = |signal: &str| {
            stderr
                .lines()
                .filter(|l| l.contains("WARN") && l.contains(&format!("OTLP {signal} export")))
                .count()
        };
        assert_eq!(refused("metrics"), 1, "{protocol}: {stderr}");
        let expected = if protocol == "grpc" {
            "Unimplemented"
        } else {
            "400"
        };
        assert!(stderr.contains(expected), "{protocol}: {stderr}");
        assert!(
            driver.stdout().contains("shutdown error"),
            "{protocol}: the last export was refused too: {}",
            driver.stdout()
        );
        if protocol != "grpc" {
            // The collector got the body and could not read it as protobuf: it was compressed.
            poll("rotel's decode error", || {
                let log = format!("{}{}", rotel.stdout(), rotel.stderr());
                log.contains("Failed to decode").then_some(())
            });
        }
    }
}

#[test]
fn sampled_traces_leave_command_metrics_exact() {
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
            ("OTEL_TRACES_SAMPLER", "traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1".to_owned()),
            ("SPANMETRICS_PROMETHEUS_LISTEN", "off".to_owned()),
        ],
    );
    let plan = "roll:ok:1200,fetch:NotFound:800";
    driver.send(&format!("run {plan}"));
    driver.wait_for_lines("done", 1);
    driver.send("exit");
    assert!(
        driver.wait_exit().success(),
        "driver failed: {}",
        driver.stderr()
    );
    let expected = expected(plan);
    let received = poll("exact metric counts", || {
        let received = parse_rotel(&rotel.stdout());
        (received.duration_counts() == expected).then_some(received)
    });
    // 2000 commands sampled at 10%: the binomial standard deviation is about 13.
    let traces = received.spans.len();
    assert!(
        (120..=280).contains(&traces),
        "expected about 200 of 2000 traces, got {traces}"
    );
}

#[test]
fn totals_are_exact_after_the_collector_restarts() {
    let Some(mut rotel) = rotel() else {
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
            ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
            // Exports to the killed collector fail at once (connection refused); a long
            // timeout keeps a slow answer of the running one on a loaded machine from counting
            // as a second outage below.
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000".to_owned()),
            ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
        ],
    );
    let before = "roll:ok:5,fetch:NotFound:2";
    driver.send(&format!("run {before}"));
    driver.wait_for_lines("done", 1);
    poll("the first commands to arrive", || {
        (parse_rotel(&rotel.stdout()).duration_counts() == expected(before)).then_some(())
    });

    rotel.kill();
    let during = "roll:ok:11,roll:Timeout:4";
    driver.send(&format!("run {during}"));
    driver.wait_for_lines("done", 2);
    // The failures are counted, and exported on the Prometheus endpoint.
    let prometheus: std::net::SocketAddr = driver.prometheus_addr();
    poll("metric export failures to be counted", || {
        let page = http_get(prometheus, "/metrics")?;
        page.lines()
            .filter(|l| l.starts_with("spanmetrics_export_failures_total{signal=\"metrics\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .any(|n| n >= 2)
            .then_some(())
    });

    rotel.restart();
    let after = "fetch:ok:6";
    driver.send(&format!("run {after}"));
    driver.wait_for_lines("done", 3);
    let all = sum(&sum(&expected(before), &expected(during)), &expected(after));
    // Cumulative temporality: the restarted collector gets the full totals.
    poll("the full totals after the restart", || {
        (parse_rotel(&rotel.stdout()).duration_counts() == all).then_some(())
    });
    driver.send("exit");
    driver.wait_exit();

    // One warning per outage, not one per failed export.
    let stderr = driver.stderr();
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("OTLP metrics export"))
        .count();
    assert_eq!(warnings, 1, "driver log:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("OTLP metrics export") && l.contains("works again")),
        "recovery is logged: {stderr}"
    );
}

#[test]
fn without_a_collector_the_program_runs_and_shutdown_reports_the_loss() {
    // Nothing listens on this port: every export fails.
    let port = free_port();
    let mut driver = driver(
        "current-thread",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500".to_owned()),
            ("SPANMETRICS_PROMETHEUS_LISTEN", "off".to_owned()),
        ],
    );
    for round in 1..=5 {
        driver.send("run roll:ok:20,fetch:NotFound:5");
        driver.wait_for_lines("done", round);
    }
    driver.send("exit");
    assert!(driver.wait_exit().success(), "{}", driver.stderr());
    let stdout = driver.stdout();
    assert!(
        stdout.contains("shutdown error: the final OTLP metrics export failed"),
        "{stdout}"
    );
    let stderr = driver.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let warnings = |signal: &str| {
        stderr
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("OTLP {signal} export")))
            .count()
    };
    assert_eq!(warnings("metrics"), 1, "{stderr}");
    assert!(warnings("traces") <= 1, "{stderr}");
}

/// The explicit bounds rotel printed for `metric` (its first data point), in order.
fn explicit_bounds(output: &str, metric: &str) -> Vec<String> {
    let mut lines = output
        .lines()
        .skip_while(|l| l.trim() != format!("-> Name: {metric}"));
    lines.next();
    lines
        .take_while(|l| !l.trim().starts_with("-> Name:"))
        .filter_map(|l| l.trim().strip_prefix("ExplicitBounds #"))
        .filter_map(|l| Some(l.split_once(": ")?.1.to_owned()))
        .take_while({
            let mut last = f64::MIN;
            move |b| {
                let v: f64 = b.parse().unwrap_or(f64::MAX);
                let ascending = v > last;
                last = v;
                ascending
            }
        })
        .collect()
}

/// The documented path for burn-rate rules on OTLP-exported latency: with
/// `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=explicit_bucket_histogram`, the
/// objective's threshold (here from `SPANMETRICS_OBJECTIVES`) is a bucket bound of the
/// histogram the collector receives; with the default base-2 exponential histograms there are
/// no fixed bounds at all (which is why the rules need the explicit ones).
#[test]
fn with_explicit_buckets_the_objective_threshold_is_a_bound_of_the_exported_histogram() {
    for (aggregation, wanted) in [
        ("explicit_bucket_histogram", true),
        ("base2_exponential_bucket_histogram", false),
    ] {
        let Some(rotel) = rotel() else {
            return;
        };
        let mut driver = driver(
            "none",
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{}", rotel.grpc),
                ),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                    aggregation.to_owned(),
                ),
                (
                    "SPANMETRICS_OBJECTIVES",
                    r#"[{"name": "roll-fast", "commands": ["roll"], "latency": {"ratio": 0.99, "under_ms": 333}}]"#
                        .to_owned(),
                ),
                ("SPANMETRICS_PROMETHEUS_LISTEN", "off".to_owned()),
            ],
        );
        driver.send("run roll:ok:3");
        driver.wait_for_lines("done", 1);
        driver.send("exit");
        assert!(driver.wait_exit().success(), "{}", driver.stderr());
        let expected = expected("roll:ok:3");
        poll("the metrics at the collector", || {
            (parse_rotel(&rotel.stdout()).duration_counts() == expected).then_some(())
        });
        let bounds = explicit_bounds(&rotel.stdout(), "command.duration");
        if wanted {
            assert!(
                bounds.iter().any(|b| b == "0.333")
                    && bounds.iter().any(|b| b == "0.25")
                    && bounds.iter().any(|b| b == "0.5"),
                "the threshold among the default bounds: {bounds:?}"
            );
        } else {
            assert!(bounds.is_empty(), "exponential histograms: {bounds:?}");
        }
    }
}
