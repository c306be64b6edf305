//! Hand-off from the hot path to the background thread: every recording thread gets its own
//! single-producer ring per layer, so a record is one uncontended write with no lock, no
//! allocation and no shared cache line. The background thread drains all rings.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::Thread;

use rtrb::{Consumer, Producer, RingBuffer};

/// One measurement, as the hot path hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A command span was created: one more in flight.
    Started { command: u32 },
    /// A `command` field was recorded after creation: the in-flight count moves.
    Moved { from: u32, to: u32 },
    /// A command span closed. `error` is `None` on success, else the error type id.
    Finished {
        entry: u32,
        error: Option<u16>,
        duration_ns: u64,
        busy_ns: u64,
    },
    /// An event with a `mark` field happened inside a command span.
    Marked {
        command: u32,
        mark: u16,
        elapsed_ns: u64,
    },
}

/// The consumer side, shared by a layer and its background thread.
#[derive(Debug)]
pub(crate) struct Buffers {
    id: u64,
    capacity: usize,
    /// Rings created since the background thread last looked.
    pending: Mutex<Vec<Consumer<Record>>>,
    dropped: AtomicU64,
    waker: OnceLock<Thread>,
}

struct LocalRing {
    layer: u64,
    producer: Producer<Record>,
    /// Records pushed since the fill level was last looked at.
    since_check: usize,
}

/// Why a record could not be handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// This thread's ring is full: the background thread has fallen behind.
    Full,
    /// The thread is being torn down, or is re-entering from inside a push.
    Unavailable,
}

thread_local! {
    static RINGS: RefCell<Vec<LocalRing>> = const { RefCell::new(Vec::new()) };
}

impl Buffers {
    pub(crate) fn new(capacity: usize) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity,
            pending: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            waker: OnceLock::new(),
        }
    }

    /// This layer's unique id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The background thread, woken as rings fill.
    pub(crate) fn waker(&self) -> Option<&Thread> {
        self.waker.get()
    }

    pub(crate) fn set_waker(&self, thread: Thread) {
        let _ = self.waker.set(thread);
    }

    /// Hands a record over without blocking. Every eighth of a ring's capacity, the fill level
    /// is checked, and a ring half full wakes the background thread.
    pub(crate) fn try_push(&self, record: Record) -> Result<(), PushError> {
        RINGS
            .try_with(|rings| {
                let Ok(mut rings) = rings.try_borrow_mut() else {
                    return Err(PushError::Unavailable);
                };
                let ring = match rings.iter().position(|r| r.layer == self.id) {
                    Some(i) => &mut rings[i],
                    None => self.new_ring(&mut rings),
                };
                if ring.producer.push(record).is_err() {
                    return Err(PushError::Full);
                }
                ring.since_check += 1;
                if ring.since_check >= self.capacity / 8 {
                    ring.since_check = 0;
                    // Only a ring half full wakes the background thread: it paces its drains
                    // to come sooner, and a wake is a system call on this thread.
                    if ring.producer.slots() < self.capacity / 2 {
                        if let Some(waker) = self.waker.get() {
                            waker.unpark();
                        }
                    }
                }
                Ok(())
            })
            // The thread is exiting and its rings are gone.
            .unwrap_or(Err(PushError::Unavailable))
    }

    /// Counts a record that could not be handed over.
    pub(crate) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    #[cold]
    fn new_ring<'a>(&self, rings: &'a mut Vec<LocalRing>) -> &'a mut LocalRing {
        // Forget rings of layers that are gone.
        rings.retain(|r| !r.producer.is_abandoned());
        let (producer, consumer) = RingBuffer::new(self.capacity);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(consumer);
        rings.push(LocalRing {
            layer: self.id,
            producer,
            since_check: 0,
        });
        let last = rings.len() - 1;
        &mut rings[last]
    }

    /// Rings created since the last call.
    pub(crate) fn take_new(&self) -> Vec<Consumer<Record>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records dropped so far because a ring was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
