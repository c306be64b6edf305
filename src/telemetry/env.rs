//! Settings from `OTEL_*` (and our own `SPANMETRICS_*`) environment variables.
//!
//! Every variable is read from one map (the process environment, or the map given to
//! [`super::TelemetryBuilder::with_env`]), parsed by a small table of parsers, and a bad value
//! becomes an [`InitError::InvalidEnv`] naming the variable, the value and what is accepted.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::error::InitError;

/// Default address of the Prometheus endpoint.
pub(crate) const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9464";

/// Where the Prometheus endpoint listens unless told: [`DEFAULT_PROMETHEUS_LISTEN`] when it is
/// built in, else nowhere.
pub(crate) fn default_prometheus_listen() -> Option<SocketAddr> {
    if cfg!(feature = "prometheus") {
        DEFAULT_PROMETHEUS_LISTEN.parse().ok()
    } else {
        None
    }
}

/// `Ok` when `present`; else the error naming the cargo feature that builds `what` in.
pub(crate) fn built_in(
    present: bool,
    setting: String,
    what: &'static str,
    feature: &'static str,
) -> Result<(), InitError> {
    if present {
        Ok(())
    } else {
        Err(InitError::NotBuiltIn {
            setting,
            what,
            feature,
        })
    }
}

/// Wire protocol of an OTLP exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how one signal is exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OtlpTarget {
    /// The full endpoint, always with its scheme (`http://` or `https://`); for HTTP
    /// including the `/v1/<signal>` path.
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) compression: Compression,
    /// The TLS files (read and checked by `tls::load`).
    pub(crate) tls: TlsFiles,
}

/// A variable and its value, for errors that name both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) variable: String,
    pub(crate) value: String,
}

/// The TLS files of one signal: `OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE`, `…CLIENT_CERTIFICATE`
/// and `…CLIENT_KEY`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// The CA to verify the server with (replaces the bundled roots).
    pub(crate) ca: Option<Named>,
    /// The client certificate chain, for mutual TLS.
    pub(crate) cert: Option<Named>,
    /// Its private key.
    pub(crate) key: Option<Named>,
}

/// How an OTLP exporter compresses what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Protocol {
    /// gRPC when built in, else HTTP/protobuf.
    pub(crate) const DEFAULT: Protocol = if cfg!(feature = "otlp-grpc") {
        Protocol::Grpc
    } else {
        Protocol::HttpProtobuf
    };
}

impl OtlpTarget {
    /// Whether the connection uses TLS.
    pub(crate) fn is_https(&self) -> bool {
        self.endpoint.starts_with("https://")
    }

    /// An error unless this build can export over the target's protocol.
    fn check_built_in(&self, signal: &str) -> Result<(), InitError> {
        let setting = format!(
            "OTLP {} export to {} ({:?}, OTEL_EXPORTER_OTLP_{signal}_*)",
            signal.to_lowercase(),
            self.endpoint,
            self.protocol
        );
        if self.is_https() {
            built_in(
                cfg!(feature = "tls"),
                setting.clone(),
                "TLS (https:// endpoints)",
                "tls",
            )?;
        }
        match self.protocol {
            Protocol::Grpc => built_in(
                cfg!(feature = "otlp-grpc"),
                setting,
                "OTLP over gRPC",
                "otlp-grpc",
            ),
            Protocol::HttpProtobuf => built_in(
                cfg!(feature = "otlp-http"),
                setting,
                "OTLP over HTTP",
                "otlp-http",
            ),
        }
    }
}

/// The trace sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// Metric temporality of the OTLP metrics exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Temporality {
    Cumulative,
    Delta,
    LowMemory,
}

/// Aggregation of OTLP histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HistogramAggregation {
    Base2Exponential,
    Explicit,
}

