//! The pipeline as parts for a subscriber you build yourself: `Telemetry::builder().build()`
//! installs nothing global and returns one layer (spanmetrics, the OpenTelemetry spans and the
//! OTLP log bridge) and the guard. The program keeps its own `fmt` layer with its own per-layer filter, which hides
//! nothing from the metrics or the traces.
//!
//! Run: `cargo run --example own_subscriber` (add `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317`
//! to export to a collector); it prints the Prometheus address and a few lines of metrics.

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

#[derive(Debug)]
enum BotError {
    BadDice,
}

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad dice")
    }
}

#[tracing::instrument(fields(command = "roll"), err(Debug))]
fn roll(dice: &str) -> Result<u32, BotError> {
    tracing::info!("rolling {dice}"); // hidden by this program's filter, counted all the same
    dice.parse().map_err(|_| BotError::BadDice)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (telemetry, guard) = spanmetrics::Telemetry::builder()
        .with_service_name("own-subscriber-example")
        .with_prometheus_listen(Some(([127, 0, 0, 1], 0).into()))
        .build()?; // installs nothing global
    tracing_subscriber::registry()
        // The program's own log output and filter: warnings and errors only.
        .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("warn")))
        .with(telemetry)
        .init();

    for dice in ["4", "6", "x", "2"] {
        let _ = roll(dice);
    }

    guard.spanmetrics().flush();
    if let Some(addr) = guard.prometheus_addr() {
        println!("Prometheus metrics on http://{addr}/metrics");
        if let Some(live) = guard.spanmetrics().live() {
            let summary = live.summary(spanmetrics::live::Window::OneMinute);
            if let Some(roll) = summary.command("roll") {
                println!(
                    "roll: {} calls, {} failed (the info lines above were hidden, not lost)",
                    roll.window.calls, roll.window.errors
                );
            }
        }
    }
    guard.shutdown()?;
    Ok(())
}
