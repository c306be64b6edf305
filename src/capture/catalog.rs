//! The catalog: interning of commands, series keys (command + label values), error types and marks into
//! small integer ids, with the cardinality caps applied here so nothing grows without bound.
//! Reads are lock-free (append-only vectors); a lock is taken only to add a new value.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use super::callsite::SpanSite;

/// Id of the overflow entry, which collects every series beyond the cap.
pub(crate) const OVERFLOW_ENTRY: u32 = 0;
/// Id of the overflow command (the command of [`OVERFLOW_ENTRY`]).
pub(crate) const OVERFLOW_COMMAND: u32 = 0;
/// Keys kept per series of the cap (see [`Catalog::new`]).
pub(crate) const KEYS_PER_SERIES: usize = 4;
/// Keys kept beyond that, so that a small cap still leaves room for passing keys.
const KEYS_SLACK: usize = 64;
/// Commands kept beyond the series cap: room for span names that stand in for a `command`
/// recorded later. Small, so that the commands' error types still fit the shared table at the
/// default caps (2016 × 32 < [`MAX_ERROR_TYPES`]).
const COMMANDS_SLACK: usize = 16;
/// Id standing for `_OTHER` in an [`Interner`].
pub(crate) const OTHER_ID: u16 = u16::MAX;
/// Distinct error types kept across all commands (each command adds at most its own cap, so
/// this is only reached with thousands of commands); beyond it every new one is `_OTHER`.
const MAX_ERROR_TYPES: usize = 65_000;

/// A capped set of strings with ids. Lookups take a read lock only; adding takes the write lock.
#[derive(Debug)]
pub(crate) struct Interner {
    items: boxcar::Vec<Box<str>>,
    index: RwLock<HashMap<Box<str>, u16>>,
    cap: usize,
}

impl Interner {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            items: boxcar::Vec::new(),
            index: RwLock::new(HashMap::new()),
            cap: cap.min(usize::from(OTHER_ID)),
        }
    }

    /// The id of `value`, if it has one.
    pub(crate) fn find(&self, value: &str) -> Option<u16> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
            .copied()
    }

    /// The id of `value`, adding it while under the cap; [`OTHER_ID`] beyond it.
    pub(crate) fn intern(&self, value: &str) -> u16 {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = index.get(value) {
            return id;
        }
        let full = index.len() >= self.cap;
        drop(index);
        if full {
            return OTHER_ID;
        }
        self.add(value)
    }

    #[cold]
    fn add(&self, value: &str) -> u16 {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = index.get(value) {
            return id;
        }
        if index.len() >= self.cap {
            return OTHER_ID;
        }
        let id = self.items.push(value.into()) as u16;
        index.insert(value.into(), id);
        id
    }

    /// The string of `id`, if `id` was handed out (and is visible to this thread).
    pub(crate) fn lookup(&self, id: u16) -> Option<&str> {
        self.items.get(usize::from(id)).map(|s| &**s)
    }

    /// The string of `id`; `_OTHER` for [`OTHER_ID`].
    pub(crate) fn get(&self, id: u16) -> &str {
        self.items
            .get(usize::from(id))
            .map_or(crate::names::OTHER, |s| s)
    }
}

/// Error types a command remembers without a lock.
const RECENT_ERROR_TYPES: usize = 4;

/// A command name.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) name: Box<str>,
    /// The error types this command has used, at most the per-command cap: one command's
    /// free-text error types cannot use up the shared table.
    error_types: Mutex<Vec<u16>>,
    /// Error types (id + 1; 0 for none) this command used lately, looked at before taking the
    /// lock: a command failing the same way on several threads does not serialise them.
    recent_errors: [AtomicU32; RECENT_ERROR_TYPES],
    next_recent: AtomicUsize,
}

impl Command {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            error_types: Mutex::new(Vec::new()),
            recent_errors: std::array::from_fn(|_| AtomicU32::new(0)),
            next_recent: AtomicUsize::new(0),
        }
    }
}

/// One series key: a command and the values of the allow-listed labels.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) command: u32,
    /// The command's name, kept here too so matching an entry takes one look-up, not two.
    name: Box<str>,
    pub(crate) labels: Box<[Option<Box<str>>]>,
}

