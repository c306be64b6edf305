//! End-to-end: the real Prometheus server scrapes `examples/command_bot.rs` running its traffic
//! generator, with a test-only copy of `collector-config/prometheus/` written to a temporary
//! directory: 1 s scrape and evaluation intervals, the `spanmetrics-app` job pointed at the bot,
//! every rule's `for:` shortened (minutes become seconds). The rules' expressions, including
//! their minimum-traffic floors and 5 m windows, are the real ones, unchanged.
//!
//! - A bot whose commands fail often fires the error-rate alerts (read from `/api/v1/alerts`),
//!   never for the command that has no errors, and every PromQL expression of the Grafana
//!   dashboard returns data.
//! - A bot without errors fires none of them, although the rules saw all of its traffic.
//! - In both, the counts Prometheus holds equal the summary the bot prints.
//!
//! The two tests run in parallel (each with its own bot and server) and take about 30 s.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::processes::{free_port, http_get, tool, Process};
use serde_json::Value;

/// Commands the generator runs, and how many per second: 10 s of traffic, so the counters
/// grow over about ten scrapes.
const COMMANDS: u64 = 400;
const PER_SECOND: u64 = 40;
const SEED: u64 = 11;
/// The bot keeps `/metrics` up this long after its traffic; the test kills it (by PID) first.
const LINGER_SECONDS: u64 = 600;
/// How long any awaited condition may take (generous: the machine may be busy compiling).
const DEADLINE: Duration = Duration::from_secs(90);
/// The alerts about failing commands: they must fire for a failing bot, and stay silent for a
/// healthy one.
const ERROR_ALERTS: [&str; 4] = [
    "CommandErrorRateHigh",
    "ServiceSuccessRateLow",
    "CommandErrorBudgetBurn",
    "ObjectiveBudgetBurn",
];
/// The `service` label `prometheus.yml` attaches to the bot's target.
const SERVICE: &str = "command_bot";

// ---------------------------------------------------------------------------------------------
// The test-only configuration, rewritten from the real files.

fn collector_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("collector-config")
}

/// `prometheus.yml` for this test: 1 s intervals; only the `prometheus` and `spanmetrics-app`
/// jobs (the collector jobs have nothing to scrape here), pointed at `own` and `bot`; no
/// Alertmanager (alerts are read from Prometheus' API). Everything else as in the real file.
fn test_prometheus_yml(real: &str, own: SocketAddr, bot: SocketAddr) -> String {
    const KEEP_JOBS: [&str; 2] = ["prometheus", "spanmetrics-app"];
    let mut out = String::new();
    let (mut top_level, mut keep_job) = (String::new(), true);
    let (mut intervals, mut jobs_kept) = (0, Vec::new());
    for line in real.lines() {
        let indented = line.starts_with(' ');
        if !indented && !line.trim().is_empty() && !line.starts_with('#') {
            top_level = line.trim_end_matches(':').to_owned();
            keep_job = true;
        }
        if top_level == "alerting" {
            continue;
        }
        let trimmed = line.trim_start();
        if top_level == "scrape_configs" {
            if let Some(job) = trimmed.strip_prefix("- job_name:") {
                let job = job.trim().trim_matches('"');
                keep_job = KEEP_JOBS.contains(&job);
                if keep_job {
                    jobs_kept.push(job.to_owned());
                }
            }
            if !keep_job {
                continue;
            }
        }
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(key) = ["scrape_interval:", "evaluation_interval:"]
            .into_iter()
            .find(|key| trimmed.starts_with(key))
        {
            out.push_str(&format!("{indent}{key} 1s\n"));
            intervals += 1;
            continue;
        }
        let line = line
            .replace("\"command-bot:9464\"", &format!("\"{bot}\""))
            .replace("\"localhost:9090\"", &format!("\"{own}\""));
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(
        jobs_kept, KEEP_JOBS,
        "prometheus.yml no longer has the jobs this test keeps"
    );
    assert!(
        intervals >= 2,
        "prometheus.yml: no global scrape/evaluation interval"
    );
    assert!(
        out.contains(&format!("\"{bot}\"")) && out.contains(&format!("\"{own}\"")),
        "prometheus.yml no longer has the targets command-bot:9464 and localhost:9090:\n{out}"
    );
    assert!(
        out.contains(&format!("service: {SERVICE}")),
        "prometheus.yml no longer labels the bot's target service: {SERVICE}"
    );
    out
}

/// A rule file with every `for: <duration>` divided by 60 (at least 1 s): `5m` becomes `5s`.
/// Returns the rewritten text and the longest shortened `for:` of each alert.
fn shorten_for(rules: &str) -> (String, BTreeMap<String, Duration>) {
    let mut out = String::new();
    let mut longest: BTreeMap<String, Duration> = BTreeMap::new();
    let mut alert = String::new();
    for line in rules.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        } else if trimmed.starts_with("- record:") {
            alert.clear();
        }
        if let Some(value) = trimmed.strip_prefix("for:") {
            let value = value.trim();
            let seconds = parse_duration(value)
                .unwrap_or_else(|| panic!("cannot read the rule duration `for: {value}`"));
            let short = (seconds / 60).max(1);
            out.push_str(&format!("{indent}for: {short}s\n"));
            let entry = longest.entry(alert.clone()).or_default();
            *entry = (*entry).max(Duration::from_secs(short));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, longest)
}

