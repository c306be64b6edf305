use metrics_exporter_prometheus::PrometheusBuilder;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tracing_subscriber::prelude::*;

#[derive(Debug)]
enum BotError {
    #[allow(dead_code)]
    Timeout { after: u32 },
}
impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "timeout") }
}
impl std::error::Error for BotError {}

#[tracing::instrument(fields(command = "roll"), err(Debug))]
fn roll(fail: bool) -> Result<u32, BotError> {
    if fail { Err(BotError::Timeout { after: 5 }) } else { Ok(4) }
}

#[test]
fn smoke() {
    let recorder = PrometheusBuilder::new().set_buckets(spanmetrics::names::DEFAULT_BUCKETS).unwrap().build_recorder();
    let prom = recorder.handle();
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let layer = spanmetrics::SpanMetricsLayer::builder().with_recorder(recorder).with_meter_provider(&provider).build();
    let handle = layer.handle();
    let _ = provider.meter("x");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..10 { let _ = roll(i % 3 == 0); }
    });
    handle.flush();
    println!("{}", prom.render());
    provider.force_flush().unwrap();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() { for m in sm.metrics() { println!("{} {:?}", m.name(), m.data()); } }
    }
}
