//! Percent-decoding (`%41` → `A`), shared by the HTTP query parser and the `OTEL_*` header
//! and attribute values.

/// Decodes `%XX` escapes, and `+` as a space when `plus_as_space` (query strings); `None` for a
/// malformed escape or text that is not UTF-8 once decoded.
pub(crate) fn decode(v: &str, plus_as_space: bool) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = v.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