/// Everything the environment configures.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) sdk_disabled: bool,
    pub(crate) service_name: Option<String>,
    pub(crate) resource_attributes: Vec<(String, String)>,
    /// `None` when no endpoint is set or `OTEL_TRACES_EXPORTER=none`.
    pub(crate) traces: Option<OtlpTarget>,
    /// `None` when no endpoint is set or `OTEL_METRICS_EXPORTER=none`.
    pub(crate) metrics: Option<OtlpTarget>,
    /// `None` when no endpoint is set or `OTEL_LOGS_EXPORTER=none`.
    pub(crate) logs: Option<OtlpTarget>,
    /// `OTEL_TRACES_EXPORTER=none`.
    pub(crate) traces_exporter_none: bool,
    /// `OTEL_METRICS_EXPORTER=none`.
    pub(crate) metrics_exporter_none: bool,
    /// `OTEL_LOGS_EXPORTER=none`.
    pub(crate) logs_exporter_none: bool,
    /// `SPANMETRICS_OTLP_LOGS_FILTER`: which events are exported as OTLP logs (checked
    /// directives; the console filter is separate).
    pub(crate) logs_filter: String,
    pub(crate) sampler: Sampler,
    pub(crate) metric_export_interval: Duration,
    pub(crate) temporality: Temporality,
    pub(crate) histogram_aggregation: HistogramAggregation,
    /// `None` when set to `off`; `Some(None)`-like defaulting is done by the caller.
    pub(crate) prometheus_listen: Option<Option<SocketAddr>>,
    /// `SPANMETRICS_BEST_EFFORT`: `None` when unset.
    pub(crate) best_effort: Option<bool>,
    pub(crate) rust_log: Option<String>,
}

/// The environment being read.
pub(crate) struct Env {
    vars: HashMap<String, String>,
}

pub(crate) type Parsed<T> = Result<T, &'static str>;

