//! Objectives a deployment declares in `SPANMETRICS_OBJECTIVES_FILE` join the layer's: the
//! health checks judge them. (Here, not in the `pipeline` binary: the guard's shutdown thread
//! sets a scoped subscriber, which that binary's tests must never see.)

use spanmetrics::Telemetry;

/// Valid objectives from a file join the layer: the health checks judge them (no calls yet:
/// `no_data`).
#[test]
fn objectives_from_a_file_reach_the_health_checks() {
    let file = std::env::temp_dir().join(format!("objectives-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"[{"name": "roll-ok", "commands": ["roll"], "success_rate": 0.995,
             "latency": {"ratio": 0.99, "under_ms": 333}}]"#,
    )
    .unwrap();
    let (_layer, guard) = Telemetry::builder()
        .with_prometheus_listen(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))))
        .with_default_log_filter("off")
        .with_env([(
            "SPANMETRICS_OBJECTIVES_FILE".to_owned(),
            file.to_string_lossy().into_owned(),
        )])
        .build::<tracing_subscriber::Registry>()
        .expect("valid objectives");
    let _ = std::fs::remove_file(&file);
    let live = guard
        .spanmetrics()
        .live()
        .expect("live statistics with the endpoint");
    let health = live.health(&spanmetrics::HealthObjectives::default());
    for check in ["objective:roll-ok:success", "objective:roll-ok:latency"] {
        assert_eq!(
            health.check(check).map(|c| c.status),
            Some(spanmetrics::live::CheckStatus::NoData),
            "{health:?}"
        );
    }
}
