//! Where the pump's measurements go: one small contract ([`Sink`]), the table of metric
//! descriptions both sinks use, and the two implementations, the `metrics` facade
//! ([`metrics`]) and OpenTelemetry ([`otel`]). A pair of sinks and an optional sink are sinks
//! too, so the pump fans out to both without knowing either.
//!
//! The other consumer of finished commands, the live statistics, takes them whole through
//! [`CommandFeed`].

pub(crate) mod metrics;
pub(crate) mod otel;

use crate::capture::catalog::Catalog;
use crate::names;

/// The metrics a layer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    Duration,
    Busy,
    Active,
    Mark,
    Overflow,
    Dropped,
}

/// What a metric is called and how it is described, in both sinks.
#[derive(Debug)]
pub(crate) struct Description {
    pub(crate) metric: Metric,
    pub(crate) otel: &'static str,
    pub(crate) prometheus: &'static str,
    /// `true` for durations in seconds, `false` for counts.
    pub(crate) seconds: bool,
    pub(crate) text: &'static str,
}

/// Every metric of a layer, described once for both sinks.
pub(crate) const DESCRIPTIONS: [Description; 6] = [
    Description {
        metric: Metric::Duration,
        otel: names::OTEL_DURATION,
        prometheus: names::PROM_DURATION,
        seconds: true,
        text: "Command latency, from span creation to close.",
    },
    Description {
        metric: Metric::Busy,
        otel: names::OTEL_BUSY,
        prometheus: names::PROM_BUSY,
        seconds: true,
        text: "Time the command span was entered (on-CPU time of async handlers).",
    },
    Description {
        metric: Metric::Active,
        otel: names::OTEL_ACTIVE,
        prometheus: names::PROM_ACTIVE,
        seconds: false,
        text: "Commands in flight.",
    },
    Description {
        metric: Metric::Mark,
        otel: names::OTEL_MARK,
        prometheus: names::PROM_MARK,
        seconds: true,
        text: "Time from command start to a mark event.",
    },
    Description {
        metric: Metric::Overflow,
        otel: names::OTEL_OVERFLOW,
        prometheus: names::PROM_OVERFLOW,
        seconds: false,
        text: "Records folded into an overflow series by the cardinality cap.",
    },
    Description {
        metric: Metric::Dropped,
        otel: names::OTEL_DROPPED,
        prometheus: names::PROM_DROPPED,
        seconds: false,
        text: "Records dropped because the overload backlog was full or a sink panicked on them.",
    },
];

impl Metric {
    /// Its row of [`DESCRIPTIONS`].
    pub(crate) fn description(self) -> &'static Description {
        // The table holds every variant, in declaration order.
        &DESCRIPTIONS[self as usize]
    }
}

/// One attribute of a series, in OpenTelemetry spelling (`error.type`); a sink spells the key
/// its own way.
pub(crate) type Attribute<'a> = (&'a str, &'a str);

/// A destination of measurements. Handles are resolved once per series, on the background
/// side (never on a recording thread); recording through a handle must be cheap, and must not
/// call back into the layer. A sink that panics loses the record it panicked on, nothing else:
/// the pump contains the panic and counts the record as dropped.
pub(crate) trait Sink: Send {
    /// A histogram series (duration, busy time or a mark).
    type Histogram: Send;
    /// A counter series.
    type Counter: Send;
    /// A gauge series.
    type Gauge: Send;

