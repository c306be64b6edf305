//! The re-entrancy guard: a thread-local flag set while a thread forwards records to the
//! sinks, so that what a sink logs meanwhile is not taken for the application's own events.

use std::cell::Cell;

thread_local! {
    /// Set while this thread forwards records to the sinks.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as forwarding until dropped. Forwarding can happen on an application
/// thread (`flush()`, an OpenTelemetry collection, a full ring), inside a command span, and
/// tracing-core does not guard every callback against re-entry; anything a sink logs then
/// reaches the layer, which must not take it for the application's own events.
pub(crate) struct Forwarding {
    was: bool,
}

impl Forwarding {
    pub(crate) fn start() -> Self {
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
