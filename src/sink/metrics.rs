//! The `metrics` facade sink: handles on the global recorder or a given one, resolved on the
//! background side. Label keys and values are spelled for Prometheus ([`crate::spelling`]).

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder, SharedString, Unit};

use super::{Attribute, Metric, Sink, DESCRIPTIONS};
use crate::names;
use crate::spelling::{prometheus_label, prometheus_value};

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Which recorder the `metrics` measurements go to.
#[derive(Clone)]
pub(crate) enum RecorderTarget {
    /// The global recorder, looked up when a series is first recorded.
    Global,
    Recorder(Arc<dyn Recorder + Send + Sync>),
}

/// The `metrics` facade sink.
pub(crate) struct MetricsSink {
    target: RecorderTarget,
    /// Registered with the descriptions.
    dropped: Option<Counter>,
}

impl MetricsSink {
    pub(crate) fn new(target: RecorderTarget) -> Self {
        Self {
            target,
            dropped: None,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match &self.target {
            RecorderTarget::Global => metrics::with_recorder(f),
            RecorderTarget::Recorder(recorder) => f(&**recorder),
        }
    }

    fn key(metric: Metric, attributes: &[Attribute<'_>]) -> Key {
        let labels: Vec<Label> = attributes
            .iter()
            .map(|(key, value)| {
                Label::new(prometheus_label(key), prometheus_value(value).into_owned())
            })
            .collect();
        Key::from_parts(metric.description().prometheus, labels)
    }

    fn counter(&self, key: &Key) -> Counter {
        self.with(|r| r.register_counter(key, &METADATA))
    }
}

impl Sink for MetricsSink {
    type Histogram = Histogram;
    type Counter = Counter;
    type Gauge = Gauge;

    fn describe(&mut self) {
        self.with(|r| {
            for d in &DESCRIPTIONS {
                let unit = Some(if d.seconds {
                    Unit::Seconds
                } else {
                    Unit::Count
                });
                let (name, text) = (d.prometheus.into(), SharedString::const_str(d.text));
                match d.metric {
                    Metric::Active => r.describe_gauge(name, unit, text),
                    Metric::Overflow | Metric::Dropped => r.describe_counter(name, unit, text),
                    Metric::Duration | Metric::Busy | Metric::Mark => {
                        r.describe_histogram(name, unit, text)
                    }
                }
            }
        });
        self.dropped = Some(self.counter(&Self::key(Metric::Dropped, &[])));
    }

    fn histogram(&self, metric: Metric, attributes: &[Attribute<'_>]) -> Histogram {
        let key = Self::key(metric, attributes);
        self.with(|r| r.register_histogram(&key, &METADATA))
    }

    fn record(histogram: &Histogram, seconds: f64) {
        histogram.record(seconds);
    }

    fn folded(&self, metric: Metric) -> Counter {
        let metric = metric.description().prometheus;
        self.counter(&Self::key(
            Metric::Overflow,
            &[(names::ATTR_METRIC, metric)],
        ))
    }

    fn add(counter: &Counter, n: u64) {
        counter.increment(n);
    }

    fn in_flight(&self, attributes: &[Attribute<'_>]) -> Gauge {
        let key = Self::key(Metric::Active, attributes);
        self.with(|r| r.register_gauge(&key, &METADATA))
    }

    fn set(gauge: &Gauge, value: i64) {
        gauge.set(value as f64);
    }

    fn dropped(&self, total: u64) {
        if let Some(dropped) = &self.dropped {
            dropped.absolute(total);
        }
    }
}
