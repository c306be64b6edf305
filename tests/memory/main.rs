//! Memory under a cardinality flood, read as this process's resident memory (`/proc/self`):
//! alone in its binary, since any other test in the process would allocate into the reading.

// This binary uses part of the fixture.
#[allow(dead_code)]
#[path = "../fixtures/two_sinks.rs"]
mod two_sinks;

mod cardinality_flood_stays_bounded;
