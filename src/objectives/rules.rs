//! What measures the objectives: Prometheus recording rules for each objective's SLIs over the
//! burn-rate windows, multi-window multi-burn-rate alerts (Google SRE workbook, "Alerting on
//! SLOs": page at 14.4× over 1 h and 5 m or 6× over 6 h and 30 m; ticket at 3× over 1 d and 2 h
//! or 1× over 3 d and 6 h), and a Grafana dashboard row per objective (SLI, error budget left,
//! burn rates).
//!
//! Every SLI is a *bad ratio* (`objective:bad_ratio:rate<window>`, labels `objective`, `sli`
//! = `success` | `latency` and `service`): failed commands over all, or commands slower than
//! the threshold over all. The latency SLI reads the histogram bucket whose upper bound is the
//! threshold, which exists because the layer adds every threshold to the bounds of both sinks.
//! A burn rate is the bad ratio divided by the error budget (`1 - target`): 1× spends the budget
//! in exactly the objective's window.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Commands, Objective};
use crate::names;
use crate::spelling::{prometheus_label, prometheus_value};

/// One alert condition: `factor`× the budget over both windows.
struct Burn {
    factor: f64,
    long: Duration,
    short: Duration,
}

const HOUR: u64 = 3600;

/// A severity: its name, its `for:` in seconds, and its two (factor, long, short window)
/// conditions.
type Severity = (&'static str, u64, [(f64, u64, u64); 2]);

/// The page and ticket conditions, each a pair of (long, short) windows.
const SEVERITIES: [Severity; 2] = [
    (
        "page",
        2 * 60,
        [(14.4, HOUR, 5 * 60), (6.0, 6 * HOUR, 30 * 60)],
    ),
    (
        "ticket",
        15 * 60,
        [(3.0, 24 * HOUR, 2 * HOUR), (1.0, 72 * HOUR, 6 * HOUR)],
    ),
];

/// Every window a recording rule is kept for.
const WINDOWS: [u64; 7] = [
    5 * 60,
    30 * 60,
    HOUR,
    2 * HOUR,
    6 * HOUR,
    24 * HOUR,
    72 * HOUR,
];

/// How the rules are written.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct RuleOptions {
    time_scale: u32,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self { time_scale: 1 }
    }
}

impl RuleOptions {
    /// Divides every window and `for` duration by `scale` (at least 1), keeping the burn-rate
    /// factors: for tests that must see an alert fire within minutes. Production rules use 1.
    pub fn with_time_scale(mut self, scale: u32) -> Self {
        self.time_scale = scale.max(1);
        self
    }

    fn scaled(&self, seconds: u64) -> Duration {
        Duration::from_secs(seconds.div_ceil(u64::from(self.time_scale)).max(1))
    }
}

