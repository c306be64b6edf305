//! The whole program against real tools: error-rate alerts on a real Prometheus, the rules
//! generated from objectives under promtool, the dashboard in a headless Chromium, and start-up with a Prometheus address that cannot be listened on
//! (a clear error, or best effort with OTLP export to a real rotel collector).
//!
//! Global state: the first test of
//! `unusable_prometheus_addresses_fail_clearly_or_are_skipped_in_best_effort_mode` asserts that
//! its failed installations left nothing installed, then installs the telemetry globally: it is
//! this binary's only installation (and no test here sets even a scoped subscriber); every other
//! test runs the example programs as subprocesses and records nothing in this process.

#[path = "../fixtures/chromium.rs"]
mod chromium;
// This binary uses part of the fixture.
#[allow(dead_code)]
#[path = "../fixtures/http_client.rs"]
mod http_client;
// This binary uses part of the fixture.
#[allow(dead_code)]
#[path = "../fixtures/processes.rs"]
mod processes;

mod alerts_fire_on_a_real_prometheus;
mod dashboard_page_shows_live_numbers_in_chromium;
mod objective_rules_measure_and_alert;
mod unusable_prometheus_addresses_fail_clearly_or_are_skipped_in_best_effort_mode;
