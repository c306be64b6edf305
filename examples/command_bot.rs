//! A chat-command bot of the kind spanmetrics is built for (Twitch/Discord style), instrumented
//! with nothing but `#[tracing::instrument]`: every command shows up as metrics.
//!
//! ```text
//! cargo run --example command_bot -- --simulate 600 --rate 40                    # first run: ~15 s, live dashboard
//! cargo run --example command_bot -- --simulate 500 --error-rate 0.1 --seed 7   # traffic generator, as fast as it goes
//! cargo run --example command_bot -- --simulate 600 --rate 50 --linger 60       # paced, then keeps /metrics up
//! cargo run --example command_bot                                              # commands on stdin
//! cargo run --example command_bot -- --listen 127.0.0.1:7000                   # one command per TCP line
//! cargo run --example command_bot -- --write-objectives DIR                     # rules + dashboard of its objectives
//! ```
//!
//! Its objectives ([`objectives`]) are declared on the layer: their latency thresholds become
//! histogram buckets, and `--write-objectives` writes the Prometheus rules and the Grafana
//! dashboard that measure them (`collector-config/` holds the output).
//!
//! Metrics are served on http://127.0.0.1:9464/metrics (`SPANMETRICS_PROMETHEUS_LISTEN`), and
//! sent over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. No collector is needed to run it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tracing::{info, instrument};

/// Why a command failed. Its variant name becomes the `error_type` label.
#[derive(Debug)]
enum BotError {
    UnknownCommand { name: String },
    BadDice { spec: String },
    UpstreamTimeout { after_ms: u64 },
    UpstreamUnavailable,
    ModelOverloaded,
    InvalidParam { param: String },
    InvalidValue { param: String, value: String },
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCommand { name } => write!(f, "unknown command !{name}"),
            Self::BadDice { spec } => write!(f, "cannot roll {spec:?}, try 2d6"),
            Self::UpstreamTimeout { after_ms } => {
                write!(f, "weather service timed out after {after_ms} ms")
            }
            Self::UpstreamUnavailable => f.write_str("weather service unavailable"),
            Self::ModelOverloaded => f.write_str("the answer model is overloaded"),
            Self::InvalidParam { param } => write!(f, "no setting called {param}"),
            Self::InvalidValue { param, value } => write!(f, "{value:?} is not valid for {param}"),
        }
    }
}

impl std::error::Error for BotError {}

/// Decides, for the traffic generator, whether the upstream of a command misbehaves. Interactive
/// use never injects failures.
#[derive(Clone, Copy, Debug, Default)]
struct Fault {
    fail: bool,
    /// A number in 0..1000 that picks delays and error kinds deterministically.
    pick: u64,
}

/// SplitMix64: a tiny, seedable generator, so the same seed gives the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[instrument(skip_all, fields(command = "ping", platform = platform))]
async fn ping(platform: &str) -> Result<String, BotError> {
    Ok("pong".to_owned())
}

#[instrument(skip_all, fields(command = "roll", platform = platform), err(Debug))]
async fn roll(platform: &str, spec: &str, seed: u64) -> Result<String, BotError> {
    let bad = || BotError::BadDice {
        spec: spec.to_owned(),
    };
    let (count, sides) = spec.split_once('d').ok_or_else(bad)?;
    let count: u64 = count.parse().map_err(|_| bad())?;
    let sides: u64 = sides.parse().map_err(|_| bad())?;
    if !(1..=100).contains(&count) || !(2..=1000).contains(&sides) {
        return Err(bad());
    }
    let mut rng = Rng(seed);
    let total: u64 = (0..count).map(|_| 1 + rng.below(sides)).sum();
    Ok(format!("rolled {spec}: {total}"))
}

#[instrument(skip_all, fields(command = "weather", platform = platform), err(Debug))]
async fn weather(platform: &str, city: &str, fault: Fault) -> Result<String, BotError> {
    // The upstream is slow: 5–35 ms, and slower still when it fails.
    let delay = 5 + fault.pick % 30;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if fault.fail {
        return Err(if fault.pick.is_multiple_of(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            BotError::UpstreamTimeout {
                after_ms: delay + 20,
            }
        } else {
            BotError::UpstreamUnavailable
        });
    }
    let city = if city.is_empty() { "Nowhere" } else { city };
    Ok(format!("{city}: {}°C, light rain", fault.pick % 35))
}

