//! Responses: the body type, plain and JSON responses, and the short JSON errors every
//! endpoint answers a bad request with.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The body of every response.
pub(crate) type Body = BoxBody<Bytes, std::convert::Infallible>;

/// A response with a body, never cached.
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

/// A JSON response of `value`.
#[cfg(feature = "http")]
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer could not be written as JSON",
        ),
    }
}

/// A short JSON error: `{"error": "...", "status": 400}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message, "status": status.as_u16() });
    respond(status, "application/json", body.to_string())
}

/// `405` with `Allow: GET`.
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
