//! The dashboard: one HTML document with its style and script inlined (no external requests),
//! under a strict content security policy.

use std::sync::OnceLock;

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use super::response::{respond, Body};

pub(crate) fn page() -> Response<Body> {
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
