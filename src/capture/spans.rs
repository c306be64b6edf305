//! Per-span state of the command spans in flight. It lives in a fixed table of cache-line
//! slots found by hashing the span id, not in the registry's span extensions: creating,
//! entering, exiting and closing a command span then takes no lock, allocates nothing and needs
//! no registry look-up (an extension costs an allocation, a lock and a map look-up each time,
//! about 60 ns per span on the machine in `BENCHMARKS.md`). A span that finds no free slot
//! keeps the same state in its extensions instead ([`Spilled`]): slower, same results.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Slots per group: one cache line of keys.
const GROUP: usize = 8;
/// Groups in a table: 4096 slots, so a few thousand command spans in flight stay on the fast
/// path (the chance that all 8 slots of a group are taken grows as the 8th power of the load).
const GROUPS: usize = 512;
/// Key of a free slot. Span ids are never 0.
const FREE: u64 = 0;
/// Key of a slot being filled in.
const CLAIMED: u64 = u64::MAX;
/// A slot number that is no slot.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// What an error type came from; a higher source is not overwritten by a lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ErrorSource {
    /// No error type yet.
    None = 0,
    /// An error event inside the span.
    Event = 1,
    /// An `error.type` field on the span itself.
    SpanField = 2,
}

// The outcome word: the error type id in the low 16 bits, then flags.
const TYPE_MASK: u32 = 0xFFFF;
const HAS_TYPE: u32 = 1 << 16;
const SOURCE_SHIFT: u32 = 17;
const SOURCE_MASK: u32 = 0b11 << SOURCE_SHIFT;
const FAILED: u32 = 1 << 19;

/// The state of one command span. All atomics: a span can be exited on one thread while an
/// event inside it runs on another, and every update is a single atomic operation.
#[repr(align(64))]
#[derive(Debug, Default)]
pub(crate) struct SpanState {
    /// The series entry the span records into (its command and label values) in the low half,
    /// and that entry's command in the high half: one word, so both change together.
    series: AtomicU64,
    /// Failed flag, error type and its source, packed (see the constants above).
    outcome: AtomicU32,
    /// Raw clock reading at creation.
    start: AtomicU64,
    /// Entered time so far, in nanoseconds.
    busy_ns: AtomicU64,
}

/// A closed span's state, taken out of its slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Closed {
    pub(crate) entry: u32,
    pub(crate) command: u32,
    pub(crate) start: u64,
    pub(crate) busy_ns: u64,
    pub(crate) failed: bool,
    pub(crate) error_type: Option<u16>,
}

impl SpanState {
    pub(crate) fn new(series: SeriesId, start: u64) -> Self {
        let state = Self::default();
        state.reset(series, start);
        state
    }

    fn reset(&self, series: SeriesId, start: u64) {
        self.series.store(series.pack(), Ordering::Relaxed);
        self.outcome.store(0, Ordering::Relaxed);
        self.start.store(start, Ordering::Relaxed);
        self.busy_ns.store(0, Ordering::Relaxed);
    }

    pub(crate) fn series(&self) -> SeriesId {
        SeriesId::unpack(self.series.load(Ordering::Relaxed))
    }

    /// Moves the span to another series; returns the one it was in.
    pub(crate) fn set_series(&self, series: SeriesId) -> SeriesId {
        SeriesId::unpack(self.series.swap(series.pack(), Ordering::Relaxed))
    }

    pub(crate) fn start(&self) -> u64 {
        self.start.load(Ordering::Relaxed)
    }

    pub(crate) fn add_busy(&self, ns: u64) {
        // Wrapping would need 584 years of busy time; `fetch_add` keeps this one instruction.
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Whether an error type from `source` would replace the current one.
    pub(crate) fn takes_error_type_from(&self, source: ErrorSource) -> bool {
        source >= source_of(self.outcome.load(Ordering::Relaxed))
    }

    /// Sets or clears the failed flag and, if given, an error type from `source` (unless a
    /// higher source set one). The latest signal wins for the flag.
    pub(crate) fn update_outcome(
        &self,
        failed: Option<bool>,
        error_type: Option<(u16, ErrorSource)>,
    ) {
        let _ = self
            .outcome
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut word| {
                match failed {
                    Some(true) => word |= FAILED,
                    Some(false) => word &= !FAILED,
                    None => {}
                }
                if let Some((id, source)) = error_type {
                    if source >= source_of(word) {
                        word = (word & FAILED)
                            | HAS_TYPE
                            | ((source as u32) << SOURCE_SHIFT)
                            | u32::from(id);
                    }
                }
                Some(word)
            });
    }

