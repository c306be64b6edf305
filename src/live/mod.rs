//! Live statistics for the built-in HTTP endpoints: a third consumer of finished commands,
//! fed by the background pump (never by the recording threads), kept in bounded rolling
//! windows inside the process.
//!
//! Per command there are three rings of buckets: 60 × 1 s (the `1m` window), 30 × 10 s (`5m`)
//! and 60 × 1 min (`1h`). A bucket holds calls, errors, errors by type, the sum and maximum
//! of durations and a log-linear histogram (4 bins per doubling, see [`hist`]), allocated only
//! when the bucket has data. At most [`MAX_COMMANDS`] commands are tracked (fewer when the
//! layer's series cap is lower); further ones are folded into `_OTHER`. Failed and slow
//! commands are also kept, with their trace ids, in two rings of [`RECENT_CAPACITY`].

pub(crate) mod api;
pub(crate) mod health;
mod hist;
pub(crate) mod json;
pub(crate) mod sse;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing_core::span::Id;

use self::hist::{Histogram, Merged};
use crate::registry::{Registry, OTHER_ID};

/// Most commands tracked individually; the rest share the `_OTHER` row.
pub(crate) const MAX_COMMANDS: usize = 256;
/// Failed (and, separately, slow) commands kept for `/api/commands/recent`.
pub(crate) const RECENT_CAPACITY: usize = 100;
/// Failed or slow commands waiting for the pump; beyond it the oldest are forgotten (they
/// are still counted, only their entries in the recent lists are lost).
const NOTABLE_QUEUE: usize = 256;
/// Calls in the 5 minute window before a command's own p95 raises its slow threshold.
const MIN_CALLS_FOR_SLOW_P95: u64 = 20;

/// A finished command, as the pump hands it over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finished {
    pub(crate) command: u32,
    /// The error type id, already capped per command.
    pub(crate) error: Option<u16>,
    pub(crate) duration_ns: u64,
}

/// Trace and span id of a sampled trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceRef {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
}

/// A failed or slow command, captured on its thread when it closed.
#[derive(Debug)]
pub(crate) struct Notable {
    command: u32,
    error: Option<u16>,
    slow: bool,
    duration_ns: u64,
    at: SystemTime,
    trace: Option<TraceRef>,
}

/// One failed or slow command in the recent lists.
#[derive(Clone, Debug)]
pub(crate) struct RecentItem {
    pub(crate) command: Box<str>,
    pub(crate) error_type: Option<Box<str>>,
    pub(crate) duration_ns: u64,
    pub(crate) at: SystemTime,
    pub(crate) trace: Option<TraceRef>,
}

/// Which rolling window to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WindowSpec {
    ring: usize,
    buckets: u64,
}

impl WindowSpec {
    pub(crate) const ONE_MINUTE: Self = Self {
        ring: 0,
        buckets: 60,
    };
    pub(crate) const FIVE_MINUTES: Self = Self {
        ring: 1,
        buckets: 30,
    };
    pub(crate) const ONE_HOUR: Self = Self {
        ring: 2,
        buckets: 60,
    };

    /// The finest window covering `length` (1 s … 1 h), rounded up to its bucket width.
    pub(crate) fn covering(length: Duration) -> Self {
        let secs = length.as_secs().max(1);
        let (ring, width) = if secs <= 60 {
            (0, 1)
        } else if secs <= 300 {
            (1, 10)
        } else {
            (2, 60)
        };
        Self {
            ring,
            buckets: secs.div_ceil(width).min(RING_SHAPES[ring].1 as u64),
        }
    }

    fn width(self) -> u64 {
        RING_SHAPES[self.ring].0
    }

    /// The window's nominal length in seconds.
    pub(crate) fn seconds(self) -> u64 {
        self.buckets * self.width()
    }
}

/// (bucket width in seconds, number of buckets) of each ring.
const RING_SHAPES: [(u64, usize); 3] = [(1, 60), (10, 30), (60, 60)];