#[instrument(skip_all, fields(command = "ask", platform = platform), err(Debug))]
async fn ask(platform: &str, question: &str, fault: Fault) -> Result<String, BotError> {
    tokio::time::sleep(Duration::from_millis(2 + fault.pick % 8)).await;
    if fault.fail {
        return Err(BotError::ModelOverloaded);
    }
    let words = ["Good", "question.", "It", "depends", "on", "the", "dice."];
    let mut answer = String::new();
    for (i, word) in words.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if i == 0 {
            info!(mark = "first_token", "streaming the answer");
        }
        answer.push_str(word);
        answer.push(' ');
    }
    info!(mark = "complete", chars = answer.len(), "answer complete");
    let _ = question;
    Ok(answer.trim_end().to_owned())
}

#[instrument(skip_all, fields(command = "set", platform = platform), err(Debug))]
async fn set(platform: &str, param: &str, value: &str) -> Result<String, BotError> {
    let valid = match param {
        "volume" => value.parse::<u8>().is_ok_and(|v| v <= 100),
        "language" => ["en", "de", "fr"].contains(&value),
        "units" => ["metric", "imperial"].contains(&value),
        _ => {
            return Err(BotError::InvalidParam {
                param: param.to_owned(),
            })
        }
    };
    if !valid {
        return Err(BotError::InvalidValue {
            param: param.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(format!("{param} set to {value}"))
}

#[instrument(skip_all, fields(command = "unknown", platform = platform), err(Debug))]
async fn unknown(platform: &str, name: &str) -> Result<String, BotError> {
    Err(BotError::UnknownCommand {
        name: name.to_owned(),
    })
}

/// Parses one chat line and runs its command. Lines that are not commands are ignored.
async fn dispatch(
    platform: &str,
    line: &str,
    fault: Fault,
) -> Option<(String, Result<String, BotError>)> {
    let line = line.trim();
    let body = line.strip_prefix('!')?;
    let mut words = body.split_whitespace();
    let name = words.next().unwrap_or("").to_owned();
    let rest: Vec<&str> = words.collect();
    let arg = |i: usize| rest.get(i).copied().unwrap_or("");
    let result = match name.as_str() {
        "ping" => ping(platform).await,
        "roll" => roll(platform, arg(0), fault.pick).await,
        "weather" => weather(platform, &rest.join(" "), fault).await,
        "ask" => ask(platform, &rest.join(" "), fault).await,
        "set" => set(platform, arg(0), arg(1)).await,
        _ => unknown(platform, &name).await,
    };
    let command = match name.as_str() {
        "ping" | "roll" | "weather" | "ask" | "set" => name,
        _ => "unknown".to_owned(),
    };
    Some((command, result))
}

/// Per-command tally the generator prints, to compare with what the metrics say.
#[derive(Default)]
struct Tally {
    calls: u64,
    errors: BTreeMap<String, u64>,
}

fn error_type(error: &BotError) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("error")
        .to_owned()
}

/// One generated chat line, and whether its upstream fails.
fn generate(rng: &mut Rng, error_rate: f64) -> (String, String, Fault) {
    let platform = if rng.below(3) == 0 {
        "discord"
    } else {
        "twitch"
    };
    let fail = rng.unit() < error_rate;
    let fault = Fault {
        fail,
        pick: rng.below(1000),
    };
    // A failing command is drawn among the ones that can fail (`!ping` cannot), so the share of
    // failed commands is the requested error rate.
    let line = if fail {
        match rng.below(5) {
            0 => "!roll 0d0".to_owned(),
            1 => "!weather Berlin".to_owned(),
            2 => "!ask what should I roll?".to_owned(),
            3 => "!set volume loud".to_owned(),
            _ => "!dance".to_owned(),
        }
    } else {
        match rng.below(5) {
            0 => "!ping".to_owned(),
            1 => format!("!roll {}d6", 1 + fault.pick % 4),
            2 => "!weather Berlin".to_owned(),
            3 => "!ask what should I roll?".to_owned(),
            _ => format!("!set volume {}", fault.pick % 101),
        }
    };
    (platform.to_owned(), line, fault)
}

async fn simulate(args: &Args) -> BTreeMap<String, Tally> {
    let mut rng = Rng(args.seed);
    let count = args.simulate.unwrap_or(0);
    let plan: Vec<_> = (0..count)
        .map(|_| generate(&mut rng, args.error_rate))
        .collect();
    // Run up to 16 commands at once, as a busy channel would.
    let permits = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::with_capacity(plan.len());
    let mut pace = args
        .rate
        .map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate)));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let progress = report_progress(Arc::clone(&done), Arc::clone(&failed), count);
    for (platform, line, fault) in plan {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        let permit = Arc::clone(&permits).acquire_owned().await.ok();
        let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            let outcome = dispatch(&platform, &line, fault).await;
            drop(permit);
            done.fetch_add(1, Ordering::Relaxed);
            if matches!(outcome, Some((_, Err(_)))) {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        }));
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for task in tasks {
        if let Ok(Some((command, result))) = task.await {
            let tally = tallies.entry(command).or_default();
            tally.calls += 1;
            if let Err(error) = result {
                *tally.errors.entry(error_type(&error)).or_default() += 1;
            }
        }
    }
    progress.abort();
    tallies
}

