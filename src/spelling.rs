//! How names and values are spelled for Prometheus: pure functions, used by the builder (to
//! reject labels that would collide there) and by the `metrics` sink alike.

use std::borrow::Cow;

/// A field name as a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn prometheus_label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// What a backslash in a label value becomes in the `metrics` sink.
pub(crate) const BACKSLASH_SUBSTITUTE: char = '/';
/// What a control character in a label value becomes in the `metrics` sink.
pub(crate) const CONTROL_SUBSTITUTE: char = '\u{FFFD}';

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
