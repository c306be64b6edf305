//! Failed and slow commands, captured on the caller's thread as they close, for the live
//! statistics' recent lists. The one place the hot path takes a lock shared with other
//! threads: a failed or slow command looks up its OpenTelemetry trace id (in the span's
//! extensions) and pushes one entry into a small queue under a mutex, which the pump swaps out
//! once per drain. Every other command costs one comparison and an atomic load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tracing_core::span::Id;

/// Failed or slow commands waiting for the pump; beyond it the oldest are forgotten (they
/// are still counted, only their entries in the recent lists are lost).
const NOTABLE_QUEUE: usize = 256;

/// Trace and span id of a sampled trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceRef {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
}

/// A failed or slow command, captured on its thread when it closed.
#[derive(Debug)]
pub(crate) struct Notable {
    pub(crate) command: u32,
    pub(crate) error: Option<u16>,
    pub(crate) slow: bool,
    pub(crate) duration_ns: u64,
    pub(crate) at: SystemTime,
    pub(crate) trace: Option<TraceRef>,
}

/// The queue of notable commands and the per-command slow thresholds it is judged by.
pub(crate) struct Notables {
    slow_floor_ns: u64,
    /// Per command id: the duration from which a command counts as slow (set by the live
    /// statistics from the command's own p95).
    thresholds: boxcar::Vec<AtomicU64>,
    queue: Mutex<VecDeque<Notable>>,
}

impl std::fmt::Debug for Notables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notables")
            .field("slow_floor_ns", &self.slow_floor_ns)
            .finish_non_exhaustive()
    }
}

impl Notables {
    /// Commands taking at least `slow_floor` (and at least their threshold, once set) are slow.
    pub(crate) fn new(slow_floor: Duration) -> Self {
        Self {
            slow_floor_ns: u64::try_from(slow_floor.as_nanos()).unwrap_or(u64::MAX),
            thresholds: boxcar::Vec::new(),
            queue: Mutex::new(VecDeque::with_capacity(NOTABLE_QUEUE)),
        }
    }

    fn threshold(&self, command: u32) -> u64 {
        self.thresholds
            .get(command as usize)
            .map_or(self.slow_floor_ns, |t| t.load(Ordering::Relaxed))
    }

    /// Sets the slow threshold of `command` (never below the floor).
    pub(crate) fn set_threshold(&self, command: u32, ns: u64) {
        while self.thresholds.count() <= command as usize {
            self.thresholds.push(AtomicU64::new(self.slow_floor_ns));
        }
        if let Some(t) = self.thresholds.get(command as usize) {
            t.store(ns.max(self.slow_floor_ns), Ordering::Relaxed);
        }
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
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() == NOTABLE_QUEUE {
            queue.pop_front();
        }
        queue.push_back(notable);
    }

    /// Swaps the queue with `spare` (empty, with room for the queue's bound), so that neither
    /// side allocates: `spare` then holds what was queued.
    pub(crate) fn swap(&self, spare: &mut VecDeque<Notable>) {
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner),
            spare,
        );
    }

    /// A queue to pass to [`Notables::swap`].
    pub(crate) fn spare() -> VecDeque<Notable> {
        VecDeque::with_capacity(NOTABLE_QUEUE)
    }
}
