//! Strict percent-decoding (`%41` → `A`) of query strings and `OTEL_*` header and attribute
//! values, on top of the `percent-encoding` crate: a malformed escape is an error here rather
//! than text kept as it is, so a typo is reported instead of silently misread.

use percent_encoding::percent_decode_str;

/// Decodes `%XX` escapes, and `+` as a space when `plus_as_space` (query strings); `None` for a
/// malformed escape or text that is not UTF-8 once decoded.
pub(crate) fn percent_decode(value: &str, plus_as_space: bool) -> Option<String> {
    let bytes = value.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let spaced;
    let value = if plus_as_space && value.contains('+') {
        spaced = value.replace('+', " ");
        &spaced
    } else {
        value
    };
    percent_decode_str(value)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn escapes_are_decoded_and_malformed_ones_refused() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%E2%9C%93", false).as_deref(), Some("✓"));
        for bad in ["%zz", "%f", "%", "%ff"] {
            assert_eq!(percent_decode(bad, true), None, "{bad}");
        }
    }
}
