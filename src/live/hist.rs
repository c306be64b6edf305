//! A fixed log-linear latency histogram: 4 bins per doubling from 1 µs to about an hour, so a
//! percentile read from it is within about ±9% of the true value (the bin's geometric middle,
//! clamped to the largest value seen).

/// Number of bins: bin 0 holds everything under 1 µs, the last one everything above ~1 h.
pub(crate) const BINS: usize = 128;
/// Bins per doubling of the value.
const PER_OCTAVE: f64 = 4.0;
/// Lower bound of bin 1, in nanoseconds.
const BASE_NS: f64 = 1_000.0;

/// The bin of a duration.
pub(crate) fn bin(ns: u64) -> usize {
    if (ns as f64) < BASE_NS {
        return 0;
    }
    let index = ((ns as f64 / BASE_NS).log2() * PER_OCTAVE).floor() as usize + 1;
    index.min(BINS - 1)
}

/// The value reported for a bin: its geometric middle.
fn representative_ns(bin: usize) -> f64 {
    if bin == 0 {
        return BASE_NS / 2.0;
    }
    BASE_NS * 2f64.powf((bin as f64 - 0.5) / PER_OCTAVE)
}

/// Bin counts.
#[derive(Clone)]
pub(crate) struct Histogram {
    pub(crate) bins: Box<[u32; BINS]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bins: Box::new([0; BINS]),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&mut self, ns: u64) {
        let slot = &mut self.bins[bin(ns)];
        *slot = slot.saturating_add(1);
    }
}

/// Sums of several histograms, for reading percentiles.
pub(crate) struct Merged {
    bins: [u64; BINS],
    total: u64,
}

impl Default for Merged {
    fn default() -> Self {
        Self {
            bins: [0; BINS],
            total: 0,
        }
    }
}

impl Merged {
    pub(crate) fn add(&mut self, histogram: &Histogram) {
        for (sum, n) in self.bins.iter_mut().zip(histogram.bins.iter()) {
            *sum += u64::from(*n);
            self.total += u64::from(*n);
        }
    }

    pub(crate) fn add_merged(&mut self, other: &Merged) {
        for (sum, n) in self.bins.iter_mut().zip(other.bins.iter()) {
            *sum += n;
        }
        self.total += other.total;
    }

    /// How many values are above `threshold_ns`: every bin that starts above the threshold's
    /// own bin (values in that bin count as within it, so this undercounts by at most one bin,
    /// about 19% of the threshold wide).
    pub(crate) fn count_above_ns(&self, threshold_ns: u64) -> u64 {
        self.bins[(bin(threshold_ns) + 1).min(BINS)..].iter().sum()
    }

    /// The `q` quantile (0..=1) in nanoseconds, never above `max_ns`; `None` when empty.
    pub(crate) fn quantile_ns(&self, q: f64, max_ns: u64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bin, n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(representative_ns(bin).min(max_ns as f64));
            }
        }
        Some(max_ns as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_lands_in_a_bin_whose_middle_is_within_ten_percent() {
        for ns in [
            1_000u64,
            1_500,
            42_000,
            999_999,
            5_000_000,
            1_234_567_890,
            60_000_000_000,
        ] {
            let middle = representative_ns(bin(ns));
            let error = (middle - ns as f64).abs() / ns as f64;
            assert!(error < 0.10, "{ns} ns → {middle} ({error})");
        }
        assert_eq!(bin(0), 0);
        assert_eq!(bin(u64::MAX), BINS - 1);
    }

    #[test]
    fn quantiles_rank_the_recorded_values() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let mut m = Merged::default();
        m.add(&h);
        let p50 = m.quantile_ns(0.5, 100_000_000).unwrap();
        let p99 = m.quantile_ns(0.99, 100_000_000).unwrap();
        assert!((p50 / 50e6 - 1.0).abs() < 0.1, "p50 {p50}");
        assert!((p99 / 99e6 - 1.0).abs() < 0.1, "p99 {p99}");
        assert!(m.quantile_ns(1.0, 100_000_000).unwrap() <= 100e6);
        assert_eq!(Merged::default().quantile_ns(0.5, 0), None);
    }
}