/// `90s`, `5m`, `1h`, `1d` → seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - 1].parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    Some(number * scale)
}

/// A fresh directory (with a `rules/` inside), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spanmetrics-alerts-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(dir.join("rules")).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus' HTTP API.

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `data` of a successful API answer.
fn api(server: SocketAddr, path: &str) -> Option<Value> {
    let body = http_get(server, path)?;
    let json: Value = serde_json::from_str(&body).ok()?;
    (json["status"] == "success").then(|| json["data"].clone())
}

/// The result vector of an instant query; `Err` with Prometheus' message if it fails.
fn query(server: SocketAddr, expr: &str) -> Result<Vec<Value>, String> {
    // http_get only returns 200 answers; a bad query (400/422) is asked again to read the error.
    let path = format!("/api/v1/query?query={}", encode(expr));
    match api(server, &path) {
        Some(data) => Ok(data["result"].as_array().cloned().unwrap_or_default()),
        None => Err(raw_error(server, &path)),
    }
}

/// The status line and body of a non-200 answer, for messages.
fn raw_error(server: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(server) else {
        return "cannot connect".to_owned();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    match response.split_once("\r\n\r\n") {
        Some((head, body)) => format!("{} {body}", head.lines().next().unwrap_or_default()),
        None => response,
    }
}

fn label(series: &Value, name: &str) -> String {
    series["metric"][name]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn sample(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

/// An alert as `/api/v1/alerts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Alert {
    name: String,
    severity: String,
    service: String,
    command: String,
    /// For the objectives' alerts (generated from the bot's objectives).
    objective: String,
    sli: String,
    state: String,
}

fn alerts(server: SocketAddr) -> Option<Vec<Alert>> {
    let data = api(server, "/api/v1/alerts")?;
    let get = |alert: &Value, key: &str| alert["labels"][key].as_str().unwrap_or("").to_owned();
    Some(
        data["alerts"]
            .as_array()?
            .iter()
            .map(|alert| Alert {
                name: get(alert, "alertname"),
                severity: get(alert, "severity"),
                service: get(alert, "service"),
                command: get(alert, "command"),
                objective: get(alert, "objective"),
                sli: get(alert, "sli"),
                state: alert["state"].as_str().unwrap_or("").to_owned(),
            })
            .collect(),
    )
}

/// The health Prometheus gives the target at `addr`: `unknown` until its first scrape.
fn target_health(server: SocketAddr, addr: SocketAddr) -> Option<String> {
    let data = api(server, "/api/v1/targets?state=active")?;
    let needle = format!("//{addr}/");
    data["activeTargets"]
        .as_array()?
        .iter()
        .find(|t| t["scrapeUrl"].as_str().is_some_and(|u| u.contains(&needle)))?["health"]
        .as_str()
        .map(str::to_owned)
}

/// Rule groups from `/api/v1/rules`: name → (last evaluation, problems of its rules).
fn rule_groups(server: SocketAddr) -> Option<BTreeMap<String, (String, Vec<String>)>> {
    let data = api(server, "/api/v1/rules")?;
    let mut groups = BTreeMap::new();
    for group in data["groups"].as_array()? {
        let problems = group["rules"]
            .as_array()?
            .iter()
            .filter(|rule| rule["health"] != "ok" && rule["health"] != "unknown")
            .map(|rule| format!("{}: {}", rule["name"], rule["lastError"]))
            .collect();
        groups.insert(
            group["name"].as_str()?.to_owned(),
            (group["lastEvaluation"].as_str()?.to_owned(), problems),
        );
    }
    Some(groups)
}

/// Polls `f` until it returns `Some`; on timeout panics with `what` and `diagnose()`.
fn wait_for<T>(what: &str, diagnose: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}\n{}", diagnose());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The bot and its summary.

/// Per command: calls and errors by type, as the bot printed them.
type Summary = BTreeMap<String, (u64, BTreeMap<String, u64>)>;

/// Parses the generator's table; `None` until all `COMMANDS` are in it.
fn parse_summary(stdout: &str) -> Option<Summary> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("command "));
    lines.next()?;
    let mut summary = Summary::new();
    // The table ends at the first empty line (the objectives follow).
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(command), Some(calls), Some(errors)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let calls: u64 = calls.parse().ok()?;
        let errors: u64 = errors.parse().ok()?;
        // After the success rate and the percentiles, the `type=count` pairs.
        let by_type: BTreeMap<String, u64> = words
            .filter(|w| w.contains('='))
            .map(|w| {
                let (t, n) = w.split_once('=')?;
                Some((t.to_owned(), n.parse().ok()?))
            })
            .collect::<Option<_>>()?;
        assert_eq!(
            by_type.values().sum::<u64>(),
            errors,
            "summary line {line:?}: errors by type do not add up"
        );
        summary.insert(command.to_owned(), (calls, by_type));
    }
    (summary.values().map(|(calls, _)| calls).sum::<u64>() == COMMANDS).then_some(summary)
}

