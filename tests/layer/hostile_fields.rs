//! Arbitrary field names, types and values — on spans and on events inside them — never panic
//! and never become labels unless allow-listed. Callsites with arbitrary field names are built
//! at run time, as a macro would build them at compile time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use crate::two_sinks::{self, Fixture, Labels};
use proptest::prelude::*;
use spanmetrics::names::{self, OTEL_BUSY, OTEL_DURATION};
use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::field::{FieldSet, Value};
use tracing_core::metadata::Kind;
use tracing_core::{Event, Interest, Level, Metadata};

/// The one allow-listed label in these tests.
const LABEL: &str = "system";
/// Longest command name or label value kept, in bytes (cut at a char boundary).
const VALUE_CAP: usize = 96;
/// Span field names spanmetrics reads; the hostile names avoid them so the expectation stays
/// exact (they are exercised on purpose by the other test files).
const SPAN_RESERVED: [&str; 5] = [
    "command",
    LABEL,
    "outcome",
    "otel.status_code",
    "error.type",
];
/// Event field names spanmetrics reads, other than `error` (whose text is hostile here).
const EVENT_RESERVED: [&str; 2] = ["error.type", "mark"];

struct DynCallsite {
    meta: OnceLock<&'static Metadata<'static>>,
}

impl Callsite for DynCallsite {
    fn set_interest(&self, _: Interest) {}
    fn metadata(&self) -> &Metadata<'_> {
        self.meta.get().expect("set right after creation")
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// A callsite with these field names, registered like a macro's.
fn callsite(name: &str, fields: &[String], kind: Kind, level: Level) -> &'static Metadata<'static> {
    let site: &'static DynCallsite = Box::leak(Box::new(DynCallsite {
        meta: OnceLock::new(),
    }));
    let names: Vec<&'static str> = fields.iter().map(|f| leak(f)).collect();
    let names: &'static [&'static str] = Box::leak(names.into_boxed_slice());
    let meta: &'static Metadata<'static> = Box::leak(Box::new(Metadata::new(
        leak(name),
        "hostile_fields",
        level,
        None,
        None,
        None,
        FieldSet::new(names, Identifier(site)),
        kind,
    )));
    let _ = site.meta.set(meta);
    tracing_core::callsite::register(site);
    meta
}

/// A `Debug` impl that gives up half-way, as a buggy one might.
struct FailingDebug(String);

impl fmt::Debug for FailingDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)?;
        Err(fmt::Error)
    }
}

#[derive(Debug)]
struct HostileError(String);

impl fmt::Display for HostileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostileError {}

/// A field value of any type tracing can carry.
#[derive(Clone, Debug)]
enum Hostile {
    Str(String),
    I64(i64),
    U64(u64),
    I128(i128),
    F64(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Debug(String),
    Display(String),
    FailingDebug(String),
    Error(String),
    Empty,
}

impl Hostile {
    fn to_value(&self) -> Box<dyn Value> {
        match self {
            Hostile::Str(s) => Box::new(s.clone()),
            Hostile::I64(v) => Box::new(*v),
            Hostile::U64(v) => Box::new(*v),
            Hostile::I128(v) => Box::new(*v),
            Hostile::F64(v) => Box::new(*v),
            Hostile::Bool(v) => Box::new(*v),
            Hostile::Bytes(b) => Box::new(b.clone().into_boxed_slice()),
            Hostile::Debug(s) => Box::new(tracing::field::debug(s.clone())),
            Hostile::Display(s) => Box::new(tracing::field::display(s.clone())),
            Hostile::FailingDebug(s) => Box::new(tracing::field::debug(FailingDebug(s.clone()))),
            Hostile::Error(s) => {
                let e: Box<dyn std::error::Error + Send + Sync> = Box::new(HostileError(s.clone()));
                Box::new(e)
            }
            Hostile::Empty => Box::new(tracing::field::Empty),
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        // Long, multi-byte, quote- and newline-laden.
        "[\"\\\\\n\té€😀a-z]{90,300}",
        Just(String::new()),
        Just("Timeout { after: 5s }".to_owned()),
        Just("Io(Custom { kind: Other })".to_owned()),
    ]
}

fn hostile_value() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        text().prop_map(Hostile::Str),
        any::<i64>().prop_map(Hostile::I64),
        any::<u64>().prop_map(Hostile::U64),
        any::<i128>().prop_map(Hostile::I128),
        any::<f64>().prop_map(Hostile::F64),
        any::<bool>().prop_map(Hostile::Bool),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Hostile::Bytes),
        text().prop_map(Hostile::Debug),
        text().prop_map(Hostile::Display),
        text().prop_map(Hostile::FailingDebug),
        text().prop_map(Hostile::Error),
        Just(Hostile::Empty),
    ]
}

