//! Every invalid environment value is rejected with an `InitError` naming the variable, the
//! value and what is accepted; nothing is installed. Settings come from `with_env`, so the
//! process environment is never touched.

use spanmetrics::{InitError, Telemetry};

const CASES: &[(&str, &str, &str)] = &[
    // (variable, invalid value, a word of the accepted-values description)
    ("OTEL_SDK_DISABLED", "yes", "true"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", "http://"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://", "https://"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", ":4317", "host:port"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://host:port", "http://"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://h:1", "http://"),
    (
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "unix:///tmp/otlp",
        "http://",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://h:4317/a b",
        "http://",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "HTTPS://c:4317",
        "https://",
    ),
    ("OTEL_EXPORTER_OTLP_INSECURE", "yes", "true"),
    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "1", "false"),
    ("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "on", "true"),
    ("OTEL_TRACES_EXPORTER", "jaeger", "otlp"),
    ("OTEL_METRICS_EXPORTER", "prometheus", "none"),
    ("OTEL_LOGS_EXPORTER", "console", "otlp"),
    ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "lz4", "gzip"),
    (
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        "http/json",
        "http/protobuf",
    ),
    ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x", "key=value"),
    ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "soon", "milliseconds"),
    ("SPANMETRICS_OTLP_LOGS_FILTER", "my_app=loud", "directives"),
    (
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "brotli",
        "`gzip`, `zstd` or `none`",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "gzip9",
        "`gzip`, `zstd` or `none`",
    ),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "deflate", "zstd"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/protobuf"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp", "grpc"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "GRPC", "grpc"),
    (
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "http",
        "http/protobuf",
    ),
    ("OTEL_EXPORTER_OTLP_HEADERS", "authorization", "key=value"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "=x", "key=value"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=%zz", "key=value"),
    // Header names and values the exporters cannot send.
    ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1", "header name"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "x-é=1", "header name"),
    (
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "x-note=line%0Abreak",
        "header value",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "x-ok=1,x-bell=%07",
        "header value",
    ),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", "milliseconds"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "-5", "milliseconds"),
    ("OTEL_TRACES_SAMPLER", "sometimes", "traceidratio"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1m", "milliseconds"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0", "milliseconds"),
    (
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "weekly",
        "cumulative",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        "summary",
        "explicit_bucket_histogram",
    ),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", "key=value"),
    ("SPANMETRICS_PROMETHEUS_LISTEN", "9464", "off"),
    ("SPANMETRICS_PROMETHEUS_LISTEN", "on", "off"),
    ("RUST_LOG", "my_app=loud", "directives"),
];

fn check(env: Vec<(String, String)>, variable: &str, value: &str, accepted: &str) {
    let result = Telemetry::builder()
        .with_prometheus_listen(None)
        .with_env(env)
        .install();
    match result {
        Err(InitError::InvalidEnv {
            variable: v,
            value: got,
            expected,
        }) => {
            assert_eq!(v, variable);
            assert_eq!(got, value);
            assert!(
                expected.contains(accepted),
                "{variable}: `{expected}` should mention `{accepted}`"
            );
        }
        other => panic!("{variable}={value:?} should be rejected, got {other:?}"),
    }
}

#[test]
fn each_invalid_value_names_the_variable_the_value_and_what_is_accepted() {
    for (variable, value, accepted) in CASES {
        check(
            vec![((*variable).to_owned(), (*value).to_owned())],
            variable,
            value,
            accepted,
        );
        let message = Telemetry::builder()
            .with_env([((*variable).to_owned(), (*value).to_owned())])
            .install()
            .expect_err("rejected")
            .to_string();
        assert!(
            message.contains(variable) && message.contains(value),
            "{message}"
        );
    }
    assert!(
        !tracing::dispatcher::has_been_set(),
        "a rejected configuration installs nothing"
    );
}

/// Only gRPC endpoints may leave out the scheme (the OTLP spec's rule); over HTTP it is an error
/// naming the variable that gave the endpoint.
#[test]
fn an_endpoint_without_a_scheme_is_refused_for_http() {
    for variable in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        check(
            vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
                (variable.into(), "collector:4318".into()),
            ],
            variable,
            "collector:4318",
            "only gRPC endpoints may leave out the scheme",
        );
    }
}

#[test]
fn sampler_argument_outside_zero_to_one_is_rejected() {
    for sampler in ["traceidratio", "parentbased_traceidratio"] {
        for bad in ["1.5", "-0.1", "ten percent"] {
            check(
                vec![
                    ("OTEL_TRACES_SAMPLER".into(), sampler.into()),
                    ("OTEL_TRACES_SAMPLER_ARG".into(), bad.into()),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
                bad,
                "0 to 1",
            );
        }
    }
}

#[test]
fn signal_specific_variables_are_checked_even_when_the_generic_one_is_valid() {
    check(
        vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
            (
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL".into(),
                "thrift".into(),
            ),
        ],
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "thrift",
        "grpc",
    );
}

