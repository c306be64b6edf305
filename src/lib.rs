//! Command metrics from `tracing` spans.
//!
//! spanmetrics is a [`tracing_subscriber::Layer`] that turns the spans of your command handlers
//! (chat-bot commands, RPC calls, jobs, requests) into the numbers operators watch: per-command
//! call counts, latency histograms, success and error rates by error type, commands in flight,
//! busy versus idle time. It measures 100% of spans, in process, before any trace sampler:
//! every span the subscriber enables. A global filter (an `EnvFilter` added as a layer, or a
//! level filter) disables spans for every layer, this one included; filter the log output per
//! layer instead, as [`init`] does.
//!
//! # Quick start
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! #[derive(Debug)]
//! enum BotError {
//!     BadDice,
//! }
//! # impl std::fmt::Display for BotError {
//! #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("bad dice") }
//! # }
//!
//! #[tracing::instrument(fields(command = "roll"), err(Debug))]
//! fn roll(dice: &str) -> Result<u32, BotError> {
//!     dice.parse().map_err(|_| BotError::BadDice)
//! }
//!
//! tracing_subscriber::registry()
//!     .with(spanmetrics::layer()) // every span with a `command` field is a command
//!     .with(tracing_subscriber::fmt::layer())
//!     .init();
//!
//! roll("4").unwrap();
//! roll("x").unwrap_err(); // counted with outcome="error", error_type="BadDice"
//! ```
//!
//! With no further setup the measurements go to the global `metrics` recorder and the global
//! OpenTelemetry meter provider; install those first (or pass your own with
//! [`Builder::with_recorder`] and [`Builder::with_meter_provider`]).
//!
//! # How spans become metrics
//!
//! A span is a *command* when it has a field named `command` (configurable), or is selected by
//! span name, target prefix or a predicate ([`Builder`]). The decision is made once per callsite.
//! The command name is the `command` field's value (also when recorded later with
//! `Span::record`), else the span name.
//!
//! | OpenTelemetry (unit) | Prometheus | kind | attributes |
//! |---|---|---|---|
//! | `command.duration` (s) | `command_duration_seconds` | histogram, span creation → close | `command`, `outcome`, `error.type` on errors, allow-listed labels |
//! | `command.busy` (s) | `command_busy_seconds` | histogram, time the span was entered | as above |
//! | `command.active` | `command_active` | up-down counter / gauge, commands in flight | `command` |
//! | `command.mark` (s) | `command_mark_seconds` | histogram, span start → an event with a `mark` field | `command`, `mark` |
//! | `spanmetrics.overflow` | `spanmetrics_overflow_records_total` | counter, records folded by the cardinality cap | `metric` |
//! | `spanmetrics.dropped` | `spanmetrics_dropped_records_total` | counter, records dropped: the overload backlog was full, or a sink panicked on them | |
//!
//! Call counts and success rates come from the duration histogram's count. The names are in
//! [`names`]. Busy time adds up the time the span was entered on each thread (re-entering a
//! span that is already entered on the same thread does not count twice), capped at the
//! duration, so for an async handler it is the time spent in `poll`, and `duration − busy` is
//! the time spent waiting.
//!
//! **Outcome.** A command is `error` when an ERROR-level event happens inside it (what
//! `#[instrument(err)]` emits), when `otel.status_code` is recorded as `ERROR` (any case), when an
//! `outcome` field is recorded as `error`, or when it closes while its thread panics
//! (`error.type="panic"`). Otherwise it is `ok`; the latest of these signals wins, so
//! `outcome = "ok"` recorded after an error event (a retry that succeeded) gives `ok`. An event
//! belongs to the nearest enclosing command span.
//!
//! **Error type.** An `error.type` field on the span wins; else one on the error event; else the
//! leading identifier of the event's `error` field as `err(Debug)` writes it
//! (`Timeout { after: 5s }` → `Timeout`, `Io(Custom { .. })` → `Io`); else `error`. At most 32
//! distinct values per command ([`Builder::with_max_error_types`]); further ones are `_OTHER`.
//!
//! **Labels and cardinality.** No span field becomes a label unless allow-listed with
//! [`Builder::with_label`]. Each metric holds at most 2000 series
//! ([`Builder::with_max_series`]); further records fold into one series marked
//! `otel.metric.overflow="true"` and are counted in `spanmetrics.overflow`; the in-flight gauge
//! has at most as many commands, the rest counted under its overflow series. Only series that
//! records end in count: the keys a span passes through before its last `Span::record` (its
//! span name while `command` is still `Empty`, one label recorded without the other) do not.
//! Those are kept up to 4 per series of the cap (plus 64), a bound on memory; past it, new keys
//! fold into the overflow series too. Command names and
//! label values are cut to 96 bytes (error types to 64). In the [`metrics`] sink (Prometheus),
//! label values have each backslash replaced by `/` and each control character (newline, tab,
//! NUL, ...) by U+FFFD `�`, because metrics-exporter-prometheus cannot render them unchanged
//! (it drops the backslash of `\"`, so `a\"b` and `a"b` would become duplicate series); quotes
//! and non-ASCII text are kept. The OpenTelemetry sink gets the values as given.
//!
//! # Sinks
//!
//! The same measurements go to the [`metrics`] facade (the global recorder, or the one given to
//! [`Builder::with_recorder`]) and to an OpenTelemetry meter (the global provider's, or one given
//! to [`Builder::with_meter_provider`]). Either can be turned off. Histogram buckets are set as
//! advice on the OpenTelemetry instruments (100 µs … 60 s, [`names::DEFAULT_BUCKETS`]); with
//! metrics-exporter-prometheus, set buckets on the recorder too (it renders summaries, which
//! cannot be aggregated across instances, unless told otherwise).
//!
//! # Implementation: what a span costs
//!
//! The caller's thread does only this: one lookup in a lock-free callsite table, one clock read
//! (a TSC read where available) at creation, enter, exit and close, and for a command span one
//! slot in a per-layer table of cache-line slots found by hashing the span id (no allocation,
//! no lock, no registry look-up). At creation it adds one to the command's in-flight count,
//! which only that thread writes; at close it takes one off and writes one record into a ring
//! owned by that thread. No sink is called. The series is found through a small per-callsite
//! cache of the last four it resolved to; with labels, or a `command` value that changes among
//! more than four values at one callsite, a miss hashes the values and takes a shared read
//! lock, as does naming the error type of a failure or a mark. With more command spans in
//! flight than the table holds (a few thousand), the others keep the same state in their span
//! extensions: slower, same results.
//!
//! With live statistics on ([`Builder::with_live_stats`], which the telemetry pipeline turns on
//! with its HTTP endpoints), a command that **failed or was slow** does two more things as it
//! closes: it looks up its OpenTelemetry trace id (tracing-opentelemetry's context in the
//! span's extensions, a registry look-up), and pushes one entry into the notable-command queue
//! under a **mutex** shared with the other recording threads and the background thread (held
//! only to push one item or to swap the queue out, never across I/O). Every other command
//! pays one comparison against its slow threshold.
//!
//! A background thread per layer drains the rings at least every 200 ms
//! ([`Builder::with_flush_interval`]), sooner under load (it paces itself to find the busiest
//! ring about a quarter full; a thread wakes it only if its ring gets half full or full), and records
//! into the sinks through handles resolved once per series. An OpenTelemetry collection and
//! [`SpanMetricsHandle::flush`] drain first, so exports are never stale. Once `flush()`
//! returns, every command span that closed before the call is in both sinks, whichever thread
//! closed it (also one still tearing down its thread-locals).
//!
//! **Overload never loses a record.** If a thread outruns the background thread and its ring
//! (4096 records) fills, that thread waits for the background thread to make room, for as
//! long as it makes progress: overload slows the threads that cause it, as when the caller
//! aggregates in place. Sinks are never called on the waiting thread (only if no background
//! thread could be started does a thread with a full ring forward, when nobody else is). A
//! background thread that shows no progress (every 16 records forwarded, and every drain) for
//! 20 ms ([`Builder::with_overload_wait`]) is taken as stalled (starved of
//! CPU, or stuck in a sink that blocks): threads then stop waiting and leave their records in a
//! shared backlog, allocated only as it fills and bounded at 64 MiB per layer
//! ([`Builder::with_overload_memory`]), which the next drain forwards. Only past that bound is a
//! record dropped: counted in `spanmetrics.dropped` and logged to standard error once. A sink
//! that panics loses the record it panicked on (counted the same way), never other records. A
//! sink that blocks blocks the background thread, and [`SpanMetricsHandle::flush`] and
//! OpenTelemetry collections wait for it; recording threads wait at most the overload wait
//! once, when it stalls.
//!
//! Span fields that are neither the command, a label nor an outcome field are never formatted.
//!
//! # Live statistics
//!
//! [`Builder::with_live_stats`] keeps rolling windows in process (calls, errors by type,
//! p50/p95/p99, commands in flight over the last minute, 5 minutes and hour), the recent failed
//! and slow commands with their trace ids, and health against [`HealthObjectives`]; read them
//! as plain types from [`SpanMetricsHandle::live`] ([`live`]). The HTTP endpoints serve the
//! same types as JSON.
//!
//! # Objectives
//!
//! [`Builder::with_objective`] declares a service level objective over commands
//! ([`objectives::Objective`]: a success-rate and/or latency target over a window). Its latency
//! threshold becomes a histogram bucket bound of both sinks ([`Builder::histogram_bounds`]), and
//! [`objectives::rules`] writes the Prometheus recording rules, multi-window multi-burn-rate
//! alerts, their `promtool test rules` cases and a Grafana dashboard that measure it.
//!
//! # Feature flags
//!
//! | Feature | Default | What it adds |
//! |---|---|---|
//! | (none) | | the layer, feeding your `metrics` recorder and OpenTelemetry meter provider, and the live statistics: no tokio, hyper, tonic, reqwest or opentelemetry-otlp |
//! | `init` | yes (via the others) | [`init`] and [`Telemetry::builder`]: logs, the layer and the exporters below that are compiled in, from the `OTEL_*` environment |
//! | `otlp-grpc` | yes | OTLP export over gRPC (tonic, on a small tokio runtime of its own) |
//! | `otlp-http` | yes | OTLP export over HTTP/protobuf (reqwest, blocking client) |
//! | `tls` | yes | `https://` OTLP endpoints, a CA file and client certificates (rustls with `ring`; the Mozilla roots of `webpki-roots` unless a CA file is set) |
//! | `prometheus` | yes | the Prometheus `/metrics` endpoint (metrics-exporter-prometheus' recorder, served by hyper on its own thread) |
//! | `http` | yes | on the same listener: `/health`, `/health/live`, `/health/ready`, `/api/commands`, `/api/commands/recent`, `/api/stream` and the dashboard page |
//!
//! With `default-features = false` the crate is the layer alone; add `features = ["init",
//! "otlp-grpc"]` for a pipeline without the Prometheus endpoint, and so on. An `OTEL_*` or
//! `SPANMETRICS_*` setting that needs a part not compiled in is an [`InitError`] naming the
//! feature.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]

