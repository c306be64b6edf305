//! Shared test fixture: a layer wired to a real metrics-exporter-prometheus recorder and a real
//! OpenTelemetry SDK meter provider exporting to an in-memory exporter on demand, plus readers that turn what each sink
//! exports into comparable maps (series labels → count / sum / value).
//!
//! Both views are normalised to OpenTelemetry spelling (metric `command.duration`, attribute
//! `error.type`, `otel.metric.overflow`), so a test can demand that both sinks agree exactly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use spanmetrics::{names, Builder, SpanMetricsHandle, SpanMetricsLayer};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

/// One series' label set, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// A label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The series of a successful command.
pub fn ok(command: &str) -> Labels {
    labels(&[(names::ATTR_COMMAND, command), (names::ATTR_OUTCOME, "ok")])
}

/// The series of a failed command with this error type.
pub fn failed(command: &str, error_type: &str) -> Labels {
    labels(&[
        (names::ATTR_COMMAND, command),
        (names::ATTR_OUTCOME, "error"),
        (names::ATTR_ERROR_TYPE, error_type),
    ])
}

/// The overflow series.
pub fn overflow() -> Labels {
    labels(&[(names::ATTR_OVERFLOW, "true")])
}

/// The series of a mark.
pub fn mark(command: &str, mark: &str) -> Labels {
    labels(&[(names::ATTR_COMMAND, command), (names::ATTR_MARK, mark)])
}

/// Count and sum of one histogram series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hist {
    pub count: u64,
    pub sum: f64,
}

/// What one sink exported, in OpenTelemetry spelling.
#[derive(Clone, Debug, Default)]
pub struct SinkView {
    /// metric → series → histogram.
    pub histograms: BTreeMap<String, BTreeMap<Labels, Hist>>,
    /// metric → series → value, for counters, up-down counters and gauges.
    pub values: BTreeMap<String, BTreeMap<Labels, f64>>,
}

impl SinkView {
    /// Count per series of a histogram (empty when the metric is absent).
    pub fn counts(&self, metric: &str) -> BTreeMap<Labels, u64> {
        self.histograms
            .get(metric)
            .map(|series| series.iter().map(|(l, h)| (l.clone(), h.count)).collect())
            .unwrap_or_default()
    }

    /// Sum per series of a histogram.
    pub fn sums(&self, metric: &str) -> BTreeMap<Labels, f64> {
        self.histograms
            .get(metric)
            .map(|series| series.iter().map(|(l, h)| (l.clone(), h.sum)).collect())
            .unwrap_or_default()
    }

    /// Value per series of a counter or gauge.
    pub fn values(&self, metric: &str) -> BTreeMap<Labels, f64> {
        self.values.get(metric).cloned().unwrap_or_default()
    }

    /// Every label key used by any series of any spanmetrics metric.
    pub fn label_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .histograms
            .values()
            .flat_map(|s| s.keys())
            .chain(self.values.values().flat_map(|s| s.keys()))
            .flat_map(|l| l.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// What both sinks exported at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub prom: SinkView,
    pub otel: SinkView,
    /// The raw Prometheus exposition text, for checks on Prometheus spelling.
    pub prom_text: String,
}

impl Snapshot {
    /// Count per series of a histogram (OpenTelemetry name), identical in both sinks.
    pub fn counts(&self, metric: &str) -> BTreeMap<Labels, u64> {
        let prom = self.prom.counts(metric);
        let otel = self.otel.counts(metric);
        assert_eq!(
            prom, otel,
            "{metric}: Prometheus (left) and OpenTelemetry (right) disagree"
        );
        otel
    }

    /// Sum per series of a histogram, equal (to rounding) in both sinks.
    pub fn sums(&self, metric: &str) -> BTreeMap<Labels, f64> {
        let prom = self.prom.sums(metric);
        let otel = self.otel.sums(metric);
        assert_eq!(
            prom.keys().collect::<Vec<_>>(),
            otel.keys().collect::<Vec<_>>(),
            "{metric}: the sinks have different series"
        );
        for (series, p) in &prom {
            let o = otel[series];
            assert!(
                (p - o).abs() <= 1e-9 + 1e-9 * o.abs(),
                "{metric} {series:?}: Prometheus sum {p} != OpenTelemetry sum {o}"
            );
        }
        otel
    }

