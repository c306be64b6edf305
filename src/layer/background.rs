//! The layer's background thread: drains at the pace [`crate::pump::pace`] sets, untraced,
//! and ends once the layer and every handle are gone.

use std::sync::Arc;
use std::time::Instant;

use super::engine::Engine;
use crate::pump::pace::Pace;
use crate::pump::ACTIVE_PERIOD;

pub(crate) fn spawn(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    let spawned = std::thread::Builder::new()
        .name("spanmetrics".into())
        .spawn(move || {
            // Nothing this thread does may be traced by the layer that it serves.
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                let mut pace = Pace::default();
                while let Some(engine) = weak.upgrade() {
                    let drained = engine.drain_paced();
                    let mut sleep = pace.next(
                        Instant::now(),
                        drained.fullest,
                        engine.config.buffer_capacity,
                        engine.config.flush_interval,
                    );
                    if drained.active_pending {
                        sleep = sleep.min(ACTIVE_PERIOD);
                    }
                    drop(engine);
                    std::thread::park_timeout(sleep);
                }
            })
        });
    match spawned {
        Ok(handle) => engine.buffers.set_waker(handle.thread().clone()),
        // Records are still forwarded on `flush()` and on every OpenTelemetry collection.
        Err(error) => eprintln!("spanmetrics: cannot start the background thread: {error}"),
    }
}
