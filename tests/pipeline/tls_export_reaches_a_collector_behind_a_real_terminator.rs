//! OTLP over TLS: stunnel terminates TLS in front of rotel with certificates made by `openssl`
//! for this test. Exact counts, spans and logs arrive over gRPC+TLS and HTTP+TLS, with mutual
//! TLS too; a server the client cannot verify (wrong CA) and a mutual-TLS server the client
//! has no certificate for are refused: one warning per signal, counted, and the commands never
//! wait for it.

use crate::otlp_export_reaches_a_real_collector::run_at;
use crate::processes::*;
use crate::tls::{Pki, Terminator};

/// The collector, its terminator and the certificates; `None` when a tool is missing.
fn collector_behind_tls(protocol: &str, mutual: bool) -> Option<(Rotel, Terminator, Pki)> {
    let rotel = rotel()?;
    let pki = Pki::new();
    let backend = if protocol == "grpc" {
        rotel.grpc
    } else {
        rotel.http
    };
    let terminator = Terminator::start(&pki, backend, mutual)?;
    Some((rotel, terminator, pki))
}

#[test]
fn grpc_over_tls_with_the_collectors_ca_delivers_everything() {
    let Some((rotel, terminator, pki)) = collector_behind_tls("grpc", false) else {
        return;
    };
    let ca = pki.path("ca.pem");
    run_at(
        &rotel,
        format!("https://127.0.0.1:{}", terminator.port),
        "grpc",
        "none",
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)],
    );
}

#[test]
fn http_over_mutual_tls_delivers_everything() {
    let Some((rotel, terminator, pki)) = collector_behind_tls("http/protobuf", true) else {
        return;
    };
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    run_at(
        &rotel,
        format!("https://127.0.0.1:{}", terminator.port),
        "http/protobuf",
        "multi-thread",
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
        ],
    );
}

/// gRPC with mutual TLS, the per-signal variables (each signal its own files) and gzip.
#[test]
fn grpc_over_mutual_tls_with_per_signal_files_and_gzip_delivers_everything() {
    let Some((rotel, terminator, pki)) = collector_behind_tls("grpc", true) else {
        return;
    };
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let mut extra = vec![("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")];
    let names: Vec<_> = ["TRACES", "METRICS", "LOGS"]
        .iter()
        .flat_map(|signal| {
            [
                (format!("OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE"), &ca),
                (
                    format!("OTEL_EXPORTER_OTLP_{signal}_CLIENT_CERTIFICATE"),
                    &cert,
                ),
                (format!("OTEL_EXPORTER_OTLP_{signal}_CLIENT_KEY"), &key),
            ]
        })
        .collect();
    extra.extend(names.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    run_at(
        &rotel,
        format!("https://127.0.0.1:{}", terminator.port),
        "grpc",
        "current-thread",
        &extra,
    );
}

/// Runs commands against a TLS endpoint the client cannot complete a handshake with: the
/// commands finish, each signal's failure is one warning, the failures are counted on the
/// Prometheus page, and nothing reaches the collector.
fn refused(protocol: &str, mutual: bool, files: &[(&str, &str)]) {
    let Some((rotel, terminator, pki)) = collector_behind_tls(protocol, mutual) else {
        return;
    };
    let mut env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://127.0.0.1:{}", terminator.port),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "200".to_owned()),
        ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    env.extend(files.iter().map(|(k, f)| (*k, pki.path(f))));
    let mut driver = driver("none", &env);
    for round in 1..=3 {
        driver.send("run roll:ok:20,fetch:NotFound:5");
        driver.wait_for_lines("done", round);
    }
    let prometheus = driver.prometheus_addr();
    poll("the refused exports to be counted", || {
        let page = http_get(prometheus, "/metrics")?;
        let failures = |signal: &str| {
            prometheus_value(
                &page,
                &format!("spanmetrics_export_failures_total{{signal=\"{signal}\"}}"),
            )
            .unwrap_or(0.0)
        };
        let lost_spans = prometheus_value(&page, "spanmetrics_export_dropped_spans_total")?;
        // Every failing command logs an ERROR event: 15 log records that cannot be delivered.
        let lost_logs = prometheus_value(&page, "spanmetrics_export_dropped_logs_total")?;
        (failures("metrics") >= 2.0
            && failures("traces") >= 1.0
            && failures("logs") >= 1.0
            && lost_spans >= 25.0
            && lost_logs >= 5.0)
            .then_some(())
    });
    driver.send("exit");
    assert!(driver.wait_exit().success(), "{}", driver.stderr());
    assert!(
        driver.stdout().contains("shutdown error"),
        "the last export was refused too: {}",
        driver.stdout()
    );
    let stderr = driver.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let warnings = |signal: &str| {
        stderr
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("OTLP {signal} export")))
            .count()
    };
    assert_eq!(warnings("metrics"), 1, "{protocol}: {stderr}");
    assert_eq!(warnings("traces"), 1, "{protocol}: {stderr}");
    assert_eq!(warnings("logs"), 1, "{protocol}: {stderr}");
    let received = parse_rotel(&rotel.stdout());
    assert!(
        received.spans.is_empty() && received.histogram_counts.is_empty(),
        "nothing passes a refused handshake: {received:?}"
    );
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_over_both_protocols() {
    for protocol in ["grpc", "http/protobuf"] {
        refused(
            protocol,
            false,
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "other-ca.pem")],
        );
    }
}

#[test]
fn the_bundled_roots_do_not_trust_a_private_ca() {
    refused("grpc", false, &[]);
}

#[test]
fn a_mutual_tls_server_refuses_a_client_without_a_certificate() {
    for protocol in ["grpc", "http/protobuf"] {
        refused(
            protocol,
            true,
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "ca.pem")],
        );
    }
}
