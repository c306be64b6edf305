//! Handler latency while a load tool scrapes the telemetry endpoints.
//!
//! One thread runs sync command-bot handlers flat out under `spanmetrics::Telemetry` (Prometheus
//! endpoint and live statistics on, on a free loopback port; no OTLP), timing every call. The
//! run alternates phases: no scraping, `wrk` hammering `/metrics`, `wrk` hammering
//! `/api/commands`; each phase is repeated, and the p50/p99/p99.9 of the handler latency of
//! each kind of phase are compared with the unscraped ones.
//!
//! ```text
//! cargo run --release --example scrape_load -- [PHASE_SECONDS] [ROUNDS]   # defaults: 4 2
//! cargo run --release --example scrape_load -- probe [COMMANDS] [SECONDS]  # defaults: 2000 5
//! ```
//!
//! `probe` measures something else: the latency of `/health/live` on its own and while `wrk`
//! scrapes `/metrics`, with COMMANDS commands × ok/error series on the page.
//!
//! Needs `wrk` on the `PATH` (Debian: `apt-get install wrk`). `wrk` runs with one thread and
//! 4 connections for the phase's duration (bounded by its own `-d`), on 127.0.0.1 only.

use std::fmt;
use std::hint::black_box;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why a command failed.
#[derive(Debug)]
enum BotError {
    BadDice,
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bad dice")
    }
}

fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Dice specs; one in ten is invalid.
const SPECS: [&str; 10] = [
    "2d6", "1d20", "3d8", "4d4", "1d100", "2d10", "6d6", "1d12", "8d3", "2x6",
];

/// The commands the traffic is spread over (so the `/metrics` page has some size: 40 commands ×
/// ok/error duration and busy histograms).
const COMMANDS: usize = 40;

#[tracing::instrument(skip_all, fields(command = %command), err(Debug))]
fn roll(command: &str, spec: &str, seed: u64) -> Result<String, BotError> {
    let (count, sides) = spec.split_once('d').ok_or(BotError::BadDice)?;
    let count: u64 = count.parse().map_err(|_| BotError::BadDice)?;
    let sides: u64 = sides.parse().map_err(|_| BotError::BadDice)?;
    let mut state = seed;
    let mut total = 0;
    for _ in 0..count {
        state = mix(state);
        total += 1 + state % sides;
    }
    Ok(format!("@viewer rolled {spec}: {total}"))
}

/// Runs handlers for `duration`, returning each call's latency in nanoseconds.
fn run_handlers(names: &[String], duration: Duration, offset: &mut u64) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(8_000_000);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        for _ in 0..256 {
            let i = *offset;
            *offset += 1;
            let start = Instant::now();
            let out = roll(
                &names[(i % COMMANDS as u64) as usize],
                SPECS[(i % 10) as usize],
                i,
            );
            black_box(out.map_or(0, |s| s.len()));
            let ns = start.elapsed().as_nanos();
            latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
        }
    }
    latencies
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index]
}

/// A phase: scraping `path` with `wrk` (or nothing) while the handlers run.
fn phase(
    addr: SocketAddr,
    path: Option<&str>,
    names: &[String],
    seconds: u64,
    offset: &mut u64,
) -> (Vec<u32>, Option<f64>) {
    let Some(path) = path else {
        return (
            run_handlers(names, Duration::from_secs(seconds), offset),
            None,
        );
    };
    let mut wrk = Command::new("wrk")
        .args(["-t1", "-c4", &format!("-d{seconds}s"), "--timeout", "2s"])
        .arg(format!("http://{addr}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wrk on the PATH (apt-get install wrk)");
    let latencies = run_handlers(names, Duration::from_secs(seconds), offset);
    // wrk stops itself after -d; give it a bounded grace period, then kill it by its PID.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wrk.try_wait().expect("wrk status").is_none() {
        if Instant::now() > deadline {
            let _ = wrk.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = wrk.wait_with_output().expect("wrk output");
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok());
    (latencies, rate)
}

/// Runs `wrk` on `path` for `seconds` with `connections`, returning its stdout.
fn spawn_wrk(addr: SocketAddr, path: &str, seconds: u64, connections: u32) -> std::process::Child {
    Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            "--latency",
        ])
        .arg(format!("http://{addr}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wrk on the PATH (apt-get install wrk)")
}