/// Prints how far the traffic is every two seconds.
fn report_progress(
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    total: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tick.tick().await;
            println!(
                "progress: {}/{total} commands, {} failed",
                done.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
        }
    })
}

/// A duration in seconds, for the table: `12.3ms`, `1.20s`, `-` when unknown.
fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// The per-command table (the bot's own tallies, with the latency percentiles the layer's live
/// statistics measured), then the state of each objective.
fn print_summary(tallies: &BTreeMap<String, Tally>, live: Option<&spanmetrics::live::LiveStats>) {
    use spanmetrics::live::Window;
    let summary = live.map(|live| live.summary(Window::OneHour));
    println!(
        "{:<10} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}  errors by type",
        "command", "calls", "errors", "success", "p50", "p95", "p99"
    );
    for (command, tally) in tallies {
        let errors: u64 = tally.errors.values().sum();
        let by_type: Vec<String> = tally
            .errors
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        let figures = summary
            .as_ref()
            .and_then(|s| s.command(command))
            .map(|c| &c.window);
        println!(
            "{command:<10} {:>6} {errors:>6} {:>7.1}% {:>8} {:>8} {:>8}  {}",
            tally.calls,
            100.0 * (tally.calls - errors) as f64 / tally.calls.max(1) as f64,
            latency(figures.and_then(|f| f.p50_s)),
            latency(figures.and_then(|f| f.p95_s)),
            latency(figures.and_then(|f| f.p99_s)),
            by_type.join(" ")
        );
    }
    println!();
    let Some(live) = live else {
        println!("objectives: not judged (the live statistics are off with the HTTP endpoint)");
        return;
    };
    // Judged over the whole run (up to an hour), as the burn-rate alerts would.
    let health = live
        .health(&spanmetrics::HealthObjectives::default().with_window(Duration::from_secs(3600)));
    println!("{:<32} {:>10}  state", "objective", "burn rate");
    for (name, check) in &health.checks {
        let Some(objective) = name.strip_prefix("objective:") else {
            continue;
        };
        let state = match check.status {
            spanmetrics::live::CheckStatus::Pass => "met",
            spanmetrics::live::CheckStatus::Warn => "burning its budget (degraded)",
            spanmetrics::live::CheckStatus::Fail => "burning fast (unhealthy: would page)",
            _ => "no data",
        };
        let burn = check.value.map_or("-".to_owned(), |b| format!("{b:.2}x"));
        println!("{objective:<32} {burn:>10}  {state}");
    }
}