/// A duration as Prometheus writes it: the largest whole unit (`5m`, `1h`, `3d`, `45s`).
fn prom_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// A number without float noise (`0.005`, not `0.0050000000000000044`).
fn num(x: f64) -> String {
    let s = format!("{x:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// A window in words: `30 days`, `6 h`.
fn words(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{} days", s / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A PromQL double-quoted string's content.
fn promql_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A literal in a (RE2) regular expression.
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The label matchers selecting an objective's commands (as the Prometheus sink spells them).
fn selector(objective: &Objective) -> String {
    match objective.commands() {
        Commands::Named(commands) => {
            let alternatives: Vec<String> = commands
                .iter()
                .map(|c| regex_literal(&prometheus_value(c)))
                .collect();
            format!(
                "{}=~\"{}\"",
                names::ATTR_COMMAND,
                promql_string(&alternatives.join("|"))
            )
        }
        Commands::Labelled { label, value } => format!(
            "{}=\"{}\"",
            prometheus_label(label),
            promql_string(&prometheus_value(value))
        ),
    }
}

/// The `le` matcher of the bucket bounded by `threshold`, in every spelling a bound is
/// rendered with (`0.25`; `1` and `1.0`).
fn le_matcher(threshold: Duration) -> String {
    let s = num(threshold.as_secs_f64());
    let mut spellings = vec![regex_literal(&s)];
    if !s.contains('.') {
        spellings.push(regex_literal(&format!("{s}.0")));
    }
    format!("le=~\"{}\"", promql_string(&spellings.join("|")))
}

/// An SLI: its `sli` label, its error budget and its bad-ratio expression for a window.
type Sli<'a> = (&'static str, f64, Box<dyn Fn(&str) -> String + 'a>);

/// The SLIs of an objective.
fn slis(objective: &Objective) -> Vec<Sli<'_>> {
    let sel = selector(objective);
    let count = format!("{}_count", names::PROM_DURATION);
    let bucket = format!("{}_bucket", names::PROM_DURATION);
    let mut out: Vec<Sli<'_>> = Vec::new();
    if let Some(target) = objective.success_target() {
        let sel = sel.clone();
        let count = count.clone();
        out.push((
            "success",
            1.0 - target,
            Box::new(move |w: &str| {
                format!(
                    "(sum by (service) (rate({count}{{{sel},{outcome}=\"error\"}}[{w}])) or sum by (service) (rate({count}{{{sel}}}[{w}])) * 0)\n/ sum by (service) (rate({count}{{{sel}}}[{w}]))",
                    outcome = names::ATTR_OUTCOME,
                )
            }),
        ));
    }
    if let Some(latency) = objective.latency_target() {
        let le = le_matcher(latency.threshold);
        out.push((
            "latency",
            1.0 - latency.ratio,
            Box::new(move |w: &str| {
                format!(
                    "1 - (\n  sum by (service) (rate({bucket}{{{sel},{le}}}[{w}]))\n  / sum by (service) (rate({count}{{{sel}}}[{w}]))\n)"
                )
            }),
        ));
    }
    out
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

/// What an SLI promises, in words.
fn promise(objective: &Objective, sli: &str) -> String {
    match (sli, objective.latency_target()) {
        ("latency", Some(l)) => format!(
            "{}% of commands finish within {}",
            num(l.ratio * 100.0),
            humantime::format_duration(l.threshold)
        ),
        _ => format!(
            "{}% of commands succeed",
            num(objective.success_target().unwrap_or(0.0) * 100.0)
        ),
    }
}

/// The Prometheus rule file (recording rules and alerts) for `objectives`.
pub fn prometheus_rules(objectives: &[Objective], options: RuleOptions) -> String {
    let mut out = String::from(
        "# Generated by spanmetrics from the objectives declared in code; do not edit.\n\
         # Recording rules: objective:bad_ratio:rate<window> per objective and SLI; alerts:\n\
         # multi-window, multi-burn-rate (Google SRE workbook, \"Alerting on SLOs\").\n\
         groups:\n",
    );
    for objective in objectives {
        let name = objective.name();
        let _ = writeln!(out, "  - name: spanmetrics-objective-{name}\n    rules:");
        for (sli, _, expr) in slis(objective) {
            for window in WINDOWS {
                let w = prom_duration(options.scaled(window));
                let _ = write!(
                    out,
                    "      - record: objective:bad_ratio:rate{}\n        labels:\n          objective: \"{name}\"\n          sli: {sli}\n        expr: |\n{}",
                    prom_duration(Duration::from_secs(window)),
                    indent(&expr(&w), 10)
                );
            }
        }
        for (sli, budget, _) in slis(objective) {
            for (severity, for_secs, burns) in SEVERITIES {
                let burns: Vec<Burn> = burns
                    .iter()
                    .map(|&(factor, long, short)| Burn {
                        factor,
                        long: Duration::from_secs(long),
                        short: Duration::from_secs(short),
                    })
                    .collect();
                let series = |d: Duration| {
                    format!(
                        "objective:bad_ratio:rate{}{{objective=\"{name}\",sli=\"{sli}\"}}",
                        prom_duration(d)
                    )
                };
                let conditions: Vec<String> = burns
                    .iter()
                    .map(|b| {
                        let limit = format!("({} * {})", num(b.factor), num(budget));
                        format!(
                            "(\n    {} > {limit}\n  and\n    {} > {limit}\n)",
                            series(b.long),
                            series(b.short)
                        )
                    })
                    .collect();
                let conditions_in_words: Vec<String> = burns
                    .iter()
                    .map(|b| {
                        format!(
                            "{}x over {} and {}",
                            num(b.factor),
                            prom_duration(options.scaled(b.long.as_secs())),
                            prom_duration(options.scaled(b.short.as_secs()))
                        )
                    })
                    .collect();
                let _ = write!(
                    out,
                    "      - alert: {ALERT}\n        expr: |\n{}        for: {}\n        labels:\n          objective: \"{name}\"\n          sli: {sli}\n          severity: {severity}\n        annotations:\n          summary: {}\n          description: {}\n",
                    indent(&conditions.join("\nor\n"), 10),
                    prom_duration(options.scaled(for_secs)),
                    json_string(&summary(name, sli, severity, "{{ $labels.service }}")),
                    json_string(&description(objective, sli, budget, &conditions_in_words)),
                );
            }
        }
    }
    out
}

/// The name of every objective alert (told apart by the `objective`, `sli` and `severity`
/// labels).
pub const ALERT: &str = "ObjectiveBudgetBurn";

fn summary(name: &str, sli: &str, severity: &str, service: &str) -> String {
    format!("{service}: objective {name} ({sli}) is burning its error budget ({severity})")
}

fn description(objective: &Objective, sli: &str, budget: f64, conditions: &[String]) -> String {
    format!(
        "The share of bad commands is above {} of the error budget {} (objective: {} over {}).",
        conditions.join(", or "),
        num(budget),
        promise(objective, sli),
        words(objective.window_length())
    )
}

/// The alert conditions of `severity` in words, as the rules' descriptions give them.
fn conditions_in_words(severity: &str, options: RuleOptions) -> Vec<String> {
    SEVERITIES
        .iter()
        .filter(|(s, _, _)| *s == severity)
        .flat_map(|(_, _, burns)| burns.iter())
        .map(|&(factor, long, short)| {
            format!(
                "{}x over {} and {}",
                num(factor),
                prom_duration(options.scaled(long)),
                prom_duration(options.scaled(short))
            )
        })
        .collect()
}

/// `promtool test rules` cases for the rules of [`prometheus_rules`] (in `rule_file`, a path
/// relative to the test file): for every objective and SLI, a series that burns the budget
/// (the page alert fires where the target makes that possible, the ticket alert always) and one
/// that stays within it (nothing fires). Every objective covering the same commands is taken
/// into account: the expected alerts are all the alerts the series should raise.
pub fn promtool_tests(objectives: &[Objective], options: RuleOptions, rule_file: &str) -> String {
    const PER_MINUTE: f64 = 10_000.0;
    const MINUTES: u64 = 240;
    let interval = options.scaled(60);
    let eval = options.scaled(180 * 60);
    let mut out = format!(
        "# Generated by spanmetrics with the rules it tests; do not edit.\nrule_files:\n  - {}\nevaluation_interval: {}\ntests:\n",
        json_string(rule_file),
        prom_duration(interval)
    );
    for objective in objectives {
        for (sli, budget, _) in slis(objective) {
            // The series: a command the objective covers, with its labels.
            let (command, extra) = match objective.commands() {
                Commands::Named(c) => (c[0].clone(), String::new()),
                Commands::Labelled { label, value } => (
                    "labelled-command".to_owned(),
                    format!(
                        ",{}={}",
                        prometheus_label(label),
                        json_string(&prometheus_value(value))
                    ),
                ),
            };
            // Far above the fastest burn where it can be; all bad where it cannot.
            let burning = (14.4 * budget * 1.25).min(1.0);
            for (case, bad_share) in [
                ("burns the budget", burning),
                ("stays within the budget", budget * 0.5),
            ] {
                let bad = (bad_share * PER_MINUTE).round();
                let share = bad / PER_MINUTE;
                let labels = format!(
                    "service=\"bot\",{}={}{extra}",
                    names::ATTR_COMMAND,
                    json_string(&prometheus_value(&command))
                );
                let series: Vec<(String, f64)> = if sli == "success" {
                    vec![
                        (
                            format!("{}_count{{{labels},outcome=\"ok\"}}", names::PROM_DURATION),
                            PER_MINUTE - bad,
                        ),
                        (
                            format!(
                                "{}_count{{{labels},outcome=\"error\"}}",
                                names::PROM_DURATION
                            ),
                            bad,
                        ),
                    ]
                } else {
                    let threshold = objective
                        .latency_target()
                        .map(|l| num(l.threshold.as_secs_f64()))
                        .unwrap_or_default();
                    vec![
                        (
                            format!("{}_count{{{labels},outcome=\"ok\"}}", names::PROM_DURATION),
                            PER_MINUTE,
                        ),
                        (
                            format!(
                                "{}_bucket{{{labels},outcome=\"ok\",le=\"{threshold}\"}}",
                                names::PROM_DURATION
                            ),
                            PER_MINUTE - bad,
                        ),
                    ]
                };
                let _ = write!(
                    out,
                    "  # objective {} ({sli}): a series that {case} ({}% bad)\n  - interval: {}\n    input_series:\n",
                    objective.name(),
                    num(share * 100.0),
                    prom_duration(interval)
                );
                for (name, step) in &series {
                    let _ = write!(
                        out,
                        "      - series: {}\n        values: \"0+{}x{MINUTES}\"\n",
                        json_string(name),
                        num(*step)
                    );
                }
                let _ = write!(
                    out,
                    "    alert_rule_test:\n      - eval_time: {}\n        alertname: {ALERT}\n        exp_alerts:",
                    prom_duration(eval)
                );
                // Every objective with this SLI that covers the series' command fires as the
                // share compares to its limits.
                let mut expected = Vec::new();
                for other in objectives {
                    let covers = match other.commands() {
                        Commands::Named(c) => extra.is_empty() && c.contains(&command),
                        Commands::Labelled { .. } => other.commands() == objective.commands(),
                    };
                    let Some((_, other_budget, _)) =
                        slis(other).into_iter().find(|(s, _, _)| *s == sli)
                    else {
                        continue;
                    };
                    if !covers {
                        continue;
                    }
                    // A constant share is the same over every window: each severity fires
                    // above its lowest factor (page: 6x over 6 h and 30 m; ticket: 1x over 3 d
                    // and 6 h).
                    for (severity, factor) in [("page", 6.0), ("ticket", 1.0)] {
                        if share > factor * other_budget {
                            expected.push((other, other_budget, severity));
                        }
                    }
                }
                if expected.is_empty() {
                    out.push_str(" []\n");
                    continue;
                }
                out.push('\n');
                for (other, other_budget, severity) in expected {
                    let _ = write!(
                        out,
                        "          - exp_labels:\n              objective: \"{}\"\n              sli: {sli}\n              severity: {severity}\n              service: bot\n            exp_annotations:\n              summary: {}\n              description: {}\n",
                        other.name(),
                        json_string(&summary(other.name(), sli, severity, "bot")),
                        json_string(&description(
                            other,
                            sli,
                            other_budget,
                            &conditions_in_words(severity, options)
                        )),
                    );
                }
            }
        }
    }
    out
}

/// A YAML double-quoted scalar (a JSON string is one).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The Grafana dashboard (JSON): a row per objective with its SLI, the error budget left over
/// the window and the burn rates of the alert windows.
pub fn grafana_dashboard(objectives: &[Objective]) -> String {
    use serde_json::json;
    let mut panels = Vec::new();
    let mut y = 0;
    let mut id = 1;
    for objective in objectives {
        let name = objective.name();
        panels.push(json!({
            "type": "row", "id": id, "title": format!("Objective {name}"),
            "collapsed": false, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
        }));
        id += 1;
        y += 1;
        for (i, (sli, budget, expr)) in slis(objective).into_iter().enumerate() {
            let window = prom_duration(objective.window_length());
            let budget = num(budget);
            let targets = |exprs: &[(String, String)]| -> Vec<serde_json::Value> {
                exprs
                    .iter()
                    .zip('A'..)
                    .map(|((e, legend), r)| {
                        json!({"refId": r.to_string(), "expr": e, "legendFormat": legend,
                               "datasource": {"type": "prometheus", "uid": "${datasource}"}})
                    })
                    .collect()
            };
            let x = (i as i64) * 12;
            let series = |w: &str| {
                format!("objective:bad_ratio:rate{w}{{objective=\"{name}\",sli=\"{sli}\"}}")
            };
            panels.push(json!({
                "type": "timeseries", "id": id,
                "title": format!("{name}: {sli} SLI ({})", promise(objective, sli)),
                "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": "percentunit", "max": 1}},
                "targets": targets(&[
                    (format!("1 - {}", series("5m")), "{{service}} 5m".to_owned()),
                    (format!("1 - {}", series("1h")), "{{service}} 1h".to_owned()),
                ]),
            }));
            panels.push(json!({
                "type": "stat", "id": id + 1,
                "title": format!("{name}: {sli} error budget left ({window})"),
                "gridPos": {"h": 8, "w": 3, "x": x + 6, "y": y},
                "fieldConfig": {"defaults": {"unit": "percentunit"}},
                "targets": targets(&[(
                    format!("1 - ({}) / {budget}", expr(&window)),
                    "{{service}}".to_owned(),
                )]),
            }));
            panels.push(json!({
                "type": "timeseries", "id": id + 2,
                "title": format!("{name}: {sli} burn rate"),
                "gridPos": {"h": 8, "w": 3, "x": x + 9, "y": y},
                "targets": targets(&[
                    (format!("{} / {budget}", series("1h")), "{{service}} 1h".to_owned()),
                    (format!("{} / {budget}", series("6h")), "{{service}} 6h".to_owned()),
                    (format!("{} / {budget}", series("1d")), "{{service}} 1d".to_owned()),
                    (format!("{} / {budget}", series("3d")), "{{service}} 3d".to_owned()),
                ]),
            }));
            id += 3;
        }
        y += 8;
    }
    let dashboard = json!({
        "title": "spanmetrics objectives",
        "uid": "spanmetrics-objectives",
        "schemaVersion": 39,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "label": "Prometheus",
        }]},
        "panels": panels,
    });
    let mut text = serde_json::to_string_pretty(&dashboard).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `spanmetrics-objectives.yml` (the rules), `spanmetrics-objectives.test.yml` (their
/// `promtool test rules` cases, see [`promtool_tests`]) and `spanmetrics-objectives.json` (the
/// dashboard) into `dir`, creating it; returns the paths written.
pub fn write_objectives(
    dir: &Path,
    objectives: &[Objective],
    options: RuleOptions,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let rules = dir.join("spanmetrics-objectives.yml");
    std::fs::write(&rules, prometheus_rules(objectives, options))?;
    let tests = dir.join("spanmetrics-objectives.test.yml");
    std::fs::write(
        &tests,
        promtool_tests(objectives, options, "spanmetrics-objectives.yml"),
    )?;
    let dashboard = dir.join("spanmetrics-objectives.json");
    std::fs::write(&dashboard, grafana_dashboard(objectives))?;
    Ok(vec![rules, tests, dashboard])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_numbers_are_spelled_as_prometheus_reads_them() {
        assert_eq!(prom_duration(Duration::from_secs(300)), "5m");
        assert_eq!(prom_duration(Duration::from_secs(72 * 3600)), "3d");
        assert_eq!(prom_duration(Duration::from_secs(45)), "45s");
        assert_eq!(num(1.0 - 0.995), "0.005");
        assert_eq!(num(14.4), "14.4");
        assert_eq!(num(1.0), "1");
        assert_eq!(le_matcher(Duration::from_millis(250)), "le=~\"0\\\\.25\"");
        assert_eq!(le_matcher(Duration::from_secs(1)), "le=~\"1|1\\\\.0\"");
    }

    #[test]
    fn command_names_are_literals_in_the_selector() {
        let o = Objective::new("x").for_commands(["a.b", "c|d", "say \"hi\""]);
        assert_eq!(selector(&o), r#"command=~"a\\.b|c\\|d|say \"hi\"""#);
    }
}