#[derive(Default)]
struct Bucket {
    /// Which period of the ring's width this bucket holds; `None` when empty.
    epoch: Option<u64>,
    count: u32,
    errors: u32,
    sum_ns: u64,
    max_ns: u64,
    errors_by_type: Vec<(u16, u32)>,
    histogram: Option<Histogram>,
}

impl Bucket {
    fn record(&mut self, f: &Finished) {
        self.count = self.count.saturating_add(1);
        self.sum_ns = self.sum_ns.saturating_add(f.duration_ns);
        self.max_ns = self.max_ns.max(f.duration_ns);
        if let Some(error) = f.error {
            self.errors = self.errors.saturating_add(1);
            match self.errors_by_type.iter_mut().find(|(e, _)| *e == error) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => self.errors_by_type.push((error, 1)),
            }
        }
        self.histogram
            .get_or_insert_with(Histogram::default)
            .record(f.duration_ns);
    }
}

struct Ring {
    width: u64,
    buckets: Vec<Bucket>,
}

impl Ring {
    fn new((width, len): (u64, usize)) -> Self {
        Self {
            width,
            buckets: (0..len).map(|_| Bucket::default()).collect(),
        }
    }

    fn record(&mut self, now_s: u64, f: &Finished) {
        let epoch = now_s / self.width;
        let slot = (epoch % self.buckets.len() as u64) as usize;
        let bucket = &mut self.buckets[slot];
        if bucket.epoch != Some(epoch) {
            let histogram = bucket.histogram.take().map(|mut h| {
                h.bins.fill(0);
                h
            });
            *bucket = Bucket {
                epoch: Some(epoch),
                histogram,
                ..Bucket::default()
            };
        }
        bucket.record(f);
    }

    /// Adds the last `buckets` periods (the current one included) into `into`.
    fn collect(&self, now_s: u64, buckets: u64, into: &mut WindowStats) {
        let current = now_s / self.width;
        for bucket in &self.buckets {
            let Some(epoch) = bucket.epoch else { continue };
            if epoch > current || epoch + buckets <= current {
                continue;
            }
            into.calls += u64::from(bucket.count);
            into.errors += u64::from(bucket.errors);
            into.sum_ns = into.sum_ns.saturating_add(bucket.sum_ns);
            into.max_ns = into.max_ns.max(bucket.max_ns);
            for &(error, n) in &bucket.errors_by_type {
                add_error(&mut into.errors_by_type, error, u64::from(n));
            }
            if let Some(h) = &bucket.histogram {
                into.merged.add(h);
            }
        }
    }
}

fn add_error(list: &mut Vec<(u16, u64)>, error: u16, n: u64) {
    match list.iter_mut().find(|(e, _)| *e == error) {
        Some((_, total)) => *total += n,
        None => list.push((error, n)),
    }
}

/// Sums over a window.
#[derive(Default)]
pub(crate) struct WindowStats {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) sum_ns: u64,
    pub(crate) max_ns: u64,
    pub(crate) errors_by_type: Vec<(u16, u64)>,
    pub(crate) merged: Merged,
}

impl WindowStats {
    pub(crate) fn quantile_seconds(&self, q: f64) -> Option<f64> {
        self.merged.quantile_ns(q, self.max_ns).map(|ns| ns / 1e9)
    }

    /// Share of calls that succeeded; `None` without calls.
    pub(crate) fn success_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| (self.calls - self.errors) as f64 / self.calls as f64)
    }

    fn add(&mut self, other: &WindowStats) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for &(e, n) in &other.errors_by_type {
            add_error(&mut self.errors_by_type, e, n);
        }
        self.merged.add_merged(&other.merged);
    }
}

struct CommandLive {
    name: Box<str>,
    rings: [Ring; 3],
    total_calls: u64,
    total_errors: u64,
    total_errors_by_type: Vec<(u16, u64)>,
    total_max_ns: u64,
    active: i64,
    /// The second the slow threshold was last computed.
    threshold_at: Option<u64>,
}

