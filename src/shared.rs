//! The layer's background side: the state its hot path shares with its handles and its
//! background thread, the hand-over of records (including under overload), the thread itself,
//! and the public handle.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use crate::buffer::Buffers;
use crate::callsite::CallsiteTable;
use crate::config::{Config, MeterSink};
use crate::export::otel::{Callbacks, Instruments};
use crate::export::recorder::RecorderHandles;
use crate::export::{self, Pump};
use crate::record::{PushError, Record};
use crate::registry::Registry;
use crate::spans::SpanTable;

/// State shared by the layer, its handles and its background thread.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) callsites: CallsiteTable,
    pub(crate) spans: SpanTable,
    pub(crate) registry: Registry,
    pub(crate) buffers: Buffers,
    pump: Mutex<Pump>,
    pub(crate) clock: &'static quanta::Clock,
}

impl Shared {
    pub(crate) fn new(config: Config, weak: &Weak<Shared>) -> Self {
        let recorder = RecorderHandles::new(config.recorder.clone());
        let meter = match &config.meter {
            MeterSink::Global => Some(opentelemetry::global::meter_with_scope(crate::scope())),
            MeterSink::Meter(meter) => Some(meter.clone()),
            MeterSink::Off => None,
        };
        let instruments = meter.map(|meter| {
            let (active, dropped) = (weak.clone(), weak.clone());
            Instruments::new(
                &meter,
                &config.buckets,
                Callbacks {
                    // Collection forwards what is buffered first, so an export is never stale.
                    active: Box::new(move |observe| {
                        if let Some(shared) = active.upgrade() {
                            let mut pump = shared.lock_pump();
                            pump.drain(&shared.context(), true);
                            pump.observe_active(observe);
                        }
                    }),
                    dropped: Box::new(move || dropped.upgrade().map(|s| s.buffers.dropped())),
                },
            )
        });
        Self {
            registry: Registry::new(config.max_series, config.max_marks),
            buffers: Buffers::new(config.buffer_capacity, config.overload_memory),
            callsites: CallsiteTable::new(),
            spans: SpanTable::new(),
            pump: Mutex::new(Pump::new(recorder, instruments)),
            clock: crate::clock::clock(),
            config,
        }
    }

    fn lock_pump(&self) -> std::sync::MutexGuard<'_, Pump> {
        self.pump.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn context(&self) -> export::Context<'_> {
        export::Context {
            config: &self.config,
            registry: &self.registry,
            buffers: &self.buffers,
        }
    }

    /// Forwards everything buffered and brings the in-flight gauges up to date.
    pub(crate) fn flush(&self) {
        self.lock_pump().drain(&self.context(), true);
    }

    /// The background thread's drain.
    fn drain_paced(&self) -> export::Drained {
        self.lock_pump().drain(&self.context(), false)
    }

    /// Hands a record to the background side.
    pub(crate) fn record(&self, record: Record) {
        self.handle_push(self.buffers.try_push(record), record);
    }

    /// Hands the record of a span closing to the background side, and counts the span out of
    /// its command's in-flight count.
    pub(crate) fn record_closing(&self, command: u32, record: Record) {
        self.handle_push(self.buffers.try_push_closing(command, record), record);
    }

    fn handle_push(&self, pushed: Result<(), PushError>, record: Record) {
        match pushed {
            Ok(()) => {}
            Err(PushError::Full) => self.record_when_full(record),
            // The thread is exiting and its ring is gone, or this is a re-entrant call.
            Err(PushError::Unavailable) => self.to_backlog(record),
        }
    }

    /// This thread's ring is full: the background thread has fallen behind. The thread waits
    /// for it to make room for as long as it makes progress (overload slows the threads that
    /// cause it instead of losing data); only once it has made none for the overload wait does
    /// the record go to the backlog instead ([`crate::overload`]).
    #[cold]
    #[inline(never)]
    fn record_when_full(&self, record: Record) {
        if export::is_forwarding() {
            // A sink recording a command span while this thread forwards: it cannot wait for
            // itself.
            return self.to_backlog(record);
        }
        let Some(waker) = self.buffers.waker() else {
            // No background thread could be started: this thread forwards for itself when
            // nobody else is (never waiting for the one who is).
            let pump = match self.pump.try_lock() {
                Ok(pump) => Some(pump),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut pump) = pump {
                pump.drain(&self.context(), false);
            }
            if self.buffers.try_push(record).is_err() {
                self.to_backlog(record);
            }
            return;
        };
        let Some(waiter) = self.buffers.waiter() else {
            return self.to_backlog(record);
        };
        let pushed = self.buffers.overload().wait_for_room(
            self.config.overload_wait,
            waker,
            &waiter,
            || self.buffers.try_push(record),
        );
        if pushed.is_err() {
            self.to_backlog(record);
        }
    }

    /// Queues a record no ring could take; past the backlog's memory bound it is dropped,
    /// counted and (once) logged.
    #[cold]
    fn to_backlog(&self, record: Record) {
        let overload = self.buffers.overload();
        // Forwarded by the next drain: within the flush interval, or by `flush()`.
        if !overload.push_backlog(record) {
            self.buffers.count_dropped();
            overload.log_drop_once();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Forward what is still buffered, then let the background thread see it is alone.
        self.flush();
        if let Some(thread) = self.buffers.waker() {
            thread.unpark();
        }
    }
}

