//! What a recording thread does with a record its own ring cannot take. While the background
//! thread makes progress, the thread waits for it to free room (back-pressure on the thread
//! that causes the overload; nothing is lost). When the background thread stalls (starved of
//! CPU for longer than the overload wait, or stuck inside a sink), or the thread has no usable
//! ring (it is being torn down), the record goes into a shared backlog, bounded in memory,
//! which the next drain forwards. Only past that bound is a record dropped: counted, and
//! logged once.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::record::{PushError, Record};

/// Memory a queued record takes in the backlog, counted generously: the record, the queue's
/// per-slot state word and its share of the queue's block links.
pub(crate) const BACKLOG_RECORD_BYTES: usize = std::mem::size_of::<Record>() + 16;

/// Progress counts start above this, so it marks "never found stalled".
const NEVER: u64 = 0;

/// The thread that owns a ring, as its drains see it: whether it waits for room.
#[derive(Debug)]
pub(crate) struct Waiter {
    waiting: AtomicBool,
    thread: Thread,
}

impl Waiter {
    /// The waiter for a ring owned by the calling thread.
    pub(crate) fn current() -> Self {
        Self {
            waiting: AtomicBool::new(false),
            thread: std::thread::current(),
        }
    }
}

/// The overload side of one layer's hand-off.
#[derive(Debug)]
pub(crate) struct Overload {
    backlog: SegQueue<Record>,
    /// Records in the backlog, reserved before they are pushed.
    backlog_len: AtomicUsize,
    backlog_limit: usize,
    /// Bumped by every drain, and by every slice of records a drain forwards.
    progress: AtomicU64,
    /// The highest progress count at which the background thread was found stalled.
    stalled_at: AtomicU64,
    drop_logged: AtomicBool,
}

impl Overload {
    /// A backlog of at most `memory` bytes.
    pub(crate) fn new(memory: usize) -> Self {
        Self {
            backlog: SegQueue::new(),
            backlog_len: AtomicUsize::new(0),
            backlog_limit: memory / BACKLOG_RECORD_BYTES,
            progress: AtomicU64::new(NEVER + 1),
            stalled_at: AtomicU64::new(NEVER),
            drop_logged: AtomicBool::new(false),
        }
    }

    /// Whether the background thread was found stalled and has not moved since.
    #[cfg(test)]
    fn stalled(&self) -> bool {
        self.stalled_at.load(Ordering::Relaxed) >= self.progress.load(Ordering::SeqCst)
    }

    /// Waits until `push` finds room in this thread's ring, for as long as the background
    /// thread (woken through `waker`) makes progress. Gives up with [`PushError::Full`] once it
    /// has made none for `patience`, and after one try while it is known to be stalled: the
    /// caller then puts the record in the backlog. `waiter` is this thread's, on its ring: a
    /// drain that frees room in that ring wakes this thread alone.
    pub(crate) fn wait_for_room(
        &self,
        patience: Duration,
        waker: &Thread,
        waiter: &Waiter,
        mut push: impl FnMut() -> Result<(), PushError>,
    ) -> Result<(), PushError> {
        // The progress count last seen move, and when: a stall is `patience` without a move,
        // however often the park ends early (another unpark, or none at all).
        let mut since: Option<(u64, Instant)> = None;
        loop {
            // Read before trying: a drain that frees room after this read also moves it on.
            let seen = self.progress.load(Ordering::SeqCst);
            match push() {
                Err(PushError::Full) => {}
                done => return done,
            }
            if self.stalled_at.load(Ordering::Relaxed) >= seen {
                return Err(PushError::Full);
            }
            let started = match since {
                Some((progress, at)) if progress == seen => at,
                _ => {
                    let now = Instant::now();
                    since = Some((seen, now));
                    now
                }
            };
            let Some(left) = patience
                .checked_sub(started.elapsed())
                .filter(|left| !left.is_zero())
            else {
                // No drain moved for the whole wait: stop waiting until one does.
                self.stalled_at.fetch_max(seen, Ordering::Relaxed);
                return Err(PushError::Full);
            };
            waiter.waiting.store(true, Ordering::SeqCst);
            waker.unpark();
            // A drain that moved on after `seen` either shows here or sees `waiting` (both
            // sequentially consistent) and unparks this thread.
            if self.progress.load(Ordering::SeqCst) == seen {
                std::thread::park_timeout(left);
            }
            waiter.waiting.store(false, Ordering::Relaxed);
        }
    }

