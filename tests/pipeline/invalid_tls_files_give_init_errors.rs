//! Every TLS file problem is an `InitError::TlsFile` naming the variable and the file, raised
//! while the settings are read: nothing is installed, nothing panics or hangs. The files are
//! made by `openssl` for the test.

use spanmetrics::{InitError, Telemetry};

use crate::tls::Pki;

/// `(variables, the variable the error names, a phrase of the problem)`; file names are
/// relative to the test's certificate directory, `{dir}` is the directory itself.
/// Variables and the files they name.
type Files = &'static [(&'static str, &'static str)];

const CASES: &[(Files, &str, &str)] = &[
    (
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "missing.pem")],
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "cannot be read",
    ),
    (
        &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "{dir}")],
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "cannot be read",
    ),
    (
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "garbage.txt")],
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "no PEM certificate",
    ),
    (
        // A key where a certificate belongs.
        &[("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "ca.key")],
        "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
        "no PEM certificate",
    ),
    (
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "truncated.pem")],
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "does not parse",
    ),
    (
        &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "client.key")],
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "needs its certificate",
    ),
    (
        &[("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", "client.pem")],
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
        "needs its private key",
    ),
    (
        &[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "client.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "client.pem"),
        ],
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "no usable PEM private key",
    ),
    (
        &[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "garbage.txt"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "client.key"),
        ],
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "no PEM certificate",
    ),
    (
        // The server's key with the client's certificate.
        &[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "client.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "server.key"),
        ],
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "does not go with the client certificate",
    ),
    (
        &[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "client.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "missing.key"),
        ],
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "cannot be read",
    ),
];

#[test]
fn each_bad_tls_file_names_the_variable_the_file_and_the_problem() {
    let pki = Pki::new();
    std::fs::write(pki.dir.join("garbage.txt"), "not a certificate\n").unwrap();
    let ca = std::fs::read_to_string(pki.dir.join("ca.pem")).unwrap();
    std::fs::write(pki.dir.join("truncated.pem"), &ca[..ca.len() / 2]).unwrap();
    let dir = pki.dir.to_string_lossy().into_owned();
    for (vars, variable, problem) in CASES {
        let path_of = |file: &str| {
            if file == "{dir}" {
                dir.clone()
            } else {
                pki.path(file)
            }
        };
        // Over https:// and plain http:// alike: a named file is always checked.
        for endpoint in ["https://127.0.0.1:4317", "http://127.0.0.1:4317"] {
            let mut env: Vec<(String, String)> = vars
                .iter()
                .map(|(k, f)| ((*k).to_owned(), path_of(f)))
                .collect();
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()));
            let result = Telemetry::builder()
                .with_prometheus_listen(None)
                .with_env(env)
                .install();
            let wanted_path = vars
                .iter()
                .find(|(k, _)| k == variable)
                .map(|(_, f)| path_of(f))
                .unwrap();
            match result {
                Err(
                    ref error @ InitError::TlsFile {
                        variable: ref v,
                        ref path,
                        problem: ref p,
                    },
                ) => {
                    assert_eq!(v, variable, "{error}");
                    assert_eq!(path, &wanted_path, "{error}");
                    assert!(
                        p.contains(problem),
                        "{variable}: `{p}` should say `{problem}`"
                    );
                    let message = error.to_string();
                    assert!(
                        message.contains(variable) && message.contains(&wanted_path),
                        "{message}"
                    );
                }
                other => panic!("{vars:?} should be refused, got {other:?}"),
            }
        }
    }
    assert!(
        !tracing::dispatcher::has_been_set(),
        "a rejected configuration installs nothing"
    );
}
