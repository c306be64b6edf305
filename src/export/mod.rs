//! The background side: drains the per-thread rings and forwards each record to the sinks,
//! resolving (and caching) one handle per series. Runs on the layer's own thread, on
//! `flush()`, and inside OpenTelemetry collection, never on a thread that is recording.

pub(crate) mod otel;
pub(crate) mod recorder;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Label;
use opentelemetry::metrics::BoundHistogram;
use opentelemetry::KeyValue;

use crate::buffer::{ActiveCounts, Buffers, Ring};
use crate::config::Config;
use crate::names;
use crate::record::Record;
use crate::registry::{Registry, OVERFLOW_COMMAND, OVERFLOW_ENTRY};

use self::otel::Instruments;
use self::recorder::RecorderHandles;

const NANOS_PER_SECOND: f64 = 1e9;
/// Records forwarded before their ring slots are released to the producer.
const DRAIN_SLICE: usize = 256;
/// Records forwarded between two signs of progress to threads waiting for room.
const PROGRESS_STEP: usize = 16;
/// Least time between two updates of the in-flight gauges by the background thread.
pub(crate) const ACTIVE_PERIOD: Duration = Duration::from_millis(1);

thread_local! {
    /// Set while this thread forwards records to the sinks.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as forwarding until dropped. Forwarding can happen on an application
/// thread (`flush()`, an OpenTelemetry collection, a full ring), inside a command span, and
/// tracing-core does not guard every callback against re-entry; anything a sink logs then
/// reaches the layer, which must not take it for the application's own events.
struct Forwarding {
    was: bool,
}

impl Forwarding {
    fn start() -> Self {
        let was = FORWARDING
            .try_with(|flag| flag.replace(true))
            .unwrap_or(false);
        Self { was }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        let _ = FORWARDING.try_with(|flag| flag.set(self.was));
    }
}

/// Whether this thread is forwarding records to the sinks right now.
pub(crate) fn is_forwarding() -> bool {
    FORWARDING.try_with(Cell::get).unwrap_or(false)
}

/// Handles of one histogram series in both sinks.
#[derive(Default)]
struct HistogramPair {
    metrics: Option<metrics::Histogram>,
    otel: Option<BoundHistogram<f64>>,
}

impl HistogramPair {
    fn record(&self, seconds: f64) {
        if let Some(h) = &self.metrics {
            h.record(seconds);
        }
        if let Some(h) = &self.otel {
            h.record(seconds);
        }
    }
}

/// The duration/busy series of one entry: success, and each error type seen.
#[derive(Default)]
struct EntrySeries {
    ok: Option<Series>,
    errors: Vec<(u16, Series)>,
}

impl EntrySeries {
    fn get(&self, error: Option<u16>) -> Option<&Series> {
        match error {
            None => self.ok.as_ref(),
            Some(id) => self.errors.iter().find(|(e, _)| *e == id).map(|(_, s)| s),
        }
    }

    fn get_or_insert_with(&mut self, error: Option<u16>, make: impl FnOnce() -> Series) -> &Series {
        match error {
            None => self.ok.get_or_insert_with(make),
            Some(id) => {
                let position = match self.errors.iter().position(|(e, _)| *e == id) {
                    Some(position) => position,
                    None => {
                        self.errors.push((id, make()));
                        self.errors.len() - 1
                    }
                };
                &self.errors[position].1
            }
        }
    }
}

/// Handles of one duration/busy series.
struct Series {
    duration: HistogramPair,
    busy: Option<HistogramPair>,
}

/// A counter of folded records in both sinks.
struct FoldCounter {
    metrics: Option<metrics::Counter>,
    otel: Option<opentelemetry::metrics::BoundCounter<u64>>,
}

impl FoldCounter {
    fn add(&self, n: u64) {
        if let Some(c) = &self.metrics {
            c.increment(n);
        }
        if let Some(c) = &self.otel {
            c.add(n);
        }
    }
}

/// Per-command state: in-flight count and its gauge.
struct CommandState {
    active: i64,
    published: i64,
    gauge: Option<metrics::Gauge>,
    otel_attributes: Vec<KeyValue>,
}

/// Background aggregation state of one layer.
pub(crate) struct Pump {
    rings: Vec<Ring>,
    /// In-flight counts of threads that have exited, per command id.
    retired: Vec<i64>,
    /// When the in-flight gauges were last worked out.
    active_at: Option<Instant>,
    /// Records came in since then.
    active_stale: bool,
    recorder: RecorderHandles,
    otel: Option<Instruments>,
    /// Indexed by entry id; no hashing per record.
    series: Vec<EntrySeries>,
    series_count: usize,
    overflow_series: Option<Series>,
    /// Indexed by command id: (mark id, handles).
    marks: Vec<Vec<(u16, HistogramPair)>>,
    marks_count: usize,
    overflow_marks: Option<HistogramPair>,
    commands: Vec<Option<CommandState>>,
    /// Commands with a state of their own (not counting the overflow command).
    commands_count: usize,
    folded_durations: Option<FoldCounter>,
    folded_marks: Option<FoldCounter>,
    dropped: Option<metrics::Counter>,
    /// Descriptions and the dropped counter are registered with the first records, not when
    /// the layer is built: a global recorder installed after the layer still gets them.
    described: bool,
    /// Finished commands for the live statistics, handed over once per drain.
    live: Vec<crate::live::Finished>,
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
    pub(crate) registry: &'a Registry,
    pub(crate) buffers: &'a Buffers,
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / NANOS_PER_SECOND
}

impl Pump {
    pub(crate) fn new(recorder: RecorderHandles, otel: Option<Instruments>) -> Self {
        Self {
            rings: Vec::new(),
            retired: Vec::new(),
            active_at: None,
            active_stale: false,
            recorder,
            otel,
            series: Vec::new(),
            series_count: 0,
            overflow_series: None,
            marks: Vec::new(),
            marks_count: 0,
            overflow_marks: None,
            commands: Vec::new(),
            commands_count: 0,
            folded_durations: None,
            folded_marks: None,
            dropped: None,
            described: false,
            live: Vec::new(),
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
        if !self.described && !self.commands.is_empty() {
            self.recorder.describe();
            self.dropped = self.recorder.counter(names::PROM_DROPPED, Vec::new());
            self.described = true;
        }
        let now = Instant::now();
        let due = self.active_at.is_none_or(|at| now - at >= ACTIVE_PERIOD);
        if fresh || due {
            self.active_at = Some(now);
            self.active_stale = false;
            self.update_active(cx);
        } else if fullest > 0 {
            // Spans finished since the last update: the gauges must not wait a whole interval.
            self.active_stale = true;
        }
        self.publish(cx);
        if let Some(live) = &cx.config.live {
            let active = self
                .commands
                .iter()
                .enumerate()
                .filter_map(|(id, state)| Some((id as u32, state.as_ref()?.active)));
            live.ingest(cx.registry, &mut self.live, active);
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
                    add_counts(&mut self.retired, &counts);
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

    /// Sums every thread's in-flight counts into each command's state.
    fn update_active(&mut self, cx: &Context<'_>) {
        let mut totals = self.retired.clone();
        add_counts(&mut totals, cx.buffers.orphans());
        for ring in &self.rings {
            add_counts(&mut totals, &ring.active);
        }
        for state in self.commands.iter_mut().flatten() {
            state.active = 0;
        }
        for (id, total) in totals.into_iter().enumerate() {
            let known = self.commands.get(id).is_some_and(Option::is_some);
            if known || total != 0 {
                // Added, not set: commands past the cap share the overflow command's state. Each
                // is clamped first, as an own gauge would be: a close counted before its start
                // must not hide another command's span in flight.
                let total = if id == OVERFLOW_COMMAND as usize {
                    total
                } else {
                    total.max(0)
                };
                self.command(cx, id as u32).active += total;
            }
        }
    }

    fn apply(&mut self, cx: &Context<'_>, record: Record) {
        match record {
            Record::Finished {
                entry,
                error,
                duration_ns,
                busy_ns,
            } => {
                let command = cx.registry.entry(entry).command;
                // Every command that ran has an in-flight series, 0 when idle.
                self.command(cx, command);
                if cx.config.live.is_some() {
                    self.live.push(crate::live::Finished {
                        command,
                        error,
                        duration_ns,
                    });
                }
                let series = self.series(cx, entry, error);
                series.duration.record(seconds(duration_ns));
                if let Some(busy) = &series.busy {
                    busy.record(seconds(busy_ns));
                }
            }
            Record::Marked {
                command,
                mark,
                elapsed_ns,
            } => self.mark(cx, command, mark).record(seconds(elapsed_ns)),
        }
    }

    /// The state of command `id`: its own while fewer than the series cap have one, else the
    /// overflow command's (the in-flight gauge is capped like every other metric).
    fn command(&mut self, cx: &Context<'_>, id: u32) -> &mut CommandState {
        let own = self.commands.get(id as usize).is_some_and(Option::is_some);
        let id = if own || id == OVERFLOW_COMMAND || self.commands_count < cx.config.max_series {
            id
        } else {
            OVERFLOW_COMMAND
        };
        let index = id as usize;
        if self.commands.len() <= index {
            self.commands.resize_with(index + 1, || None);
        }
        if !own && id != OVERFLOW_COMMAND && self.commands[index].is_none() {
            self.commands_count += 1;
        }
        let recorder = &self.recorder;
        self.commands[index].get_or_insert_with(|| {
            let (otel_attributes, labels) = if id == OVERFLOW_COMMAND {
                overflow_attributes()
            } else {
                let name = cx.registry.command(id).name.to_string();
                (
                    vec![KeyValue::new(names::ATTR_COMMAND, name.clone())],
                    vec![Label::new(names::ATTR_COMMAND, name)],
                )
            };
            CommandState {
                active: 0,
                published: 0,
                gauge: recorder.gauge(names::PROM_ACTIVE, labels),
                otel_attributes,
            }
        })
    }

    fn series(&mut self, cx: &Context<'_>, entry: u32, error: Option<u16>) -> &Series {
        let index = entry as usize;
        let known = self
            .series
            .get(index)
            .is_some_and(|s| s.get(error).is_some());
        if !known && (entry == OVERFLOW_ENTRY || self.series_count >= cx.config.max_series) {
            self.folded(Folded::Durations).add(1);
            let (otel, prom) = overflow_attributes();
            let (recorder, instruments) = (&self.recorder, self.otel.as_ref());
            return self
                .overflow_series
                .get_or_insert_with(|| make_series(recorder, instruments, cx, otel, prom));
        }
        if self.series.len() <= index {
            self.series.resize_with(index + 1, EntrySeries::default);
        }
        let (recorder, instruments, count) =
            (&self.recorder, self.otel.as_ref(), &mut self.series_count);
        self.series[index].get_or_insert_with(error, || {
            *count += 1;
            let (otel, prom) = series_attributes(cx, entry, error);
            make_series(recorder, instruments, cx, otel, prom)
        })
    }

    fn mark(&mut self, cx: &Context<'_>, command: u32, mark: u16) -> &HistogramPair {
        let index = command as usize;
        let position = self
            .marks
            .get(index)
            .and_then(|marks| marks.iter().position(|(m, _)| *m == mark));
        if position.is_none()
            && (command == OVERFLOW_COMMAND || self.marks_count >= cx.config.max_series)
        {
            self.folded(Folded::Marks).add(1);
            let (otel, prom) = overflow_attributes();
            let (recorder, instruments) = (&self.recorder, self.otel.as_ref());
            return self
                .overflow_marks
                .get_or_insert_with(|| make_mark(recorder, instruments, &otel, prom));
        }
        if self.marks.len() <= index {
            self.marks.resize_with(index + 1, Vec::new);
        }
        let position = match position {
            Some(position) => position,
            None => {
                let command_name = cx.registry.command(command).name.to_string();
                let mark_name = cx.registry.marks.get(mark).to_owned();
                let otel = [
                    KeyValue::new(names::ATTR_COMMAND, command_name.clone()),
                    KeyValue::new(names::ATTR_MARK, mark_name.clone()),
                ];
                let prom = vec![
                    Label::new(names::ATTR_COMMAND, command_name),
                    Label::new(names::ATTR_MARK, mark_name),
                ];
                let pair = make_mark(&self.recorder, self.otel.as_ref(), &otel, prom);
                self.marks_count += 1;
                self.marks[index].push((mark, pair));
                self.marks[index].len() - 1
            }
        };
        &self.marks[index][position].1
    }

    fn folded(&mut self, which: Folded) -> &FoldCounter {
        let (slot, otel_metric, prom_metric) = match which {
            Folded::Marks => (&mut self.folded_marks, names::OTEL_MARK, names::PROM_MARK),
            Folded::Durations => (
                &mut self.folded_durations,
                names::OTEL_DURATION,
                names::PROM_DURATION,
            ),
        };
        let (recorder, instruments) = (&self.recorder, self.otel.as_ref());
        slot.get_or_insert_with(|| FoldCounter {
            metrics: recorder.counter(
                names::PROM_OVERFLOW,
                vec![Label::new(names::ATTR_METRIC, prom_metric)],
            ),
            otel: instruments.map(|i| {
                i.overflow
                    .bind(&[KeyValue::new(names::ATTR_METRIC, otel_metric)])
            }),
        })
    }

    /// Pushes gauges and the dropped count to the `metrics` sink.
    fn publish(&mut self, cx: &Context<'_>) {
        for state in self.commands.iter_mut().flatten() {
            if state.active != state.published {
                if let Some(gauge) = &state.gauge {
                    // A span closed on another thread can be drained before its start: never
                    // show a negative count for that moment.
                    gauge.set(state.active.max(0) as f64);
                }
                state.published = state.active;
            }
        }
        if let Some(dropped) = &self.dropped {
            dropped.absolute(cx.buffers.dropped());
        }
    }

    /// Reports each command's in-flight count to an OpenTelemetry observer.
    pub(crate) fn observe_active(&self, observe: &mut dyn FnMut(i64, &[KeyValue])) {
        for state in self.commands.iter().flatten() {
            observe(state.active.max(0), &state.otel_attributes);
        }
    }
}

/// Adds `counts` into `totals`, index by index.
fn add_counts(totals: &mut Vec<i64>, counts: &ActiveCounts) {
    if totals.len() < counts.len() {
        totals.resize(counts.len(), 0);
    }
    for (id, total) in totals.iter_mut().enumerate().take(counts.len()) {
        *total += counts.get(id);
    }
}

fn overflow_attributes() -> (Vec<KeyValue>, Vec<Label>) {
    (
        vec![KeyValue::new(names::ATTR_OVERFLOW, "true")],
        vec![Label::new(names::PROM_OVERFLOW_LABEL, "true")],
    )
}

fn series_attributes(
    cx: &Context<'_>,
    entry: u32,
    error: Option<u16>,
) -> (Vec<KeyValue>, Vec<Label>) {
    let entry = cx.registry.entry(entry);
    let command = cx.registry.command(entry.command).name.to_string();
    let outcome = if error.is_some() { "error" } else { "ok" };
    let mut otel = vec![
        KeyValue::new(names::ATTR_COMMAND, command.clone()),
        KeyValue::new(names::ATTR_OUTCOME, outcome),
    ];
    let mut prom = vec![
        Label::new(names::ATTR_COMMAND, command),
        Label::new(names::ATTR_OUTCOME, outcome),
    ];
    if let Some(id) = error {
        let error_type = cx.registry.error_types.get(id).to_owned();
        otel.push(KeyValue::new(names::ATTR_ERROR_TYPE, error_type.clone()));
        prom.push(Label::new(names::PROM_ERROR_TYPE, error_type));
    }
    for (name, value) in cx.config.selection.labels.iter().zip(entry.labels.iter()) {
        if let Some(value) = value {
            otel.push(KeyValue::new(name.clone(), value.to_string()));
            prom.push(Label::new(prometheus_label(name), value.to_string()));
        }
    }
    (otel, prom)
}

/// A field name as a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn prometheus_label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Which records the overflow counter counts.
#[derive(Clone, Copy)]
enum Folded {
    Durations,
    Marks,
}

fn make_mark(
    recorder: &RecorderHandles,
    otel: Option<&Instruments>,
    otel_attributes: &[KeyValue],
    labels: Vec<Label>,
) -> HistogramPair {
    HistogramPair {
        metrics: recorder.histogram(names::PROM_MARK, labels),
        otel: otel.map(|i| i.mark.bind(otel_attributes)),
    }
}

fn make_series(
    recorder: &RecorderHandles,
    otel: Option<&Instruments>,
    cx: &Context<'_>,
    otel_attributes: Vec<KeyValue>,
    labels: Vec<Label>,
) -> Series {
    let busy = cx.config.busy_time.then(|| HistogramPair {
        metrics: recorder.histogram(names::PROM_BUSY, labels.clone()),
        otel: otel.map(|i| i.busy.bind(&otel_attributes)),
    });
    Series {
        duration: HistogramPair {
            metrics: recorder.histogram(names::PROM_DURATION, labels),
            otel: otel.map(|i| i.duration.bind(&otel_attributes)),
        },
        busy,
    }
}
