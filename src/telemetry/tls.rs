//! TLS for the OTLP exporters: the CA and client-certificate files named by
//! `OTEL_EXPORTER_OTLP_*CERTIFICATE` / `*CLIENT_KEY`, read and checked once when the settings
//! are read, and the client configurations built from them.
//!
//! Both protocols use rustls with its `ring` provider, chosen explicitly: the process-wide
//! default provider is never needed, so a program that compiles in a second provider (through
//! another dependency) does not panic. Without a CA file the server is verified against the
//! Mozilla roots bundled by `webpki-roots`.

use std::sync::Arc;
#[cfg(feature = "otlp-http")]
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::env::{Named, TlsFiles};
use super::error::InitError;

/// The checked TLS settings of one signal's exporter.
#[derive(Debug)]
pub(crate) struct ClientTls {
    /// The CA file's PEM text, when one is set (it replaces the bundled roots).
    ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and key (PEM), for mutual TLS.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The rustls configuration for HTTP/protobuf, built from the same files.
    config: Arc<ClientConfig>,
}

fn error(file: &Named, problem: impl Into<String>) -> InitError {
    InitError::TlsFile {
        variable: file.variable.clone(),
        path: file.value.clone(),
        problem: problem.into(),
    }
}

fn read(file: &Named) -> Result<Vec<u8>, InitError> {
    std::fs::read(&file.value).map_err(|e| error(file, format!("the file cannot be read: {e}")))
}

fn certificates(file: &Named, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, InitError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(file, format!("the PEM text does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            file,
            "the file holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)",
        ));
    }
    Ok(certs)
}

/// The rustls provider both protocols use.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bundled_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Reads and checks the files of `files`. `None` when no file is set and the endpoint is not
/// `https://` (plain connections need nothing).
pub(crate) fn load(files: &TlsFiles, https: bool) -> Result<Option<Arc<ClientTls>>, InitError> {
    if files.ca.is_none() && files.cert.is_none() && files.key.is_none() && !https {
        return Ok(None);
    }
    let (roots, ca_pem) = match &files.ca {
        None => (bundled_roots(), None),
        Some(file) => {
            let pem = read(file)?;
            let mut roots = RootCertStore::empty();
            for cert in certificates(file, &pem)? {
                roots.add(cert).map_err(|e| {
                    error(file, format!("a certificate cannot be used as a CA: {e}"))
                })?;
            }
            (roots, Some(pem))
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| InitError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let (config, identity) = match (&files.cert, &files.key) {
        (None, None) => (builder.with_no_client_auth(), None),
        (Some(cert), None) => {
            return Err(error(
                cert,
                "a client certificate needs its private key: set OTEL_EXPORTER_OTLP_CLIENT_KEY (or its per-signal form) too",
            ))
        }
        (None, Some(key)) => {
            return Err(error(
                key,
                "a client key needs its certificate: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (or its per-signal form) too",
            ))
        }
        (Some(cert_file), Some(key_file)) => {
            let cert_pem = read(cert_file)?;
            let chain = certificates(cert_file, &cert_pem)?;
            let key_pem = read(key_file)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                error(
                    key_file,
                    format!("the file holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                )
            })?;
            let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                error(
                    key_file,
                    format!(
                        "the key does not go with the client certificate in {}: {e}",
                        cert_file.variable
                    ),
                )
            })?;
            (config, Some((cert_pem, key_pem)))
        }
    };
    Ok(Some(Arc::new(ClientTls {
        ca_pem,
        identity,
        config: Arc::new(config),
    })))
}

/// tonic's TLS configuration for the gRPC exporters (tonic builds it with the same provider).
#[cfg(feature = "otlp-grpc")]
pub(crate) fn tonic_config(
    tls: &ClientTls,
) -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    // A collector speaks HTTP/2; TLS terminators in front of it do not always announce it.
    let mut config = ClientTlsConfig::new().assume_http2(true);
    config = match &tls.ca_pem {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.trust_anchors(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    config
}

/// The blocking HTTP client of the HTTP/protobuf exporters, on the checked configuration (or
/// on the bundled roots for plain `http://` endpoints: a TLS-capable client is always given,
/// so the process-wide provider is never looked up). Built on a thread of its own, as
/// reqwest's blocking client cannot be built inside an async runtime.
#[cfg(feature = "otlp-http")]
pub(crate) fn http_client(
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, String> {
    let config = match tls {
        Some(tls) => ClientConfig::clone(&tls.config),
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(bundled_roots())
            .with_no_client_auth(),
    };
    std::thread::Builder::new()
        .name("spanmetrics-http-client".into())
        .spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .use_preconfigured_tls(config)
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the thread building the HTTP client panicked".to_owned())?
}