    /// Value per series of a counter or gauge, identical in both sinks.
    pub fn values(&self, metric: &str) -> BTreeMap<Labels, f64> {
        let prom = self.prom.values(metric);
        let otel = self.otel.values(metric);
        assert_eq!(
            prom, otel,
            "{metric}: Prometheus (left) and OpenTelemetry (right) disagree"
        );
        otel
    }

    /// In-flight count per command (`command.active`), identical in both sinks. The overflow
    /// command is keyed `otel.metric.overflow`.
    pub fn active(&self) -> BTreeMap<String, f64> {
        self.values(names::OTEL_ACTIVE)
            .into_iter()
            .map(|(series, value)| {
                let key = series
                    .get(names::ATTR_COMMAND)
                    .cloned()
                    .unwrap_or_else(|| names::ATTR_OVERFLOW.to_owned());
                (key, value)
            })
            .collect()
    }

    /// Records folded into the overflow series of `metric` (OpenTelemetry name), identical in
    /// both sinks; 0 when nothing was folded.
    pub fn folded(&self, metric: &str) -> u64 {
        let series = labels(&[(names::ATTR_METRIC, metric)]);
        let value = self
            .values(names::OTEL_OVERFLOW)
            .get(&series)
            .copied()
            .unwrap_or(0.0);
        value as u64
    }
}

/// A layer feeding a Prometheus recorder and an OpenTelemetry meter provider, installed in a
/// subscriber that tests use through [`Fixture::run`] (scoped, never global).
pub struct Fixture {
    pub dispatch: Dispatch,
    pub handle: SpanMetricsHandle,
    prom: PrometheusHandle,
    exporter: InMemoryMetricExporter,
    provider: SdkMeterProvider,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// Default configuration, both sinks.
    pub fn new() -> Self {
        Self::with(|b| b)
    }

    /// `configure` gets a builder that already has both sinks set and may change anything.
    pub fn with(configure: impl FnOnce(Builder) -> Builder) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(names::DEFAULT_BUCKETS)
            .expect("the default buckets are valid")
            .build_recorder();
        let prom = recorder.handle();
        let exporter = InMemoryMetricExporter::default();
        // Exports only when the test asks (`force_flush`), never on its own.
        let reader = PeriodicReader::builder(exporter.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let builder = SpanMetricsLayer::builder()
            .with_recorder(recorder)
            .with_meter_provider(&provider);
        let layer = configure(builder).build();
        let handle = layer.handle();
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        Self {
            dispatch,
            handle,
            prom,
            exporter,
            provider,
        }
    }

    /// Runs `f` with this fixture's subscriber as the thread's default.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    /// Flushes, then reads both sinks.
    pub fn snapshot(&self) -> Snapshot {
        self.handle.flush();
        let prom_text = self.prom.render();
        let prom = parse_prometheus(&prom_text);
        let otel = self.collect_otel();
        Snapshot {
            prom,
            otel,
            prom_text,
        }
    }

    /// Collects and exports from the OpenTelemetry provider only, without flushing the layer
    /// first, and reads the export.
    pub fn collect_otel(&self) -> SinkView {
        self.exporter.reset();
        self.provider
            .force_flush()
            .expect("the meter provider exports");
        let exported = self
            .exporter
            .get_finished_metrics()
            .expect("the in-memory exporter has the export");
        // Nothing is exported when no instrument has data (e.g. the meter is off).
        exported.last().map(otel_view).unwrap_or_default()
    }

    /// Renders the Prometheus page only, without flushing first.
    pub fn render_prometheus(&self) -> SinkView {
        parse_prometheus(&self.prom.render())
    }

    /// The meter provider, e.g. to shut it down.
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }
}

/// Polls `probe` until it returns `Some`, or panics after `deadline`.
pub fn poll_until<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < end,
            "gave up after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn otel_view(rm: &ResourceMetrics) -> SinkView {
    let mut view = SinkView::default();
    for scope in rm.scope_metrics() {
        if scope.scope().name() != "spanmetrics" {
            continue;
        }
        for metric in scope.metrics() {
            let name = metric.name().to_owned();
            let attrs = |kvs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| -> Labels {
                kvs.map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
                    .collect()
            };
            match metric.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    let series = view.histograms.entry(name).or_default();
                    for dp in h.data_points() {
                        let hist = Hist {
                            count: dp.count(),
                            sum: dp.sum(),
                        };
                        assert!(
                            series.insert(attrs(&mut dp.attributes()), hist).is_none(),
                            "duplicate OpenTelemetry data point"
                        );
                    }
                }
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    let series = view.values.entry(name).or_default();
                    for dp in s.data_points() {
                        series.insert(attrs(&mut dp.attributes()), dp.value() as f64);
                    }
                }
                AggregatedMetrics::I64(MetricData::Sum(s)) => {
                    let series = view.values.entry(name).or_default();
                    for dp in s.data_points() {
                        series.insert(attrs(&mut dp.attributes()), dp.value() as f64);
                    }
                }
                other => panic!("unexpected OpenTelemetry data for {name}: {other:?}"),
            }
        }
    }
    view
}