impl Entry {
    fn matches(&self, command: &str, labels: &[Option<&str>]) -> bool {
        self.name.as_ref() == command
            && self.labels.len() == labels.len()
            && self
                .labels
                .iter()
                .zip(labels)
                .all(|(a, b)| a.as_deref() == *b)
    }
}

/// All interned values of one layer.
#[derive(Debug)]
pub(crate) struct Catalog {
    commands: boxcar::Vec<Command>,
    entries: boxcar::Vec<Entry>,
    command_index: Mutex<HashMap<Box<str>, u32>>,
    /// Hash of (command, labels) → entry ids with that hash.
    entry_index: RwLock<HashMap<u64, Vec<u32>>>,
    /// All error types, across commands; the per-command cap is applied when exporting.
    pub(crate) error_types: Interner,
    pub(crate) marks: Interner,
    max_entries: usize,
    /// Commands kept (besides the overflow command): the series cap, plus a few span names of
    /// spans whose `command` is recorded later.
    max_commands: usize,
}

fn key_hash(command: &str, labels: &[Option<&str>]) -> u64 {
    let mut h = DefaultHasher::new();
    command.hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

impl Catalog {
    /// The id of error type `text` for `command`: `_OTHER` once the command has used
    /// `max_per_command` others. Called on the error path only.
    pub(crate) fn intern_error_type(
        &self,
        command: u32,
        text: &str,
        max_per_command: usize,
    ) -> u16 {
        let command = self.command(command);
        for slot in &command.recent_errors {
            let id = slot.load(Ordering::Relaxed);
            // Once a command has used an error type, that type's id is its answer for good.
            if let Some(id) = id.checked_sub(1).map(|id| id as u16) {
                if self.error_types.lookup(id) == Some(text) {
                    return id;
                }
            }
        }
        let id = self.intern_error_type_slow(command, text, max_per_command);
        if id != OTHER_ID {
            let slot = command.next_recent.fetch_add(1, Ordering::Relaxed) % RECENT_ERROR_TYPES;
            command.recent_errors[slot].store(u32::from(id) + 1, Ordering::Relaxed);
        }
        id
    }

    #[cold]
    fn intern_error_type_slow(&self, command: &Command, text: &str, max_per_command: usize) -> u16 {
        let mut used = command
            .error_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = self.error_types.find(text) {
            if used.contains(&id) {
                return id;
            }
        }
        if used.len() >= max_per_command {
            return OTHER_ID;
        }
        let id = self.error_types.intern(text);
        if id != OTHER_ID {
            used.push(id);
        }
        id
    }

    /// `max_series` is the cap on exported series, which the background side applies to the
    /// series that records arrive for. Keys that spans only pass through (the span name while
    /// `command` is still `Empty`, a partial set of labels recorded one at a time) must not use
    /// it up, so more keys than that are kept here: [`KEYS_PER_SERIES`] per series, a bound on
    /// memory only. Past it, new keys are the overflow entry.
    pub(crate) fn new(max_series: usize, max_marks: usize) -> Self {
        let max_entries = max_series
            .saturating_mul(KEYS_PER_SERIES)
            .saturating_add(KEYS_SLACK);
        let max_commands = max_series.saturating_add(COMMANDS_SLACK);
        let catalog = Self {
            commands: boxcar::Vec::new(),
            entries: boxcar::Vec::new(),
            command_index: Mutex::new(HashMap::new()),
            entry_index: RwLock::new(HashMap::new()),
            error_types: Interner::new(MAX_ERROR_TYPES),
            marks: Interner::new(max_marks),
            max_entries,
            max_commands,
        };
        catalog.commands.push(Command::new(crate::names::OTHER));
        catalog.entries.push(Entry {
            command: OVERFLOW_COMMAND,
            name: crate::names::OTHER.into(),
            labels: Box::new([]),
        });
        catalog
    }

    pub(crate) fn command(&self, id: u32) -> &Command {
        self.commands
            .get(id as usize)
            .or_else(|| self.commands.get(OVERFLOW_COMMAND as usize))
            .expect("the overflow command is added in Catalog::new")
    }

    pub(crate) fn entry(&self, id: u32) -> &Entry {
        self.entries
            .get(id as usize)
            .or_else(|| self.entries.get(OVERFLOW_ENTRY as usize))
            .expect("the overflow entry is added in Catalog::new")
    }

    /// The entry for this command and label values, and its command; [`OVERFLOW_ENTRY`] once
    /// the cap is reached.
    pub(crate) fn resolve(
        &self,
        site: &SpanSite,
        command: &str,
        labels: &[Option<&str>],
    ) -> (u32, u32) {
        for id in site.recent() {
            let entry = self.entry(id);
            if entry.matches(command, labels) {
                return (id, entry.command);
            }
        }
        let id = self.resolve_slow(command, labels);
        // Not the overflow entry: a command named like it must not be taken for it.
        if id != OVERFLOW_ENTRY {
            site.remember(id);
        }
        (id, self.entry(id).command)
    }

    #[cold]
    fn resolve_slow(&self, command: &str, labels: &[Option<&str>]) -> u32 {
        let hash = key_hash(command, labels);
        let found = {
            let index = self
                .entry_index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            self.find(&index, hash, command, labels)
        };
        match found {
            Some(id) => id,
            None if self.entries.count() > self.max_entries => OVERFLOW_ENTRY,
            None => self.insert(hash, command, labels),
        }
    }

    fn find(
        &self,
        index: &HashMap<u64, Vec<u32>>,
        hash: u64,
        command: &str,
        labels: &[Option<&str>],
    ) -> Option<u32> {
        index
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| self.entry(id).matches(command, labels))
    }

    #[cold]
    fn insert(&self, hash: u64, command: &str, labels: &[Option<&str>]) -> u32 {
        let mut index = self
            .entry_index
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = self.find(&index, hash, command, labels) {
            return id;
        }
        // Entry 0 is the overflow entry, so `max_entries` real ones fit.
        if self.entries.count() > self.max_entries {
            return OVERFLOW_ENTRY;
        }
        // Commands are capped on their own: keys a span passes through mostly differ in label
        // values, and each command may hold up to its own number of error types.
        let Some(command_id) = self.intern_command(command) else {
            return OVERFLOW_ENTRY;
        };
        let id = self.entries.push(Entry {
            command: command_id,
            name: command.into(),
            labels: labels.iter().map(|l| l.map(Box::from)).collect(),
        }) as u32;
        index.entry(hash).or_default().push(id);
        id
    }

    /// The id of command `name`; `None` once [`Catalog::max_commands`] commands exist.
    fn intern_command(&self, name: &str) -> Option<u32> {
        let mut index = self
            .command_index
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = index.get(name) {
            return Some(id);
        }
        if index.len() >= self.max_commands {
            return None;
        }
        let id = self.commands.push(Command::new(name)) as u32;
        index.insert(name.into(), id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::{Catalog, COMMANDS_SLACK, OVERFLOW_ENTRY};
    use crate::capture::callsite::Callsite;
    use crate::config::Selection;

    #[test]
    fn commands_are_capped_on_their_own() {
        static CALLSITE: tracing_core::callsite::DefaultCallsite =
            tracing_core::callsite::DefaultCallsite::new(&META);
        static META: tracing_core::Metadata<'static> = tracing_core::metadata! {
            name: "h",
            target: "t",
            level: tracing_core::Level::INFO,
            fields: &["command"],
            callsite: &CALLSITE,
            kind: tracing_core::metadata::Kind::SPAN,
        };
        let selection = Selection {
            command_field: "command".into(),
            span_names: Vec::new(),
            target_prefixes: Vec::new(),
            predicate: None,
            labels: Vec::new(),
        };
        let Callsite::Span(site) = Callsite::classify(&META, &selection) else {
            panic!("a span with a command field is a command");
        };
        let catalog = Catalog::new(2, 8);
        let kept = (0..100)
            .map(|i| catalog.resolve(&site, &format!("c{i}"), &[]).0)
            .filter(|&entry| entry != OVERFLOW_ENTRY)
            .count();
        assert_eq!(kept, 2 + COMMANDS_SLACK);
        let again = catalog.resolve(&site, "c0", &[]).0;
        assert_ne!(again, OVERFLOW_ENTRY, "a kept command stays kept");
    }
}
