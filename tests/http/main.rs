//! The HTTP endpoints and the live statistics behind them: the API, health, the stream,
//! recent failures (with the trace ids a real rotel collector receives), hostile HTTP clients,
//! the Prometheus endpoint scraped by a real Prometheus, the live statistics' bounds, and
//! objectives from the environment in the health checks.
//!
//! Global state: `live_stats_stay_bounded_with_many_commands` installs the telemetry globally
//! (`Telemetry::builder().install()`: the tracing subscriber, the `metrics` recorder and the
//! OpenTelemetry providers) and counts every span of this process: it is this binary's only
//! installation, and every other test here runs the `command_driver` example as a subprocess
//! and records nothing in this process, so neither can disturb the other.

#[path = "../fixtures/http_client.rs"]
mod http_client;
// This binary uses part of the fixture.
#[allow(dead_code)]
#[path = "../fixtures/processes.rs"]
mod processes;

mod health_flips_as_errors_cross_the_thresholds;
mod hostile_http_clients_leave_the_app_unaffected;
mod http_api_reports_live_command_stats;
mod live_stats_stay_bounded_with_many_commands;
mod objectives_from_the_environment_reach_health;
mod prometheus_scrapes_the_metrics_endpoint;
mod recent_failures_carry_sampled_trace_ids;
mod stream_sends_live_summaries_to_capped_clients;
