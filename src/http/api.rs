//! The JSON endpoints: `/health`, `/health/live`, `/health/ready`, `/api/commands`,
//! `/api/commands/recent`, `/api/stream` and the dashboard page at `/`, answered from the
//! typed live statistics ([`crate::live`]) serialised with serde. Requests are parsed
//! strictly; anything unexpected gets a 4xx with a short JSON error.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Response, StatusCode, Uri};
use serde::Serialize;

use super::query::{param, query, unknown_window, window};
use super::response::{error, json, method_not_allowed, Body};
use crate::live::{HealthObjectives, HealthStatus, LiveStats, RecentCommand, MAX_RECENT};

/// Everything the endpoints read.
pub(crate) struct Api {
    /// Read fresh on every request: it forwards what the layer buffers first.
    pub(crate) live: LiveStats,
    pub(crate) objectives: HealthObjectives,
    /// Names of the OTLP signals whose export is failing now.
    pub(crate) failing_exports: Box<dyn Fn() -> Vec<&'static str> + Send + Sync>,
    pub(crate) stream_interval: Duration,
    pub(crate) max_stream_clients: usize,
    pub(crate) stream_clients: Arc<AtomicUsize>,
}

/// `/health/ready`.
#[derive(Serialize)]
struct Ready {
    status: &'static str,
    failing_exports: Vec<&'static str>,
}

/// `/api/commands/recent`.
#[derive(Serialize)]
struct Recent {
    outcome: &'static str,
    limit: usize,
    items: Vec<RecentCommand>,
}

impl Api {
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
            return Some(json(
                StatusCode::OK,
                &serde_json::json!({ "status": "live" }),
            ));
        }
        let failing = (self.failing_exports)();
        let (status, text) = if failing.is_empty() {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        };
        Some(json(
            status,
            &Ready {
                status: text,
                failing_exports: failing,
            },
        ))
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
        Some(match path {
            "/health" => self.health(),
            "/api/commands" => match window(param(&params, "window").unwrap_or("1m")) {
                Some(window) => json(StatusCode::OK, &self.live.summary(window)),
                None => unknown_window(),
            },
            "/api/commands/recent" => self.recent(&params),
            "/api/stream" => super::sse::stream(
                &self.live,
                self.stream_interval,
                (&self.stream_clients, self.max_stream_clients),
                &params,
            ),
            _ => super::page::page(),
        })
    }

    fn health(&self) -> Response<Body> {
        let failing = (self.failing_exports)();
        let health = self.live.health_with(&self.objectives, &failing);
        let status = if health.status == HealthStatus::Unhealthy {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        json(status, &health)
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
                Ok(n) if (1..=MAX_RECENT).contains(&n) && text.len() <= 3 => n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("limit must be a whole number from 1 to {MAX_RECENT}"),
                    )
                }
            },
        };
        let items = if slow {
            self.live.recent_slow(limit)
        } else {
            self.live.recent_failures(limit)
        };
        json(
            StatusCode::OK,
            &Recent {
                outcome: if slow { "slow" } else { "error" },
                limit,
                items,
            },
        )
    }
}