// The folders follow the data flow, and a module imports only from those listed before it
// (checked by `scripts/check-layers.py`): plain data and spelling rules, capture on the
// caller's thread, the hand-off, the sinks (the contract the pump writes to) and the pump,
// the live statistics, the layer that assembles them, its builder, the HTTP endpoints, and
// the one-call pipeline.
mod builder;
mod capture;
mod config;
#[cfg(any(feature = "prometheus", feature = "init"))]
mod decode;
mod handoff;
#[cfg(feature = "prometheus")]
mod http;
mod layer;
pub mod live;
pub mod names;
pub mod objectives;
mod pump;
mod sink;
mod spelling;
#[cfg(feature = "init")]
mod telemetry;

pub use builder::{BuildError, Builder};
pub use layer::{SpanMetricsHandle, SpanMetricsLayer};
pub use live::HealthObjectives;
#[cfg(feature = "init")]
pub use telemetry::{
    init, InitError, ShutdownError, Telemetry, TelemetryBuilder, TelemetryGuard, TelemetryLayer,
};

/// A layer with the default configuration: every span with a `command` field is a command,
/// measurements go to the global `metrics` recorder and the global OpenTelemetry meter provider.
pub fn layer() -> SpanMetricsLayer {
    Builder::default().build()
}

/// The instrumentation scope of the OpenTelemetry meter.
pub(crate) fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
