//! Which endpoint answers a request: `/metrics` (the Prometheus exposition) and, with the
//! live endpoints compiled in and on, those of [`super::api`] (the probes without a token,
//! the rest behind it).

use hyper::{Method, Request, Response, StatusCode};

use super::response::{error, Body};
use super::scrape::Scrape;

/// Longest accepted path and query, in bytes.
const MAX_URI: usize = 1024;

/// The content type of the Prometheus text exposition.
pub(crate) const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything the server answers from.
pub(crate) struct Routes {
    /// `/metrics`.
    pub(crate) scrape: Scrape,
    /// The bearer token every endpoint but the probes requires, if any.
    pub(crate) token: Option<String>,
    /// The health, API and dashboard endpoints, when on.
    #[cfg(feature = "http")]
    pub(crate) api: Option<super::api::Api>,
}

/// What [`route`] decided.
pub(crate) enum Routed {
    Done(Response<Body>),
    /// `GET /metrics`, authorised: render the page (blocking work).
    Render,
}

impl From<Response<Body>> for Routed {
    fn from(response: Response<Body>) -> Self {
        Routed::Done(response)
    }
}

pub(crate) fn route<B>(routes: &Routes, request: &Request<B>) -> Routed {
    let (method, uri) = (request.method(), request.uri());
    let length = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if length > MAX_URI {
        return error(StatusCode::URI_TOO_LONG, "the request URI is too long").into();
    }
    #[cfg(feature = "http")]
    if let Some(response) = routes.api.as_ref().and_then(|api| api.probe(method, uri)) {
        return response.into();
    }
    if !super::auth::authorised(routes.token.as_deref(), uri, request.headers()) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <token>)",
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return response.into();
    }
    match (method, uri.path()) {
        (&Method::GET, "/metrics") => Routed::Render,
        (_, "/metrics") => super::response::method_not_allowed().into(),
        _ => other(routes, method, uri)
            .unwrap_or_else(|| {
                let hint = if cfg!(feature = "http") {
                    "not found; try /metrics, /health, /api/commands or /"
                } else {
                    "not found; try /metrics"
                };
                error(StatusCode::NOT_FOUND, hint)
            })
            .into(),
    }
}

#[cfg(feature = "http")]
fn other(routes: &Routes, method: &Method, uri: &hyper::Uri) -> Option<Response<Body>> {
    routes.api.as_ref()?.route(method, uri)
}

#[cfg(not(feature = "http"))]
fn other(_: &Routes, _: &Method, _: &hyper::Uri) -> Option<Response<Body>> {
    None
}
