//! Live statistics, kept in process in bounded rolling windows: per command calls, errors by
//! type, latency percentiles and commands in flight over the last minute, 5 minutes and hour;
//! the recent failed and slow commands with their trace ids; and health judged against
//! objectives. The pump feeds them once per drain (finished commands) and the caller's thread
//! only for failed and slow commands (see the crate docs, "what a span costs"). Typed, with no
//! JSON or HTTP: the HTTP endpoints serialise these same types.
//!
//! Turn them on with [`crate::Builder::with_live_stats`] (the telemetry pipeline does when its
//! HTTP endpoints are on) and read them from [`crate::SpanMetricsHandle::live`]:
//!
//! ```
//! use std::time::Duration;
//! use spanmetrics::live::Window;
//! use tracing_subscriber::prelude::*;
//!
//! let layer = spanmetrics::SpanMetricsLayer::builder()
//!     .with_live_stats(Duration::from_millis(250))
//!     .without_recorder()
//!     .without_meter()
//!     .build();
//! let handle = layer.handle();
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info_span!("stats", command = "stats").in_scope(|| {});
//! });
//!
//! // A bot's `!stats` command, answering with its own figures.
//! let live = handle.live().expect("live statistics are on");
//! let summary = live.summary(Window::FiveMinutes);
//! let stats = summary.command("stats").expect("it ran");
//! assert_eq!(stats.window.calls, 1);
//! let p95_ms = stats.window.p95_s.unwrap_or(0.0) * 1e3;
//! let reply = format!("{} calls, p95 {p95_ms:.1} ms", stats.window.calls);
//! # assert!(reply.starts_with("1 calls"));
//! ```

pub(crate) mod health;
mod hist;
mod view;
pub(crate) mod windows;

use std::sync::Arc;
use std::time::Duration;

pub use self::health::{HealthObjectives, FAIL_BURN_RATE};
pub use self::view::{
    Check, CheckStatus, CommandSinceStart, CommandStats, Figures, Health, HealthStatus,
    RecentCommand, SinceStart, Summary, Totals,
};
use self::windows::{WindowSpec, Windows, RECENT_CAPACITY};

/// A rolling window to summarise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// The last minute, in 1 s steps.
    OneMinute,
    /// The last 5 minutes, in 10 s steps.
    FiveMinutes,
    /// The last hour, in 1 minute steps.
    OneHour,
}

impl Window {
    /// `1m`, `5m` or `1h`.
    pub fn name(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FiveMinutes => "5m",
            Window::OneHour => "1h",
        }
    }

    /// The window named `1m`, `5m` or `1h`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Window::OneMinute, Window::FiveMinutes, Window::OneHour]
            .into_iter()
            .find(|w| w.name() == name)
    }

    fn spec(self) -> WindowSpec {
        match self {
            Window::OneMinute => WindowSpec::ONE_MINUTE,
            Window::FiveMinutes => WindowSpec::FIVE_MINUTES,
            Window::OneHour => WindowSpec::ONE_HOUR,
        }
    }
}

/// Most items [`LiveStats::recent_failures`] and [`LiveStats::recent_slow`] return.
pub const MAX_RECENT: usize = RECENT_CAPACITY;

/// The live statistics of one layer. Each read first forwards what the layer still buffers,
/// so it includes every command that finished before the call.
#[derive(Clone)]
pub struct LiveStats {
    windows: Arc<Windows>,
    flush: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for LiveStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStats").finish_non_exhaustive()
    }
}

impl LiveStats {
    /// `flush` forwards what the layer buffers into `windows`.
    pub(crate) fn new(windows: Arc<Windows>, flush: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { windows, flush }
    }

    /// Every command's figures over `window`.
    pub fn summary(&self, window: Window) -> Summary {
        (self.flush)();
        self.windows.summary(window.spec(), window.name())
    }

    /// The most recent failed commands, newest first (at most `limit`, and [`MAX_RECENT`]).
    pub fn recent_failures(&self, limit: usize) -> Vec<RecentCommand> {
        (self.flush)();
        self.windows.recent(false, limit.min(MAX_RECENT))
    }

    /// The slowest of the recent slow commands (those over the slow threshold and their own
    /// 5 minute p95), slowest first.
    pub fn recent_slow(&self, limit: usize) -> Vec<RecentCommand> {
        (self.flush)();
        self.windows.recent(true, limit.min(MAX_RECENT))
    }

    /// The health judged against `objectives` (in process, no exporter is known to fail).
    pub fn health(&self, objectives: &HealthObjectives) -> Health {
        self.health_with(objectives, &[])
    }

    /// The health, with the names of the OTLP signals whose export is failing now.
    pub(crate) fn health_with(
        &self,
        objectives: &HealthObjectives,
        failing_exports: &[&'static str],
    ) -> Health {
        (self.flush)();
        let window = WindowSpec::covering(objectives.window);
        let summary = self.windows.summary(window, "");
        let checks = health::objective_checks(&self.windows.objectives, |o| match o.commands() {
            crate::objectives::Commands::Named(names) => Some(self.windows.objective_counts(
                window,
                names,
                o.latency_target().map(|l| l.threshold),
            )),
            _ => None,
        });
        health::evaluate(&summary, objectives, failing_exports, checks)
    }
}

/// The slow threshold when none is given: commands of at least 100 ms (and their own p95).
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_millis(100);
