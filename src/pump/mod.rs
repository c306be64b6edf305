//! The background pump: drains the per-thread rings and the overload backlog, applies the
//! cardinality caps, keeps the in-flight counts, and writes each record into a [`Sink`]
//! through handles resolved once per series. It runs on the layer's background thread, on
//! `flush()` and inside an OpenTelemetry collection, never on a thread that is recording.

mod active;
pub(crate) mod pace;
mod series;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::catalog::Catalog;
use crate::config::Config;
use crate::handoff::forwarding::Forwarding;
use crate::handoff::record::Record;
use crate::handoff::rings::{Buffers, Ring};
use crate::sink::{CommandFeed, FinishedCommand, Sink};

use self::series::{Resolve, SeriesTable};

const NANOS_PER_SECOND: f64 = 1e9;
/// Records forwarded before their ring slots are released to the producer.
const DRAIN_SLICE: usize = 256;
/// Records forwarded between two signs of progress to threads waiting for room.
const PROGRESS_STEP: usize = 16;
/// Least time between two updates of the in-flight gauges by the background thread.
pub(crate) const ACTIVE_PERIOD: Duration = Duration::from_millis(1);

/// Background aggregation state of one layer.
pub(crate) struct Pump<S: Sink> {
    /// The rings of every thread that has recorded, drained in turn.
    rings: Vec<Ring>,
    /// In-flight counts of threads that have exited, per command id.
    retired: Vec<i64>,
    /// When the in-flight gauges were last worked out.
    active_at: Option<Instant>,
    /// Records came in since then.
    active_stale: bool,
    sink: S,
    /// The handles of every series, with the caps applied.
    table: SeriesTable<S>,
    /// Descriptions are registered with the first records, not when the layer is built: a
    /// global recorder installed after the layer still gets them.
    described: bool,
    /// The live statistics, fed once per drain.
    feed: Option<Arc<dyn CommandFeed>>,
    /// Finished commands for `feed`, gathered during a drain.
    finished: Vec<FinishedCommand>,
}

/// What a drain found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Drained {
    /// The most records one ring held.
    pub(crate) fullest: usize,
    /// The in-flight gauges were not brought up to date this time, though records came in.
    pub(crate) active_pending: bool,
}

/// What a drain needs to read besides the pump itself.
pub(crate) struct Context<'a> {
    pub(crate) config: &'a Config,
    pub(crate) catalog: &'a Catalog,
    pub(crate) buffers: &'a Buffers,
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / NANOS_PER_SECOND
}

impl<S: Sink> Pump<S> {
    pub(crate) fn new(sink: S, feed: Option<Arc<dyn CommandFeed>>) -> Self {
        Self {
            rings: Vec::new(),
            retired: Vec::new(),
            active_at: None,
            active_stale: false,
            sink,
            table: SeriesTable::new(),
            described: false,
            feed,
            finished: Vec::new(),
        }
    }

