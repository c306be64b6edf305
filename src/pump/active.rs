//! Commands in flight: every thread's own counts, those of threads gone and those changed on
//! threads whose own were torn down, summed per command id.

use crate::handoff::rings::{ActiveCounts, Ring};

/// The sum per command id of `retired`, `orphans` and every ring's counts.
pub(super) fn totals(retired: &[i64], orphans: &ActiveCounts, rings: &[Ring]) -> Vec<i64> {
    let mut totals = retired.to_vec();
    add_counts(&mut totals, orphans);
    for ring in rings {
        add_counts(&mut totals, &ring.active);
    }
    totals
}

/// Adds `counts` into `totals`, index by index.
pub(super) fn add_counts(totals: &mut Vec<i64>, counts: &ActiveCounts) {
    if totals.len() < counts.len() {
        totals.resize(counts.len(), 0);
    }
    for (id, total) in totals.iter_mut().enumerate().take(counts.len()) {
        *total += counts.get(id);
    }
}
