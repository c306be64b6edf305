//! `/api/stream`: Server-Sent Events, one summary per interval (default 1 s), for a capped
//! number of clients at a time.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::query::{unknown_window, window};
use super::response::{error, to_json, Body};
use crate::live::{LiveStats, Window};

/// Accepted stream intervals, in milliseconds.
const INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// Holds one of the capped client slots until the stream ends.
struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct SummaryStream {
    live: LiveStats,
    window: Window,
    interval: tokio::time::Interval,
    first: bool,
    _permit: Permit,
}

impl http_body::Body for SummaryStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.interval.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                let mut text = String::new();
                if self.first {
                    text.push_str("retry: 2000\n\n");
                    self.first = false;
                }
                text.push_str("event: summary\ndata: ");
                let summary = self.live.summary(self.window);
                match to_json(&summary) {
                    Ok(json) => text.push_str(&json),
                    Err(_) => text.push_str("null"),
                }
                text.push_str("\n\n");
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))))
            }
        }
    }
}

/// Starts a stream, or answers why not.
/// `clients` is the number of streams open now and the most allowed.
pub(crate) fn stream(
    live: &LiveStats,
    default_interval: Duration,
    (clients, max_clients): (&Arc<AtomicUsize>, usize),
    params: &[(&str, String)],
) -> Response<Body> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(window) = window(get("window").unwrap_or("1m")) else {
        return unknown_window();
    };
    let interval = match get("interval_ms") {
        None => default_interval,
        Some(text) => match text.parse::<u64>() {
            Ok(ms) if INTERVAL_MS.contains(&ms) => Duration::from_millis(ms),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "interval_ms must be a whole number from 100 to 60000",
                )
            }
        },
    };
    if clients.fetch_add(1, Ordering::AcqRel) >= max_clients {
        clients.fetch_sub(1, Ordering::AcqRel);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many stream clients; try again later",
        );
    }
    let permit = Permit(Arc::clone(clients));
    let mut interval = tokio::time::interval(interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let body = SummaryStream {
        live: live.clone(),
        window,
        interval,
        first: true,
        _permit: permit,
    };
    let mut response = Response::new(body.boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
