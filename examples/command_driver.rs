//! A small bot whose commands are driven from stdin; the end-to-end tests run it against a
//! real collector and a real Prometheus server. Everything is configured by `OTEL_*`
//! variables through `spanmetrics::init()`.
//!
//! Usage: `command_driver [none|current-thread|multi-thread|own-subscriber|own-subscriber-first]`
//! (`own-subscriber`: the parts from `TelemetryBuilder::build` in the program's own subscriber,
//! after its own `fmt` layer filtered to warnings; `own-subscriber-first`: the same, with the
//! parts first), then lines on stdin:
//! - `run roll:ok:7,roll:Timeout:3,fetch:NotFound:2` runs those commands (command, outcome or
//!   error type, count) and prints `done`; the outcome `slow` succeeds after 150 ms;
//! - `latency <plan>` runs the plan like `run`, timing each command, then prints
//!   `latency n=<commands> p50_ns=<…> p99_ns=<…> max_ns=<…>` and `done`;
//! - `hostile <hex>` runs one failed command whose name, error type and mark name are the
//!   hex-encoded UTF-8 text (any text, control characters included), and prints `done`;
//! - `flush` forwards buffered measurements and prints `flushed`;
//! - `global-recorder` prints `global recorder taken` when a global `metrics` recorder is
//!   installed, else `global recorder free` (it installs a no-op one to find out);
//! - `exit` (or end of input) shuts the telemetry down with `TelemetryGuard::shutdown`, prints
//!   `shutdown ok` or `shutdown error: …`, and exits;
//! - `drop` drops the guard instead (its `Drop` flushes and shuts down, logging any problem),
//!   prints `guard dropped` and exits.
//!
//! At start it prints `prometheus <addr>` (or `prometheus off`).

use std::io::{BufRead, Write};

#[derive(Debug)]
enum BotError {
    #[allow(dead_code)]
    Timeout {
        after_ms: u64,
    },
    NotFound,
}

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for BotError {}

fn outcome(wanted: &str) -> Result<u64, BotError> {
    match wanted {
        "ok" => Ok(4),
        "slow" => {
            std::thread::sleep(std::time::Duration::from_millis(150));
            Ok(4)
        }
        "Timeout" => Err(BotError::Timeout { after_ms: 5 }),
        _ => Err(BotError::NotFound),
    }
}

#[tracing::instrument(fields(command = "roll", user = "alice", dice = 6u64), err(Debug))]
fn roll(wanted: &str) -> Result<u64, BotError> {
    outcome(wanted)
}

#[tracing::instrument(fields(command = "fetch", user = "bob"), err(Debug))]
fn fetch(wanted: &str) -> Result<u64, BotError> {
    outcome(wanted)
}

fn run(plan: &str) {
    run_timed(plan, &mut Vec::new());
}

/// Runs `plan`, pushing the handling time of each command, in nanoseconds, to `times`.
fn run_timed(plan: &str, times: &mut Vec<u64>) {
    for item in plan.split(',').filter(|s| !s.is_empty()) {
        let mut parts = item.split(':');
        let (Some(command), Some(wanted), Some(count)) = (parts.next(), parts.next(), parts.next())
        else {
            eprintln!("bad plan item {item:?}");
            continue;
        };
        let count: u64 = count.parse().unwrap_or(0);
        for _ in 0..count {
            let start = std::time::Instant::now();
            let _ = match command {
                "roll" => roll(wanted),
                _ => fetch(wanted),
            };
            times.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }
}

/// A failed command whose name, error type and mark name are all `text`.
fn hostile(text: &str) {
    let span = tracing::info_span!("hostile", command = text);
    span.in_scope(|| {
        tracing::info!(mark = text, "marked");
        tracing::error!(error.type = text, "failed");
    });
}

/// Hex-encoded UTF-8 (so any text fits on one line); invalid pairs and bytes are replaced.
fn from_hex(hex: &str) -> String {
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .unwrap_or(b'?')
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn drive(telemetry: spanmetrics::TelemetryGuard) {
    let stdout = std::io::stdout();
    let say = |line: &str| {
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    match telemetry.prometheus_addr() {
        Some(addr) => say(&format!("prometheus {addr}")),
        None => say("prometheus off"),
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if let Some(plan) = line.strip_prefix("run ") {
            run(plan);
            say("done");
        } else if let Some(plan) = line.strip_prefix("latency ") {
            let mut times = Vec::new();
            run_timed(plan, &mut times);
            times.sort_unstable();
            let at = |q: f64| {
                let rank = (times.len() as f64 * q).ceil() as usize;
                times.get(rank.saturating_sub(1)).copied().unwrap_or(0)
            };
            say(&format!(
                "latency n={} p50_ns={} p99_ns={} max_ns={}",
                times.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            ));
            say("done");
        } else if let Some(hex) = line.strip_prefix("hostile ") {
            hostile(&from_hex(hex));
            say("done");
        } else if line == "flush" {
            telemetry.spanmetrics().flush();
            say("flushed");
        } else if line == "global-recorder" {
            // Setting one fails exactly when one is already installed.
            match metrics::set_global_recorder(metrics::NoopRecorder) {
                Ok(()) => say("global recorder free"),
                Err(_) => say("global recorder taken"),
            }
        } else if line == "exit" {
            break;
        } else if line == "drop" {
            drop(telemetry);
            say("guard dropped");
            return;
        }
    }
    match telemetry.shutdown() {
        Ok(()) => say("shutdown ok"),
        Err(error) => say(&format!("shutdown error: {error}")),
    }
}

/// The program's own log output: warnings and errors only, a per-layer filter that must hide
/// nothing from the metrics or the traces.
fn own_fmt_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::EnvFilter::new("warn"))
}

/// The pipeline's parts in a subscriber of the program's own, after its `fmt` layer or (with
/// `parts_first`) before it. The layer is built for the subscriber it goes into, so each order
/// builds its own.
fn own_subscriber(
    builder: spanmetrics::TelemetryBuilder,
    parts_first: bool,
) -> Result<spanmetrics::TelemetryGuard, spanmetrics::InitError> {
    use tracing_subscriber::prelude::*;
    if parts_first {
        let (layer, guard) = builder.build()?;
        tracing_subscriber::registry()
            .with(layer)
            .with(own_fmt_layer())
            .init();
        Ok(guard)
    } else {
        let (layer, guard) = builder.build()?;
        tracing_subscriber::registry()
            .with(own_fmt_layer())
            .with(layer)
            .init();
        Ok(guard)
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "none".into());
    let builder = spanmetrics::Telemetry::builder()
        .with_service_name("command-driver")
        .with_service_version("1.2.3");
    let telemetry = match mode.as_str() {
        "own-subscriber" => own_subscriber(builder, false),
        "own-subscriber-first" => own_subscriber(builder, true),
        _ => builder.install(),
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    match mode.as_str() {
        "current-thread" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { drive(telemetry) }),
        "multi-thread" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { drive(telemetry) }),
        _ => drive(telemetry),
    }
}
