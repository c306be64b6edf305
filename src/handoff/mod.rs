//! The hand-off from the caller's thread to the background side: the record type, one
//! single-producer ring per thread and layer, what happens when a ring is full (overload), the
//! queue of notable (failed or slow) commands, and the re-entrancy guard.

pub(crate) mod forwarding;
pub(crate) mod notable;
pub(crate) mod overload;
pub(crate) mod record;
pub(crate) mod rings;
