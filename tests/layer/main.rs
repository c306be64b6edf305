//! The layer's behaviour, in process: span lifecycles, outcome rules, selection, marks and busy
//! time, cardinality caps, hostile fields, label values and span shapes, both sinks counting
//! exactly, no record lost, and the live statistics read in process.
//!
//! Global state: nothing here installs anything global. Every test builds its own layer with
//! its own sinks (a private Prometheus recorder and meter provider, or a test recorder) and runs
//! it as a scoped subscriber (`Fixture::run`, `with_default`, `with_subscriber`). So the tests
//! that assert "nothing installed" cannot live here: `tracing::dispatcher::has_been_set()` turns
//! true for a scoped subscriber too. They are in `pipeline` and `e2e`, where no other test sets
//! a subscriber.
//!
//! `no_record_is_lost` starts processes that burn every core while its eight-thread tests run:
//! the other tests here only run slower meanwhile (none depends on timing).

// This binary uses part of the fixture.
#[allow(dead_code)]
#[path = "../fixtures/processes.rs"]
mod processes;
#[path = "../fixtures/two_sinks.rs"]
mod two_sinks;

mod both_sinks_count_exactly;
mod cardinality_caps;
mod health_judges_the_declared_objectives;
mod hostile_fields;
mod hostile_label_values_render_as_valid_exposition;
mod hostile_span_shapes;
mod live_stats_are_read_in_process;
mod marks_and_busy_time;
mod no_record_is_lost;
mod objectives_are_checked_when_declared;
mod outcome_rules;
mod selection;
mod span_lifecycles;

/// The proptest configuration of this binary's property tests: `cases` cases, with failures
/// persisted beside the module's source (`tests/layer/<module>.proptest-regressions`) and read
/// from there. proptest's default (`SourceParallel`) would find this `main.rs` beside the
/// modules and use `tests/proptest-regressions/<module>.txt` instead.
fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}