impl Env {
    /// The process environment (variables that are not Unicode are reported when read).
    pub(crate) fn from_process() -> Result<Self, InitError> {
        let mut vars = HashMap::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if !(key.starts_with("OTEL_") || key.starts_with("SPANMETRICS_") || key == "RUST_LOG") {
                continue;
            }
            match value.into_string() {
                Ok(value) => {
                    vars.insert(key.to_owned(), value);
                }
                Err(value) => {
                    return Err(InitError::InvalidEnv {
                        variable: key.to_owned(),
                        value: value.to_string_lossy().into_owned(),
                        expected: "valid UTF-8 text",
                    })
                }
            }
        }
        Ok(Self { vars })
    }

    /// An explicit map.
    pub(crate) fn from_map(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            vars: vars.into_iter().collect(),
        }
    }

    /// The raw value, `None` when unset or empty (the OTel spec treats empty as unset).
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Reads `name` with `parse`; the parser's `Err` is the description of accepted values.
    pub(crate) fn get<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Result<Option<T>, InitError> {
        match self.raw(name) {
            None => Ok(None),
            Some(value) => parse(value)
                .map(Some)
                .map_err(|expected| InitError::InvalidEnv {
                    variable: name.to_owned(),
                    value: value.to_owned(),
                    expected,
                }),
        }
    }

    /// The value of the first set variable among `names` (signal-specific first). Every set
    /// one is parsed, so a malformed variable is reported even when another one wins.
    fn first<T>(
        &self,
        names: &[&str],
        parse: impl Fn(&str) -> Parsed<T> + Copy,
    ) -> Result<Option<T>, InitError> {
        Ok(self.first_named(names, parse)?.map(|(_, value)| value))
    }

    /// [`Env::first`], with the name of the variable that gave the value.
    fn first_named<T>(
        &self,
        names: &[&str],
        parse: impl Fn(&str) -> Parsed<T> + Copy,
    ) -> Result<Option<(String, T)>, InitError> {
        let mut found = None;
        for name in names {
            let value = self.get(name, parse)?;
            if found.is_none() {
                found = value.map(|v| ((*name).to_owned(), v));
            }
        }
        Ok(found)
    }

    /// The first set file variable among `names`.
    fn file(&self, names: &[&str]) -> Result<Option<Named>, InitError> {
        Ok(self
            .first_named(names, parse_path)?
            .map(|(variable, value)| Named { variable, value }))
    }

    /// Parses every supported variable.
    pub(crate) fn settings(&self) -> Result<Settings, InitError> {
        let sdk_disabled = self.get("OTEL_SDK_DISABLED", parse_bool)?.unwrap_or(false);
        let service_name = self.raw("OTEL_SERVICE_NAME").map(str::to_owned);
        let resource_attributes = self
            .get("OTEL_RESOURCE_ATTRIBUTES", parse_key_values)?
            .unwrap_or_default();
        let exporter_none = |name: &str| -> Result<bool, InitError> {
            Ok(self.get(name, parse_exporter)? == Some(false))
        };
        let traces_exporter_none = exporter_none("OTEL_TRACES_EXPORTER")?;
        let metrics_exporter_none = exporter_none("OTEL_METRICS_EXPORTER")?;
        let logs_exporter_none = exporter_none("OTEL_LOGS_EXPORTER")?;
        // Every variable is checked, also for a signal that is switched off.
        let traces = self
            .target("TRACES", "traces")?
            .filter(|_| !traces_exporter_none);
        let metrics = self
            .target("METRICS", "metrics")?
            .filter(|_| !metrics_exporter_none);
        let logs = self.target("LOGS", "logs")?.filter(|_| !logs_exporter_none);
        let logs_filter = self
            .get("SPANMETRICS_OTLP_LOGS_FILTER", parse_directives)?
            .unwrap_or_else(|| "info".to_owned());
        let sampler = self.sampler()?;
        let metric_export_interval = self
            .get("OTEL_METRIC_EXPORT_INTERVAL", parse_positive_millis)?
            .unwrap_or(Duration::from_secs(60));
        let temporality = self
            .get(
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                parse_temporality,
            )?
            .unwrap_or(Temporality::Cumulative);
        let histogram_aggregation = self
            .get(
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                parse_histogram_aggregation,
            )?
            .unwrap_or(HistogramAggregation::Base2Exponential);
        let prometheus_listen = self.get("SPANMETRICS_PROMETHEUS_LISTEN", parse_listen)?;
        if let Some(Some(addr)) = prometheus_listen {
            built_in(
                cfg!(feature = "prometheus"),
                format!("SPANMETRICS_PROMETHEUS_LISTEN={addr}"),
                "the Prometheus endpoint",
                "prometheus",
            )?;
        }
        if !sdk_disabled {
            for (signal, target) in [("TRACES", &traces), ("METRICS", &metrics), ("LOGS", &logs)] {
                if let Some(target) = target {
                    target.check_built_in(signal)?;
                }
            }
        }
        let best_effort = self.get("SPANMETRICS_BEST_EFFORT", parse_bool)?;
        let rust_log = self.get("RUST_LOG", parse_directives)?;
        Ok(Settings {
            sdk_disabled,
            service_name,
            resource_attributes,
            traces,
            metrics,
            logs,
            traces_exporter_none,
            metrics_exporter_none,
            logs_exporter_none,
            logs_filter,
            sampler,
            metric_export_interval,
            temporality,
            histogram_aggregation,
            prometheus_listen,
            best_effort,
            rust_log,
        })
    }

    /// Endpoint, protocol, headers and timeout of one signal (`TRACES` / `METRICS`).
    fn target(&self, signal: &str, path: &str) -> Result<Option<OtlpTarget>, InitError> {
        let var = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}");
        let generic = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{suffix}");
        let protocol = self
            .first(&[&var("PROTOCOL"), &generic("PROTOCOL")], parse_protocol)?
            .unwrap_or(Protocol::DEFAULT);
        let headers = self
            .first(&[&var("HEADERS"), &generic("HEADERS")], parse_headers)?
            .unwrap_or_default();
        let timeout = self
            .first(
                &[&var("TIMEOUT"), &generic("TIMEOUT")],
                parse_positive_millis,
            )?
            .unwrap_or(Duration::from_secs(10));
        let compression = self
            .first(
                &[&var("COMPRESSION"), &generic("COMPRESSION")],
                parse_compression,
            )?
            .unwrap_or(Compression::None);
        let insecure = self.first(&[&var("INSECURE"), &generic("INSECURE")], parse_bool)?;
        let tls = TlsFiles {
            ca: self.file(&[&var("CERTIFICATE"), &generic("CERTIFICATE")])?,
            cert: self.file(&[&var("CLIENT_CERTIFICATE"), &generic("CLIENT_CERTIFICATE")])?,
            key: self.file(&[&var("CLIENT_KEY"), &generic("CLIENT_KEY")])?,
        };
        let specific_name = var("ENDPOINT");
        let specific = self.get(&specific_name, parse_endpoint)?;
        let base = self.get("OTEL_EXPORTER_OTLP_ENDPOINT", parse_endpoint)?;
        let (variable, endpoint) = match (specific, base) {
            // A signal-specific endpoint is used as given.
            (Some(endpoint), _) => (specific_name, endpoint),
            (None, None) => return Ok(None),
            // The generic one is a base: HTTP appends the signal path.
            (None, Some(base)) => (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                match protocol {
                    Protocol::Grpc => base,
                    Protocol::HttpProtobuf if has_scheme(&base) => {
                        format!("{}/v1/{path}", base.trim_end_matches('/'))
                    }
                    Protocol::HttpProtobuf => base,
                },
            ),
        };
        // An endpoint without a scheme (gRPC only, as the OTLP spec has it): TLS unless
        // `OTEL_EXPORTER_OTLP_INSECURE=true`.
        let endpoint = if has_scheme(&endpoint) {
            endpoint
        } else if protocol == Protocol::Grpc {
            let scheme = if insecure == Some(true) {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{endpoint}")
        } else {
            return Err(InitError::InvalidEnv {
                variable,
                value: endpoint,
                expected: "an http:// or https:// URL for OTLP over HTTP (only gRPC endpoints may leave out the scheme), e.g. http://127.0.0.1:4318",
            });
        };
        Ok(Some(OtlpTarget {
            endpoint,
            protocol,
            headers,
            timeout,
            compression,
            tls,
        }))
    }

    fn sampler(&self) -> Result<Sampler, InitError> {
        const RATIO: &str = "a number from 0 to 1, e.g. 0.1";
        let arg = || -> Result<f64, InitError> {
            Ok(self
                .get("OTEL_TRACES_SAMPLER_ARG", |v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or(RATIO)
                })?
                .unwrap_or(1.0))
        };
        let name = self.get("OTEL_TRACES_SAMPLER", |v| {
            const NAMES: [&str; 6] = [
                "always_on",
                "always_off",
                "traceidratio",
                "parentbased_always_on",
                "parentbased_always_off",
                "parentbased_traceidratio",
            ];
            NAMES
                .into_iter()
                .find(|n| n.eq_ignore_ascii_case(v))
                .ok_or("one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio")
        })?;
        Ok(match name.unwrap_or("parentbased_always_on") {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(arg()?),
            "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(arg()?),
            _ => Sampler::ParentBasedAlwaysOn,
        })
    }
}