    /// Describes the metrics; called once, with the first records (not when the layer is
    /// built, so that a global recorder installed after the layer still gets them).
    fn describe(&mut self);
    /// The series of `metric` with these attributes.
    fn histogram(&self, metric: Metric, attributes: &[Attribute<'_>]) -> Self::Histogram;
    /// Records one value, in seconds.
    fn record(histogram: &Self::Histogram, seconds: f64);
    /// The counter of records that the cardinality cap folded into `metric`'s overflow series.
    fn folded(&self, metric: Metric) -> Self::Counter;
    /// Adds to a counter.
    fn add(counter: &Self::Counter, n: u64);
    /// The in-flight gauge of one command.
    fn in_flight(&self, attributes: &[Attribute<'_>]) -> Self::Gauge;
    /// Sets a gauge.
    fn set(gauge: &Self::Gauge, value: i64);
    /// The number of records dropped so far.
    fn dropped(&self, total: u64);
}

impl<S: Sink> Sink for Option<S> {
    type Histogram = Option<S::Histogram>;
    type Counter = Option<S::Counter>;
    type Gauge = Option<S::Gauge>;

    fn describe(&mut self) {
        if let Some(sink) = self {
            sink.describe();
        }
    }

    fn histogram(&self, metric: Metric, attributes: &[Attribute<'_>]) -> Self::Histogram {
        self.as_ref().map(|s| s.histogram(metric, attributes))
    }

    fn record(histogram: &Self::Histogram, seconds: f64) {
        if let Some(h) = histogram {
            S::record(h, seconds);
        }
    }

    fn folded(&self, metric: Metric) -> Self::Counter {
        self.as_ref().map(|s| s.folded(metric))
    }

    fn add(counter: &Self::Counter, n: u64) {
        if let Some(c) = counter {
            S::add(c, n);
        }
    }

    fn in_flight(&self, attributes: &[Attribute<'_>]) -> Self::Gauge {
        self.as_ref().map(|s| s.in_flight(attributes))
    }

    fn set(gauge: &Self::Gauge, value: i64) {
        if let Some(g) = gauge {
            S::set(g, value);
        }
    }

    fn dropped(&self, total: u64) {
        if let Some(sink) = self {
            sink.dropped(total);
        }
    }
}

impl<A: Sink, B: Sink> Sink for (A, B) {
    type Histogram = (A::Histogram, B::Histogram);
    type Counter = (A::Counter, B::Counter);
    type Gauge = (A::Gauge, B::Gauge);

    fn describe(&mut self) {
        self.0.describe();
        self.1.describe();
    }

    fn histogram(&self, metric: Metric, attributes: &[Attribute<'_>]) -> Self::Histogram {
        (
            self.0.histogram(metric, attributes),
            self.1.histogram(metric, attributes),
        )
    }

    fn record((a, b): &Self::Histogram, seconds: f64) {
        A::record(a, seconds);
        B::record(b, seconds);
    }

    fn folded(&self, metric: Metric) -> Self::Counter {
        (self.0.folded(metric), self.1.folded(metric))
    }

    fn add((a, b): &Self::Counter, n: u64) {
        A::add(a, n);
        B::add(b, n);
    }

    fn in_flight(&self, attributes: &[Attribute<'_>]) -> Self::Gauge {
        (self.0.in_flight(attributes), self.1.in_flight(attributes))
    }

    fn set((a, b): &Self::Gauge, value: i64) {
        // A gauge that panics must not keep the other sink's gauge from being set (the pump
        // contains the panic itself, after this).
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| A::set(a, value)));
        B::set(b, value);
        if let Err(panic) = first {
            std::panic::resume_unwind(panic);
        }
    }

    fn dropped(&self, total: u64) {
        self.0.dropped(total);
        self.1.dropped(total);
    }
}

/// A finished command, as the pump hands it to a [`CommandFeed`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct FinishedCommand {
    pub(crate) command: u32,
    /// The error type id, already capped per command.
    pub(crate) error: Option<u16>,
    pub(crate) duration_ns: u64,
}

/// A consumer of whole finished commands (the live statistics), fed once per drain.
pub(crate) trait CommandFeed: Send + Sync {
    /// Takes the drain's finished commands (emptying `finished`) and every command's in-flight
    /// count; `catalog` names the ids.
    fn ingest(
        &self,
        catalog: &Catalog,
        finished: &mut Vec<FinishedCommand>,
        active: &mut dyn Iterator<Item = (u32, i64)>,
    );
}

#[cfg(test)]
mod tests {
    use super::{Metric, DESCRIPTIONS};

    #[test]
    fn every_metric_finds_its_own_description() {
        for metric in [
            Metric::Duration,
            Metric::Busy,
            Metric::Active,
            Metric::Mark,
            Metric::Overflow,
            Metric::Dropped,
        ] {
            assert_eq!(metric.description().metric, metric);
        }
        assert_eq!(DESCRIPTIONS.len(), 6);
    }
}