/// The summary as `command_duration_seconds_count` series: (command, outcome, error_type).
fn expected_counts(summary: &Summary) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for (command, (calls, errors)) in summary {
        let failed: u64 = errors.values().sum();
        if calls > &failed {
            out.insert(
                (command.clone(), "ok".to_owned(), String::new()),
                calls - failed,
            );
        }
        for (error_type, n) in errors {
            out.insert(
                (command.clone(), "error".to_owned(), error_type.clone()),
                *n,
            );
        }
    }
    out
}

fn error_ratio(summary: &Summary, command: &str) -> f64 {
    let (calls, errors) = &summary[command];
    errors.values().sum::<u64>() as f64 / *calls as f64
}

pub fn bot_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("command_bot"))
        .expect("target dir");
    assert!(
        path.exists(),
        "{} is missing; run `cargo test` (it builds the examples)",
        path.display()
    );
    path
}

/// A bot scraped by its own Prometheus server.
struct Run {
    api: SocketAddr,
    prometheus: Process,
    bot: Process,
    /// Longest shortened `for:` of each alert.
    for_durations: BTreeMap<String, Duration>,
    group_count: usize,
    // Dropped last: the processes above are killed first.
    _dir: TempDir,
}

impl Run {
    fn start(name: &str, error_rate: f64) -> Option<Self> {
        let prometheus_bin = tool("PROMETHEUS")?;
        let dir = TempDir::new(name);
        let bot_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

        let prometheus_dir = collector_config().join("prometheus");
        let real = std::fs::read_to_string(prometheus_dir.join("prometheus.yml"))
            .expect("collector-config/prometheus/prometheus.yml");
        std::fs::write(
            dir.0.join("prometheus.yml"),
            test_prometheus_yml(&real, api, bot_addr),
        )
        .unwrap();
        let mut for_durations = BTreeMap::new();
        let mut group_count = 0;
        let rule_files = std::fs::read_dir(prometheus_dir.join("rules")).expect("rules/");
        for entry in rule_files {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                group_count += text
                    .lines()
                    .filter(|l| l.trim_start().starts_with("- name:"))
                    .count();
                let (short, longest) = shorten_for(&text);
                for (alert, d) in longest {
                    let entry: &mut Duration = for_durations.entry(alert).or_default();
                    *entry = (*entry).max(d);
                }
                std::fs::write(dir.0.join("rules").join(path.file_name().unwrap()), short).unwrap();
            }
        }
        for alert in ERROR_ALERTS {
            assert!(
                for_durations.contains_key(alert),
                "the rules have no `for:` for {alert}"
            );
        }

        // Prometheus first, scraping the bot's address before the bot runs: the bot's traffic
        // lasts about 10 s, and a server that first scraped it after that (slow to start on a
        // loaded machine) would see only final values, no increase for a rate or alert.
        let mut command = Command::new(prometheus_bin);
        command.args([
            format!("--config.file={}", dir.0.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.0.join("data").display()),
            format!("--web.listen-address={api}"),
        ]);
        let prometheus = Process::spawn(command);
        wait_for(
            "Prometheus to load every rule group and to try the bot's target",
            || last_lines(&prometheus.stderr(), 30),
            || {
                let groups = rule_groups(api)?;
                let tried = target_health(api, bot_addr).is_some_and(|h| h != "unknown");
                (groups.len() == group_count && tried).then_some(())
            },
        );