impl CommandLive {
    fn new(name: Box<str>) -> Self {
        Self {
            name,
            rings: RING_SHAPES.map(Ring::new),
            total_calls: 0,
            total_errors: 0,
            total_errors_by_type: Vec::new(),
            total_max_ns: 0,
            active: 0,
            threshold_at: None,
        }
    }
}

/// One command's figures over a window, as the API reports them.
pub(crate) struct CommandSummary {
    pub(crate) name: Box<str>,
    pub(crate) window: WindowStats,
    pub(crate) active: i64,
    pub(crate) total_calls: u64,
    pub(crate) total_errors: u64,
    pub(crate) total_max_ns: u64,
    pub(crate) total_errors_by_type: Vec<(Box<str>, u64)>,
    pub(crate) errors_by_type: Vec<(Box<str>, u64)>,
}

/// A snapshot of every command over one window.
pub(crate) struct Summary {
    pub(crate) window_seconds: u64,
    /// Seconds of the window that the process has been up for (the divisor of rates).
    pub(crate) covered_seconds: f64,
    pub(crate) uptime: Duration,
    pub(crate) commands: Vec<CommandSummary>,
    pub(crate) all: WindowStats,
    pub(crate) total_calls: u64,
    pub(crate) total_errors: u64,
    pub(crate) active: i64,
}

struct Inner {
    /// Registry command id → index in `commands`.
    slots: Vec<Option<u32>>,
    commands: Vec<CommandLive>,
    error_names: HashMap<u16, Box<str>>,
    recent_errors: VecDeque<RecentItem>,
    recent_slow: VecDeque<RecentItem>,
    /// Swapped with the capture queue on each drain, so neither side allocates.
    spare: VecDeque<Notable>,
}

/// Live per-command statistics shared by the pump (writer) and the HTTP endpoints (readers).
pub(crate) struct LiveStats {
    started: Instant,
    max_commands: usize,
    slow_floor_ns: u64,
    /// Per registry command id: the duration from which a command counts as slow.
    thresholds: boxcar::Vec<AtomicU64>,
    notable: Mutex<VecDeque<Notable>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for LiveStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStats").finish_non_exhaustive()
    }
}

