//! Timestamps for the hot path: raw TSC reads (about 10 ns), scaled to nanoseconds only when a
//! span closes. Falls back to the OS monotonic clock where the TSC is not usable.

use std::sync::OnceLock;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// The process-wide clock; calibrated once.
pub(crate) fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}
