//! Busy time without touching the span on enter: each thread keeps a small stack of the spans it
//! has entered, and when. Enter and exit of one span always happen on the same thread (tracing's
//! guards are `!Send`, and an instrumented future enters and exits within one poll), so an exit
//! finds its enter here, and only the exit has to reach the span's state.

use std::cell::RefCell;

/// Entries kept per thread. Past it the oldest goes: it can only be a leaked guard's (a span
/// entered here whose exit never comes), or nesting deeper than anything real.
const MAX_DEPTH: usize = 256;

struct Entered {
    layer: u64,
    span: u64,
    at: u64,
    /// Where the span's state was found at the enter, so the exit need not search for it.
    slot: u32,
    /// The span was already entered on this thread: the outer entry times it.
    nested: bool,
}

thread_local! {
    static STACK: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
}

/// Notes that `span` (whose state is at `slot`) was entered at `now` (a raw clock reading).
pub(crate) fn enter(layer: u64, span: u64, slot: u32, now: u64) {
    let _ = STACK.try_with(|stack| {
        let Ok(mut stack) = stack.try_borrow_mut() else {
            return;
        };
        if stack.len() >= MAX_DEPTH {
            stack.remove(0);
        }
        let nested = stack.iter().any(|e| e.layer == layer && e.span == span);
        stack.push(Entered {
            layer,
            span,
            at: now,
            slot,
            nested,
        });
    });
}

/// Forgets the latest entry of `span` and returns when it was entered and the slot noted
/// then, unless it was nested in another entry of the same span (or not noted at all).
pub(crate) fn exit(layer: u64, span: u64) -> Option<(u64, u32)> {
    STACK
        .try_with(|stack| {
            let mut stack = stack.try_borrow_mut().ok()?;
            let i = stack
                .iter()
                .rposition(|e| e.layer == layer && e.span == span)?;
            // Exits nearly always come in the reverse order of enters.
            let entry = if i + 1 == stack.len() {
                stack.pop()?
            } else {
                stack.remove(i)
            };
            (!entry.nested).then_some((entry.at, entry.slot))
        })
        .ok()
        .flatten()
}

/// Forgets every entry of a span that is closing while still entered on this thread (a leaked
/// guard, or unwinding) and returns when its outermost entry began.
pub(crate) fn close(layer: u64, span: u64) -> Option<u64> {
    STACK
        .try_with(|stack| {
            let mut stack = stack.try_borrow_mut().ok()?;
            let mut outermost = None;
            stack.retain(|e| {
                let mine = e.layer == layer && e.span == span;
                if mine && !e.nested {
                    outermost = Some(e.at);
                }
                !mine
            });
            outermost
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::{close, enter, exit, MAX_DEPTH};

    #[test]
    fn leaked_entries_never_stop_timing() {
        for span in 0..(MAX_DEPTH as u64 + 10) {
            enter(3, 1000 + span, 0, span);
        }
        enter(3, 1, 0, 5000);
        assert_eq!(
            exit(3, 1),
            Some((5000, 0)),
            "a new entry is timed on a full stack"
        );
        assert_eq!(close(3, 1000), None, "the oldest leaked entry was evicted");
    }

    #[test]
    fn nested_entries_of_one_span_are_timed_once() {
        enter(1, 7, 0, 100);
        enter(1, 7, 0, 150);
        assert_eq!(exit(1, 7), None, "the inner entry is nested");
        assert_eq!(exit(1, 7), Some((100, 0)));
        assert_eq!(exit(1, 7), None, "nothing left");
    }

    #[test]
    fn spans_and_layers_are_kept_apart() {
        enter(1, 7, 0, 100);
        enter(2, 7, 0, 110);
        enter(1, 8, 0, 120);
        assert_eq!(exit(1, 7), Some((100, 0)), "out of order exit");
        assert_eq!(exit(1, 8), Some((120, 0)));
        assert_eq!(close(2, 7), Some(110));
        assert_eq!(close(2, 7), None);
    }
}
