//! End-to-end: hostile command names, error types and mark names (quotes, backslashes,
//! newlines, control characters, non-ASCII, a megabyte) travel over OTLP to a real rotel
//! collector unchanged but for the 96-byte (error types: 64-byte) cut, the program's
//! Prometheus page stays valid for the real `promtool`, and `/api/commands` is valid JSON
//! naming them.

use crate::processes::*;

const VALUE_CAP: usize = 96;
const ERROR_TYPE_CAP: usize = 64;

fn hostile_values() -> Vec<String> {
    vec![
        "say\\\"hi\"\n".to_owned(),
        "C:\\temp\t日本".to_owned(),
        "Bad\0Thing\u{7f}\u{85}".to_owned(),
        "line1\r\nline2\\n".to_owned(),
        "{}=,\"#".to_owned(),
        format!("mega\\\"\n{}", "é".repeat(1 << 19)),
    ]
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn cut(s: &str, cap: usize) -> String {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// How rotel's debug output shows a string attribute.
fn shown(key: &str, value: &str) -> String {
    format!("-> {key}: Str({value})")
}

#[test]
fn hostile_values_reach_the_collector_intact_and_the_page_stays_valid() {
    let (Some(promtool), Some(rotel)) = (tool("PROMTOOL"), rotel()) else {
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
            ("OTEL_METRIC_EXPORT_INTERVAL", "60000".to_owned()),
            ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
        ],
    );
    let addr = driver.prometheus_addr();
    let values = hostile_values();
    for (i, value) in values.iter().enumerate() {
        driver.send(&format!("hostile {}", hex(value)));
        driver.wait_for_lines("done", i + 1);
    }
    driver.send("flush");
    driver.wait_for_lines("flushed", 1);

    // The Prometheus page, checked by promtool.
    let page = http_get(addr, "/metrics").expect("the page");
    let (passed, report) = promtool_check_metrics(&promtool, &page);
    assert!(passed, "promtool: {report}\n{page}");

    // The live statistics name the same commands in valid JSON.
    let summary = http_get(addr, "/api/commands").expect("the summary");
    let summary: serde_json::Value =
        serde_json::from_str(&summary).unwrap_or_else(|e| panic!("not JSON ({e}): {summary}"));
    let names: Vec<&str> = summary["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["command"].as_str())
        .collect();
    for value in &values {
        let name = cut(value, VALUE_CAP);
        assert!(names.contains(&name.as_str()), "{name:?} not in {names:?}");
    }

    driver.send("exit");
    assert!(driver.wait_exit().success(), "{}", driver.stderr());
    let output = poll("every hostile value at the collector", || {
        let output = rotel.stdout();
        values
            .iter()
            .all(|v| output.contains(&shown("error.type", &cut(v, ERROR_TYPE_CAP))))
            .then_some(output)
    });
    for value in &values {
        let name = cut(value, VALUE_CAP);
        for key in ["command", "mark"] {
            assert!(
                output.contains(&shown(key, &name)),
                "no {key} {name:?} at the collector"
            );
        }
    }
}
