//! The rolling windows: per command three rings of buckets (60 × 1 s, 30 × 10 s, 60 × 1 min),
//! each bucket holding calls, errors by type, the sum and maximum of durations and a
//! log-linear histogram (allocated only when the bucket has data), plus totals since start and
//! the recent failed and slow commands. At most [`MAX_COMMANDS`] commands are tracked (fewer
//! when the layer's series cap is lower); further ones are folded into `_OTHER`. Written by
//! the pump once per drain, read by [`super::LiveStats`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::hist::{Histogram, Merged};
use super::view::{
    CommandSinceStart, CommandStats, Figures, RecentCommand, SinceStart, Summary, Totals,
};
use crate::capture::catalog::{Catalog, OTHER_ID, OVERFLOW_COMMAND};
use crate::handoff::notable::{Notable, Notables, TraceRef};
use crate::objectives::Objective;
use crate::sink::{CommandFeed, FinishedCommand};

/// Most commands tracked individually; the rest share the `_OTHER` row.
pub(crate) const MAX_COMMANDS: usize = 256;
/// Failed (and, separately, slow) commands kept for `/api/commands/recent`.
pub(crate) const RECENT_CAPACITY: usize = 100;
/// Calls in the 5 minute window before a command's own p95 raises its slow threshold.
const MIN_CALLS_FOR_SLOW_P95: u64 = 20;

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
    fn record(&mut self, f: &FinishedCommand) {
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

struct BucketRing {
    width: u64,
    buckets: Vec<Bucket>,
}

impl BucketRing {
    fn new((width, len): (u64, usize)) -> Self {
        Self {
            width,
            buckets: (0..len).map(|_| Bucket::default()).collect(),
        }
    }

    fn record(&mut self, now_s: u64, f: &FinishedCommand) {
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
    /// The figures the API reports; `calls_per_s` is worked out by the caller (it depends on
    /// how much of the window the process has been up for).
    fn figures(&self, calls_per_s: f64) -> Figures {
        Figures {
            calls: self.calls,
            errors: self.errors,
            success_rate: self.success_rate(),
            calls_per_s,
            p50_s: self.quantile_seconds(0.5),
            p95_s: self.quantile_seconds(0.95),
            p99_s: self.quantile_seconds(0.99),
            max_s: (self.calls > 0).then(|| self.max_ns as f64 / 1e9),
        }
    }

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
    rings: [BucketRing; 3],
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
            rings: RING_SHAPES.map(BucketRing::new),
            total_calls: 0,
            total_errors: 0,
            total_errors_by_type: Vec::new(),
            total_max_ns: 0,
            active: 0,
            threshold_at: None,
        }
    }
}

struct Inner {
    /// Catalog command id → index in `commands`.
    slots: Vec<Option<u32>>,
    commands: Vec<CommandLive>,
    error_names: HashMap<u16, Box<str>>,
    recent_errors: VecDeque<RecentItem>,
    recent_slow: VecDeque<RecentItem>,
    /// Swapped with the notable queue on each drain, so neither side allocates.
    spare: VecDeque<Notable>,
}

/// Live per-command statistics shared by the pump (writer) and the readers.
pub(crate) struct Windows {
    started: Instant,
    max_commands: usize,
    /// Failed and slow commands as captured on their threads, and the slow thresholds.
    notables: Arc<Notables>,
    /// The layer's objectives, judged by the health checks.
    pub(crate) objectives: Vec<Objective>,
    inner: Mutex<Inner>,
}

/// An objective's counts over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ObjectiveCounts {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    /// Calls over the latency threshold (when it has one).
    pub(crate) slow: u64,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows").finish_non_exhaustive()
    }
}

/// How percentiles are computed, stated with every summary.
pub(crate) const RESOLUTION: &str =
    "log-linear histogram, 4 bins per doubling from 1us; percentiles within about 9%, never above the window max";

