//! Hand-off from the hot path to the background thread: every recording thread gets its own
//! single-producer ring per layer, so a record is one uncontended write with no lock, no
//! allocation and no shared cache line, and its own in-flight counts, which only it writes.
//! The background thread drains all rings and sums the counts. What a full or missing ring
//! leads to is in [`super::overload`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;

use rtrb::{Consumer, Producer, RingBuffer};

use super::overload::{Overload, Waiter};
use super::record::{PushError, Record};

/// Commands in flight, counted per command id by one thread: started minus finished there. A
/// span finished on another thread counts there, so one thread's count can be negative; the
/// sum over all threads is right. Only the owning thread writes, so an update is a plain load
/// and store, not a locked instruction.
#[derive(Debug, Default)]
pub(crate) struct ActiveCounts(boxcar::Vec<AtomicI64>);

impl ActiveCounts {
    /// Adds `delta` to `command`'s count. Only for the thread owning these counts.
    fn add_owned(&self, command: u32, delta: i64) {
        let Some(count) = self.slot(command) else {
            return;
        };
        count.store(count.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    /// Adds `delta` to `command`'s count, from any thread.
    fn add_shared(&self, command: u32, delta: i64) {
        if let Some(count) = self.slot(command) {
            count.fetch_add(delta, Ordering::Relaxed);
        }
    }

    fn slot(&self, command: u32) -> Option<&AtomicI64> {
        let index = command as usize;
        loop {
            if let Some(count) = self.0.get(index) {
                return Some(count);
            }
            // With several writers (the shared counts), the slot may be reserved by another
            // thread's push that has not finished: wait for it rather than lose the update.
            if self.0.count() <= index {
                self.0.push(AtomicI64::new(0));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// The count of `command`.
    pub(crate) fn get(&self, command: usize) -> i64 {
        self.0.get(command).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// One past the highest command id counted.
    pub(crate) fn len(&self) -> usize {
        self.0.count()
    }
}

/// The consumer side of one thread's ring, with that thread's in-flight counts.
#[derive(Debug)]
pub(crate) struct Ring {
    pub(crate) records: Consumer<Record>,
    pub(crate) active: Arc<ActiveCounts>,
    /// The owning thread, woken when a drain frees room it waits for.
    pub(crate) waiter: Arc<Waiter>,
}

/// The consumer side, shared by a layer and its background thread.
#[derive(Debug)]
pub(crate) struct Buffers {
    id: u64,
    capacity: usize,
    /// Rings created since the background thread last looked.
    pending: Mutex<Vec<Ring>>,
    /// In-flight counts changed on threads whose own are gone (torn down).
    orphans: ActiveCounts,
    /// Records no ring could take: the background thread stalled, or the thread is torn down.
    overload: Overload,
    dropped: AtomicU64,
    waker: OnceLock<Thread>,
}

struct LocalRing {
    layer: u64,
    producer: Producer<Record>,
    active: Arc<ActiveCounts>,
    waiter: Arc<Waiter>,
    /// Records pushed since the fill level was last looked at.
    since_check: usize,
}

thread_local! {
    static RINGS: RefCell<Vec<LocalRing>> = const { RefCell::new(Vec::new()) };
}

impl Buffers {
    /// Rings of `capacity` records, and a backlog of at most `backlog_memory` bytes.
    pub(crate) fn new(capacity: usize, backlog_memory: usize) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity,
            pending: Mutex::new(Vec::new()),
            orphans: ActiveCounts::default(),
            overload: Overload::new(backlog_memory),
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
        self.with_ring(|ring| self.push_in(ring, record))
            // The thread is exiting and its rings are gone.
            .unwrap_or(Err(PushError::Unavailable))
    }

    /// As [`Buffers::try_push`], for the record of a closing span, also counting it out of
    /// `command`'s in-flight count: one look-up of the ring for both.
    pub(crate) fn try_push_closing(&self, command: u32, record: Record) -> Result<(), PushError> {
        let pushed = self.with_ring(|ring| {
            ring.active.add_owned(command, -1);
            self.push_in(ring, record)
        });
        pushed.unwrap_or_else(|| {
            self.orphans.add_shared(command, -1);
            Err(PushError::Unavailable)
        })
    }

    fn push_in(&self, ring: &mut LocalRing, record: Record) -> Result<(), PushError> {
        if ring.producer.push(record).is_err() {
            return Err(PushError::Full);
        }
        ring.since_check += 1;
        if ring.since_check >= self.capacity / 8 {
            ring.since_check = 0;
            // Only a ring half full wakes the background thread: it paces its drains to come
            // sooner, and a wake is a system call on this thread.
            if ring.producer.slots() < self.capacity / 2 {
                if let Some(waker) = self.waker.get() {
                    waker.unpark();
                }
            }
        }
        Ok(())
    }

    /// Counts a command span starting (`delta` 1) or finishing (-1) on this thread.
    pub(crate) fn add_active(&self, command: u32, delta: i64) {
        if self
            .with_ring(|ring| ring.active.add_owned(command, delta))
            .is_none()
        {
            self.orphans.add_shared(command, delta);
        }
    }

    /// Counts changed on threads that could not use their own.
    pub(crate) fn orphans(&self) -> &ActiveCounts {
        &self.orphans
    }

    /// This thread's waiter on its ring for this layer; `None` where it has no usable ring.
    pub(crate) fn waiter(&self) -> Option<Arc<Waiter>> {
        self.with_ring(|ring| Arc::clone(&ring.waiter))
    }

    /// The backlog and the waiting for room under overload.
    pub(crate) fn overload(&self) -> &Overload {
        &self.overload
    }

    /// Runs `f` on this thread's ring for this layer, making it on first use; `None` when the
    /// thread is being torn down or this is a re-entrant call.
    fn with_ring<R>(&self, f: impl FnOnce(&mut LocalRing) -> R) -> Option<R> {
        RINGS
            .try_with(|rings| {
                let mut rings = rings.try_borrow_mut().ok()?;
                let ring = match rings.iter().position(|r| r.layer == self.id) {
                    Some(i) => &mut rings[i],
                    None => self.new_ring(&mut rings),
                };
                Some(f(ring))
            })
            .ok()
            .flatten()
    }

    /// Counts a record that could not be handed over.
    pub(crate) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    #[cold]
    fn new_ring<'a>(&self, rings: &'a mut Vec<LocalRing>) -> &'a mut LocalRing {
        // Forget rings of layers that are gone.
        rings.retain(|r| !r.producer.is_abandoned());
        let (producer, records) = RingBuffer::new(self.capacity);
        let active = Arc::new(ActiveCounts::default());
        let waiter = Arc::new(Waiter::current());
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Ring {
                records,
                active: Arc::clone(&active),
                waiter: Arc::clone(&waiter),
            });
        rings.push(LocalRing {
            layer: self.id,
            producer,
            active,
            waiter,
            since_check: 0,
        });
        let last = rings.len() - 1;
        &mut rings[last]
    }

    /// Rings created since the last call.
    pub(crate) fn take_new(&self) -> Vec<Ring> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records dropped so far: the backlog was full, or a sink panicked on them.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