    /// Forwards everything buffered so far to the sinks, and brings the in-flight gauges up to
    /// date (when `fresh`, or at most every [`ACTIVE_PERIOD`] otherwise: working them out reads
    /// every thread's counts).
    pub(crate) fn drain(&mut self, cx: &Context<'_>, fresh: bool) -> Drained {
        let _forwarding = Forwarding::start();
        self.rings.extend(cx.buffers.take_new());
        let mut rings = std::mem::take(&mut self.rings);
        let mut fullest = 0;
        for ring in &mut rings {
            let consumer = &mut ring.records;
            // In slices, whose ring slots are released as each slice ends.
            let mut available = consumer.slots();
            let ring_had_records = available > 0;
            fullest = fullest.max(available);
            while available > 0 {
                let take = available.min(DRAIN_SLICE);
                let Ok(chunk) = consumer.read_chunk(take) else {
                    break;
                };
                for (n, record) in chunk.into_iter().enumerate() {
                    self.apply_caught(cx, record);
                    if n % PROGRESS_STEP == PROGRESS_STEP - 1 {
                        // Proof of life for threads waiting on a full ring (see `overload`).
                        cx.buffers.overload().advanced();
                    }
                }
                available -= take;
            }
            if ring_had_records {
                // The ring has room again: wake its producer if it waits for it.
                cx.buffers.overload().made_room(&ring.waiter);
            }
        }
        self.rings = self.retire(cx, rings);
        // What is in the backlog now; records queued meanwhile wait for the next drain.
        let overload = cx.buffers.overload();
        let mut backlog = overload.backlog_len();
        fullest = fullest.max(backlog);
        while backlog > 0 {
            let take = PROGRESS_STEP.min(backlog);
            for record in std::iter::from_fn(|| overload.pop_backlog()).take(take) {
                self.apply_caught(cx, record);
            }
            backlog -= take;
            overload.advanced();
        }
        // A drain with nothing to forward is progress too: the background thread is alive.
        overload.advanced();
        // Registering, describing and publishing call into the sinks too: a panic there is
        // contained like one in a record call (nothing is lost; the gauges catch up later).
        let _contained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.upkeep(cx, fresh, fullest);
        }));
        Drained {
            fullest,
            active_pending: self.active_stale,
        }
    }

    /// Describes the metrics once, brings the in-flight gauges up to date when due, publishes
    /// them and hands finished commands to the live statistics.
    fn upkeep(&mut self, cx: &Context<'_>, fresh: bool, fullest: usize) {
        if !self.described && self.table.any_command() {
            self.sink.describe();
            self.described = true;
        }
        let now = Instant::now();
        let due = self.active_at.is_none_or(|at| now - at >= ACTIVE_PERIOD);
        if fresh || due {
            self.active_at = Some(now);
            self.active_stale = false;
            let totals = active::totals(&self.retired, cx.buffers.orphans(), &self.rings);
            let resolve = Resolve {
                sink: &self.sink,
                config: cx.config,
                catalog: cx.catalog,
            };
            self.table.set_active(&resolve, totals);
        } else if fullest > 0 {
            // Spans finished since the last update: the gauges must not wait a whole interval.
            self.active_stale = true;
        }
        self.table.publish();
        if self.described {
            self.sink.dropped(cx.buffers.dropped());
        }
        if let Some(feed) = &self.feed {
            feed.ingest(cx.catalog, &mut self.finished, &mut self.table.active());
        }
    }

    /// [`Pump::apply`], with a panicking sink contained: the record is lost (and counted as
    /// dropped), not the rings, and the panic does not reach an application thread that
    /// forwards in `flush()`.
    fn apply_caught(&mut self, cx: &Context<'_>, record: Record) {
        let applied =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply(cx, record)));
        if applied.is_err() {
            cx.buffers.count_dropped();
        }
    }

    /// Drops the rings of threads that have exited, forwarding what is left in them and keeping
    /// their in-flight counts in `retired`.
    fn retire(&mut self, cx: &Context<'_>, rings: Vec<Ring>) -> Vec<Ring> {
        let mut kept = Vec::with_capacity(rings.len());
        for ring in rings {
            if !ring.records.is_abandoned() {
                kept.push(ring);
                continue;
            }
            // The thread dropped its side of the ring, then its counts. Once it let go of the
            // counts (which also makes its last writes to both visible here), nobody writes
            // either any more.
            let Ring {
                mut records,
                active,
                waiter,
            } = ring;
            match Arc::try_unwrap(active) {
                Ok(counts) => {
                    while let Ok(record) = records.pop() {
                        self.apply_caught(cx, record);
                    }
                    active::add_counts(&mut self.retired, &counts);
                }
                Err(active) => kept.push(Ring {
                    records,
                    active,
                    waiter,
                }),
            }
        }
        kept
    }

    fn apply(&mut self, cx: &Context<'_>, record: Record) {
        let resolve = Resolve {
            sink: &self.sink,
            config: cx.config,
            catalog: cx.catalog,
        };
        match record {
            Record::Finished {
                entry,
                error,
                duration_ns,
                busy_ns,
            } => {
                let command = cx.catalog.entry(entry).command;
                // Every command that ran has an in-flight series, 0 when idle.
                self.table.command(&resolve, command);
                if self.feed.is_some() {
                    self.finished.push(FinishedCommand {
                        command,
                        error,
                        duration_ns,
                    });
                }
                let series = self.table.series(&resolve, entry, error);
                S::record(&series.duration, seconds(duration_ns));
                if let Some(busy) = &series.busy {
                    S::record(busy, seconds(busy_ns));
                }
            }
            Record::Marked {
                command,
                mark,
                elapsed_ns,
            } => S::record(
                self.table.mark(&resolve, command, mark),
                seconds(elapsed_ns),
            ),
        }
    }
}
