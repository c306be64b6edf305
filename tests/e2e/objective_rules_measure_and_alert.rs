//! Objectives declared in code: the rules, alert tests and dashboard spanmetrics generates
//! pass the real `promtool` (`check rules`, and `test rules` with the generated cases: each
//! alert fires on a series that burns the budget and stays silent on one within it), a broken
//! rule fails those cases, and `collector-config/` holds exactly what the example bot's
//! objectives generate.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spanmetrics::objectives::rules::{self, RuleOptions};
use spanmetrics::objectives::Objective;

use crate::alerts_fire_on_a_real_prometheus::{bot_binary, TempDir};
use crate::processes::tool;

fn promtool(promtool: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Objectives of every shape: by name and by label, success and latency, a tight and a loose
/// budget (where a page can never fire), a threshold on a whole second (`le="1"`).
fn objectives() -> Vec<Objective> {
    vec![
        Objective::new("roll-ok")
            .for_commands(["roll", "dice.roll"])
            .success_rate(0.999),
        Objective::new("roll-fast")
            .for_commands(["roll"])
            .latency(0.99, Duration::from_millis(250)),
        Objective::new("vip")
            .for_label("tier", "vip")
            .success_rate(0.99)
            .latency(0.9, Duration::from_secs(1)),
        Objective::new("best-effort")
            .for_commands(["fetch"])
            .success_rate(0.8),
    ]
}

#[test]
fn generated_rules_pass_promtool_and_every_alert_fires_only_when_the_budget_burns() {
    let Some(promtool_path) = tool("PROMTOOL") else {
        return;
    };
    // The label-selected objective needs its label allow-listed: the builder checks.
    let mut layer = spanmetrics::SpanMetricsLayer::builder()
        .with_label("tier")
        .unwrap();
    for objective in objectives() {
        layer = layer.with_objective(objective).unwrap();
    }
    // Both latency thresholds are bucket bounds, in order, beside the defaults.
    let bounds = layer.histogram_bounds();
    assert!(
        bounds.contains(&0.25) && bounds.contains(&1.0),
        "{bounds:?}"
    );

    let dir = TempDir::new("promtool");
    let written = rules::write_objectives(&dir.0, layer.objectives(), RuleOptions::default())
        .expect("write the objective files");
    assert_eq!(written.len(), 3);
    let (ok, out) = promtool(
        &promtool_path,
        &["check", "rules", "spanmetrics-objectives.yml"],
        &dir.0,
    );
    assert!(ok, "{out}");
    let tests = std::fs::read_to_string(dir.0.join("spanmetrics-objectives.test.yml")).unwrap();
    // Two cases per objective and SLI, and alerts expected in the burning ones.
    assert_eq!(tests.matches("input_series:").count(), 2 * 5, "{tests}");
    assert!(tests.matches("severity: page").count() >= 4, "{tests}");
    assert!(
        tests.contains("objective: \"best-effort\"\n              sli: success\n              severity: ticket"),
        "{tests}"
    );
    let (ok, out) = promtool(
        &promtool_path,
        &["test", "rules", "spanmetrics-objectives.test.yml"],
        &dir.0,
    );
    assert!(ok, "{out}");

    // The dashboard's queries are valid PromQL: promtool checks them as recording rules.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.0.join("spanmetrics-objectives.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        exprs.len(),
        5 * (2 + 1 + 4),
        "SLI, budget and burn panels per SLI"
    );
    let mut as_rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        as_rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::Value::String(expr.clone())
        ));
    }
    std::fs::write(dir.0.join("dashboard.yml"), as_rules).unwrap();
    let (ok, out) = promtool(&promtool_path, &["check", "rules", "dashboard.yml"], &dir.0);
    assert!(ok, "{out}");
}

/// The generated cases can fail: rules that read the wrong bucket, or that were generated for
/// a looser target, do not pass them.
#[test]
fn the_generated_alert_tests_catch_broken_rules() {
    let Some(promtool_path) = tool("PROMTOOL") else {
        return;
    };
    let dir = TempDir::new("broken");
    let objectives = objectives();
    rules::write_objectives(&dir.0, &objectives, RuleOptions::default()).unwrap();
    let rules_file = dir.0.join("spanmetrics-objectives.yml");
    let good = std::fs::read_to_string(&rules_file).unwrap();
    let wrong_bucket = good.replace("le=~\"0\\\\.25\"", "le=~\"0\\\\.5\"");
    assert_ne!(wrong_bucket, good);
    let looser: Vec<Objective> = objectives
        .iter()
        .map(|o| match o.success_target() {
            Some(_) => o.clone().success_rate(0.5),
            None => o.clone(),
        })
        .collect();
    for broken in [
        wrong_bucket,
        rules::prometheus_rules(&looser, RuleOptions::default()),
    ] {
        std::fs::write(&rules_file, broken).unwrap();
        let (ok, out) = promtool(
            &promtool_path,
            &["test", "rules", "spanmetrics-objectives.test.yml"],
            &dir.0,
        );
        assert!(!ok, "broken rules passed the generated tests: {out}");
        assert!(out.contains("FAILED"), "{out}");
    }
}

/// `collector-config/` holds what the example bot's objectives generate (regenerate with
/// `scripts/generate-objectives.sh`).
#[test]
fn collector_config_holds_the_example_bots_generated_objective_files() {
    let dir = TempDir::new("example");
    let output = Command::new(bot_binary())
        .arg("--write-objectives")
        .arg(&dir.0)
        .output()
        .expect("the example runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector-config");
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let tests = read(&dir.0.join("spanmetrics-objectives.test.yml")).replace(
        "  - \"spanmetrics-objectives.yml\"",
        "  - \"../rules/spanmetrics-objectives.yml\"",
    );
    for (generated, checked_in) in [
        (
            read(&dir.0.join("spanmetrics-objectives.yml")),
            config.join("prometheus/rules/spanmetrics-objectives.yml"),
        ),
        (
            tests,
            config.join("prometheus/tests/spanmetrics-objectives.test.yml"),
        ),
        (
            read(&dir.0.join("spanmetrics-objectives.json")),
            config.join("grafana/dashboards/spanmetrics-objectives.json"),
        ),
    ] {
        assert!(
            generated == read(&checked_in),
            "{} differs from what the example bot's objectives generate: run scripts/generate-objectives.sh",
            checked_in.display()
        );
    }
}
