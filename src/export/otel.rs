//! The OpenTelemetry sink: the instruments, created once per layer. Series handles are bound
//! (`Histogram::bind`) in the background thread, so a record does no attribute lookup.

use opentelemetry::metrics::{
    Counter, Histogram, Meter, ObservableCounter, ObservableUpDownCounter,
};

use crate::names;

/// The layer's OpenTelemetry instruments.
pub(crate) struct Instruments {
    pub(crate) duration: Histogram<f64>,
    pub(crate) busy: Histogram<f64>,
    pub(crate) mark: Histogram<f64>,
    pub(crate) overflow: Counter<u64>,
    // Observable instruments live as long as their handle.
    _active: ObservableUpDownCounter<i64>,
    _dropped: ObservableCounter<u64>,
}

/// Receives one observation: a value and its attributes.
pub(crate) type Observe<'a> = &'a mut dyn FnMut(i64, &[opentelemetry::KeyValue]);

/// Callbacks of the observable instruments.
pub(crate) struct Callbacks {
    /// Forwards buffered records, then reports each command's in-flight count.
    pub(crate) active: Box<dyn Fn(Observe<'_>) + Send + Sync>,
    /// Reports the number of dropped records; `None` once the layer is gone (a callback cannot
    /// be unregistered, and observing 0 would overwrite a live layer's count).
    pub(crate) dropped: Box<dyn Fn() -> Option<u64> + Send + Sync>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter, buckets: &[f64], callbacks: Callbacks) -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let Callbacks { active, dropped } = callbacks;
        Self {
            duration: histogram(
                names::OTEL_DURATION,
                "Command latency, from span creation to close.",
            ),
            busy: histogram(
                names::OTEL_BUSY,
                "Time the command span was entered (on-CPU time of async handlers).",
            ),
            mark: histogram(names::OTEL_MARK, "Time from command start to a mark event."),
            overflow: meter
                .u64_counter(names::OTEL_OVERFLOW)
                .with_description("Records folded into an overflow series by the cardinality cap.")
                .build(),
            _active: meter
                .i64_observable_up_down_counter(names::OTEL_ACTIVE)
                .with_description("Commands in flight.")
                .with_callback(move |observer| {
                    active(&mut |value, attrs| observer.observe(value, attrs))
                })
                .build(),
            _dropped: meter
                .u64_observable_counter(names::OTEL_DROPPED)
                .with_description("Records dropped because the overload backlog was full or a sink panicked on them.")
                .with_callback(move |observer| {
                    if let Some(count) = dropped() {
                        observer.observe(count, &[]);
                    }
                })
                .build(),
        }
    }
}
