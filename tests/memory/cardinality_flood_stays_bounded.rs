//! A flood of distinct command names and label values (a million of each) must leave memory
//! bounded, fold everything past the cap into the overflow series, and count every folded record.

use crate::two_sinks::Fixture;
use spanmetrics::names::OTEL_DURATION;

/// Resident memory of this process, from /proc (Linux).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

#[test]
fn a_million_distinct_commands_and_label_values_stay_bounded_and_counted() {
    const WARM_UP: u64 = 20_000;
    const FLOOD: u64 = 1_000_000;
    // The bound: the caps keep the layer's own state to a few MiB whatever the flood; the rest
    // is allocator slack and the metrics libraries' own per-series storage.
    const BOUND: u64 = 64 * 1024 * 1024;
    let fx = Fixture::with(|b| b.with_label("user").unwrap());
    let run = |from: u64, to: u64| {
        fx.run(|| {
            for i in from..to {
                let name = format!("cmd-{i}");
                let span = tracing::info_span!("h", command = %name, user = i);
                drop(span);
                // Render now and then: the Prometheus exporter keeps raw samples until then.
                if i % 100_000 == 0 {
                    fx.handle.flush();
                    let _ = fx.snapshot();
                }
            }
        });
    };
    run(0, WARM_UP);
    let _ = fx.snapshot();
    let before = resident_bytes();
    run(WARM_UP, WARM_UP + FLOOD);
    let snap = fx.snapshot();
    let after = resident_bytes();

    let counts = snap.counts(OTEL_DURATION);
    let total: u64 = counts.values().sum();
    assert_eq!(
        total,
        WARM_UP + FLOOD,
        "every record is counted somewhere ({} dropped)",
        fx.handle.dropped()
    );
    assert_eq!(fx.handle.dropped(), 0);
    assert!(
        counts.len() <= 2001,
        "at most the cap plus the overflow series: {}",
        counts.len()
    );
    let overflow: u64 = counts
        .iter()
        .filter(|(labels, _)| labels.contains_key(spanmetrics::names::ATTR_OVERFLOW))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        snap.folded(OTEL_DURATION),
        overflow,
        "folded records are counted"
    );
    assert!(overflow >= WARM_UP + FLOOD - 2000);
    assert!(
        after.saturating_sub(before) < BOUND,
        "resident memory grew by {} MiB during the flood",
        after.saturating_sub(before) / (1024 * 1024)
    );
    eprintln!(
        "flood of {FLOOD}: resident {} MiB before, {} MiB after, {overflow} records folded",
        before / (1024 * 1024),
        after / (1024 * 1024)
    );
}