/// A file path (the file itself is read by `tls::load`).
fn parse_path(v: &str) -> Parsed<String> {
    if v.contains('\0') {
        Err("a file path")
    } else {
        Ok(v.to_owned())
    }
}

/// `tracing` filter directives, checked as `EnvFilter` parses them.
fn parse_directives(v: &str) -> Parsed<String> {
    match tracing_subscriber::EnvFilter::builder().parse(v) {
        Ok(_) => Ok(v.to_owned()),
        Err(_) => {
            Err("comma-separated `target=level` directives, e.g. `info` or `my_app=debug,info`")
        }
    }
}

fn parse_bool(v: &str) -> Parsed<bool> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("`true` or `false`")
    }
}

pub(crate) fn parse_positive_millis(v: &str) -> Parsed<Duration> {
    v.parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or("a whole number of milliseconds greater than 0, e.g. 10000")
}

fn parse_protocol(v: &str) -> Parsed<Protocol> {
    match v {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        _ => Err("`grpc` or `http/protobuf` (`http/json` is not supported)"),
    }
}

fn parse_temporality(v: &str) -> Parsed<Temporality> {
    const EXPECTED: &str = "`cumulative`, `delta` or `lowmemory`";
    match v.to_ascii_lowercase().as_str() {
        "cumulative" => Ok(Temporality::Cumulative),
        "delta" => Ok(Temporality::Delta),
        "lowmemory" => Ok(Temporality::LowMemory),
        _ => Err(EXPECTED),
    }
}