/// Prometheus name → OpenTelemetry name, for every spanmetrics metric.
fn otel_name(prom: &str) -> Option<&'static str> {
    Some(match prom {
        names::PROM_DURATION => names::OTEL_DURATION,
        names::PROM_BUSY => names::OTEL_BUSY,
        names::PROM_ACTIVE => names::OTEL_ACTIVE,
        names::PROM_MARK => names::OTEL_MARK,
        names::PROM_OVERFLOW => names::OTEL_OVERFLOW,
        names::PROM_DROPPED => names::OTEL_DROPPED,
        _ => return None,
    })
}

const HISTOGRAMS: [&str; 3] = [names::PROM_DURATION, names::PROM_BUSY, names::PROM_MARK];

/// Parses Prometheus text exposition into a view in OpenTelemetry spelling. Panics on lines it
/// does not understand, and on histograms whose `+Inf` bucket disagrees with their count.
pub fn parse_prometheus(text: &str) -> SinkView {
    let mut view = SinkView::default();
    let mut inf_buckets: BTreeMap<(String, Labels), f64> = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, mut series, value) = parse_sample(line);
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value in {line:?}"));
        if let Some(hist) = HISTOGRAMS.iter().find(|h| name.starts_with(**h)) {
            let metric = otel_name(hist).expect("known histogram").to_owned();
            let suffix = &name[hist.len()..];
            normalise(&mut series);
            match suffix {
                "_bucket" => {
                    if series.remove("le").as_deref() == Some("+Inf") {
                        inf_buckets.insert((metric, series), value);
                    }
                }
                "_count" | "_sum" => {
                    let entry = view
                        .histograms
                        .entry(metric)
                        .or_default()
                        .entry(series)
                        .or_insert(Hist { count: 0, sum: 0.0 });
                    if suffix == "_count" {
                        entry.count = value as u64;
                    } else {
                        entry.sum = value;
                    }
                }
                _ => panic!("unexpected histogram sample {line:?}"),
            }
        } else if let Some(metric) = otel_name(&name) {
            normalise(&mut series);
            if let Some(m) = series.get_mut(names::ATTR_METRIC) {
                if let Some(o) = otel_name(m) {
                    *m = o.to_owned();
                }
            }
            view.values
                .entry(metric.to_owned())
                .or_default()
                .insert(series, value);
        }
    }
    for ((metric, series), inf) in inf_buckets {
        let count = view.histograms[&metric][&series].count;
        assert_eq!(
            inf as u64, count,
            "{metric} {series:?}: +Inf bucket differs from the count"
        );
    }
    view
}

fn normalise(series: &mut Labels) {
    for (prom, otel) in [
        (names::PROM_ERROR_TYPE, names::ATTR_ERROR_TYPE),
        (names::PROM_OVERFLOW_LABEL, names::ATTR_OVERFLOW),
    ] {
        if let Some(v) = series.remove(prom) {
            series.insert(otel.to_owned(), v);
        }
    }
}

/// Splits `name{k="v",...} value` (labels optional), unescaping label values.
fn parse_sample(line: &str) -> (String, Labels, &str) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = line[..name_end].to_owned();
    let mut series = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            // key
            let mut key = String::new();
            let mut closed = false;
            for (i, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if key.is_empty() => {
                        closed = true;
                        rest = &body[i + 1..];
                        break;
                    }
                    c => key.push(c),
                }
            }
            if closed {
                break;
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line:?}");
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            assert!(
                series.insert(key.clone(), value).is_none(),
                "label {key} twice in {line:?}"
            );
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &body[i + 1..];
                    break;
                }
                other => panic!("unexpected {other:?} in {line:?}"),
            }
        }
    }
    let value = rest.trim();
    (name, series, value)
}
