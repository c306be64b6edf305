//! The state a layer's hot path shares with its handles and its background thread, and the
//! hand-over of a record, including the overload policy when a thread's ring is full.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};

use crate::capture::callsite::CallsiteTable;
use crate::capture::catalog::Catalog;
use crate::capture::spans::SpanTable;
use crate::config::Config;
use crate::handoff::forwarding::is_forwarding;
use crate::handoff::notable::Notables;
use crate::handoff::record::{PushError, Record};
use crate::handoff::rings::Buffers;
use crate::live::windows::Windows;
use crate::pump::{self, Drained, Pump};
use crate::sink::metrics::{MetricsSink, RecorderTarget};
use crate::sink::otel::{Hooks, MeterTarget, OtelSink};
use crate::sink::CommandFeed;

/// The sinks of a layer: either may be off.
pub(crate) type Sinks = (Option<MetricsSink>, Option<OtelSink>);

/// Where a layer's measurements go, as the builder chose.
#[derive(Clone, Default)]
pub(crate) struct Targets {
    /// The `metrics` facade; `None` when off.
    pub(crate) recorder: Option<RecorderTarget>,
    /// OpenTelemetry; `None` when off.
    pub(crate) meter: Option<MeterTarget>,
    /// The live statistics and the notable queue that feeds them, when on.
    pub(crate) live: Option<(Arc<Windows>, Arc<Notables>)>,
}

/// State shared by the layer, its handles and its background thread.
pub(crate) struct Engine {
    /// The settings, fixed at build.
    pub(crate) config: Config,
    /// Callsite decisions, read on every callback.
    pub(crate) callsites: CallsiteTable,
    /// The state of command spans in flight.
    pub(crate) spans: SpanTable,
    /// Commands, series keys, error types and marks as ids.
    pub(crate) catalog: Catalog,
    /// The rings, the overload backlog and the dropped count.
    pub(crate) buffers: Buffers,
    /// The consumer side, locked by whoever drains (background thread, flush, collection).
    pump: Mutex<Pump<Sinks>>,
    /// The hot path's clock.
    pub(crate) clock: &'static quanta::Clock,
    /// Failed and slow commands for the live statistics, when on.
    pub(crate) notables: Option<Arc<Notables>>,
    /// The live statistics, when on.
    pub(crate) windows: Option<Arc<Windows>>,
}

impl Engine {
    pub(crate) fn new(config: Config, targets: Targets, weak: &Weak<Engine>) -> Self {
        let metrics = targets.recorder.map(MetricsSink::new);
        let otel = targets.meter.map(|meter| {
            let (collecting, dropped) = (weak.clone(), weak.clone());
            let hooks = Hooks {
                // Collection forwards what is buffered first, so an export is never stale.
                before_collect: Box::new(move || match collecting.upgrade() {
                    Some(engine) => {
                        engine.flush();
                        true
                    }
                    None => false,
                }),
                dropped: Box::new(move || dropped.upgrade().map(|e| e.buffers.dropped())),
            };
            OtelSink::new(&meter, &config.histogram_bounds(), hooks)
        });
        let (windows, notables) = targets.live.unzip();
        let feed = windows
            .clone()
            .map(|windows| windows as Arc<dyn CommandFeed>);
        Self {
            catalog: Catalog::new(config.max_series, config.max_marks),
            buffers: Buffers::new(config.buffer_capacity, config.overload_memory),
            callsites: CallsiteTable::new(),
            spans: SpanTable::new(),
            pump: Mutex::new(Pump::new((metrics, otel), feed)),
            clock: crate::capture::clock::clock(),
            config,
            notables,
            windows,
        }
    }

    fn lock_pump(&self) -> MutexGuard<'_, Pump<Sinks>> {
        self.pump.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn context(&self) -> pump::Context<'_> {
        pump::Context {
            config: &self.config,
            catalog: &self.catalog,
            buffers: &self.buffers,
        }
    }

    /// Forwards everything buffered and brings the in-flight gauges up to date.
    pub(crate) fn flush(&self) {
        self.lock_pump().drain(&self.context(), true);
    }

    /// The background thread's drain.
    pub(crate) fn drain_paced(&self) -> Drained {
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
    /// the record go to the backlog instead ([`crate::handoff::overload`]).
    #[cold]
    #[inline(never)]
    fn record_when_full(&self, record: Record) {
        if is_forwarding() {
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

impl Drop for Engine {
    fn drop(&mut self) {
        // Forward what is still buffered, then let the background thread see it is alone.
        self.flush();
        if let Some(thread) = self.buffers.waker() {
            thread.unpark();
        }
    }
}
