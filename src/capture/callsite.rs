//! Per-callsite decisions, made once in `register_callsite` and cached: is this span a command,
//! and what role does each of its fields play? The cache is a lock-free, insert-only table keyed
//! by the callsite's `&'static Metadata`, so the hot path reads it with two atomic loads.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tracing_core::{Level, Metadata};

use crate::config::Selection;

/// What a field means to spanmetrics. Indexed by `Field::index()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldRole {
    Ignore,
    Command,
    Label(u8),
    Outcome,
    StatusCode,
    ErrorType,
    Error,
    Mark,
}

/// Field names with a fixed meaning.
pub(crate) const OUTCOME_FIELD: &str = "outcome";
pub(crate) const STATUS_CODE_FIELD: &str = "otel.status_code";
pub(crate) const ERROR_TYPE_FIELD: &str = "error.type";
pub(crate) const ERROR_FIELD: &str = "error";
pub(crate) const MARK_FIELD: &str = "mark";

/// Sentinel for "no entry cached".
pub(crate) const NO_ENTRY: u32 = u32::MAX;
const RECENT: usize = 4;

/// A span callsite selected as a command.
#[derive(Debug)]
pub(crate) struct SpanSite {
    pub(crate) roles: Box<[FieldRole]>,
    pub(crate) name: &'static str,
    /// Entries this callsite resolved to lately; checked before the shared index.
    recent: [AtomicU32; RECENT],
    next: AtomicUsize,
}

impl SpanSite {
    pub(crate) fn recent(&self) -> impl Iterator<Item = u32> + '_ {
        self.recent
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&id| id != NO_ENTRY)
    }

    pub(crate) fn remember(&self, entry: u32) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % RECENT;
        self.recent[slot].store(entry, Ordering::Relaxed);
    }
}

/// An event callsite that can change the outcome of, or mark, an enclosing command span.
#[derive(Debug)]
pub(crate) struct EventSite {
    pub(crate) roles: Box<[FieldRole]>,
    pub(crate) is_error: bool,
}

/// The decision for one callsite.
#[derive(Debug)]
pub(crate) enum Callsite {
    Span(SpanSite),
    Event(EventSite),
    Other,
}

impl Callsite {
    pub(crate) fn classify(meta: &Metadata<'_>, selection: &Selection) -> Self {
        let role_of = |name: &str| -> FieldRole {
            if meta.is_span() {
                if name == selection.command_field {
                    return FieldRole::Command;
                }
                if let Some(i) = selection.labels.iter().position(|l| l == name) {
                    return FieldRole::Label(i as u8);
                }
                match name {
                    OUTCOME_FIELD => FieldRole::Outcome,
                    STATUS_CODE_FIELD => FieldRole::StatusCode,
                    ERROR_TYPE_FIELD => FieldRole::ErrorType,
                    _ => FieldRole::Ignore,
                }
            } else {
                match name {
                    ERROR_TYPE_FIELD => FieldRole::ErrorType,
                    ERROR_FIELD => FieldRole::Error,
                    MARK_FIELD => FieldRole::Mark,
                    _ => FieldRole::Ignore,
                }
            }
        };
        let roles: Box<[FieldRole]> = meta.fields().iter().map(|f| role_of(f.name())).collect();
        if meta.is_span() {
            if !selection.selects(meta) {
                return Callsite::Other;
            }
            Callsite::Span(SpanSite {
                roles,
                name: meta.name(),
                recent: std::array::from_fn(|_| AtomicU32::new(NO_ENTRY)),
                next: AtomicUsize::new(0),
            })
        } else {
            let is_error = *meta.level() == Level::ERROR;
            let has_mark = roles.contains(&FieldRole::Mark);
            if is_error || has_mark {
                Callsite::Event(EventSite { roles, is_error })
            } else {
                Callsite::Other
            }
        }
    }
}

/// Open-addressing table from metadata address to its `Callsite`. Insert-only: entries and
/// superseded tables are freed when the table is dropped, so readers need no guard.
pub(crate) struct CallsiteTable {
    current: AtomicPtr<Slots>,
    writer: Mutex<Owned>,
}

struct Slots {
    mask: usize,
    keys: Box<[AtomicUsize]>,
    values: Box<[AtomicPtr<Callsite>]>,
}