    /// Called by a drain after each slice of records it forwards (their ring slots released):
    /// proof that the background thread is not stalled.
    pub(crate) fn advanced(&self) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }

    /// As [`Overload::advanced`], after a drain has made room in the ring of `waiter`: wakes
    /// that ring's thread if it waits for the room. (Only then: a wake is a system call.)
    pub(crate) fn made_room(&self, waiter: &Waiter) {
        self.advanced();
        if waiter.waiting.load(Ordering::SeqCst) {
            waiter.thread.unpark();
        }
    }

    /// Queues a record for the next drain; `false` when the backlog is at its memory bound.
    pub(crate) fn push_backlog(&self, record: Record) -> bool {
        let reserved = self
            .backlog_len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| {
                (len < self.backlog_limit).then_some(len + 1)
            });
        if reserved.is_err() {
            return false;
        }
        self.backlog.push(record);
        true
    }

    /// Records in the backlog now.
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog_len.load(Ordering::Relaxed)
    }

    /// Takes a record from the backlog.
    pub(crate) fn pop_backlog(&self) -> Option<Record> {
        let record = self.backlog.pop()?;
        self.backlog_len.fetch_sub(1, Ordering::Relaxed);
        Some(record)
    }

    /// Logs, the first time only, that records are being dropped.
    pub(crate) fn log_drop_once(&self) {
        if !self.drop_logged.swap(true, Ordering::Relaxed) {
            // Not through `tracing`, which would feed back into the layer; and never a panic
            // (as `eprintln!` gives when standard error is gone) on a recording thread.
            let _ = writeln!(
                std::io::stderr(),
                "spanmetrics: the overload backlog is full ({} records, {} MiB): records are \
                 being dropped and counted in spanmetrics_dropped_records_total; the background \
                 thread has been stalled (a sink blocking, or no CPU for it)",
                self.backlog_limit,
                (self.backlog_limit * BACKLOG_RECORD_BYTES) >> 20,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Overload, Waiter, BACKLOG_RECORD_BYTES};
    use crate::handoff::record::{PushError, Record};

    fn record(n: u64) -> Record {
        Record::Finished {
            entry: 0,
            error: None,
            duration_ns: n,
            busy_ns: 0,
        }
    }

    #[test]
    fn the_backlog_holds_what_its_memory_bound_allows_and_no_more() {
        let overload = Overload::new(10 * BACKLOG_RECORD_BYTES);
        for n in 0..10 {
            assert!(overload.push_backlog(record(n)), "record {n}");
        }
        assert!(!overload.push_backlog(record(10)), "past the bound");
        assert_eq!(overload.backlog_len(), 10);
        let drained: Vec<_> = std::iter::from_fn(|| overload.pop_backlog()).collect();
        assert_eq!(drained, (0..10).map(record).collect::<Vec<_>>());
        assert!(overload.push_backlog(record(11)), "room again once drained");
    }

    /// A thread standing in for the background thread: it only parks, so that unparking it
    /// (as a waiting thread does) leaves the test thread's own park token alone.
    fn stand_in() -> (std::thread::Thread, impl FnOnce()) {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    std::thread::park();
                }
            })
        };
        let waker = thread.thread().clone();
        (waker, move || {
            done.store(true, Ordering::SeqCst);
            thread.thread().unpark();
            thread.join().expect("the stand-in thread");
        })
    }

    #[test]
    fn a_waiting_thread_waits_while_drains_progress_and_gives_up_once_they_stop() {
        let overload = Arc::new(Overload::new(0));
        let (waker, stop_waker) = stand_in();
        let waiter = Arc::new(Waiter::current());
        // A drain that makes room on its third step: the waiter must still be waiting by then.
        let steps = Arc::new(AtomicUsize::new(0));
        let drains = {
            let (overload, steps, waiter) = (
                Arc::clone(&overload),
                Arc::clone(&steps),
                Arc::clone(&waiter),
            );
            std::thread::spawn(move || {
                for _ in 0..3 {
                    // Move only while the waiter is parked (or about to be).
                    while !waiter.waiting.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                    steps.fetch_add(1, Ordering::SeqCst);
                    overload.made_room(&waiter);
                }
            })
        };
        let pushed = overload.wait_for_room(Duration::from_secs(60), &waker, &waiter, || {
            if steps.load(Ordering::SeqCst) >= 3 {
                Ok(())
            } else {
                Err(PushError::Full)
            }
        });
        drains.join().expect("the drain thread");
        assert_eq!(pushed, Ok(()));
        assert!(!overload.stalled());
        // Nothing moves now: the waiter gives up after its patience, later ones after one try.
        let gave_up = overload.wait_for_room(Duration::from_millis(1), &waker, &waiter, || {
            Err(PushError::Full)
        });
        assert_eq!(gave_up, Err(PushError::Full));
        assert!(overload.stalled());
        let mut asked = 0;
        let at_once = overload.wait_for_room(Duration::from_secs(3600), &waker, &waiter, || {
            asked += 1;
            Err(PushError::Full)
        });
        assert_eq!(
            (at_once, asked),
            (Err(PushError::Full), 1),
            "one try, no wait"
        );
        overload.advanced();
        assert!(!overload.stalled(), "a drain ends the stall");
        stop_waker();
    }
}
