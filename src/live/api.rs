//! The JSON endpoints: `/health`, `/health/live`, `/health/ready`, `/api/commands`,
//! `/api/commands/recent`, `/api/stream` and the dashboard page at `/`. Requests are parsed
//! strictly; anything unexpected gets a 4xx with a short JSON error.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode, Uri};

use super::health::{self, HealthObjectives, Level};
use super::{json, LiveStats, Summary, WindowSpec, RECENT_CAPACITY};

/// The body of every response.
pub(crate) type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Longest accepted path and query, in bytes.
const MAX_URI: usize = 1024;
/// How percentiles are computed, stated in the API.
pub(crate) const RESOLUTION: &str =
    "log-linear histogram, 4 bins per doubling from 1us; percentiles within about 9%, never above the window max";

/// Everything the endpoints read.
pub(crate) struct Api {
    pub(crate) live: Arc<LiveStats>,
    /// Flushed before every read, so answers include everything recorded before the request.
    pub(crate) spanmetrics: crate::SpanMetricsHandle,
    pub(crate) objectives: HealthObjectives,
    pub(crate) token: Option<String>,
    /// Names of the OTLP signals whose export is failing now.
    pub(crate) failing_exports: Box<dyn Fn() -> Vec<&'static str> + Send + Sync>,
    pub(crate) stream_interval: Duration,
    pub(crate) max_stream_clients: usize,
    pub(crate) stream_clients: Arc<AtomicUsize>,
}

/// A response with a body.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "application/json", body)
}

/// A short JSON error.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        json::object(|o| {
            o.str("error", message)
                .int("status", u64::from(status.as_u16()));
        }),
    )
}

pub(crate) fn method_not_allowed() -> Response<Body> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; use GET",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET"));
    response
}

/// The request's query as (name, value) pairs, checked against `allowed` names.
fn query<'a>(uri: &'a Uri, allowed: &[&str]) -> Result<Vec<(&'a str, String)>, String> {
    let mut out: Vec<(&str, String)> = Vec::new();
    let Some(query) = uri.query() else {
        return Ok(out);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) && name != "token" {
            let mut known = allowed.join(", ");
            if known.is_empty() {
                known.push_str("none");
            }
            return Err(format!("unknown query parameter; accepted: {known}"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("query parameter `{name}` given twice"));
        }
        let value =
            crate::percent::decode(value, true).ok_or("malformed percent-encoding in the query")?;
        out.push((name, value));
    }
    Ok(out)
}

fn param<'a>(params: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a window name.
pub(crate) fn window(name: &str) -> Option<WindowSpec> {
    match name {
        "1m" => Some(WindowSpec::ONE_MINUTE),
        "5m" => Some(WindowSpec::FIVE_MINUTES),
        "1h" => Some(WindowSpec::ONE_HOUR),
        _ => None,
    }
}

impl Api {
    /// Whether the request carries the token (always, when none is configured): as
    /// `Authorization: Bearer <token>`, or as a `token` query parameter (for the page and
    /// `EventSource`, which cannot set headers).
    pub(crate) fn authorised(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let from_header = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()));
        from_header
            || uri.query().is_some_and(|q| {
                q.split('&')
                    .filter_map(|p| p.strip_prefix("token="))
                    .filter_map(|v| crate::percent::decode(v, true))
                    .any(|given| same(given.as_bytes(), token.as_bytes()))
            })
    }

    /// Answers the probes, which need no token; `None` for other paths.
    pub(crate) fn probe(&self, method: &Method, uri: &Uri) -> Option<Response<Body>> {
        let path = uri.path();
        if path != "/health/live" && path != "/health/ready" {
            return None;
        }
        if method != Method::GET {
            return Some(method_not_allowed());
        }
        if let Err(message) = query(uri, &[]) {
            return Some(error(StatusCode::BAD_REQUEST, &message));
        }
        if path == "/health/live" {
            return Some(json_response(StatusCode::OK, r#"{"status":"live"}"#.into()));
        }
        let failing = (self.failing_exports)();
        let (status, text) = if failing.is_empty() {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        };
        let body = json::object(|o| {
            o.str("status", text).raw(
                "failing_exports",
                &format!(
                    "[{}]",
                    failing
                        .iter()
                        .map(|s| format!("\"{s}\""))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            );
        });
        Some(json_response(status, body))
    }

    /// Answers the token-protected endpoints; `None` for paths that are not theirs.
    pub(crate) fn route(&self, method: &Method, uri: &Uri) -> Option<Response<Body>> {
        let path = uri.path();
        let allowed: &[&str] = match path {
            "/health" | "/" => &[],
            "/api/commands" => &["window"],
            "/api/commands/recent" => &["outcome", "limit"],
            "/api/stream" => &["window", "interval_ms"],
            _ => return None,
        };
        if method != Method::GET {
            return Some(method_not_allowed());
        }
        let params = match query(uri, allowed) {
            Ok(params) => params,
            Err(message) => return Some(error(StatusCode::BAD_REQUEST, &message)),
        };
        if path != "/" {
            self.spanmetrics.flush();
        }
        Some(match path {
            "/health" => self.health(),
            "/api/commands" => match param(&params, "window")
                .map_or(Some(("1m", WindowSpec::ONE_MINUTE)), |w| {
                    window(w).map(|s| (w, s))
                }) {
                Some((name, spec)) => {
                    json_response(StatusCode::OK, summary_json(&self.live, name, spec))
                }
                None => error(StatusCode::BAD_REQUEST, "unknown window; use 1m, 5m or 1h"),
            },
            "/api/commands/recent" => self.recent(&params),
            "/api/stream" => super::sse::stream(self, &params),
            _ => page(),
        })
    }

    fn health(&self) -> Response<Body> {
        let failing = (self.failing_exports)();
        let evaluation = health::evaluate(&self.live, &self.objectives, &failing);
        let status = if evaluation.level == Level::Fail {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        json_response(status, evaluation.json)
    }

    fn recent(&self, params: &[(&str, String)]) -> Response<Body> {
        let slow = match param(params, "outcome").unwrap_or("error") {
            "error" => false,
            "slow" => true,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "unknown outcome; use error or slow",
                )
            }
        };
        let limit = match param(params, "limit") {
            None => 20,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=RECENT_CAPACITY).contains(&n) && text.len() <= 3 => n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("limit must be a whole number from 1 to {RECENT_CAPACITY}"),
                    )
                }
            },
        };
        let items = self.live.recent(slow, limit);
        let body = json::object(|o| {
            o.str("outcome", if slow { "slow" } else { "error" })
                .int("limit", limit as u64)
                .array("items", &items, |o, item| {
                    o.str("command", &item.command)
                        .num("duration_s", item.duration_ns as f64 / 1e9)
                        .opt_str("error_type", item.error_type.as_deref())
                        .str("time", &rfc3339(item.at))
                        .opt_str(
                            "trace_id",
                            item.trace
                                .map(|t| format!("{:032x}", t.trace_id))
                                .as_deref(),
                        )
                        .opt_str(
                            "span_id",
                            item.trace.map(|t| format!("{:016x}", t.span_id)).as_deref(),
                        );
                });
        });
        json_response(StatusCode::OK, body)
    }

    /// Checks what every request must satisfy before routing: a sane URI length.
    pub(crate) fn precheck(uri: &Uri) -> Option<Response<Body>> {
        let length = uri.path_and_query().map_or(0, |p| p.as_str().len());
        (length > MAX_URI).then(|| error(StatusCode::URI_TOO_LONG, "the request URI is too long"))
    }
}