#[derive(Default)]
struct Owned {
    tables: Vec<*mut Slots>,
    values: Vec<*mut Callsite>,
    len: usize,
}

// SAFETY: the raw pointers in `Owned` are owned allocations, only touched under the mutex or in
// `Drop`; readers only ever get shared references to `Callsite`, which is `Sync`.
unsafe impl Send for Owned {}

impl Slots {
    fn with_capacity(capacity: usize) -> *mut Slots {
        Box::into_raw(Box::new(Slots {
            mask: capacity - 1,
            keys: (0..capacity).map(|_| AtomicUsize::new(0)).collect(),
            values: (0..capacity)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }))
    }

    fn find(&self, key: usize) -> Option<*mut Callsite> {
        let mut i = hash(key) & self.mask;
        loop {
            match self.keys[i].load(Ordering::Acquire) {
                0 => return None,
                k if k == key => return Some(self.values[i].load(Ordering::Acquire)),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// Caller holds the writer lock and has checked there is room and no such key.
    fn put(&self, key: usize, value: *mut Callsite) {
        let mut i = hash(key) & self.mask;
        while self.keys[i].load(Ordering::Relaxed) != 0 {
            i = (i + 1) & self.mask;
        }
        // Value before key: a reader that sees the key sees the value.
        self.values[i].store(value, Ordering::Release);
        self.keys[i].store(key, Ordering::Release);
    }
}

fn hash(key: usize) -> usize {
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24) as usize
}

fn key_of(meta: &'static Metadata<'static>) -> usize {
    meta as *const Metadata<'static> as usize
}

impl CallsiteTable {
    pub(crate) fn new() -> Self {
        let first = Slots::with_capacity(256);
        Self {
            current: AtomicPtr::new(first),
            writer: Mutex::new(Owned {
                tables: vec![first],
                ..Owned::default()
            }),
        }
    }

    pub(crate) fn get(&self, meta: &'static Metadata<'static>) -> Option<&Callsite> {
        // SAFETY: tables and values live until `self` is dropped (see `Drop`).
        let slots = unsafe { &*self.current.load(Ordering::Acquire) };
        slots.find(key_of(meta)).map(|v| unsafe { &*v })
    }

    /// Returns the cached decision, classifying the callsite on first sight.
    pub(crate) fn get_or_classify(
        &self,
        meta: &'static Metadata<'static>,
        selection: &Selection,
    ) -> &Callsite {
        if let Some(found) = self.get(meta) {
            return found;
        }
        // Classify before taking the lock: a user predicate that logs re-enters
        // `register_callsite`, which must not find the lock held by its own thread.
        let classified = Box::new(Callsite::classify(meta, selection));
        let key = key_of(meta);
        let mut owned = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slots = unsafe { &*self.current.load(Ordering::Acquire) };
        if let Some(found) = slots.find(key) {
            // Another thread (or a re-entrant call) got there first; the same decision.
            return unsafe { &*found };
        }
        if (owned.len + 1) * 2 > slots.mask + 1 {
            let bigger = Slots::with_capacity((slots.mask + 1) * 2);
            let bigger_ref = unsafe { &*bigger };
            for (k, v) in slots.keys.iter().zip(slots.values.iter()) {
                let k = k.load(Ordering::Relaxed);
                if k != 0 {
                    bigger_ref.put(k, v.load(Ordering::Relaxed));
                }
            }
            owned.tables.push(bigger);
            self.current.store(bigger, Ordering::Release);
            slots = bigger_ref;
        }
        let value = Box::into_raw(classified);
        owned.values.push(value);
        owned.len += 1;
        slots.put(key, value);
        unsafe { &*value }
    }
}

impl Drop for CallsiteTable {
    fn drop(&mut self) {
        let owned = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for value in owned.values.drain(..) {
            // SAFETY: allocated by `Box::into_raw` above; no reader outlives `&self`.
            drop(unsafe { Box::from_raw(value) });
        }
        for table in owned.tables.drain(..) {
            drop(unsafe { Box::from_raw(table) });
        }
    }
}

impl std::fmt::Debug for CallsiteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owned = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CallsiteTable")
            .field("callsites", &owned.len)
            .finish()
    }
}