    fn read(&self) -> Closed {
        let outcome = self.outcome.load(Ordering::Relaxed);
        let series = self.series();
        Closed {
            entry: series.entry,
            command: series.command,
            start: self.start(),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            failed: outcome & FAILED != 0,
            error_type: (outcome & HAS_TYPE != 0).then_some((outcome & TYPE_MASK) as u16),
        }
    }

    /// The state once the span is closed (for state kept in extensions).
    pub(crate) fn into_closed(self) -> Closed {
        self.read()
    }
}

fn source_of(word: u32) -> ErrorSource {
    match (word & SOURCE_MASK) >> SOURCE_SHIFT {
        0 => ErrorSource::None,
        1 => ErrorSource::Event,
        _ => ErrorSource::SpanField,
    }
}

/// A series entry and its command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeriesId {
    pub(crate) entry: u32,
    pub(crate) command: u32,
}

impl SeriesId {
    fn pack(self) -> u64 {
        u64::from(self.command) << 32 | u64::from(self.entry)
    }

    fn unpack(word: u64) -> Self {
        Self {
            entry: word as u32,
            command: (word >> 32) as u32,
        }
    }
}

#[repr(align(64))]
struct Keys([AtomicU64; GROUP]);

/// The table of one layer.
pub(crate) struct SpanTable {
    keys: Box<[Keys]>,
    states: Box<[SpanState]>,
    /// Spans whose state is in their extensions because their group was full.
    spilled: AtomicUsize,
}

impl SpanTable {
    pub(crate) fn new() -> Self {
        Self {
            keys: (0..GROUPS)
                .map(|_| Keys(std::array::from_fn(|_| AtomicU64::new(FREE))))
                .collect(),
            states: (0..GROUPS * GROUP).map(|_| SpanState::default()).collect(),
            spilled: AtomicUsize::new(0),
        }
    }

    fn group(id: u64) -> usize {
        // Fibonacci hashing, so consecutive ids land in different groups, of the id without its
        // top 13 bits: tracing-subscriber's registry keeps a span slot's generation there, so a
        // thread that reuses its registry slot for span after span also reuses its table slot,
        // whose cache line then stays on that thread's core instead of moving between cores.
        // (For ids of other kinds this only means a few more collisions.)
        let reused = id & (u64::MAX >> 13);
        (reused.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - GROUPS.trailing_zeros())) as usize
    }

    /// Stores a new span's state. `None` if its group is full: keep it elsewhere, and call
    /// [`SpanTable::spilled`] so look-ups know to search there.
    pub(crate) fn insert(&self, id: u64, series: SeriesId, start: u64) -> Option<&SpanState> {
        if id == CLAIMED {
            return None;
        }
        let group = Self::group(id);
        for (i, key) in self.keys[group].0.iter().enumerate() {
            if key
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                let state = &self.states[group * GROUP + i];
                state.reset(series, start);
                // The state before the key: whoever finds the key sees the state.
                key.store(id, Ordering::Release);
                return Some(state);
            }
        }
        None
    }

    /// The slot of span `id`, if it is in the table.
    pub(crate) fn find(&self, id: u64) -> Option<u32> {
        let group = Self::group(id);
        let i = self.keys[group]
            .0
            .iter()
            .position(|key| key.load(Ordering::Acquire) == id)?;
        Some((group * GROUP + i) as u32)
    }

    /// The state of span `id`, if it is in the table.
    pub(crate) fn get(&self, id: u64) -> Option<&SpanState> {
        self.find(id).map(|slot| &self.states[slot as usize])
    }

    /// The state in `slot`, if that is still span `id`'s; else wherever `id` is now.
    pub(crate) fn get_at(&self, slot: u32, id: u64) -> Option<&SpanState> {
        let slot = slot as usize;
        let key = self.keys.get(slot / GROUP).map(|g| &g.0[slot % GROUP]);
        match key {
            Some(key) if key.load(Ordering::Acquire) == id => Some(&self.states[slot]),
            _ => self.get(id),
        }
    }

    /// Takes span `id` out of the table, freeing its slot.
    pub(crate) fn remove(&self, id: u64) -> Option<Closed> {
        let group = Self::group(id);
        let i = self.keys[group]
            .0
            .iter()
            .position(|key| key.load(Ordering::Acquire) == id)?;
        let closed = self.states[group * GROUP + i].read();
        self.keys[group].0[i].store(FREE, Ordering::Release);
        Some(closed)
    }

    /// Notes that a span's state went to its extensions.
    pub(crate) fn spilled(&self) {
        self.spilled.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that a span whose state was in its extensions has closed.
    pub(crate) fn unspilled(&self) {
        self.spilled.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether any span in flight keeps its state in its extensions; if not, a span missing
    /// from the table is no command span.
    pub(crate) fn any_spilled(&self) -> bool {
        self.spilled.load(Ordering::Relaxed) != 0
    }
}

impl std::fmt::Debug for SpanTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_table = self
            .keys
            .iter()
            .flat_map(|g| g.0.iter())
            .filter(|k| k.load(Ordering::Relaxed) != FREE)
            .count();
        f.debug_struct("SpanTable")
            .field("in_table", &in_table)
            .field("spilled", &self.spilled.load(Ordering::Relaxed))
            .finish()
    }
}