/// A value for the allow-listed label, with the label value it must give.
fn label_value() -> impl Strategy<Value = (Hostile, String)> {
    prop_oneof![
        text().prop_map(|s| (Hostile::Str(s.clone()), cut(&s))),
        any::<i64>().prop_map(|v| (Hostile::I64(v), v.to_string())),
        any::<u64>().prop_map(|v| (Hostile::U64(v), v.to_string())),
        any::<bool>().prop_map(|v| (Hostile::Bool(v), v.to_string())),
        any::<f64>().prop_map(|v| (Hostile::F64(v), format!("{v:?}"))),
    ]
}

fn field_name(reserved: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_.]{1,12}",
        Just("user_id".to_owned()),
        Just("message".to_owned()),
        Just("error".to_owned()),
        Just("otel.name".to_owned()),
        Just(String::new()),
    ]
    .prop_filter("reserved names are tested elsewhere", move |n| {
        !reserved.contains(&n.as_str())
    })
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::TRACE),
        Just(Level::DEBUG),
        Just(Level::INFO),
        Just(Level::WARN),
        Just(Level::ERROR),
    ]
}

#[derive(Clone, Debug)]
struct HostileEvent {
    level: Level,
    fields: Vec<(String, Hostile)>,
}

#[derive(Clone, Debug)]
struct HostileSpan {
    fields: Vec<(String, Hostile)>,
    /// The label at creation, and possibly a later value given with `Span::record`.
    label: Option<(Hostile, String)>,
    label_later: Option<(Hostile, String)>,
    events: Vec<HostileEvent>,
    enters: usize,
}

fn hostile_event() -> impl Strategy<Value = HostileEvent> {
    (
        level(),
        proptest::collection::vec((field_name(&EVENT_RESERVED), hostile_value()), 0..6),
    )
        .prop_map(|(level, fields)| HostileEvent { level, fields })
}

fn hostile_span() -> impl Strategy<Value = HostileSpan> {
    (
        proptest::collection::vec((field_name(&SPAN_RESERVED), hostile_value()), 0..8),
        proptest::option::of(label_value()),
        proptest::option::of(label_value()),
        proptest::collection::vec(hostile_event(), 0..5),
        0usize..4,
    )
        .prop_map(|(fields, label, label_later, events, enters)| HostileSpan {
            fields,
            label,
            label_later,
            events,
            enters,
        })
}

/// `s` cut to [`VALUE_CAP`] bytes at a char boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(VALUE_CAP);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn emit(event: &HostileEvent) {
    let names: Vec<String> = event.fields.iter().map(|(n, _)| n.clone()).collect();
    let meta = callsite("event", &names, Kind::EVENT, event.level);
    let values: Vec<Box<dyn Value>> = event.fields.iter().map(|(_, v)| v.to_value()).collect();
    let refs: Vec<Option<&dyn Value>> = values.iter().map(|v| Some(&**v)).collect();
    Event::dispatch(meta, &meta.fields().value_set_all(&refs));
}

/// Runs the span and returns its series without `error.type` (checked separately).
fn run_span(command: &str, span: &HostileSpan) -> Labels {
    // An empty command names nothing: the span name stands in.
    let expected_command = match cut(command) {
        c if c.is_empty() => "hostile".to_owned(),
        c => c,
    };
    let mut names = vec!["command".to_owned(), LABEL.to_owned()];
    names.extend(span.fields.iter().map(|(n, _)| n.clone()));
    let meta = callsite("hostile", &names, Kind::SPAN, Level::INFO);
    let mut values: Vec<Box<dyn Value>> = vec![
        Box::new(command.to_owned()),
        match &span.label {
            Some((v, _)) => v.to_value(),
            None => Box::new(tracing::field::Empty),
        },
    ];
    values.extend(span.fields.iter().map(|(_, v)| v.to_value()));
    let refs: Vec<Option<&dyn Value>> = values.iter().map(|v| Some(&**v)).collect();
    let handle = tracing::Span::new(meta, &meta.fields().value_set_all(&refs));
    for _ in 0..span.enters {
        handle.in_scope(|| ());
    }
    handle.in_scope(|| span.events.iter().for_each(emit));
    if let Some((later, _)) = &span.label_later {
        let later = later.to_value();
        handle.record(LABEL, &*later as &dyn Value);
    }
    drop(handle);

    let failed = span.events.iter().any(|e| e.level == Level::ERROR);
    let mut series = two_sinks::labels(&[
        (names::ATTR_COMMAND, expected_command.as_str()),
        (names::ATTR_OUTCOME, if failed { "error" } else { "ok" }),
    ]);
    if let Some((_, label)) = span.label_later.as_ref().or(span.label.as_ref()) {
        series.insert(LABEL.to_owned(), label.clone());
    }
    series
}

