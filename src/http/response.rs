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

/// The API's JSON spelling, on top of serde_json: numbers in plain decimal (`0.000003`, never
/// `3e-6`), and U+2028, U+2029, backspace and form feed as `\uXXXX` escapes, as the API has
/// always written them (the two separators end a line in older JavaScript).
#[cfg(feature = "http")]
struct ApiSpelling;

#[cfg(feature = "http")]
impl serde_json::ser::Formatter for ApiSpelling {
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        write!(w, "{value}")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['\u{2028}', '\u{2029}']) {
            w.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or(' ');
            write!(w, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }

    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()> {
        use serde_json::ser::CharEscape;
        match escape {
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            other => serde_json::ser::CompactFormatter.write_char_escape(w, other),
        }
    }
}

/// `value` as the API writes JSON.
#[cfg(feature = "http")]
pub(crate) fn to_json(value: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, ApiSpelling);
    value.serialize(&mut serializer)?;
    // serde_json writes only UTF-8.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// A JSON response of `value`.
#[cfg(feature = "http")]
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match to_json(value) {
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

#[cfg(all(test, feature = "http"))]
mod tests {
    #[test]
    fn json_is_spelled_as_the_api_always_wrote_it() {
        let value = serde_json::json!({
            "small": 0.000003,
            "large": 12345678.5,
            "text": "a\u{2028}b\u{2029}c\u{8}d\u{c}e\n\"é",
        });
        assert_eq!(
            super::to_json(&value).unwrap(),
            r#"{"large":12345678.5,"small":0.000003,"text":"a\u2028b\u2029c\u0008d\u000ce\n\"é"}"#
        );
    }
}
