//! The HTTP endpoints: a small hyper server on its own thread ([`server`]), the router, the
//! bearer token, strict query parsing, responses, `/metrics` ([`scrape`]) and, with the `http`
//! feature, the JSON API, the event stream and the dashboard page, all read from
//! [`crate::live`]. Started by the telemetry pipeline.

#[cfg(feature = "http")]
pub(crate) mod api;
mod auth;
#[cfg(feature = "http")]
mod page;
#[cfg(feature = "http")]
mod query;
mod response;
pub(crate) mod router;
pub(crate) mod scrape;
pub(crate) mod server;
#[cfg(feature = "http")]
mod sse;