/// Waits (bounded) for `wrk` and returns its stdout; kills it by PID if it overruns.
fn finish_wrk(mut wrk: std::process::Child, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds + 10);
    while wrk.try_wait().expect("wrk status").is_none() {
        if Instant::now() > deadline {
            let _ = wrk.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = wrk.wait_with_output().expect("wrk output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A line of `wrk --latency`'s distribution (`"50%"`, `"99%"`) or summary (`"Requests/sec:"`).
fn wrk_field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map_or("?", str::trim)
}

/// `probe [COMMANDS] [SECONDS]`: latency of `/health/live` alone, then while `wrk` scrapes
/// `/metrics`, with COMMANDS commands × ok/error series on the page. The endpoints share one
/// server thread, so a slow render delays every other request.
fn probe(mut args: impl Iterator<Item = String>) {
    let commands: usize = args.next().map_or(2000, |s| s.parse().expect("COMMANDS"));
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("SECONDS"));
    let guard = spanmetrics::Telemetry::builder()
        .with_env(Vec::new())
        .with_prometheus_listen(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        .with_default_log_filter("off")
        .install()
        .expect("telemetry starts");
    let addr = guard.prometheus_addr().expect("the endpoint listens");
    for i in 0..commands {
        let name = format!("cmd-{i:05}");
        drop(tracing::info_span!("handler", command = %name));
        drop(tracing::info_span!("handler", command = %name, outcome = "error"));
    }
    guard.spanmetrics().flush();
    let alone = finish_wrk(spawn_wrk(addr, "/health/live", seconds, 1), seconds);
    let scraper = spawn_wrk(addr, "/metrics", seconds, 2);
    let probed = finish_wrk(spawn_wrk(addr, "/health/live", seconds, 1), seconds);
    let scraped = finish_wrk(scraper, seconds);
    println!("\n/health/live latency with {commands} commands × ok/error on the page:");
    for (name, text) in [("alone", &alone), ("while wrk scrapes /metrics", &probed)] {
        println!(
            "  {name:<28} p50 {:>9}  p99 {:>9}  {:>9} req/s",
            wrk_field(text, "50%"),
            wrk_field(text, "99%"),
            wrk_field(text, "Requests/sec:"),
        );
    }
    println!(
        "  /metrics scrapes: {} req/s, p50 {}",
        wrk_field(&scraped, "Requests/sec:"),
        wrk_field(&scraped, "50%")
    );
    if let Err(error) = guard.shutdown() {
        eprintln!("shutdown: {error}");
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("probe") {
        args.next();
        probe(args);
        return;
    }
    let seconds: u64 = args.next().map_or(4, |s| s.parse().expect("PHASE_SECONDS"));
    let rounds: usize = args.next().map_or(2, |s| s.parse().expect("ROUNDS"));

    let guard = spanmetrics::Telemetry::builder()
        .with_env(Vec::new())
        .with_prometheus_listen(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
        .with_default_log_filter("off")
        .install()
        .expect("telemetry starts");
    let addr = guard.prometheus_addr().expect("the endpoint listens");
    let names: Vec<String> = (0..COMMANDS).map(|i| format!("cmd-{i:02}")).collect();
    let mut offset = 0;

    // Warm up: every series exists before the first measured phase.
    let _ = run_handlers(&names, Duration::from_secs(1), &mut offset);

    let kinds: [(&str, Option<&str>); 3] = [
        ("no scraping", None),
        ("wrk on /metrics", Some("/metrics")),
        ("wrk on /api/commands", Some("/api/commands")),
    ];
    let mut all: Vec<Vec<u32>> = vec![Vec::new(); kinds.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for (k, (name, path)) in kinds.iter().enumerate() {
            let (latencies, rate) = phase(addr, *path, &names, seconds, &mut offset);
            eprintln!(
                "round {round}, {name}: {} calls{}",
                latencies.len(),
                rate.map_or(String::new(), |r| format!(", {r:.0} scrapes/s"))
            );
            all[k].extend(latencies);
            rates[k].extend(rate);
        }
    }

    let mut baseline = None;
    println!("\nhandler latency on one thread, {rounds} × {seconds} s per kind of phase:");
    for (k, (name, _)) in kinds.iter().enumerate() {
        let sorted = &mut all[k];
        sorted.sort_unstable();
        let p = |q| percentile(sorted, q);
        let (p50, p99, p999) = (p(0.5), p(0.99), p(0.999));
        let base = *baseline.get_or_insert((p50, p99, p999));
        let rate = if rates[k].is_empty() {
            String::new()
        } else {
            format!(
                ", {:.0} scrapes/s",
                rates[k].iter().sum::<f64>() / rates[k].len() as f64
            )
        };
        println!(
            "  {name:<22} calls {:>9}  p50 {p50:>6} ns  p99 {p99:>7} ns  p99.9 {p999:>8} ns  \
             p99 ratio {:.2}  p50 ratio {:.2}{rate}",
            sorted.len(),
            f64::from(p99) / f64::from(base.1),
            f64::from(p50) / f64::from(base.0),
        );
    }
    let dropped = guard.spanmetrics().dropped();
    println!("  records dropped: {dropped}");
    if let Err(error) = guard.shutdown() {
        eprintln!("shutdown: {error}");
    }
}