pub(crate) fn spawn_background(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("spanmetrics".into())
        .spawn(move || {
            // Nothing this thread does may be traced by the layer that it serves.
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                let mut pace = Pace::default();
                while let Some(shared) = weak.upgrade() {
                    let drained = shared.drain_paced();
                    let mut sleep = pace.next(
                        Instant::now(),
                        drained.fullest,
                        shared.config.buffer_capacity,
                        shared.config.flush_interval,
                    );
                    if drained.active_pending {
                        sleep = sleep.min(export::ACTIVE_PERIOD);
                    }
                    drop(shared);
                    std::thread::park_timeout(sleep);
                }
            })
        });
    match spawned {
        Ok(handle) => shared.buffers.set_waker(handle.thread().clone()),
        // Records are still forwarded on `flush()` and on every OpenTelemetry collection.
        Err(error) => eprintln!("spanmetrics: cannot start the background thread: {error}"),
    }
}

/// Shortest sleep between two drains of the background thread.
const MIN_SLEEP: Duration = Duration::from_micros(100);

/// How long the background thread sleeps between drains: long enough to cost nothing when
/// idle (the flush interval), short enough under load that the busiest ring is drained when
/// about a quarter full. Waking the thread is a system call that costs the recording thread
/// microseconds on a virtual machine, so recording threads only wake it as a safety net, when a
/// ring is half full; this pacing makes that rare.
#[derive(Debug, Default)]
struct Pace {
    last: Option<Instant>,
}

impl Pace {
    /// The sleep after a drain at `now` that found the busiest ring holding `fullest`.
    fn next(
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

/// A cheap, cloneable handle to a layer's background side.
#[derive(Clone)]
pub struct SpanMetricsHandle {
    pub(crate) shared: Arc<Shared>,
}

impl SpanMetricsHandle {
    /// Forwards every measurement buffered so far to the sinks, at once.
    ///
    /// The background thread does this every flush interval, and an OpenTelemetry collection
    /// does it first; call it before reading a `metrics` recorder directly (in tests, or
    /// before rendering a Prometheus page yourself). With the global `metrics` recorder, call
    /// it outside `metrics::with_local_recorder` scopes: new series are registered on the
    /// recorder the calling thread sees.
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Number of measurements dropped so far: 0 unless the background thread stalled long
    /// enough for the overload backlog to fill ([`crate::Builder::with_overload_memory`]), or a
    /// sink panicked while recording them.
    pub fn dropped(&self) -> u64 {
        self.shared.buffers.dropped()
    }
}

impl fmt::Debug for SpanMetricsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanMetricsHandle").finish_non_exhaustive()
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
