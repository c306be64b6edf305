//! Every objective that cannot be measured is refused when it is declared, with a message that
//! says which objective and what is wrong; the thresholds of the accepted ones become histogram
//! bounds however the buckets are set.

use std::time::Duration;

use spanmetrics::objectives::Objective;
use spanmetrics::{BuildError, SpanMetricsLayer};

fn refused(objective: Objective) -> String {
    match SpanMetricsLayer::builder()
        .with_label("tier")
        .unwrap()
        .with_objective(objective)
    {
        Err(BuildError::Objective(message)) => message,
        Err(other) => panic!("expected an objective error, got {other}"),
        Ok(_) => panic!("expected an objective error, got a builder"),
    }
}

#[test]
fn each_invalid_objective_is_refused_naming_it_and_the_problem() {
    let ok = || Objective::new("o").for_commands(["roll"]);
    let cases: Vec<(Objective, &str)> = vec![
        (ok().success_rate(1.0), "between 0 and 1"),
        (ok().success_rate(0.0), "between 0 and 1"),
        (ok().success_rate(f64::NAN), "between 0 and 1"),
        (ok().success_rate(99.5), "between 0 and 1"),
        (
            ok().latency(1.5, Duration::from_millis(1)),
            "between 0 and 1",
        ),
        (ok().latency(0.99, Duration::ZERO), "above 0"),
        (ok().latency(0.99, Duration::from_secs(7200)), "at most 1 h"),
        (ok(), "no target"),
        (Objective::new("o").success_rate(0.9), "covers no command"),
        (
            Objective::new("o")
                .for_commands(Vec::<String>::new())
                .success_rate(0.9),
            "covers no command",
        ),
        (
            Objective::new("o").for_commands([""]).success_rate(0.9),
            "empty command",
        ),
        (
            Objective::new("o")
                .for_label("platform", "twitch")
                .success_rate(0.9),
            "not allow-listed",
        ),
        (
            Objective::new("o").for_label("tier", "").success_rate(0.9),
            "empty value",
        ),
        (
            ok().success_rate(0.9).window(Duration::from_secs(86_400)),
            "3 to 366 days",
        ),
        (
            ok().success_rate(0.9)
                .window(Duration::from_secs(400 * 86_400)),
            "3 to 366 days",
        ),
        (
            Objective::new("has space")
                .for_commands(["roll"])
                .success_rate(0.9),
            "letters, digits",
        ),
        (
            Objective::new("").for_commands(["roll"]).success_rate(0.9),
            "non-empty",
        ),
    ];
    for (objective, problem) in cases {
        let name = objective.name().to_owned();
        let message = refused(objective);
        assert!(message.contains(problem), "{message} should say {problem}");
        assert!(
            message.contains(&format!("{name:?}")) || message.contains(&format!("`{name}`")),
            "{message} should name {name:?}"
        );
    }
}

#[test]
fn two_objectives_with_one_name_are_refused() {
    let objective = || {
        Objective::new("fast")
            .for_commands(["roll"])
            .success_rate(0.99)
    };
    let result = SpanMetricsLayer::builder()
        .with_objective(objective())
        .unwrap()
        .with_objective(objective().success_rate(0.9));
    match result {
        Err(BuildError::Objective(message)) => {
            assert!(
                message.contains("two objectives are named `fast`"),
                "{message}"
            )
        }
        _ => panic!("a second objective named `fast` must be refused"),
    }
}

#[test]
fn thresholds_join_custom_buckets_before_or_after_they_are_set() {
    let objective = Objective::new("fast")
        .for_commands(["roll"])
        .latency(0.99, Duration::from_millis(250));
    let before = SpanMetricsLayer::builder()
        .with_objective(objective.clone())
        .unwrap()
        .with_buckets(&[0.1, 1.0])
        .unwrap();
    let after = SpanMetricsLayer::builder()
        .with_buckets(&[0.1, 1.0])
        .unwrap()
        .with_objective(objective)
        .unwrap();
    assert_eq!(before.histogram_bounds(), [0.1, 0.25, 1.0]);
    assert_eq!(after.histogram_bounds(), [0.1, 0.25, 1.0]);
    assert_eq!(
        SpanMetricsLayer::builder().histogram_bounds(),
        spanmetrics::names::DEFAULT_BUCKETS
    );
}
