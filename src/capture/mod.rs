//! Capture on the caller's thread: what a callsite is (decided once), reading fields into
//! stack buffers, the error type, the clock, the catalog of ids, and the per-span state (the
//! span table, with span extensions as its fallback, and the per-thread enter stack).

pub(crate) mod callsite;
pub(crate) mod catalog;
pub(crate) mod clock;
pub(crate) mod entered;
pub(crate) mod error_type;
pub(crate) mod fields;
pub(crate) mod spans;
pub(crate) mod text;
