//! The `metrics` facade sink: resolves `metrics` handles for a series, in the background thread.

use std::borrow::Cow;

use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder, SharedString, Unit};

use crate::config::RecorderSink;
use crate::names;

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Creates `metrics` handles on the configured recorder.
pub(crate) struct RecorderHandles {
    sink: RecorderSink,
}

impl RecorderHandles {
    pub(crate) fn new(sink: RecorderSink) -> Self {
        Self { sink }
    }

    fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> Option<T> {
        match &self.sink {
            RecorderSink::Global => Some(metrics::with_recorder(f)),
            RecorderSink::Recorder(recorder) => Some(f(&**recorder)),
            RecorderSink::Off => None,
        }
    }

    pub(crate) fn describe(&self) {
        let text: [(&'static str, Unit, &'static str); 6] = [
            (
                names::PROM_DURATION,
                Unit::Seconds,
                "Command latency, from span creation to close.",
            ),
            (
                names::PROM_BUSY,
                Unit::Seconds,
                "Time the command span was entered (on-CPU time of async handlers).",
            ),
            (names::PROM_ACTIVE, Unit::Count, "Commands in flight."),
            (
                names::PROM_MARK,
                Unit::Seconds,
                "Time from command start to a mark event.",
            ),
            (
                names::PROM_OVERFLOW,
                Unit::Count,
                "Records folded into an overflow series by the cardinality cap.",
            ),
            (
                names::PROM_DROPPED,
                Unit::Count,
                "Records dropped because the overload backlog was full or a sink panicked on them.",
            ),
        ];
        self.with(|r| {
            for (name, unit, description) in text {
                let description = SharedString::const_str(description);
                match name {
                    names::PROM_ACTIVE => r.describe_gauge(name.into(), Some(unit), description),
                    names::PROM_OVERFLOW | names::PROM_DROPPED => {
                        r.describe_counter(name.into(), Some(unit), description)
                    }
                    _ => r.describe_histogram(name.into(), Some(unit), description),
                }
            }
        });
    }

    pub(crate) fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Option<Histogram> {
        let key = key(name, labels);
        self.with(|r| r.register_histogram(&key, &METADATA))
    }

    pub(crate) fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Option<Gauge> {
        let key = key(name, labels);
        self.with(|r| r.register_gauge(&key, &METADATA))
    }

    pub(crate) fn counter(&self, name: &'static str, labels: Vec<Label>) -> Option<Counter> {
        let key = key(name, labels);
        self.with(|r| r.register_counter(&key, &METADATA))
    }
}

/// What a backslash in a label value becomes in the `metrics` sink.
pub(crate) const BACKSLASH_SUBSTITUTE: char = '/';
/// What a control character in a label value becomes in the `metrics` sink.
pub(crate) const CONTROL_SUBSTITUTE: char = '\u{FFFD}';

/// A key whose label values are safe for the Prometheus text format.
fn key(name: &'static str, labels: Vec<Label>) -> Key {
    let labels = labels.into_iter().map(|label| {
        if matches!(prometheus_value(label.value()), Cow::Borrowed(_)) {
            return label;
        }
        let (key, value) = label.into_parts();
        Label::new(key, prometheus_value(&value).into_owned())
    });
    Key::from_parts(name, labels.collect::<Vec<_>>())
}

/// A label value the Prometheus text format carries unchanged through
/// metrics-exporter-prometheus: its escaping drops the backslash of a `\"` pair (so `a\"b` and
/// `a"b` would render as the same series, which a Prometheus server drops as duplicates) and
/// moves a backslash before a newline. Backslashes become `/` and control characters
/// (newline, tab, NUL, DEL, ...) become U+FFFD; everything else, quotes and non-ASCII
/// included, is kept. The OpenTelemetry sink gets the values as given.
pub(crate) fn prometheus_value(value: &str) -> Cow<'_, str> {
    if !value.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .chars()
            .map(|c| match c {
                '\\' => BACKSLASH_SUBSTITUTE,
                c if c.is_control() => CONTROL_SUBSTITUTE,
                c => c,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslashes_and_control_characters_get_visible_substitutes() {
        assert_eq!(prometheus_value("roll"), Cow::Borrowed("roll"));
        assert_eq!(
            prometheus_value("a\\\"b\n\u{7f}é"),
            "a/\"b\u{FFFD}\u{FFFD}é"
        );
    }
}