        let mut command = Command::new(bot_binary());
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") || key.starts_with("SPANMETRICS_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command
            .env("SPANMETRICS_PROMETHEUS_LISTEN", bot_addr.to_string())
            .env("NO_COLOR", "1")
            .args(["--simulate", &COMMANDS.to_string()])
            .args(["--error-rate", &error_rate.to_string()])
            .args(["--seed", &SEED.to_string()])
            .args(["--rate", &PER_SECOND.to_string()])
            .args(["--linger", &LINGER_SECONDS.to_string()]);
        let bot = Process::spawn(command);
        Some(Self {
            api,
            prometheus,
            bot,
            for_durations,
            group_count,
            _dir: dir,
        })
    }

    fn logs(&self) -> String {
        format!(
            "bot stdout:\n{}\nbot stderr:\n{}\nprometheus stderr (last lines):\n{}",
            self.bot.stdout(),
            self.bot.stderr(),
            last_lines(&self.prometheus.stderr(), 30)
        )
    }

    /// Waits for the bot's summary.
    fn summary(&self) -> Summary {
        wait_for(
            "the bot's summary",
            || self.logs(),
            || parse_summary(&self.bot.stdout()),
        )
    }

    /// `command_duration_seconds_count` of the bot's target, by (command, outcome, error_type).
    fn counts(&self) -> Option<BTreeMap<(String, String, String), u64>> {
        let series = query(
            self.api,
            &format!(
                "command_duration_seconds_count{{job=\"spanmetrics-app\", service=\"{SERVICE}\"}}"
            ),
        )
        .ok()?;
        let mut out = BTreeMap::new();
        for s in &series {
            let count = sample(s)? as u64;
            let key = (
                label(s, "command"),
                label(s, "outcome"),
                label(s, "error_type"),
            );
            *out.entry(key).or_default() += count;
        }
        Some(out)
    }

    /// Waits until Prometheus' counts equal the bot's summary.
    fn wait_for_counts(&self, summary: &Summary) {
        let expected = expected_counts(summary);
        let last = RefCell::new(None);
        wait_for(
            "Prometheus' command counts to equal the bot's summary",
            || {
                format!(
                    "expected {expected:#?}\nPrometheus has {:#?}\n{}",
                    last.borrow(),
                    self.logs()
                )
            },
            || {
                let counts = self.counts();
                let equal = counts.as_ref() == Some(&expected);
                *last.borrow_mut() = counts;
                equal.then_some(())
            },
        );
    }

    /// The error alerts currently pending or firing.
    fn error_alerts(&self) -> Vec<Alert> {
        let alerts = wait_for("the alerts API", || self.logs(), || alerts(self.api));
        for alert in &alerts {
            if ERROR_ALERTS.contains(&alert.name.as_str()) {
                assert_eq!(
                    alert.service, SERVICE,
                    "alert without the bot's service label: {alert:?}"
                );
            }
        }
        alerts
            .into_iter()
            .filter(|a| ERROR_ALERTS.contains(&a.name.as_str()))
            .collect()
    }

    /// Asserts that every rule evaluates without error.
    fn assert_rules_healthy(&self) {
        let groups = wait_for("the rules API", || self.logs(), || rule_groups(self.api));
        let problems: Vec<&String> = groups.values().flat_map(|(_, p)| p).collect();
        assert!(problems.is_empty(), "rules failing: {problems:#?}");
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard's queries.

/// Every PromQL expression of the dashboard (panel targets, and the selectors of the
/// `label_values()` variables), with variables substituted as `scripts/check_dashboard.py`
/// does: `.*` for `$service`, `$instance`, `$command`; but `5m` (not `1m`) for
/// `$__rate_interval`, so that the traffic is still in the window however long the waits
/// before the queries took on a loaded machine.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = collector_config().join("grafana/dashboards/spanmetrics.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard JSON");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let substitute = |expr: &str| {
        let mut expr = expr.to_owned();
        for var in ["service", "instance", "command"] {
            expr = expr
                .replace(&format!("${{{var}}}"), ".*")
                .replace(&format!("${var}"), ".*");
        }
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("${__rate_interval}", "5m");
        assert!(!expr.contains('$'), "unsubstituted variable in {expr}");
        expr.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let mut queries = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        let selector = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| panic!("variable ${name}: not label_values(): {query}"));
        queries.push((format!("variable ${name}"), substitute(selector)));
    }
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let reference = target["refId"].as_str().unwrap_or("");
            queries.push((format!("panel {title:?} {reference}"), substitute(expr)));
        }
    }
    assert!(
        queries.len() >= 10,
        "only {} queries found in the dashboard",
        queries.len()
    );
    queries
}