fn without_error_type(counts: BTreeMap<Labels, u64>) -> BTreeMap<Labels, u64> {
    let mut out = BTreeMap::new();
    for (mut series, n) in counts {
        series.remove(names::ATTR_ERROR_TYPE);
        *out.entry(series).or_insert(0) += n;
    }
    out
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check(command: &str, spans: &[HostileSpan]) {
    let fx = Fixture::with(|b| b.with_label(LABEL).unwrap());
    let mut want: BTreeMap<Labels, u64> = BTreeMap::new();
    fx.run(|| {
        for span in spans {
            *want.entry(run_span(command, span)).or_insert(0) += 1;
        }
    });
    let snap = fx.snapshot();
    let allowed = [
        names::ATTR_COMMAND,
        names::ATTR_OUTCOME,
        names::ATTR_ERROR_TYPE,
        names::ATTR_MARK,
        names::ATTR_METRIC,
        names::ATTR_OVERFLOW,
        LABEL,
    ];
    for (sink, view) in [("Prometheus", &snap.prom), ("OpenTelemetry", &snap.otel)] {
        let keys = view.label_keys();
        assert!(
            keys.iter().all(|k| allowed.contains(&k.as_str())),
            "{sink} has a label that is not allow-listed: {keys:?}"
        );
        // Free text never becomes an error type.
        for series in view.counts(OTEL_DURATION).keys() {
            if let Some(t) = series.get(names::ATTR_ERROR_TYPE) {
                assert!(
                    is_identifier(t),
                    "{sink}: error.type {t:?} is not an identifier"
                );
                assert!(t.len() <= 64, "{sink}: error.type {t:?} too long");
            }
        }
    }
    // Exact series in OpenTelemetry, which keeps values as given.
    let otel = without_error_type(snap.otel.counts(OTEL_DURATION));
    assert_eq!(otel, want);
    assert_eq!(without_error_type(snap.otel.counts(OTEL_BUSY)), want);
    // The Prometheus sink rewrites backslashes and control characters in label values;
    // compare exactly when there are none, else compare the totals.
    let prom = without_error_type(snap.prom.counts(OTEL_DURATION));
    let rewritten = want
        .keys()
        .flat_map(|l| l.values())
        .any(|v| v.chars().any(|c| c == '\\' || c.is_control()));
    if rewritten {
        assert_eq!(prom.values().sum::<u64>(), spans.len() as u64);
    } else {
        assert_eq!(prom, want);
    }
    assert_eq!(fx.handle.dropped(), 0);
}

proptest! {
    #![proptest_config(crate::proptest_config(96))]

    #[test]
    fn arbitrary_fields_never_panic_and_never_leak_into_labels(
        spans in proptest::collection::vec(hostile_span(), 1..5)
    ) {
        check("hostile", &spans);
    }

    #[test]
    fn arbitrary_command_names_arrive_cut_but_intact(
        command in text(),
        spans in proptest::collection::vec(hostile_span(), 1..3)
    ) {
        check(&command, &spans);
    }
}

#[test]
fn a_megabyte_of_debug_text_in_an_error_field_costs_no_more_than_its_prefix() {
    let fx = Fixture::new();
    let huge = "Timeout".to_owned() + &" { after: 5s }".repeat(80_000);
    fx.run(|| {
        let span = tracing::info_span!("h", command = "big");
        span.in_scope(|| tracing::error!(error = %huge, "failed"));
        let span = tracing::info_span!("h", command = %huge);
        drop(span);
    });
    let snap = fx.snapshot();
    let counts = snap.counts(OTEL_DURATION);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(counts.get(&two_sinks::failed("big", "Timeout")), Some(&1));
    assert!(counts
        .keys()
        .all(|l| l[names::ATTR_COMMAND].len() <= VALUE_CAP));
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn duplicate_and_empty_field_names_are_harmless() {
    let fx = Fixture::new();
    fx.run(|| {
        let names: Vec<String> = ["command", "command", "", "", "outcome"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let meta = callsite("dupes", &names, Kind::SPAN, Level::INFO);
        let values: [&dyn Value; 5] = [&"first", &"second", &1u8, &"x", &"ok"];
        let refs: Vec<Option<&dyn Value>> = values.iter().map(|v| Some(*v)).collect();
        let span = tracing::Span::new(meta, &meta.fields().value_set_all(&refs));
        span.record("command", "third");
    });
    let counts = fx.snapshot().counts(OTEL_DURATION);
    assert_eq!(counts.values().sum::<u64>(), 1, "{counts:?}");
    assert_eq!(fx.handle.dropped(), 0);
}

#[test]
fn a_long_debug_formatted_value_is_cut_like_a_short_one_without_its_quotes() {
    let fx = Fixture::with(|b| b.with_label(LABEL).unwrap());
    let long = "x".repeat(300);
    fx.run(|| {
        let _short = tracing::info_span!("h", command = ?"short", system = ?"matrix");
        let _long = tracing::info_span!("h", command = ?long, system = ?long);
    });
    let counts = fx.snapshot().counts(OTEL_DURATION);
    let commands: Vec<(&str, &str)> = counts
        .keys()
        .map(|l| (l[names::ATTR_COMMAND].as_str(), l[LABEL].as_str()))
        .collect();
    let cut_long = cut(&long);
    assert_eq!(
        commands,
        vec![("short", "matrix"), (cut_long.as_str(), cut_long.as_str())]
    );
    assert_eq!(fx.handle.dropped(), 0);
}
