//! Shared by the benches: reading the estimates criterion saved, to print ratios at the end.

use std::path::PathBuf;

/// Where criterion saved its estimates: `$CRITERION_HOME`, else `target/criterion` under
/// `$CARGO_TARGET_DIR` or the package root (cargo runs benches from there).
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("criterion")
}

/// Typical ns per call of one benchmark in its latest saved run: criterion's slope when it
/// fitted one, else the mean.
pub fn estimate(group: &str, function: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(function.replace('/', "_"))
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let typical = match json.get("slope") {
        Some(slope) if !slope.is_null() => slope,
        _ => json.get("mean")?,
    };
    typical.get("point_estimate")?.as_f64()
}