/// Metrics that may legitimately have no series after this traffic, with the reason. A query
/// reading one of them may return nothing, but only while the metric has no series at all.
const MAY_BE_ABSENT: [(&str, &str); 1] = [(
    "spanmetrics_overflow_records_total",
    "created only when a cardinality cap folds records; the bot's six commands and few error \
     types stay far below the cap",
)];

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn failing_commands_fire_the_error_rate_alerts_and_fill_every_dashboard_query() {
    let Some(run) = Run::start("failing", 0.5) else {
        return;
    };
    let summary = run.summary();
    // Only `ping` cannot fail; every other command fails about half the time.
    let healthy: BTreeSet<String> = summary
        .keys()
        .filter(|c| error_ratio(&summary, c) == 0.0)
        .cloned()
        .collect();
    let failing: BTreeSet<String> = summary
        .keys()
        .filter(|c| error_ratio(&summary, c) > 0.2 && summary[*c].0 >= 20)
        .cloned()
        .collect();
    assert!(
        healthy.contains("ping") && failing.len() >= 4,
        "the generator no longer gives failing commands and an error-free one: {summary:?}"
    );
    // The first-run output: the dashboard's address first, then progress, the table with
    // success rates and percentiles, and the objectives' states as the layer judged them.
    let stdout = run.bot.stdout();
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("dashboard: http://"), "{stdout}");
    assert!(stdout.contains("progress: "), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("weather "))
        .unwrap_or_else(|| panic!("no weather row: {stdout}"));
    assert_eq!(
        row.split_whitespace()
            .filter(|w| w.ends_with("ms") || w.ends_with('s'))
            .count(),
        3,
        "p50, p95 and p99: {row}"
    );
    let objective = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no objective line {name}: {stdout}"))
            .to_owned()
    };
    // Half the commands fail: the success objective burns fast; the weather upstream answers
    // in milliseconds against a 1 s threshold.
    assert!(
        objective("commands-succeed:success").contains("would page"),
        "{stdout}"
    );
    assert!(
        objective("weather-fast:latency").ends_with(" met"),
        "{stdout}"
    );

    run.wait_for_counts(&summary);

    // The dashboard, while its 5-minute windows still have the traffic in them.
    let mut problems = Vec::new();
    for (title, expr) in dashboard_queries() {
        match query(run.api, &expr) {
            Err(error) => problems.push(format!("{title}: {expr}\n  fails: {error}")),
            Ok(result) if result.iter().any(|s| sample(s).is_some_and(f64::is_finite)) => {}
            Ok(result) => {
                let absent = MAY_BE_ABSENT.iter().find(|(metric, _)| {
                    expr.contains(metric) && query(run.api, metric).is_ok_and(|r| r.is_empty())
                });
                match absent {
                    Some((metric, reason)) => {
                        eprintln!(
                            "{title}: no data, as expected: {metric} has no series ({reason})"
                        )
                    }
                    None => {
                        problems.push(format!("{title}: {expr}\n  returns no data: {result:?}"))
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries without data:\n{}",
        problems.join("\n")
    );

    // The alerts: all severities of the error-rate alert for every failing command, and the
    // service-level ones, reach `firing`; nothing ever fires for the command without errors.
    let wrong = RefCell::new(BTreeSet::new());
    let last = RefCell::new(Vec::new());
    wait_for(
        "the error alerts to fire",
        || {
            let alerts = last.borrow();
            format!(
                "still missing: {:?}\nalerts: {alerts:#?}\n{}",
                missing_alerts(&alerts, &failing),
                run.logs()
            )
        },
        || {
            let alerts = run.error_alerts();
            // The latency objective is met (the weather lookup takes milliseconds against a
            // 1 s threshold): its alerts never even become pending.
            wrong.borrow_mut().extend(
                alerts
                    .iter()
                    .filter(|a| healthy.contains(&a.command) || a.sli == "latency")
                    .cloned(),
            );
            let done = missing_alerts(&alerts, &failing).is_empty();
            *last.borrow_mut() = alerts;
            done.then_some(())
        },
    );
    assert!(
        wrong.borrow().is_empty(),
        "alerts for commands without errors: {:#?}",
        wrong.borrow()
    );
    run.assert_rules_healthy();
}

/// The error alerts a failing bot should have `firing` but has not: both severities of the
/// error-rate alert for every failing command, and the service-level ones.
fn missing_alerts(alerts: &[Alert], failing: &BTreeSet<String>) -> Vec<String> {
    let firing = |name: &str, severity: &str, command: &str| {
        alerts.iter().any(|a| {
            a.name == name && a.severity == severity && a.command == command && a.state == "firing"
        })
    };
    let mut missing = Vec::new();
    for command in failing {
        for severity in ["warning", "critical"] {
            if !firing("CommandErrorRateHigh", severity, command) {
                missing.push(format!("CommandErrorRateHigh {severity} {command}"));
            }
        }
    }
    for (name, severity) in [
        ("ServiceSuccessRateLow", "warning"),
        ("ServiceSuccessRateLow", "critical"),
        ("CommandErrorBudgetBurn", "critical"),
    ] {
        if !firing(name, severity, "") {
            missing.push(format!("{name} {severity}"));
        }
    }
    // The success objective the failing commands violate pages (rules generated from the
    // bot's objectives, their windows unscaled: the short windows hold the whole run).
    for severity in ["page", "ticket"] {
        let objective_fires = alerts.iter().any(|a| {
            a.name == "ObjectiveBudgetBurn"
                && a.objective == "commands-succeed"
                && a.sli == "success"
                && a.severity == severity
                && a.state == "firing"
        });
        if !objective_fires {
            missing.push(format!("ObjectiveBudgetBurn commands-succeed {severity}"));
        }
    }
    missing
}

#[test]
fn commands_without_errors_never_fire_the_error_rate_alerts() {
    let Some(run) = Run::start("healthy", 0.0) else {
        return;
    };
    // Every error alert seen pending or firing at any time during the run.
    let seen = RefCell::new(BTreeSet::new());
    let watch = |run: &Run| seen.borrow_mut().extend(run.error_alerts());

    let summary = run.summary();
    assert!(
        summary.len() >= 4 && summary.keys().all(|c| error_ratio(&summary, c) == 0.0),
        "with --error-rate 0 the bot should run several commands without errors: {summary:?}"
    );
    watch(&run);
    run.wait_for_counts(&summary);
    watch(&run);

    // The recording rules have all of the traffic: every command has an error ratio (of 0), and
    // enough traffic to pass the alerts' minimum-traffic floor (5 commands in 5 minutes), so
    // only the ratio keeps the alerts silent.
    let ratios = wait_for(
        "the error-ratio recording rule to cover every command, above the traffic floor",
        || run.logs(),
        || {
            watch(&run);
            let ratios = query(
                run.api,
                "service_command:command_error_ratio:rate5m \
                 and on (service, command) service_command:command_duration_seconds_count:rate5m >= 5 / 300",
            )
            .ok()?;
            let commands: BTreeSet<String> = ratios.iter().map(|s| label(s, "command")).collect();
            (commands.iter().eq(summary.keys())).then_some(ratios)
        },
    );
    for series in &ratios {
        assert_eq!(sample(series), Some(0.0), "error ratio of {series}");
        assert_eq!(label(series, "service"), SERVICE);
    }

    // Every rule group is evaluated for longer than the longest `for:` of the error alerts, on
    // data that already hold all of the traffic.
    let longest = ERROR_ALERTS
        .iter()
        .map(|a| run.for_durations[*a])
        .max()
        .unwrap();
    let evaluations = longest.as_secs() + 3;
    let changes: RefCell<BTreeMap<String, (String, u64)>> = RefCell::default();
    wait_for(
        &format!("{evaluations} evaluations of every rule group"),
        || format!("evaluations seen: {:?}\n{}", changes.borrow(), run.logs()),
        || {
            watch(&run);
            let groups = rule_groups(run.api)?;
            let mut changes = changes.borrow_mut();
            for (name, (last, _)) in groups {
                let entry = changes.entry(name).or_insert((last.clone(), 0));
                if entry.0 != last {
                    *entry = (last, entry.1 + 1);
                }
            }
            (changes.len() == run.group_count && changes.values().all(|(_, n)| *n >= evaluations))
                .then_some(())
        },
    );
    watch(&run);
    run.assert_rules_healthy();
    let seen = seen.into_inner();
    assert!(
        seen.is_empty(),
        "error alerts for a bot without errors: {seen:#?}"
    );
}
