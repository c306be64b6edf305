//! End-to-end: a real Prometheus server scrapes the `/metrics` endpoint of a program using
//! `spanmetrics::init()`, and `promtool` finds nothing wrong with the exposition.

use std::collections::BTreeMap;
use std::process::Command;

use crate::processes::*;

const PLAN: &str = "roll:ok:9,roll:Timeout:2,fetch:ok:3,fetch:NotFound:5";

/// Queries Prometheus for `command_duration_seconds_count` per command/outcome/error_type.
fn query_counts(
    prometheus: std::net::SocketAddr,
) -> Option<BTreeMap<(String, String, String), u64>> {
    let body = http_get(
        prometheus,
        "/api/v1/query?query=command_duration_seconds_count",
    )?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut out = BTreeMap::new();
    for series in json["data"]["result"].as_array()? {
        let label = |k: &str| series["metric"][k].as_str().unwrap_or_default().to_owned();
        let value: u64 = series["value"][1].as_str()?.parse().ok()?;
        out.insert(
            (label("command"), label("outcome"), label("error_type")),
            value,
        );
    }
    Some(out)
}

#[test]
fn prometheus_server_scrapes_exact_command_counts() {
    let (Some(prometheus_bin), Some(promtool)) = (tool("PROMETHEUS"), tool("PROMTOOL")) else {
        return;
    };
    let mut driver = driver(
        "multi-thread",
        &[("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned())],
    );
    let target: std::net::SocketAddr = driver.prometheus_addr();
    driver.send(&format!("run {PLAN}"));
    driver.wait_for_lines("done", 1);
    assert!(
        global_recorder_taken(&mut driver),
        "with the endpoint on, its recorder is the global metrics recorder"
    );

    let dir = std::env::temp_dir().join(format!("spanmetrics-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bot\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut command = Command::new(&prometheus_bin);
    command.args([
        &format!("--config.file={}", config.display()),
        &format!("--storage.tsdb.path={}", dir.join("data").display()),
        &format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    let mut server = Process::spawn(command);
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let expected = expected(PLAN);
    let mut last = None;
    let matched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll("Prometheus to report the command counts", || {
            let counts = query_counts(api);
            let ok = counts.as_ref() == Some(&expected);
            last = counts;
            ok.then_some(())
        })
    }));
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matched.is_ok(),
        "expected {expected:?}, Prometheus has {last:?}; server log:\n{}",
        server.stderr()
    );

    // The exposition passes promtool's checks.
    let page = http_get(target, "/metrics").expect("the metrics page");
    for name in [
        "command_duration_seconds_bucket",
        "command_busy_seconds_bucket",
        "command_active",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_threads",
        "process_uptime_seconds",
        "spanmetrics_export_failures_total",
    ] {
        assert!(page.contains(name), "{name} missing from:\n{page}");
    }
    assert!(
        page.contains("le=\"0.0001\"") && page.contains("le=\"60\""),
        "buckets 100µs…60s"
    );
    let (passed, report) = promtool_check_metrics(&promtool, &page);
    assert!(
        passed && report.trim().is_empty(),
        "promtool: {report}\n{page}"
    );

    driver.send("exit");
    assert!(driver.wait_exit().success());
}

#[test]
fn a_client_that_never_sends_its_request_is_disconnected() {
    let mut driver = driver(
        "current-thread",
        &[("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned())],
    );
    let target: std::net::SocketAddr = driver.prometheus_addr();
    // Half a request line, then silence: the server must hang up, not wait forever.
    let mut silent = std::net::TcpStream::connect(target).expect("connect");
    {
        use std::io::Write;
        silent.write_all(b"GET /metr").expect("write");
    }
    silent
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut buffer = [0u8; 64];
    let outcome = {
        use std::io::Read;
        silent.read(&mut buffer)
    };
    match outcome {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "the server should close a connection that sends no complete request, got {other:?}"
        ),
    }
    // Other clients were served all along.
    assert!(http_get(target, "/metrics").is_some_and(|page| page.contains("process_threads")));
    driver.send("exit");
    assert!(driver.wait_exit().success(), "{}", driver.stderr());
}