fn parse_histogram_aggregation(v: &str) -> Parsed<HistogramAggregation> {
    match v.to_ascii_lowercase().as_str() {
        "base2_exponential_bucket_histogram" => Ok(HistogramAggregation::Base2Exponential),
        "explicit_bucket_histogram" => Ok(HistogramAggregation::Explicit),
        _ => Err("`base2_exponential_bucket_histogram` or `explicit_bucket_histogram`"),
    }
}

/// What an endpoint may be; shown when one is rejected.
const ENDPOINT_EXPECTED: &str = "an http:// or https:// URL with a host, e.g. \
     http://127.0.0.1:4317 or https://otlp.example.com (for gRPC also host:port, which uses TLS \
     unless OTEL_EXPORTER_OTLP_INSECURE=true)";

/// Whether `endpoint` names its scheme (`://` before any path, query or fragment).
fn has_scheme(endpoint: &str) -> bool {
    endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']))
}

fn parse_endpoint(v: &str) -> Parsed<String> {
    let rest = if has_scheme(v) {
        v.strip_prefix("http://")
            .or_else(|| v.strip_prefix("https://"))
            .ok_or(ENDPOINT_EXPECTED)?
    } else {
        v
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(ENDPOINT_EXPECTED);
    }
    // A port, when given, must be a number.
    if let Some((host, port)) = authority.rsplit_once(':') {
        if !host.ends_with(']') && host.contains(':') {
            return Err(ENDPOINT_EXPECTED);
        }
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ENDPOINT_EXPECTED);
        }
    }
    // The exporters parse it as a URI: whatever they would reject is rejected here.
    let uri = http::Uri::try_from(format!("http://{rest}")).map_err(|_| ENDPOINT_EXPECTED)?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(ENDPOINT_EXPECTED);
    }
    Ok(v.to_owned())
}

/// `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER`: `true` for `otlp`, `false` for `none`.
fn parse_exporter(v: &str) -> Parsed<bool> {
    if v.eq_ignore_ascii_case("otlp") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("none") {
        Ok(false)
    } else {
        Err("`otlp` or `none` (no other exporter is built in)")
    }
}

fn parse_compression(v: &str) -> Parsed<Compression> {
    match v.to_ascii_lowercase().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        _ => Err("`gzip`, `zstd` or `none`"),
    }
}

/// OTLP headers: `key=value` pairs whose keys and values are valid HTTP header names and values.
fn parse_headers(v: &str) -> Parsed<Vec<(String, String)>> {
    const EXPECTED: &str = "comma-separated key=value pairs, e.g. `api-key=secret,team=dice`, \
         with valid HTTP header names as keys (letters, digits, `-`, `_`, no spaces) and \
         header values without control characters (percent-encode `,`, `=` and line breaks)";
    let headers = parse_key_values(v).map_err(|_| EXPECTED)?;
    for (key, value) in &headers {
        if http::HeaderName::from_bytes(key.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            return Err(EXPECTED);
        }
    }
    Ok(headers)
}

fn parse_listen(v: &str) -> Parsed<Option<SocketAddr>> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(Some)
        .ok_or("`off` or a host:port to listen on, e.g. 127.0.0.1:9464 or 0.0.0.0:9464")
}

