//! End-to-end: the health, summary and recent-commands endpoints of a program using
//! `spanmetrics::init()`, read over real HTTP after a known workload.

use crate::http_client::{get, request};
use crate::processes::*;
use serde_json::Value;

const PLAN: &str = "roll:ok:9,roll:Timeout:2,fetch:ok:3,fetch:NotFound:5";

fn start(env: &[(&str, &str)]) -> (Process, std::net::SocketAddr) {
    let mut vars = vec![("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned())];
    vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let driver = driver("multi-thread", &vars);
    let addr = driver.prometheus_addr();
    (driver, addr)
}

fn run(driver: &mut Process, plan: &str, runs_so_far: usize) {
    driver.send(&format!("run {plan}"));
    driver.wait_for_lines("done", runs_so_far + 1);
}

fn command<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["commands"]
        .as_array()
        .expect("commands array")
        .iter()
        .find(|c| c["command"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {summary}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn commands_endpoint_counts_a_known_workload_exactly_in_every_window() {
    let (mut driver, addr) = start(&[]);
    run(&mut driver, PLAN, 0);
    for window in ["1m", "5m", "1h"] {
        let reply = get(addr, &format!("/api/commands?window={window}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let s = reply.json();
        assert_eq!(s["window"], window);
        let names: Vec<&str> = s["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["command"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["fetch", "roll"], "one row per command, sorted");
        for (name, calls, errors, error_type) in
            [("roll", 11, 2, "Timeout"), ("fetch", 8, 5, "NotFound")]
        {
            let c = command(&s, name);
            assert_eq!(c["calls"], calls, "{name} in {window}: {c}");
            assert_eq!(c["errors"], errors, "{name}: {c}");
            let rate = f(&c["success_rate"]);
            assert!(
                (rate - (calls - errors) as f64 / calls as f64).abs() < 1e-9,
                "{c}"
            );
            assert_eq!(
                c["errors_by_type"],
                serde_json::json!({ error_type: errors })
            );
            assert_eq!(c["since_start"]["calls"], calls);
            assert_eq!(c["since_start"]["errors"], errors);
            assert_eq!(c["in_flight"], 0);
            assert!(f(&c["calls_per_s"]) > 0.0);
            let (p50, p95, p99, max) = (
                f(&c["p50_s"]),
                f(&c["p95_s"]),
                f(&c["p99_s"]),
                f(&c["max_s"]),
            );
            assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{c}");
        }
        assert_eq!(s["totals"]["calls"], 19);
        assert_eq!(s["totals"]["errors"], 7);
        assert_eq!(s["totals"]["since_start"]["calls"], 19);
        assert!(s["percentile_resolution"].as_str().unwrap().contains("9%"));
    }

    // One slow call: the top percentile and the maximum move to it, the median does not (it
    // stays below the slow call; no bound on how fast the others ran is assumed).
    run(&mut driver, "roll:slow:1", 1);
    let s = get(addr, "/api/commands?window=1m").json();
    let roll = command(&s, "roll");
    assert_eq!(roll["calls"], 12);
    assert!(f(&roll["max_s"]) >= 0.15, "{roll}");
    assert!(f(&roll["p99_s"]) >= 0.15 * 0.9, "{roll}");
    assert!(f(&roll["p50_s"]) < f(&roll["max_s"]), "{roll}");
    assert_eq!(s["totals"]["calls"], 20);
}

#[test]
fn recent_endpoint_lists_the_last_failures_and_the_slow_commands() {
    let (mut driver, addr) = start(&[("SPANMETRICS_SLOW_MS", "100")]);
    run(&mut driver, PLAN, 0);
    run(&mut driver, "roll:slow:1,fetch:ok:2", 1);

    let last3 = get(addr, "/api/commands/recent?outcome=error&limit=3").json();
    assert_eq!(last3["outcome"], "error");
    assert_eq!(last3["limit"], 3);
    let items = last3["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{last3}");
    for item in items {
        assert_eq!(item["command"], "fetch");
        assert_eq!(item["error_type"], "NotFound");
        // No tracer is configured: nothing is sampled, so there is no trace id.
        assert!(
            item["trace_id"].is_null() && item["span_id"].is_null(),
            "{item}"
        );
        assert!(item["time"].as_str().unwrap().ends_with('Z'));
    }
    let times: Vec<&str> = items.iter().map(|i| i["time"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    let all = get(addr, "/api/commands/recent?outcome=error&limit=100").json();
    let mut seen: Vec<(String, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["command"].as_str().unwrap().to_owned(),
                i["error_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![("fetch".to_owned(), "NotFound".to_owned()); 5];
    expected.extend(vec![("roll".to_owned(), "Timeout".to_owned()); 2]);
    assert_eq!(seen, expected);

    // The 150 ms call is listed, and whatever is listed took at least the 100 ms threshold (a
    // loaded machine may make another call that slow too, so the list is not assumed to hold
    // only the one).
    let slow = get(addr, "/api/commands/recent?outcome=slow").json();
    let items = slow["items"].as_array().unwrap();
    assert!(
        items.iter().any(|i| i["command"] == "roll"
            && i["error_type"].is_null()
            && f(&i["duration_s"]) >= 0.15),
        "the 150 ms call is slow: {slow}"
    );
    assert!(
        items.iter().all(|i| f(&i["duration_s"]) >= 0.1),
        "only calls above the threshold: {slow}"
    );
}

#[test]
fn health_reports_each_check_with_its_value_and_threshold() {
    let (mut driver, addr) = start(&[]);
    let idle = get(addr, "/health");
    assert_eq!(idle.status, 200, "{}", idle.body);
    let h = idle.json();
    assert_eq!(h["status"], "healthy");
    assert!(
        h["checks"]["success_rate"]["value"].is_null(),
        "no calls yet: {h}"
    );
    assert_eq!(h["checks"]["export"]["status"], "pass");
    assert_eq!(h["window_s"], 300);

    run(&mut driver, PLAN, 0);
    let reply = get(addr, "/health");
    assert_eq!(reply.status, 503, "13 of 19 succeeded: {}", reply.body);
    let h = reply.json();
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["calls_in_window"], 19);
    let check = &h["checks"]["success_rate"];
    assert_eq!(check["status"], "fail");
    assert!((f(&check["value"]) - 12.0 / 19.0).abs() < 1e-9, "{check}");
    assert_eq!(check["threshold"], 0.9);
    assert_eq!(check["warn"], 0.95);
    assert!(h["uptime_s"].as_f64().unwrap() > 0.0);
    assert!(h["timestamp"].as_str().unwrap().ends_with('Z'));

    for probe in ["/health/live", "/health/ready"] {
        let reply = get(addr, probe);
        assert_eq!(reply.status, 200, "{probe}: {}", reply.body);
        assert!(reply.json()["status"].is_string());
    }
}

#[test]
fn bad_requests_get_a_json_4xx_and_never_a_5xx() {
    let (_driver, addr) = start(&[]);
    let long = format!("/api/commands?window={}", "x".repeat(3000));
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/api/commands?window=2m", 400),
        ("GET", "/api/commands?window=", 400),
        ("GET", "/api/commands?window=1m&window=5m", 400),
        ("GET", "/api/commands?bogus=1", 400),
        ("GET", "/api/commands?window=%zz", 400),
        ("GET", "/api/commands?window=%ff%fe", 400),
        ("GET", &long, 414),
        ("GET", "/api/commands/recent?outcome=fast", 400),
        ("GET", "/api/commands/recent?limit=0", 400),
        ("GET", "/api/commands/recent?limit=101", 400),
        ("GET", "/api/commands/recent?limit=-1", 400),
        (
            "GET",
            "/api/commands/recent?limit=99999999999999999999999",
            400,
        ),
        ("GET", "/api/stream?interval_ms=5", 400),
        ("GET", "/api/stream?window=1d", 400),
        ("GET", "/health?verbose=1", 400),
        ("GET", "/health/live?x", 400),
        ("POST", "/api/commands", 405),
        ("DELETE", "/health", 405),
        ("PUT", "/health/ready", 405),
        ("POST", "/metrics", 405),
        ("GET", "/no/such/page", 404),
    ];
    for (method, path, status) in cases {
        let reply = request(addr, method, path, &[]);
        assert_eq!(reply.status, *status, "{method} {path}: {}", reply.body);
        let body = reply.json();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert_eq!(body["status"], *status);
        if *status == 405 {
            assert_eq!(reply.header("allow"), Some("GET"), "{method} {path}");
        }
    }
    // Rejected by the HTTP layer before routing: still a 4xx.
    let huge = "y".repeat(200_000);
    let reply = request(addr, "GET", "/health", &[("X-Huge", &huge)]);
    assert!((400..500).contains(&reply.status), "{}", reply.status);
    // Still serving.
    assert_eq!(get(addr, "/health/live").status, 200);
}

#[test]
fn token_is_required_everywhere_but_the_probes() {
    const TOKEN: &str = "s3cret-token-42";
    let (_driver, addr) = start(&[("SPANMETRICS_HTTP_TOKEN", TOKEN)]);
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/health",
        "/api/commands",
        "/api/commands/recent",
        "/metrics",
        "/",
    ] {
        let none = get(addr, path);
        assert_eq!(none.status, 401, "{path} without a token");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert!(none.json()["error"].is_string());
        let wrong = request(
            addr,
            "GET",
            path,
            &[("Authorization", "Bearer s3cret-token-43")],
        );
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let right = request(addr, "GET", path, &[("Authorization", &bearer)]);
        assert_eq!(right.status, 200, "{path} with the token: {}", right.body);
    }
    let query = get(addr, &format!("/api/commands?window=5m&token={TOKEN}"));
    assert_eq!(
        query.status, 200,
        "token as a query parameter: {}",
        query.body
    );
    for probe in ["/health/live", "/health/ready"] {
        assert_eq!(get(addr, probe).status, 200, "{probe} needs no token");
    }
}

#[test]
fn p95_objective_from_the_environment_degrades_health_when_commands_are_slow() {
    let (mut driver, addr) = start(&[
        ("SPANMETRICS_HEALTH_P95_WARN_MS", "50"),
        ("SPANMETRICS_HEALTH_P95_FAIL_MS", "5000"),
    ]);
    run(&mut driver, "roll:ok:3", 0);
    let h = get(addr, "/health").json();
    // Fast calls, but how fast depends on the machine: the status must follow the value.
    let check = &h["checks"]["p95_latency"];
    let value = f(&check["value"]);
    let want = if value > 5.0 {
        "fail"
    } else if value > 0.05 {
        "warn"
    } else {
        "pass"
    };
    assert_eq!(check["status"], want, "{h}");
    let threshold = if want == "fail" { 5.0 } else { 0.05 };
    assert_eq!(check["threshold"], threshold, "{h}");

    run(&mut driver, "roll:slow:3", 1);
    let reply = get(addr, "/health");
    assert_eq!(reply.status, 200, "degraded is still 200: {}", reply.body);
    let h = reply.json();
    assert_eq!(h["status"], "degraded");
    let check = &h["checks"]["p95_latency"];
    assert_eq!(check["status"], "warn");
    assert!(f(&check["value"]) >= 0.15 * 0.9, "{check}");
    assert_eq!(check["fail"], 5.0);
}

#[test]
fn failing_exports_make_the_service_not_ready_and_degraded() {
    // Nothing listens on this port: every metrics export fails.
    let closed = free_port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let (_driver, addr) = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
    ]);
    let ready = poll("/health/ready to report the failing export", || {
        let reply = get(addr, "/health/ready");
        (reply.status == 503).then_some(reply)
    });
    let body = ready.json();
    assert_eq!(body["status"], "not_ready");
    assert!(body["failing_exports"]
        .as_array()
        .unwrap()
        .contains(&Value::from("metrics")));
    let h = get(addr, "/health").json();
    assert_eq!(h["checks"]["export"]["status"], "warn", "{h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(get(addr, "/health/live").status, 200);
}

#[test]
fn listening_beyond_loopback_without_a_token_logs_a_warning() {
    let warning = "no token is set";
    let driver = driver(
        "none",
        &[("SPANMETRICS_PROMETHEUS_LISTEN", "0.0.0.0:0".to_owned())],
    );
    driver.prometheus_addr();
    poll("the warning", || {
        driver.stderr().contains(warning).then_some(())
    });

    // The warning is logged before the start-up line, so once that is there it would be too.
    let started = |p: &Process| p.stderr().contains("Prometheus metrics on").then_some(());
    let driver = driver_with_token();
    poll("the start-up line", || started(&driver));
    assert!(!driver.stderr().contains(warning), "{}", driver.stderr());
    let local = start(&[]).0;
    poll("the start-up line", || started(&local));
    assert!(!local.stderr().contains(warning), "{}", local.stderr());
}

fn driver_with_token() -> Process {
    driver(
        "none",
        &[
            ("SPANMETRICS_PROMETHEUS_LISTEN", "0.0.0.0:0".to_owned()),
            ("SPANMETRICS_HTTP_TOKEN", "a-long-token".to_owned()),
        ],
    )
}
