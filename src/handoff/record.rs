//! What the hot path hands to the background side: one record per closed command span or
//! mark, and why a hand-over can fail.

/// One measurement, as the hot path hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
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

/// Why a record could not be handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// This thread's ring is full: the background thread has fallen behind.
    Full,
    /// The thread is being torn down, or is re-entering from inside a push.
    Unavailable,
}