/// `key=value,key2=value2`, values percent-decoded (W3C baggage style, as the spec says).
fn parse_key_values(v: &str) -> Parsed<Vec<(String, String)>> {
    const EXPECTED: &str =
        "comma-separated key=value pairs with non-empty keys, e.g. `a=1,b=2` (percent-encode `,` and `=` in values)";
    let mut out = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or(EXPECTED)?;
        let key = key.trim();
        if key.is_empty() {
            return Err(EXPECTED);
        }
        out.push((
            key.to_owned(),
            crate::decode::percent_decode(value.trim(), false).ok_or(EXPECTED)?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn generic_http_endpoint_gets_the_signal_path_and_specific_one_does_not() {
        let s = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:1/custom"),
        ])
        .settings()
        .unwrap();
        assert_eq!(s.traces.unwrap().endpoint, "http://h:4318/v1/traces");
        assert_eq!(s.metrics.unwrap().endpoint, "http://m:1/custom");
    }

    #[test]
    fn no_endpoint_means_no_otlp_export() {
        let s = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
            .settings()
            .unwrap();
        assert!(s.traces.is_none() && s.metrics.is_none());
    }

    /// Run by CI in the build without gRPC (`--no-default-features --features otlp-http`).
    #[cfg(not(feature = "otlp-grpc"))]
    #[test]
    fn without_grpc_the_default_protocol_is_http_and_grpc_is_refused_naming_the_feature() {
        let s = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])
            .settings()
            .unwrap();
        let traces = s.traces.expect("exported over HTTP");
        assert_eq!(traces.protocol, Protocol::HttpProtobuf);
        assert_eq!(traces.endpoint, "http://127.0.0.1:4318/v1/traces");
        let refused = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ])
        .settings();
        match refused {
            Err(InitError::NotBuiltIn { feature, .. }) => assert_eq!(feature, "otlp-grpc"),
            other => panic!("expected NotBuiltIn, got {other:?}"),
        }
        // Switched off, the same setting is no error.
        assert!(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])
        .settings()
        .is_ok());
    }

    /// Run by CI in the builds without TLS.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_https_endpoints_are_refused_naming_the_feature() {
        for endpoint in ["https://collector:4317", "https://c/v1/traces"] {
            match env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).settings() {
                Err(InitError::NotBuiltIn { feature, .. }) => assert_eq!(feature, "tls"),
                other => panic!("{endpoint}: expected NotBuiltIn, got {other:?}"),
            }
        }
        let files = TlsFiles {
            ca: Some(Named {
                variable: "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
                value: "/ca.pem".into(),
            }),
            ..TlsFiles::default()
        };
        match super::super::tls::load(&files, false) {
            Err(InitError::NotBuiltIn {
                feature, setting, ..
            }) => {
                assert_eq!(feature, "tls");
                assert!(
                    setting.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
                    "{setting}"
                );
            }
            other => panic!("expected NotBuiltIn, got {other:?}"),
        }
    }

    /// Run by CI in the builds without the Prometheus endpoint.
    #[cfg(not(feature = "prometheus"))]
    #[test]
    fn without_prometheus_the_endpoint_is_off_and_an_address_is_refused() {
        assert_eq!(default_prometheus_listen(), None);
        assert!(env(&[("SPANMETRICS_PROMETHEUS_LISTEN", "off")])
            .settings()
            .is_ok());
        match env(&[("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0")]).settings() {
            Err(InitError::NotBuiltIn { feature, .. }) => assert_eq!(feature, "prometheus"),
            other => panic!("expected NotBuiltIn, got {other:?}"),
        }
    }

    #[test]
    fn resource_attribute_values_are_percent_decoded() {
        let s = env(&[("OTEL_RESOURCE_ATTRIBUTES", "a=x%2Cy, b = 2")])
            .settings()
            .unwrap();
        assert_eq!(
            s.resource_attributes,
            vec![("a".into(), "x,y".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn a_malformed_generic_variable_is_rejected_even_when_both_signals_set_their_own() {
        for (suffix, good, bad) in [
            ("PROTOCOL", "grpc", "thrift"),
            ("HEADERS", "a=1", "no-equals-sign"),
            ("TIMEOUT", "1000", "10s"),
            ("COMPRESSION", "none", "brotli"),
            ("ENDPOINT", "http://h:4317", "ftp://h:4317"),
            ("INSECURE", "true", "yes"),
            ("CERTIFICATE", "/ca.pem", "/ca\0.pem"),
        ] {
            let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
            let result = env(&[
                (&format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"), good),
                (&format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}"), good),
                (&generic, bad),
            ])
            .settings();
            match result {
                Err(InitError::InvalidEnv { variable, .. }) => assert_eq!(variable, generic),
                other => panic!("{generic}={bad} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_signal_specific_value_wins_over_the_generic_one() {
        let s = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=2"),
        ])
        .settings()
        .unwrap();
        let (traces, metrics) = (s.traces.unwrap(), s.metrics.unwrap());
        assert_eq!(traces.timeout, Duration::from_millis(2000));
        assert_eq!(metrics.timeout, Duration::from_millis(1000));
        assert_eq!(traces.headers, vec![("a".into(), "1".into())]);
        assert_eq!(metrics.headers, vec![("b".into(), "2".into())]);
    }

    #[test]
    fn exporter_none_turns_off_only_that_signal() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317");
        let s = env(&[base, ("OTEL_TRACES_EXPORTER", "none")])
            .settings()
            .unwrap();
        assert!(s.traces.is_none() && s.traces_exporter_none);
        assert!(s.metrics.is_some() && !s.metrics_exporter_none);
        let s = env(&[
            base,
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ])
        .settings()
        .unwrap();
        assert!(s.traces.is_some() && s.metrics.is_none());
        let s = env(&[base, ("OTEL_EXPORTER_OTLP_COMPRESSION", "none")])
            .settings()
            .unwrap();
        assert!(s.traces.is_some() && s.metrics.is_some());
    }

    #[test]
    fn compression_is_per_signal_with_the_generic_value_as_default() {
        let s = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd"),
        ])
        .settings()
        .unwrap();
        assert_eq!(s.traces.unwrap().compression, Compression::Gzip);
        assert_eq!(s.metrics.unwrap().compression, Compression::Zstd);
        let s = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317")])
            .settings()
            .unwrap();
        assert_eq!(s.traces.unwrap().compression, Compression::None);
    }

    #[cfg(all(feature = "otlp-grpc", feature = "tls"))]
    #[test]
    fn a_grpc_endpoint_without_a_scheme_uses_tls_unless_insecure() {
        let endpoint = |pairs: &[(&str, &str)]| {
            let s = env(pairs).settings().unwrap();
            (s.traces.unwrap().endpoint, s.metrics.unwrap().endpoint)
        };
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317");
        assert_eq!(
            endpoint(&[base]),
            (
                "https://collector:4317".into(),
                "https://collector:4317".into()
            )
        );
        assert_eq!(
            endpoint(&[base, ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "true")]),
            (
                "https://collector:4317".into(),
                "http://collector:4317".into()
            )
        );
        // An explicit scheme wins over INSECURE, as the spec says.
        assert_eq!(
            endpoint(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ]),
            ("https://c:4317".into(), "https://c:4317".into())
        );
    }

    #[test]
    fn tls_files_are_per_signal_with_the_generic_ones_as_default() {
        let s = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/logs-ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
        ])
        .settings()
        .unwrap();
        let ca = |t: Option<OtlpTarget>| t.unwrap().tls.ca.unwrap();
        assert_eq!(ca(s.traces.clone()).value, "/ca.pem");
        assert_eq!(
            ca(s.traces.clone()).variable,
            "OTEL_EXPORTER_OTLP_CERTIFICATE"
        );
        assert_eq!(
            ca(s.logs.clone()).variable,
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE"
        );
        let key = s.metrics.unwrap().tls.key.unwrap();
        assert_eq!(key.variable, "OTEL_EXPORTER_OTLP_CLIENT_KEY");
    }

    #[test]
    fn logs_follow_the_endpoint_and_can_be_turned_off_alone() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318");
        let s = env(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
            .settings()
            .unwrap();
        assert_eq!(s.logs.unwrap().endpoint, "http://h:4318/v1/logs");
        assert_eq!(s.logs_filter, "info");
        let s = env(&[
            base,
            ("OTEL_LOGS_EXPORTER", "none"),
            ("SPANMETRICS_OTLP_LOGS_FILTER", "warn,my_app=debug"),
        ])
        .settings()
        .unwrap();
        assert!(s.logs.is_none() && s.logs_exporter_none && s.traces.is_some());
        assert_eq!(s.logs_filter, "warn,my_app=debug");
    }

    #[test]
    fn valid_headers_are_kept_with_their_decoded_values() {
        let s = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20abc,x-team=dice%2Cmakers",
            ),
        ])
        .settings()
        .unwrap();
        assert_eq!(
            s.traces.unwrap().headers,
            vec![
                ("Authorization".into(), "Bearer abc".into()),
                ("x-team".into(), "dice,makers".into())
            ]
        );
    }
}
