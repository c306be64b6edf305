//! The telemetry pipeline from configuration to a collector: invalid environment values and
//! TLS files are init errors, OTLP export (gRPC and HTTP, from each kind of runtime, plain and
//! through a real TLS terminator) reaches a real rotel collector exactly, a stopped or
//! restarted collector never blocks commands, and hostile label values arrive intact.
//!
//! Global state: no test here sets any subscriber, not even a scoped one, as
//! `invalid_env_values_give_init_errors` asserts that nothing was installed
//! (`tracing::dispatcher::has_been_set()`): its installations all fail, and every other test
//! runs the `command_driver` example as a subprocess.

#[path = "../fixtures/processes.rs"]
mod processes;
#[path = "../fixtures/tls.rs"]
mod tls;

mod a_stopped_collector_never_blocks_commands;
mod hostile_label_values_reach_a_real_collector;
mod invalid_env_values_give_init_errors;
mod invalid_tls_files_give_init_errors;
mod otlp_export_reaches_a_real_collector;
mod tls_export_reaches_a_collector_behind_a_real_terminator;