#[test]
fn a_malformed_generic_variable_is_rejected_even_when_both_signal_specific_ones_are_set() {
    for (suffix, good, bad, accepted) in [
        ("PROTOCOL", "grpc", "thrift", "grpc"),
        ("HEADERS", "a=1", "bad key=1", "header name"),
        ("TIMEOUT", "1000", "10s", "milliseconds"),
        ("COMPRESSION", "gzip", "lz4", "zstd"),
        (
            "ENDPOINT",
            "http://127.0.0.1:4317",
            "ftp://c:4317",
            "https://",
        ),
        ("INSECURE", "true", "maybe", "false"),
    ] {
        let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
        check(
            vec![
                (format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"), good.into()),
                (format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}"), good.into()),
                (generic.clone(), bad.into()),
            ],
            &generic,
            bad,
            accepted,
        );
    }
}

#[test]
fn an_invalid_default_log_filter_is_an_init_error_even_when_rust_log_is_set() {
    for env in [vec![], vec![("RUST_LOG".to_owned(), "info".to_owned())]] {
        let result = Telemetry::builder()
            .with_prometheus_listen(None)
            .with_default_log_filter("my_app=loud")
            .with_env(env)
            .install();
        match result {
            Err(error @ InitError::InvalidDefaultLogFilter { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains("my_app=loud") && message.contains("with_default_log_filter"),
                    "{message}"
                );
            }
            other => panic!("an invalid default log filter should be rejected, got {other:?}"),
        }
    }
    assert!(!tracing::dispatcher::has_been_set());
}

/// Objectives from the environment: each problem is an `InitError::Objectives` naming the
/// variable, its value and what is wrong.
#[test]
fn invalid_objectives_from_the_environment_name_the_variable_and_the_problem() {
    let missing =
        std::env::temp_dir().join(format!("no-such-objectives-{}.json", std::process::id()));
    let missing = missing.to_string_lossy().into_owned();
    let bad_file = std::env::temp_dir().join(format!("bad-objectives-{}.json", std::process::id()));
    std::fs::write(&bad_file, "{not json").unwrap();
    let bad_file = bad_file.to_string_lossy().into_owned();
    let cases: &[(&str, &str, &str)] = &[
        (
            "SPANMETRICS_OBJECTIVES",
            "roll=0.99",
            "expected a JSON list",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"{"name": "a"}"#,
            "expected a JSON list",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "comands": ["roll"]}]"#,
            "unknown field",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "commands": ["roll"], "success_rate": 1.5}]"#,
            "between 0 and 1",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "commands": ["roll"]}]"#,
            "no target",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "success_rate": 0.9}]"#,
            "covers no command",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "commands": ["roll"], "label": {"tier": "vip"}, "success_rate": 0.9}]"#,
            "not both",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "label": {"tier": "vip"}, "success_rate": 0.9}]"#,
            "not allow-listed",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "commands": ["roll"], "latency": {"ratio": 0.99, "under_ms": -5}}]"#,
            "above 0",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "commands": ["roll"], "success_rate": 0.9, "window_days": 1}]"#,
            "3 to 366 days",
        ),
        (
            "SPANMETRICS_OBJECTIVES",
            r#"[{"name": "a", "commands": ["roll"], "success_rate": 0.9}, {"name": "a", "commands": ["ask"], "success_rate": 0.9}]"#,
            "two objectives are named `a`",
        ),
        ("SPANMETRICS_OBJECTIVES_FILE", &missing, "cannot be read"),
        (
            "SPANMETRICS_OBJECTIVES_FILE",
            &bad_file,
            "expected a JSON list",
        ),
    ];
    for (variable, value, problem) in cases {
        let result = Telemetry::builder()
            .with_prometheus_listen(None)
            .with_env([((*variable).to_owned(), (*value).to_owned())])
            .install();
        match result {
            Err(
                ref error @ InitError::Objectives {
                    variable: ref v,
                    value: ref got,
                    problem: ref p,
                },
            ) => {
                assert_eq!(v, variable, "{error}");
                assert_eq!(got, value, "{error}");
                assert!(
                    p.contains(problem),
                    "{variable}={value}: `{p}` should say `{problem}`"
                );
                assert!(error.to_string().contains(variable));
            }
            other => panic!("{variable}={value:?} should be refused, got {other:?}"),
        }
    }
    let both = Telemetry::builder()
        .with_prometheus_listen(None)
        .with_env([
            ("SPANMETRICS_OBJECTIVES".to_owned(), "[]".to_owned()),
            ("SPANMETRICS_OBJECTIVES_FILE".to_owned(), bad_file.clone()),
        ])
        .install();
    assert!(
        matches!(both, Err(InitError::Objectives { ref problem, .. }) if problem.contains("not both")),
        "{both:?}"
    );
    let _ = std::fs::remove_file(&bad_file);
    assert!(!tracing::dispatcher::has_been_set());
}
