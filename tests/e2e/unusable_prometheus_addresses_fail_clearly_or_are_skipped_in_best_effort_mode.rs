//! A Prometheus address that cannot be listened on: by default a clear `InitError` and
//! nothing installed; in best-effort mode (`TelemetryBuilder::with_best_effort(true)` or
//! `SPANMETRICS_BEST_EFFORT=true`) a warning, and the rest of the telemetry starts.
//! Every case fails for every user, root included: a port held by this test, an address that
//! is not on this host, values that are not addresses.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};

use crate::processes::*;
use spanmetrics::{InitError, Telemetry};

/// TEST-NET-1 (RFC 5737): documentation only, never assigned to a local interface.
const NOT_ON_THIS_HOST: &str = "192.0.2.1:9464";

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn listen_error(result: Result<spanmetrics::TelemetryGuard, InitError>) -> (SocketAddr, ErrorKind) {
    match result {
        Err(error @ InitError::PrometheusListen { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("SPANMETRICS_PROMETHEUS_LISTEN")
                    && message.contains("SPANMETRICS_BEST_EFFORT"),
                "the message says what to do: {message}"
            );
            let InitError::PrometheusListen { addr, source } = error else {
                unreachable!()
            };
            (addr, source.kind())
        }
        other => panic!("expected InitError::PrometheusListen, got {other:?}"),
    }
}

/// One test, because only one installation can succeed per process: every failing case
/// first (each must leave nothing installed), then best effort, which installs.
#[test]
fn unusable_addresses_are_init_errors_unless_best_effort_is_asked_for() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let taken_addr = taken.local_addr().unwrap().to_string();

    // A port already taken, given by the variable or by the builder.
    let (addr, kind) = listen_error(
        Telemetry::builder()
            .with_env(env(&[("SPANMETRICS_PROMETHEUS_LISTEN", &taken_addr)]))
            .install(),
    );
    assert_eq!(
        (addr.to_string(), kind),
        (taken_addr.clone(), ErrorKind::AddrInUse)
    );
    let (_, kind) = listen_error(
        Telemetry::builder()
            .with_env(Vec::new())
            .with_prometheus_listen(Some(taken_addr.parse().unwrap()))
            .install(),
    );
    assert_eq!(kind, ErrorKind::AddrInUse);

    // An address of another host.
    let (addr, kind) = listen_error(
        Telemetry::builder()
            .with_env(env(&[("SPANMETRICS_PROMETHEUS_LISTEN", NOT_ON_THIS_HOST)]))
            .install(),
    );
    assert_eq!(addr.to_string(), NOT_ON_THIS_HOST);
    assert_eq!(kind, ErrorKind::AddrNotAvailable);

    // The variable wins over the builder: `false` turns best effort off again.
    listen_error(
        Telemetry::builder()
            .with_best_effort(true)
            .with_env(env(&[
                ("SPANMETRICS_PROMETHEUS_LISTEN", &taken_addr),
                ("SPANMETRICS_BEST_EFFORT", "false"),
            ]))
            .install(),
    );

    // Values that are not addresses are configuration errors, best effort or not.
    for (variable, value) in [
        ("SPANMETRICS_PROMETHEUS_LISTEN", "999.1.1.1:80"),
        ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:99999"),
        ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1"),
        ("SPANMETRICS_BEST_EFFORT", "yes"),
    ] {
        for best_effort in [false, true] {
            let result = Telemetry::builder()
                .with_best_effort(best_effort)
                .with_env(env(&[(variable, value)]))
                .install();
            match result {
                Err(InitError::InvalidEnv {
                    variable: v,
                    value: got,
                    ..
                }) => assert_eq!((v.as_str(), got.as_str()), (variable, value)),
                other => panic!("{variable}={value:?} should be rejected, got {other:?}"),
            }
        }
    }
    assert!(
        !tracing::dispatcher::has_been_set(),
        "a failed installation installs nothing"
    );

    // Best effort: installed without the endpoint; the port still belongs to its owner.
    let guard = Telemetry::builder()
        .with_best_effort(true)
        .with_env(env(&[("SPANMETRICS_PROMETHEUS_LISTEN", &taken_addr)]))
        .install()
        .expect("best effort starts without the endpoint");
    assert_eq!(guard.prometheus_addr(), None);
    assert!(
        tracing::dispatcher::has_been_set(),
        "the subscriber is installed"
    );
    // The port still belongs to its owner: a connection to it reaches the first listener.
    let _client = std::net::TcpStream::connect(&taken_addr).expect("the taken port accepts");
    taken
        .accept()
        .expect("the connection reaches the port's owner");
    // The layer works: a command span is counted and flushed without an endpoint.
    #[tracing::instrument(fields(command = "roll"))]
    fn roll() {}
    roll();
    guard.spanmetrics().flush();
    guard.shutdown().expect("nothing to export, nothing lost");
}

const PLAN: &str = "roll:ok:6,fetch:NotFound:3";

/// The driver with its Prometheus address on a port this test holds.
fn driver_on_taken_port(best_effort: &str, extra: &[(&str, String)]) -> (Process, TcpListener) {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let mut env = vec![
        (
            "SPANMETRICS_PROMETHEUS_LISTEN",
            taken.local_addr().unwrap().to_string(),
        ),
        ("SPANMETRICS_BEST_EFFORT", best_effort.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    (driver("none", &env), taken)
}

#[test]
fn without_best_effort_a_taken_port_stops_the_program_with_a_clear_message() {
    let (mut driver, taken) = driver_on_taken_port("false", &[]);
    let status = driver.wait_exit();
    assert_eq!(
        status.code(),
        Some(2),
        "the driver exits with its init-error code"
    );
    let stderr = driver.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let addr = taken.local_addr().unwrap().to_string();
    assert!(
        stderr.contains(&format!("the Prometheus endpoint cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn with_best_effort_a_taken_port_is_a_warning_and_otlp_export_still_works() {
    let Some(rotel) = rotel() else {
        return;
    };
    let grpc = rotel.grpc;
    let (mut driver, taken) = driver_on_taken_port(
        "true",
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
        )],
    );
    driver.send(&format!("run {PLAN}"));
    driver.wait_for_lines("done", 1);
    assert!(driver.stdout().lines().any(|l| l == "prometheus off"));
    assert!(
        !global_recorder_taken(&mut driver),
        "no Prometheus recorder without its endpoint"
    );
    driver.send("exit");
    assert!(driver.wait_exit().success(), "{}", driver.stderr());
    assert!(
        driver.stdout().contains("shutdown ok"),
        "{}",
        driver.stdout()
    );
    poll("every command at the collector", || {
        (parse_rotel(&rotel.stdout()).duration_counts() == expected(PLAN)).then_some(())
    });
    let stderr = driver.stderr();
    let addr = taken.local_addr().unwrap().to_string();
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&addr) && l.contains("best-effort"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning naming the address: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
