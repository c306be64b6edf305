//! How long the background thread sleeps between drains: long when idle, short enough under
//! load that the busiest ring is drained when about a quarter full.

use std::time::{Duration, Instant};

/// Shortest sleep between two drains of the background thread.
const MIN_SLEEP: Duration = Duration::from_micros(100);

/// How long the background thread sleeps between drains: long enough to cost nothing when
/// idle (the flush interval), short enough under load that the busiest ring is drained when
/// about a quarter full. Waking the thread is a system call that costs the recording thread
/// microseconds on a virtual machine, so recording threads only wake it as a safety net, when a
/// ring is half full; this pacing makes that rare.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    last: Option<Instant>,
}

impl Pace {
    /// The sleep after a drain at `now` that found the busiest ring holding `fullest`.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        fullest: usize,
        capacity: usize,
        interval: Duration,
    ) -> Duration {
        let since = self.last.replace(now).map(|last| now - last);
        let (Some(since), Ok(fullest)) = (since, u32::try_from(fullest)) else {
            return interval;
        };
        if fullest == 0 {
            return interval;
        }
        // The time the busiest ring took to fill by `fullest`, scaled to a quarter of it.
        let quarter = u32::try_from(capacity / 4).unwrap_or(u32::MAX);
        (since / fullest)
            .saturating_mul(quarter)
            .clamp(MIN_SLEEP, interval.max(MIN_SLEEP))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Pace, MIN_SLEEP};

    #[test]
    fn the_background_thread_sleeps_long_when_idle_and_short_under_load() {
        let interval = Duration::from_millis(200);
        let ms = |n: u64| Duration::from_millis(n);
        let start = Instant::now();
        let mut pace = Pace::default();
        assert_eq!(pace.next(start, 0, 4096, interval), interval, "first drain");
        assert_eq!(
            pace.next(start + ms(2), 0, 4096, interval),
            interval,
            "nothing came in"
        );
        // 2048 records in 2 ms: a quarter ring (1024) fills in 1 ms.
        let busy = pace.next(start + ms(4), 2048, 4096, interval);
        assert!(
            busy > Duration::from_micros(990) && busy <= ms(1),
            "{busy:?}"
        );
        // A ring filling slowly: the sleep is capped at the interval.
        assert_eq!(
            pace.next(start + ms(4) + Duration::from_secs(60), 10, 4096, interval),
            interval
        );
        let later = start + Duration::from_secs(61);
        pace.next(later, 0, 4096, interval);
        assert_eq!(
            pace.next(later + ms(1), 1_000_000, 4096, interval),
            MIN_SLEEP,
            "never below the floor"
        );
    }
}