impl LiveStats {
    /// `max_commands` is capped at [`MAX_COMMANDS`]; commands taking at least `slow_floor`
    /// (and at least their own p95 over 5 minutes, once known) are listed as slow.
    pub(crate) fn new(max_commands: usize, slow_floor: Duration) -> Self {
        Self {
            started: Instant::now(),
            max_commands: max_commands.clamp(1, MAX_COMMANDS),
            slow_floor_ns: u64::try_from(slow_floor.as_nanos()).unwrap_or(u64::MAX),
            thresholds: boxcar::Vec::new(),
            notable: Mutex::new(VecDeque::with_capacity(NOTABLE_QUEUE)),
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                commands: Vec::new(),
                error_names: HashMap::new(),
                recent_errors: VecDeque::with_capacity(RECENT_CAPACITY),
                recent_slow: VecDeque::with_capacity(RECENT_CAPACITY),
                spare: VecDeque::with_capacity(NOTABLE_QUEUE),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn threshold(&self, command: u32) -> u64 {
        self.thresholds
            .get(command as usize)
            .map_or(self.slow_floor_ns, |t| t.load(Ordering::Relaxed))
    }

    /// Called by the layer when a command span closes: for a failed or slow command, captures
    /// its trace id. Costs one comparison (and an atomic load) for the others.
    #[inline]
    pub(crate) fn on_close(&self, id: &Id, command: u32, error: Option<u16>, duration_ns: u64) {
        let slow = duration_ns >= self.threshold(command);
        if error.is_some() || slow {
            self.capture(id, command, error, slow, duration_ns);
        }
    }

    #[cold]
    #[inline(never)]
    fn capture(&self, id: &Id, command: u32, error: Option<u16>, slow: bool, duration_ns: u64) {
        let trace = tracing::dispatcher::get_default(|dispatch| {
            use opentelemetry::trace::TraceContextExt as _;
            let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
            let span = cx.span();
            let sc = span.span_context();
            (sc.is_valid() && sc.is_sampled()).then(|| TraceRef {
                trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            })
        });
        let notable = Notable {
            command,
            error,
            slow,
            duration_ns,
            at: SystemTime::now(),
            trace,
        };
        // The lock is only ever held to push one item or to swap two queues (never across
        // export or I/O), so this waits at most for that: a failure is never silently missing
        // from the recent list. The newest wins when the queue is full.
        let mut queue = self.notable.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() == NOTABLE_QUEUE {
            queue.pop_front();
        }
        queue.push_back(notable);
    }

    fn slot(&self, inner: &mut Inner, registry: &Registry, command: u32) -> usize {
        let index = command as usize;
        if let Some(Some(slot)) = inner.slots.get(index) {
            return *slot as usize;
        }
        let slot = if command == crate::registry::OVERFLOW_COMMAND
            || inner.commands.len() + 1 >= self.max_commands
        {
            // The `_OTHER` row.
            other_slot(inner)
        } else {
            inner
                .commands
                .push(CommandLive::new(registry.command(command).name.clone()));
            inner.commands.len() - 1
        };
        if inner.slots.len() <= index {
            inner.slots.resize(index + 1, None);
        }
        inner.slots[index] = Some(slot as u32);
        slot
    }

    fn error_name(inner: &mut Inner, registry: &Registry, error: u16) {
        inner.error_names.entry(error).or_insert_with(|| {
            if error == OTHER_ID {
                crate::names::OTHER.into()
            } else {
                registry.error_types.get(error).into()
            }
        });
    }

    /// Takes the pump's finished commands (emptying `finished`) and its in-flight counts.
    pub(crate) fn ingest(
        &self,
        registry: &Registry,
        finished: &mut Vec<Finished>,
        active: impl Iterator<Item = (u32, i64)>,
    ) {
        let now_s = self.started.elapsed().as_secs();
        let mut inner = self.lock();
        let inner = &mut *inner;
        for f in finished.drain(..) {
            let slot = self.slot(inner, registry, f.command);
            if let Some(error) = f.error {
                Self::error_name(inner, registry, error);
            }
            let c = &mut inner.commands[slot];
            for ring in &mut c.rings {
                ring.record(now_s, &f);
            }
            c.total_calls += 1;
            c.total_max_ns = c.total_max_ns.max(f.duration_ns);
            if let Some(error) = f.error {
                c.total_errors += 1;
                add_error(&mut c.total_errors_by_type, error, 1);
            }
            self.update_threshold(f.command, c, now_s);
        }
        for c in &mut inner.commands {
            c.active = 0;
        }
        for (command, count) in active {
            let slot = self.slot(inner, registry, command);
            inner.commands[slot].active += count.max(0);
        }
        std::mem::swap(
            &mut *self.notable.lock().unwrap_or_else(PoisonError::into_inner),
            &mut inner.spare,
        );
        while let Some(n) = inner.spare.pop_front() {
            let error_type = n.error.map(|e| {
                Self::error_name(inner, registry, e);
                inner.error_names.get(&e).cloned().unwrap_or_default()
            });
            // The real name even when the row is folded: the list is bounded anyway.
            let item = RecentItem {
                command: registry.command(n.command).name.clone(),
                error_type,
                duration_ns: n.duration_ns,
                at: n.at,
                trace: n.trace,
            };
            for (wanted, list) in [
                (n.error.is_some(), &mut inner.recent_errors),
                (n.slow, &mut inner.recent_slow),
            ] {
                if wanted {
                    if list.len() == RECENT_CAPACITY {
                        list.pop_front();
                    }
                    list.push_back(item.clone());
                }
            }
        }
    }

    /// Once a second per command: slow means at least the floor and the 5 minute p95.
    fn update_threshold(&self, command: u32, c: &mut CommandLive, now_s: u64) {
        if c.threshold_at == Some(now_s) {
            return;
        }
        c.threshold_at = Some(now_s);
        let mut stats = WindowStats::default();
        let w = WindowSpec::FIVE_MINUTES;
        c.rings[w.ring].collect(now_s, w.buckets, &mut stats);
        let p95 = if stats.calls >= MIN_CALLS_FOR_SLOW_P95 {
            stats.merged.quantile_ns(0.95, stats.max_ns).unwrap_or(0.0) as u64
        } else {
            0
        };
        let threshold = self.slow_floor_ns.max(p95);
        while self.thresholds.count() <= command as usize {
            self.thresholds.push(AtomicU64::new(self.slow_floor_ns));
        }
        if let Some(t) = self.thresholds.get(command as usize) {
            t.store(threshold, Ordering::Relaxed);
        }
    }

    /// Every command's figures over `window`, sorted by name.
    pub(crate) fn summary(&self, window: WindowSpec) -> Summary {
        let uptime = self.started.elapsed();
        let now_s = uptime.as_secs();
        let inner = self.lock();
        let name = |list: &[(u16, u64)]| -> Vec<(Box<str>, u64)> {
            let mut named: Vec<(Box<str>, u64)> = list
                .iter()
                .map(|(e, n)| {
                    let name = inner.error_names.get(e).cloned();
                    (name.unwrap_or_else(|| crate::names::OTHER.into()), *n)
                })
                .collect();
            named.sort();
            named
        };
        let mut all = WindowStats::default();
        let mut commands = Vec::with_capacity(inner.commands.len());
        let (mut total_calls, mut total_errors, mut active) = (0, 0, 0);
        for c in &inner.commands {
            let mut stats = WindowStats::default();
            c.rings[window.ring].collect(now_s, window.buckets, &mut stats);
            all.add(&stats);
            total_calls += c.total_calls;
            total_errors += c.total_errors;
            active += c.active;
            commands.push(CommandSummary {
                name: c.name.clone(),
                errors_by_type: name(&stats.errors_by_type),
                window: stats,
                active: c.active,
                total_calls: c.total_calls,
                total_errors: c.total_errors,
                total_max_ns: c.total_max_ns,
                total_errors_by_type: name(&c.total_errors_by_type),
            });
        }
        drop(inner);
        commands.sort_by(|a, b| a.name.cmp(&b.name));
        // The current bucket is partial: the window spans its full buckets plus the part of
        // the current one elapsed so far, and never more than the uptime.
        let width = window.width() as f64;
        let into_current = uptime.as_secs_f64() % width;
        let covered = ((window.buckets - 1) as f64 * width + into_current)
            .min(uptime.as_secs_f64())
            .max(1e-3);
        Summary {
            window_seconds: window.seconds(),
            covered_seconds: covered,
            uptime,
            commands,
            all,
            total_calls,
            total_errors,
            active,
        }
    }

    /// The most recent failed commands (newest first), or the slowest recent ones.
    pub(crate) fn recent(&self, slow: bool, limit: usize) -> Vec<RecentItem> {
        let inner = self.lock();
        if slow {
            let mut items: Vec<RecentItem> = inner.recent_slow.iter().cloned().collect();
            items.sort_by_key(|item| std::cmp::Reverse(item.duration_ns));
            items.truncate(limit);
            items
        } else {
            inner
                .recent_errors
                .iter()
                .rev()
                .take(limit)
                .cloned()
                .collect()
        }
    }
}

fn other_slot(inner: &mut Inner) -> usize {
    match inner
        .commands
        .iter()
        .position(|c| &*c.name == crate::names::OTHER)
    {
        Some(i) => i,
        None => {
            inner
                .commands
                .push(CommandLive::new(crate::names::OTHER.into()));
            inner.commands.len() - 1
        }
    }
}
