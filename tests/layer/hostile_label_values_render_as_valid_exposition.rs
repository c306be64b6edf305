//! Hostile text as command names, allow-listed label values, error types and mark names:
//! the Prometheus page stays valid for the real `promtool check metrics`, has no duplicate
//! series, and shows each value cut and with the documented substitutes; OpenTelemetry gets
//! the values as given (cut).

use std::collections::{BTreeMap, BTreeSet};

use crate::processes;
use crate::two_sinks::{Fixture, Labels};
use proptest::prelude::*;
use spanmetrics::names::{self, OTEL_DURATION, OTEL_MARK};

/// The one allow-listed label in these tests.
const LABEL: &str = "system";
/// Longest command name, label value or mark name kept, in bytes.
const VALUE_CAP: usize = 96;
/// Longest error type kept, in bytes.
const ERROR_TYPE_CAP: usize = 64;

/// One command's hostile texts.
#[derive(Clone, Debug)]
struct Hostile {
    command: String,
    label: String,
    error_type: String,
    mark: String,
}

fn cut(s: &str, cap: usize) -> String {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The documented Prometheus spelling: backslash → `/`, control character → U+FFFD.
fn prometheus_spelling(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\\' => '/',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Runs one failing command (with a mark) per hostile tuple.
fn record(fixture: &Fixture, values: &[Hostile]) {
    fixture.run(|| {
        for v in values {
            let span = tracing::info_span!(
                "cmd",
                command = v.command.as_str(),
                system = v.label.as_str()
            );
            span.in_scope(|| {
                tracing::info!(mark = v.mark.as_str(), "marked");
                tracing::error!(error.type = v.error_type.as_str(), "failed");
            });
        }
    });
}

/// `promtool check metrics` on `text`: its exit status and output.
fn promtool(text: &str) -> Option<(bool, String)> {
    let tool = processes::tool("PROMTOOL")?;
    Some(processes::promtool_check_metrics(&tool, text))
}

/// Every sample line (name and labels) appears once: a Prometheus server drops duplicates.
fn assert_no_duplicate_series(text: &str) {
    let mut seen = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let series = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or(line);
        assert!(
            seen.insert(series),
            "duplicate series {series:?} in\n{text}"
        );
    }
}

/// The failure series the values should give, spelled by `spell`.
fn expected_failures(values: &[Hostile], spell: impl Fn(&str) -> String) -> BTreeMap<Labels, u64> {
    let mut out = BTreeMap::new();
    for v in values {
        let mut labels = Labels::new();
        labels.insert(
            names::ATTR_COMMAND.into(),
            spell(&cut(&v.command, VALUE_CAP)),
        );
        labels.insert(names::ATTR_OUTCOME.into(), "error".into());
        labels.insert(
            names::ATTR_ERROR_TYPE.into(),
            spell(&cut(&v.error_type, ERROR_TYPE_CAP)),
        );
        labels.insert(LABEL.into(), spell(&cut(&v.label, VALUE_CAP)));
        *out.entry(labels).or_insert(0) += 1;
    }
    out
}

fn expected_marks(values: &[Hostile], spell: impl Fn(&str) -> String) -> BTreeMap<Labels, u64> {
    let mut out = BTreeMap::new();
    for v in values {
        let mut labels = Labels::new();
        labels.insert(
            names::ATTR_COMMAND.into(),
            spell(&cut(&v.command, VALUE_CAP)),
        );
        labels.insert(names::ATTR_MARK.into(), spell(&cut(&v.mark, VALUE_CAP)));
        *out.entry(labels).or_insert(0) += 1;
    }
    out
}

/// Records `values`, checks the page with promtool and for duplicates, and checks both sinks
/// show exactly the expected series. Returns the page.
fn check(values: &[Hostile]) -> String {
    let fixture = Fixture::with(|b| b.with_label(LABEL).expect("a valid label"));
    record(&fixture, values);
    let snapshot = fixture.snapshot();
    let text = snapshot.prom_text.clone();
    if let Some((ok, report)) = promtool(&text) {
        assert!(ok, "promtool rejects the page: {report}\n{text}");
    }
    assert_no_duplicate_series(&text);
    assert_eq!(
        snapshot.prom.counts(OTEL_DURATION),
        expected_failures(values, prometheus_spelling),
        "Prometheus duration series"
    );
    assert_eq!(
        snapshot.prom.counts(OTEL_MARK),
        expected_marks(values, prometheus_spelling),
        "Prometheus mark series"
    );
    assert_eq!(
        snapshot.otel.counts(OTEL_DURATION),
        expected_failures(values, str::to_owned),
        "OpenTelemetry duration series"
    );
    assert_eq!(
        snapshot.otel.counts(OTEL_MARK),
        expected_marks(values, str::to_owned),
        "OpenTelemetry mark series"
    );
    assert_eq!(fixture.handle.dropped(), 0);
    text
}

/// Text made of the characters that break exposition formats, mixed with ordinary ones.
fn hostile_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\\',
        '"',
        '\n',
        '\r',
        '\t',
        '\0',
        '\u{7f}',
        '\u{85}',
        '\u{2028}',
        '{',
        '}',
        '=',
        ',',
        '#',
        ' ',
        'é',
        '日',
        '\u{FFFD}',
        '\u{1F600}',
        'n',
    ]);
    let ch = prop_oneof![3 => special, 1 => any::<char>()];
    prop::collection::vec(ch, 1..40).prop_map(|chars| {
        // A leading letter keeps each value distinct from its neighbours' after cutting.
        std::iter::once('x').chain(chars).collect()
    })
}

