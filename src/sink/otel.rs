//! The OpenTelemetry sink: the instruments, created once per layer. Series handles are bound
//! (`Histogram::bind`) on the background side, so a record does no attribute look-up. The
//! in-flight and dropped counts are observable instruments, read when the SDK collects.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, Counter, Histogram, Meter, ObservableCounter,
    ObservableUpDownCounter,
};
use opentelemetry::KeyValue;

use super::{Attribute, Metric, Sink};
use crate::names;

/// Which meter the OpenTelemetry measurements go to.
#[derive(Clone, Debug)]
pub(crate) enum MeterTarget {
    /// The global meter provider's, taken when the layer is built.
    Global,
    Meter(Meter),
}

/// What the observable instruments call back into while the SDK collects.
pub(crate) struct Hooks {
    /// Forwards what the layer still buffers, so that a collection is never stale; `false`
    /// once the layer is gone.
    pub(crate) before_collect: Box<dyn Fn() -> bool + Send + Sync>,
    /// The number of dropped records; `None` once the layer is gone (a callback cannot be
    /// unregistered, and observing 0 would overwrite a live layer's count).
    pub(crate) dropped: Box<dyn Fn() -> Option<u64> + Send + Sync>,
}

/// In-flight gauges: each command's attributes and its count, set by the pump.
type Gauges = Mutex<Vec<(Vec<KeyValue>, Arc<AtomicI64>)>>;

/// The OpenTelemetry sink.
pub(crate) struct OtelSink {
    duration: Histogram<f64>,
    busy: Histogram<f64>,
    mark: Histogram<f64>,
    overflow: Counter<u64>,
    gauges: Arc<Gauges>,
    // Observable instruments live as long as their handle.
    _active: ObservableUpDownCounter<i64>,
    _dropped: ObservableCounter<u64>,
}

fn key_values(attributes: &[Attribute<'_>]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
        .collect()
}

impl OtelSink {
    pub(crate) fn new(target: &MeterTarget, buckets: &[f64], hooks: Hooks) -> Self {
        let meter = match target {
            MeterTarget::Global => opentelemetry::global::meter_with_scope(crate::scope()),
            MeterTarget::Meter(meter) => meter.clone(),
        };
        let histogram = |metric: Metric| {
            let d = metric.description();
            meter
                .f64_histogram(d.otel)
                .with_unit("s")
                .with_description(d.text)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let Hooks {
            before_collect,
            dropped,
        } = hooks;
        let gauges: Arc<Gauges> = Arc::default();
        let observed = Arc::clone(&gauges);
        Self {
            duration: histogram(Metric::Duration),
            busy: histogram(Metric::Busy),
            mark: histogram(Metric::Mark),
            overflow: meter
                .u64_counter(Metric::Overflow.description().otel)
                .with_description(Metric::Overflow.description().text)
                .build(),
            gauges,
            _active: meter
                .i64_observable_up_down_counter(Metric::Active.description().otel)
                .with_description(Metric::Active.description().text)
                .with_callback(move |observer| {
                    if !before_collect() {
                        return;
                    }
                    let gauges = observed.lock().unwrap_or_else(PoisonError::into_inner);
                    for (attributes, count) in gauges.iter() {
                        observer.observe(count.load(Ordering::Relaxed), attributes);
                    }
                })
                .build(),
            _dropped: meter
                .u64_observable_counter(Metric::Dropped.description().otel)
                .with_description(Metric::Dropped.description().text)
                .with_callback(move |observer| {
                    if let Some(count) = dropped() {
                        observer.observe(count, &[]);
                    }
                })
                .build(),
        }
    }
}

impl Sink for OtelSink {
    type Histogram = BoundHistogram<f64>;
    type Counter = BoundCounter<u64>;
    type Gauge = Arc<AtomicI64>;

    /// The descriptions are given when the instruments are made.
    fn describe(&mut self) {}

    fn histogram(&self, metric: Metric, attributes: &[Attribute<'_>]) -> Self::Histogram {
        let instrument = match metric {
            Metric::Busy => &self.busy,
            Metric::Mark => &self.mark,
            _ => &self.duration,
        };
        instrument.bind(&key_values(attributes))
    }

    fn record(histogram: &Self::Histogram, seconds: f64) {
        histogram.record(seconds);
    }

    fn folded(&self, metric: Metric) -> Self::Counter {
        let metric = metric.description().otel;
        self.overflow
            .bind(&[KeyValue::new(names::ATTR_METRIC, metric)])
    }

    fn add(counter: &Self::Counter, n: u64) {
        counter.add(n);
    }

    fn in_flight(&self, attributes: &[Attribute<'_>]) -> Self::Gauge {
        let count = Arc::new(AtomicI64::new(0));
        self.gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key_values(attributes), Arc::clone(&count)));
        count
    }

    fn set(gauge: &Self::Gauge, value: i64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Observed through [`Hooks::dropped`] instead, at collection time.
    fn dropped(&self, _total: u64) {}
}