/// The summary of every command over a window, as `/api/commands` and `/api/stream` give it.
pub(crate) fn summary_json(live: &LiveStats, window_name: &str, window: WindowSpec) -> String {
    let s: Summary = live.summary(window);
    let per_second = |calls: u64| calls as f64 / s.covered_seconds;
    json::object(|o| {
        o.str("window", window_name)
            .int("window_s", s.window_seconds)
            .str("timestamp", &rfc3339(SystemTime::now()))
            .num("uptime_s", s.uptime.as_secs_f64())
            .str("percentile_resolution", RESOLUTION);
        o.object("totals", |o| {
            o.int("calls", s.all.calls)
                .int("errors", s.all.errors)
                .opt_num("success_rate", s.all.success_rate())
                .num("calls_per_s", per_second(s.all.calls))
                .opt_num("p50_s", s.all.quantile_seconds(0.5))
                .opt_num("p95_s", s.all.quantile_seconds(0.95))
                .opt_num("p99_s", s.all.quantile_seconds(0.99))
                .opt_num(
                    "max_s",
                    (s.all.calls > 0).then(|| s.all.max_ns as f64 / 1e9),
                )
                .int("in_flight", s.active.max(0) as u64)
                .object("since_start", |o| {
                    o.int("calls", s.total_calls).int("errors", s.total_errors);
                });
        });
        o.array("commands", &s.commands, |o, c| {
            let w = &c.window;
            o.str("command", &c.name)
                .int("calls", w.calls)
                .int("errors", w.errors)
                .opt_num("success_rate", w.success_rate())
                .num("calls_per_s", per_second(w.calls))
                .opt_num("p50_s", w.quantile_seconds(0.5))
                .opt_num("p95_s", w.quantile_seconds(0.95))
                .opt_num("p99_s", w.quantile_seconds(0.99))
                .opt_num("max_s", (w.calls > 0).then(|| w.max_ns as f64 / 1e9))
                .int("in_flight", c.active.max(0) as u64)
                .object("errors_by_type", |o| {
                    for (name, n) in &c.errors_by_type {
                        o.int(name, *n);
                    }
                })
                .object("since_start", |o| {
                    o.int("calls", c.total_calls)
                        .int("errors", c.total_errors)
                        .num("max_s", c.total_max_ns as f64 / 1e9)
                        .object("errors_by_type", |o| {
                            for (name, n) in &c.total_errors_by_type {
                                o.int(name, *n);
                            }
                        });
                });
        });
    })
}

/// The dashboard: one HTML document with its style and script inlined (no external requests).
fn page() -> Response<Body> {
    static PAGE: OnceLock<String> = OnceLock::new();
    let html = PAGE.get_or_init(|| {
        include_str!("page/index.html")
            .replace("/*STYLE*/", include_str!("page/style.css"))
            .replace("/*SCRIPT*/", include_str!("page/app.js"))
    });
    let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", html.clone());
    response.headers_mut().insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        ),
    );
    response
}

/// `2024-05-01T12:34:56.789Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn queries_are_parsed_strictly() {
        let uri: Uri = "/api/commands?window=5m".parse().unwrap();
        assert_eq!(
            query(&uri, &["window"]).unwrap(),
            vec![("window", "5m".to_owned())]
        );
        for bad in [
            "/x?window=1m&window=5m",
            "/x?bogus=1",
            "/x?window=%zz",
            "/x?window=%ff",
        ] {
            let uri: Uri = bad.parse().unwrap();
            assert!(query(&uri, &["window"]).is_err(), "{bad}");
        }
    }
}