fn hostile_batch() -> impl Strategy<Value = Vec<Hostile>> {
    let one = (
        hostile_text(),
        hostile_text(),
        hostile_text(),
        hostile_text(),
    )
        .prop_map(|(command, label, error_type, mark)| Hostile {
            command,
            label,
            error_type,
            mark,
        });
    prop::collection::vec(one, 1..24)
}

proptest! {
    #![proptest_config(crate::proptest_config(48))]

    /// Many hostile values per page, one promtool run per page.
    #[test]
    fn arbitrary_label_values_give_a_page_promtool_accepts(values in hostile_batch()) {
        check(&values);
    }
}

#[test]
fn quotes_backslashes_and_newlines_get_the_documented_spelling() {
    let values = [Hostile {
        command: "say\\\"hi\"\n".into(),
        label: "C:\\temp\t日本".into(),
        error_type: "Bad\0Thing".into(),
        mark: "first\r\ntoken".into(),
    }];
    let text = check(&values);
    let line =
        "command_duration_seconds_count{command=\"say/\\\"hi\\\"\u{FFFD}\",outcome=\"error\",\
                error_type=\"Bad\u{FFFD}Thing\",system=\"C:/temp\u{FFFD}日本\"} 1";
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in\n{text}"
    );
    let mark = "command_mark_seconds_count{command=\"say/\\\"hi\\\"\u{FFFD}\",\
                mark=\"first\u{FFFD}\u{FFFD}token\"} 1";
    assert!(
        text.lines().any(|l| l == mark),
        "no line {mark:?} in\n{text}"
    );
}

#[test]
fn a_quote_and_an_escaped_quote_stay_two_series() {
    // The exporter alone renders both as `a\"b`: one series twice on the page.
    let values = ["a\"b", "a\\\"b"].map(|command| Hostile {
        command: command.into(),
        label: "l".into(),
        error_type: "E".into(),
        mark: "m".into(),
    });
    let text = check(&values);
    let counts = text
        .lines()
        .filter(|l| l.starts_with("command_duration_seconds_count{"))
        .count();
    assert_eq!(counts, 2, "{text}");
}

#[test]
fn megabyte_values_are_cut_and_stay_valid() {
    let big = |seed: &str| seed.repeat((1 << 20) / seed.len());
    let values = [Hostile {
        command: big("x\\\"\n日"),
        label: big("é\r"),
        error_type: big("E\\"),
        mark: big("\"m"),
    }];
    assert!(values[0].command.len() >= 1 << 19);
    let text = check(&values);
    assert!(text.len() < 64 * 1024, "page of {} bytes", text.len());
}