/// Command-span states of the layers whose table had no room, kept in the span's extensions
/// (one extension per type, so one list for every layer on the subscriber, keyed by layer).
#[derive(Default)]
pub(crate) struct Spilled(pub(crate) Vec<(u64, SpanState)>);

impl Spilled {
    pub(crate) fn get(&self, layer: u64) -> Option<&SpanState> {
        self.0.iter().find(|(l, _)| *l == layer).map(|(_, s)| s)
    }

    pub(crate) fn take(&mut self, layer: u64) -> Option<SpanState> {
        let i = self.0.iter().position(|(l, _)| *l == layer)?;
        Some(self.0.swap_remove(i).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_group_refuses_and_frees_on_remove() {
        let table = SpanTable::new();
        // Ids that land in one group.
        let group = SpanTable::group(1);
        let same: Vec<u64> = (1..200_000u64)
            .filter(|&id| SpanTable::group(id) == group)
            .take(GROUP + 1)
            .collect();
        let series = |entry| SeriesId { entry, command: 7 };
        for (n, &id) in same.iter().take(GROUP).enumerate() {
            assert!(table.insert(id, series(n as u32), 10 + n as u64).is_some());
        }
        assert!(
            table.insert(same[GROUP], series(99), 0).is_none(),
            "the group is full"
        );
        assert_eq!(table.get(same[3]).map(SpanState::series), Some(series(3)));
        let closed = table.remove(same[3]).expect("in the table");
        assert_eq!((closed.entry, closed.command, closed.start), (3, 7, 13));
        assert!(table.get(same[3]).is_none());
        assert!(
            table.insert(same[GROUP], series(99), 0).is_some(),
            "a slot was freed"
        );
        assert_eq!(
            table.get(same[GROUP]).map(SpanState::series),
            Some(series(99))
        );
    }

    #[test]
    fn the_outcome_word_keeps_the_higher_source() {
        let state = SpanState::new(
            SeriesId {
                entry: 1,
                command: 1,
            },
            0,
        );
        state.update_outcome(Some(true), Some((7, ErrorSource::Event)));
        state.update_outcome(None, Some((9, ErrorSource::SpanField)));
        state.update_outcome(Some(true), Some((8, ErrorSource::Event)));
        let closed = state.read();
        assert!(closed.failed);
        assert_eq!(
            closed.error_type,
            Some(9),
            "an event does not beat the span field"
        );
        state.update_outcome(Some(false), None);
        let closed = state.read();
        assert!(!closed.failed, "a later ok wins");
        assert_eq!(
            closed.error_type,
            Some(9),
            "the type is kept for a later error"
        );
        let fresh = SpanState::new(
            SeriesId {
                entry: 1,
                command: 1,
            },
            0,
        );
        fresh.update_outcome(Some(true), Some((u16::MAX, ErrorSource::Event)));
        assert_eq!(fresh.read().error_type, Some(u16::MAX), "_OTHER fits");
    }
}