impl Windows {
    /// `max_commands` is capped at [`MAX_COMMANDS`]; `notables` is the queue the layer fills.
    pub(crate) fn new(
        max_commands: usize,
        notables: Arc<Notables>,
        objectives: Vec<Objective>,
    ) -> Self {
        Self {
            started: Instant::now(),
            max_commands: max_commands.clamp(1, MAX_COMMANDS),
            notables,
            objectives,
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                commands: Vec::new(),
                error_names: HashMap::new(),
                recent_errors: VecDeque::with_capacity(RECENT_CAPACITY),
                recent_slow: VecDeque::with_capacity(RECENT_CAPACITY),
                spare: Notables::spare(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, inner: &mut Inner, catalog: &Catalog, command: u32) -> usize {
        let index = command as usize;
        if let Some(Some(slot)) = inner.slots.get(index) {
            return *slot as usize;
        }
        let slot = if command == OVERFLOW_COMMAND || inner.commands.len() + 1 >= self.max_commands {
            // The `_OTHER` row.
            other_slot(inner)
        } else {
            inner
                .commands
                .push(CommandLive::new(catalog.command(command).name.clone()));
            inner.commands.len() - 1
        };
        if inner.slots.len() <= index {
            inner.slots.resize(index + 1, None);
        }
        inner.slots[index] = Some(slot as u32);
        slot
    }

    fn error_name(inner: &mut Inner, catalog: &Catalog, error: u16) {
        inner.error_names.entry(error).or_insert_with(|| {
            if error == OTHER_ID {
                crate::names::OTHER.into()
            } else {
                catalog.error_types.get(error).into()
            }
        });
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
        self.notables.set_threshold(command, p95);
    }

    /// The counts of the commands named `commands` over `window`, with the calls slower than
    /// `threshold` (when given) among them.
    pub(crate) fn objective_counts(
        &self,
        window: WindowSpec,
        commands: &[String],
        threshold: Option<Duration>,
    ) -> ObjectiveCounts {
        let now_s = self.started.elapsed().as_secs();
        let inner = self.lock();
        let mut counts = ObjectiveCounts::default();
        for c in inner
            .commands
            .iter()
            .filter(|c| commands.iter().any(|n| **n == *c.name))
        {
            let mut w = WindowStats::default();
            c.rings[window.ring].collect(now_s, window.buckets, &mut w);
            counts.calls += w.calls;
            counts.errors += w.errors;
            if let Some(t) = threshold {
                counts.slow += w
                    .merged
                    .count_above_ns(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
            }
        }
        counts
    }

    /// Every command's figures over `window` (called `name`), sorted by command.
    pub(crate) fn summary(&self, window: WindowSpec, name: &'static str) -> Summary {
        let uptime = self.started.elapsed();
        let now_s = uptime.as_secs();
        let inner = self.lock();
        let named = |list: &[(u16, u64)]| -> BTreeMap<String, u64> {
            list.iter()
                .map(|(e, n)| {
                    let name = inner.error_names.get(e).map(|n| n.to_string());
                    (name.unwrap_or_else(|| crate::names::OTHER.into()), *n)
                })
                .collect()
        };
        // The current bucket is partial: the window spans its full buckets plus the part of
        // the current one elapsed so far, and never more than the uptime.
        let width = window.width() as f64;
        let into_current = uptime.as_secs_f64() % width;
        let covered = ((window.buckets - 1) as f64 * width + into_current)
            .min(uptime.as_secs_f64())
            .max(1e-3);
        let per_second = |calls: u64| calls as f64 / covered;
        let mut all = WindowStats::default();
        let mut commands = Vec::with_capacity(inner.commands.len());
        let (mut total_calls, mut total_errors, mut active) = (0, 0, 0);
        for c in &inner.commands {
            let mut w = WindowStats::default();
            c.rings[window.ring].collect(now_s, window.buckets, &mut w);
            all.add(&w);
            total_calls += c.total_calls;
            total_errors += c.total_errors;
            active += c.active;
            commands.push(CommandStats {
                command: c.name.to_string(),
                window: w.figures(per_second(w.calls)),
                in_flight: c.active.max(0) as u64,
                errors_by_type: named(&w.errors_by_type),
                since_start: CommandSinceStart {
                    calls: c.total_calls,
                    errors: c.total_errors,
                    max_s: c.total_max_ns as f64 / 1e9,
                    errors_by_type: named(&c.total_errors_by_type),
                },
            });
        }
        drop(inner);
        commands.sort_by(|a, b| a.command.cmp(&b.command));
        Summary {
            window: name,
            window_s: window.seconds(),
            timestamp: SystemTime::now(),
            uptime_s: uptime.as_secs_f64(),
            percentile_resolution: RESOLUTION,
            totals: Totals {
                window: all.figures(per_second(all.calls)),
                in_flight: active.max(0) as u64,
                since_start: SinceStart {
                    calls: total_calls,
                    errors: total_errors,
                },
            },
            commands,
        }
    }

    /// The most recent failed commands (newest first), or the slowest recent ones.
    pub(crate) fn recent(&self, slow: bool, limit: usize) -> Vec<RecentCommand> {
        let inner = self.lock();
        let items: Vec<&RecentItem> = if slow {
            let mut items: Vec<&RecentItem> = inner.recent_slow.iter().collect();
            items.sort_by_key(|item| std::cmp::Reverse(item.duration_ns));
            items.truncate(limit);
            items
        } else {
            inner.recent_errors.iter().rev().take(limit).collect()
        };
        items
            .into_iter()
            .map(|item| RecentCommand {
                command: item.command.to_string(),
                duration_s: item.duration_ns as f64 / 1e9,
                error_type: item.error_type.as_ref().map(|e| e.to_string()),
                time: item.at,
                trace_id: item.trace.map(|t| format!("{:032x}", t.trace_id)),
                span_id: item.trace.map(|t| format!("{:016x}", t.span_id)),
            })
            .collect()
    }
}

impl CommandFeed for Windows {
    fn ingest(
        &self,
        catalog: &Catalog,
        finished: &mut Vec<FinishedCommand>,
        active: &mut dyn Iterator<Item = (u32, i64)>,
    ) {
        let now_s = self.started.elapsed().as_secs();
        let mut inner = self.lock();
        let inner = &mut *inner;
        for f in finished.drain(..) {
            let slot = self.slot(inner, catalog, f.command);
            if let Some(error) = f.error {
                Self::error_name(inner, catalog, error);
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
            let slot = self.slot(inner, catalog, command);
            inner.commands[slot].active += count.max(0);
        }
        self.notables.swap(&mut inner.spare);
        while let Some(n) = inner.spare.pop_front() {
            let error_type = n.error.map(|e| {
                Self::error_name(inner, catalog, e);
                inner.error_names.get(&e).cloned().unwrap_or_default()
            });
            // The real name even when the row is folded: the list is bounded anyway.
            let item = RecentItem {
                command: catalog.command(n.command).name.clone(),
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
