//! The shortest complete program: command spans become Prometheus metrics, printed at the end.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::prelude::*;

#[derive(Debug)]
enum BotError {
    BadDice,
}

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot roll that")
    }
}

#[tracing::instrument(fields(command = "roll"), err(Debug))]
fn roll(dice: &str) -> Result<u32, BotError> {
    dice.parse().map_err(|_| BotError::BadDice)
}

fn main() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(spanmetrics::names::DEFAULT_BUCKETS)
        .expect("the default buckets are valid")
        .build_recorder();
    let prometheus = recorder.handle();
    let layer = spanmetrics::SpanMetricsLayer::builder()
        .with_recorder(recorder)
        .without_meter()
        .build();
    let metrics = layer.handle();
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer())
        .init();

    for dice in ["4", "6", "two"] {
        let _ = roll(dice);
    }

    metrics.flush();
    print!("{}", prometheus.render());
}
