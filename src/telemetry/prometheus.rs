//! The Prometheus side of the pipeline: the recorder of metrics-exporter-prometheus (with
//! buckets, never summaries), its upkeep thread, and the pipeline's own metrics on it (export
//! failures, lost spans, process metrics). The endpoint is served by [`crate::http`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::export_stats::Signals;
use super::metric_names as names;

/// How often histogram samples are drained into their buckets (the recorder's upkeep).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Builds the recorder: every histogram gets `bounds` as buckets (the layer's: 100 µs … 60 s
/// unless set, with every objective's latency threshold), never a summary.
pub(crate) fn recorder(bounds: &[f64]) -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(bounds)
        .unwrap_or_else(|_| PrometheusBuilder::new())
        .build_recorder()
}

/// Starts the thread that runs the recorder's upkeep every [`UPKEEP_INTERVAL`].
///
/// The recorder keeps every histogram sample until upkeep (or a scrape) folds it into the
/// buckets. It lives as long as something holds it — the spanmetrics layer inside the global
/// subscriber and the global `metrics` recorder, i.e. usually until the process exits, long
/// after the guard has stopped the endpoint — so the upkeep runs on its own thread, which
/// ends once the recorder is gone.
pub(crate) fn spawn_upkeep(recorder: &Arc<PrometheusRecorder>) -> std::io::Result<()> {
    let recorder = Arc::downgrade(recorder);
    std::thread::Builder::new()
        .name("spanmetrics-upkeep".into())
        .spawn(move || {
            let _untraced =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                let Some(recorder) = recorder.upgrade() else {
                    break;
                };
                recorder.handle().run_upkeep();
            }
        })?;
    Ok(())
}

/// Describes the metrics the pipeline sets itself.
pub(crate) fn describe(r: &dyn Recorder) {
    r.describe_counter(
        names::PROM_EXPORT_FAILURES.into(),
        Some(metrics::Unit::Count),
        "Failed OTLP export calls, by signal.".into(),
    );
    r.describe_counter(
        names::PROM_DROPPED_SPANS.into(),
        Some(metrics::Unit::Count),
        "Spans lost: their OTLP export failed, or the export queue was full.".into(),
    );
    r.describe_counter(
        names::PROM_DROPPED_LOGS.into(),
        Some(metrics::Unit::Count),
        "Log records lost: their OTLP export failed, or the export queue was full.".into(),
    );
    super::process::describe_prometheus(r);
}

/// Brings the pipeline's own metrics up to date before a scrape renders.
pub(crate) fn update(r: &dyn Recorder, signals: &Signals) {
    super::process::update_prometheus(r);
    for (signal, stats) in signals.each() {
        let key = Key::from_parts(
            names::PROM_EXPORT_FAILURES,
            vec![Label::new("signal", signal)],
        );
        r.register_counter(&key, &METADATA)
            .absolute(stats.failures.load(Ordering::Relaxed));
    }
    for (name, stats) in [
        (names::PROM_DROPPED_SPANS, &signals.traces),
        (names::PROM_DROPPED_LOGS, &signals.logs),
    ] {
        r.register_counter(&Key::from_parts(name, Vec::<Label>::new()), &METADATA)
            .absolute(stats.dropped.load(Ordering::Relaxed));
    }
}
