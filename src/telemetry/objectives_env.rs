//! Objectives for deployments: `SPANMETRICS_OBJECTIVES` (JSON in the variable) or
//! `SPANMETRICS_OBJECTIVES_FILE` (the path of a JSON file), read, checked and added to the
//! layer's own, so that a deployment can set or tighten its targets without a rebuild.
//!
//! ```json
//! [
//!   {"name": "roll-ok", "commands": ["roll"], "success_rate": 0.995},
//!   {"name": "vip-fast", "label": {"tier": "vip"}, "latency": {"ratio": 0.99, "under_ms": 250},
//!    "window_days": 28}
//! ]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::env::Env;
use super::error::InitError;
use crate::objectives::Objective;

/// One objective as written in the JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    name: String,
    #[serde(default)]
    commands: Vec<String>,
    /// `{"label": "value"}`: the commands whose allow-listed label has this value.
    label: Option<BTreeMap<String, String>>,
    success_rate: Option<f64>,
    latency: Option<WrittenLatency>,
    window_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenLatency {
    ratio: f64,
    under_ms: f64,
}

const SHAPE: &str = "a JSON list of objectives like [{\"name\": \"roll-ok\", \"commands\": [\"roll\"], \"success_rate\": 0.995, \"latency\": {\"ratio\": 0.99, \"under_ms\": 250}, \"window_days\": 30}] (or \"label\": {\"tier\": \"vip\"} instead of \"commands\")";

fn invalid(variable: &str, value: &str, problem: String) -> InitError {
    InitError::Objectives {
        variable: variable.to_owned(),
        value: value.to_owned(),
        problem,
    }
}

/// The objectives of `json` (the value of `variable`, or of the file it names).
fn parse(variable: &str, value: &str, json: &str) -> Result<Vec<Objective>, InitError> {
    let written: Vec<Written> = serde_json::from_str(json)
        .map_err(|e| invalid(variable, value, format!("{e}; expected {SHAPE}")))?;
    let mut objectives = Vec::with_capacity(written.len());
    for w in written {
        let mut objective = Objective::new(w.name.clone());
        objective = match (w.commands.is_empty(), w.label) {
            (false, None) => objective.for_commands(w.commands),
            (true, Some(label)) if label.len() == 1 => {
                let (label, value) = label.into_iter().next().unwrap_or_default();
                objective.for_label(label, value)
            }
            (true, Some(_)) => {
                return Err(invalid(
                    variable,
                    value,
                    format!(
                        "objective `{}`: \"label\" takes exactly one label and its value",
                        w.name
                    ),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid(
                    variable,
                    value,
                    format!(
                        "objective `{}`: give \"commands\" or \"label\", not both",
                        w.name
                    ),
                ))
            }
            // Refused with the builder's own message (no command).
            (true, None) => objective,
        };
        if let Some(target) = w.success_rate {
            objective = objective.success_rate(target);
        }
        if let Some(latency) = w.latency {
            if !(latency.under_ms.is_finite() && latency.under_ms > 0.0) {
                return Err(invalid(
                    variable,
                    value,
                    format!(
                        "objective `{}`: latency.under_ms must be a number of milliseconds above 0, got {}",
                        w.name, latency.under_ms
                    ),
                ));
            }
            objective = objective.latency(
                latency.ratio,
                Duration::from_secs_f64(latency.under_ms.min(1e12) / 1e3),
            );
        }
        if let Some(days) = w.window_days {
            objective = objective.window(Duration::from_secs(u64::from(days) * 86_400));
        }
        objectives.push(objective);
    }
    Ok(objectives)
}

/// The objectives the environment declares.
pub(crate) struct FromEnv {
    pub(crate) objectives: Vec<Objective>,
    /// The variable and value they came from (for errors); `None` when neither is set.
    pub(crate) source: Option<(String, String)>,
}

/// The objectives the environment declares (none when neither variable is set).
pub(crate) fn objectives(env: &Env) -> Result<FromEnv, InitError> {
    const INLINE: &str = "SPANMETRICS_OBJECTIVES";
    const FILE: &str = "SPANMETRICS_OBJECTIVES_FILE";
    let from = |variable: &str, value: &str, json: &str| -> Result<FromEnv, InitError> {
        Ok(FromEnv {
            objectives: parse(variable, value, json)?,
            source: Some((variable.to_owned(), value.to_owned())),
        })
    };
    match (env.raw(INLINE), env.raw(FILE)) {
        (None, None) => Ok(FromEnv {
            objectives: Vec::new(),
            source: None,
        }),
        (Some(_), Some(file)) => Err(invalid(
            FILE,
            file,
            format!("set {INLINE} or {FILE}, not both"),
        )),
        (Some(json), None) => from(INLINE, json, json),
        (None, Some(path)) => {
            let json = std::fs::read_to_string(path)
                .map_err(|e| invalid(FILE, path, format!("the file cannot be read: {e}")))?;
            from(FILE, path, &json)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_objectives_are_the_builders_own() {
        let json = r#"[{"name": "a", "commands": ["roll", "ask"], "success_rate": 0.995,
                       "latency": {"ratio": 0.99, "under_ms": 250}, "window_days": 28},
                      {"name": "b", "label": {"tier": "vip"}, "success_rate": 0.9}]"#;
        let parsed = parse("V", "v", json).unwrap();
        assert_eq!(
            parsed,
            [
                Objective::new("a")
                    .for_commands(["roll", "ask"])
                    .success_rate(0.995)
                    .latency(0.99, Duration::from_millis(250))
                    .window(Duration::from_secs(28 * 86_400)),
                Objective::new("b")
                    .for_label("tier", "vip")
                    .success_rate(0.9),
            ]
        );
    }
}