async fn serve_lines<R, W>(reader: R, mut writer: W, platform: &str)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((_, result)) = dispatch(platform, &line, Fault::default()).await {
            let reply = match result {
                Ok(text) => text,
                Err(error) => format!("error: {error}"),
            };
            if writer
                .write_all(format!("{reply}\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

/// The bot's service level objectives.
fn objectives() -> Vec<spanmetrics::objectives::Objective> {
    use spanmetrics::objectives::Objective;
    vec![
        // Every command the bot knows succeeds 99 % of the time.
        Objective::new("commands-succeed")
            .for_commands(["ping", "roll", "weather", "ask", "set"])
            .success_rate(0.99),
        // The weather lookup answers: 99.5 % succeed, 95 % within a second (its upstream takes
        // 5–55 ms, so this one holds even on a loaded machine).
        Objective::new("weather-fast")
            .for_commands(["weather"])
            .success_rate(0.995)
            .latency(0.95, Duration::from_secs(1)),
    ]
}

#[derive(Debug)]
struct Args {
    simulate: Option<u64>,
    error_rate: f64,
    seed: u64,
    rate: Option<f64>,
    linger: Option<u64>,
    listen: Option<String>,
    write_objectives: Option<std::path::PathBuf>,
    time_scale: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        simulate: None,
        error_rate: 0.05,
        seed: 1,
        rate: None,
        linger: None,
        listen: None,
        write_objectives: None,
        time_scale: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--simulate" => {
                args.simulate = Some(
                    value("--simulate")?
                        .parse()
                        .map_err(|e| format!("--simulate: {e}"))?,
                )
            }
            "--error-rate" => {
                let rate: f64 = value("--error-rate")?
                    .parse()
                    .map_err(|e| format!("--error-rate: {e}"))?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err("--error-rate must be between 0 and 1".to_owned());
                }
                args.error_rate = rate;
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--rate" => {
                let rate: f64 = value("--rate")?.parse().map_err(|e| format!("--rate: {e}"))?;
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err("--rate must be a positive number of commands per second".to_owned());
                }
                args.rate = Some(rate);
            }
            "--linger" => {
                args.linger = Some(value("--linger")?.parse().map_err(|e| format!("--linger: {e}"))?)
            }
            "--listen" => args.listen = Some(value("--listen")?),
            "--write-objectives" => {
                args.write_objectives = Some(value("--write-objectives")?.into());
            }
            "--objective-time-scale" => {
                args.time_scale = value("--objective-time-scale")?
                    .parse()
                    .map_err(|e| format!("--objective-time-scale: {e}"))?
            }
            "--help" | "-h" => {
                return Err(
                    "usage: command_bot [--simulate N [--error-rate R] [--seed S] [--rate PER_SECOND] [--linger SECONDS]] [--listen ADDR] [--write-objectives DIR [--objective-time-scale N]]"
                        .to_owned(),
                )
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.write_objectives {
        let options =
            spanmetrics::objectives::rules::RuleOptions::default().with_time_scale(args.time_scale);
        return match spanmetrics::objectives::rules::write_objectives(dir, &objectives(), options) {
            Ok(paths) => {
                for path in paths {
                    println!("wrote {}", path.display());
                }
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cannot write the objectives to {}: {error}", dir.display());
                std::process::ExitCode::from(1)
            }
        };
    }
    let mut layer = spanmetrics::SpanMetricsLayer::builder()
        .with_label("platform")
        .expect("`platform` is a valid label");
    for objective in objectives() {
        layer = layer.with_objective(objective).expect("a valid objective");
    }
    let telemetry = spanmetrics::Telemetry::builder()
        .with_service_name("command_bot")
        // The generator's summary is the output; per-command logs only when RUST_LOG asks.
        .with_default_log_filter(if args.simulate.is_some() {
            "warn,command_bot=off"
        } else {
            "info"
        })
        .with_layer(layer)
        .install();
    let guard = match telemetry {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("telemetry: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    let dashboard = guard.prometheus_addr();
    let live = guard.spanmetrics().live();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        if args.simulate.is_some() {
            if let Some(addr) = dashboard {
                println!("dashboard: http://{addr}/ (live while the bot runs; metrics on /metrics, health on /health)");
            }
            let tallies = simulate(&args).await;
            print_summary(&tallies, live.as_ref());
            if let Some(seconds) = args.linger {
                // Keep /metrics up so a scraper sees the final numbers (and alerts can settle).
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
        } else if let Some(addr) = &args.listen {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("cannot listen on {addr}: {error}");
                    return;
                }
            };
            eprintln!("listening on {addr}: send one command per line, e.g. !roll 2d6");
            while let Ok((stream, peer)) = listener.accept().await {
                tokio::spawn(async move {
                    let (reader, writer) = stream.into_split();
                    serve_lines(reader, writer, "tcp").await;
                    let _ = peer;
                });
            }
        } else {
            eprintln!(
                "type commands, e.g. !ping, !roll 2d6, !weather Oslo, !ask why?, !set volume 50"
            );
            serve_lines(tokio::io::stdin(), tokio::io::stdout(), "stdin").await;
        }
    });
    drop(runtime);
    // Flushes and shuts the exporters down before the summary's numbers are final elsewhere.
    if let Err(error) = guard.shutdown() {
        eprintln!("telemetry shutdown: {error}");
    }
    std::process::ExitCode::SUCCESS
}
