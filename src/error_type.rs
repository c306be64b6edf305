//! Deriving a low-cardinality `error.type` from an error's `Debug` text.

/// The leading identifier of a `Debug` rendering, when the text looks like one:
/// `Timeout { after: 5s }` → `Timeout`, `Io(Custom { .. })` → `Io`, `my::Error::Gone` → `Gone`.
/// Prose (`connection refused`) gives `None`, so free text never becomes a label value.
pub(crate) fn leading_identifier(text: &str) -> Option<&str> {
    let text = text.trim_start();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    loop {
        // One path segment: [A-Za-z_][A-Za-z0-9_]*
        match bytes.get(i) {
            Some(b) if b.is_ascii_alphabetic() || *b == b'_' => i += 1,
            _ => return None,
        }
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            i += 1;
        }
        if bytes.get(i) == Some(&b':') && bytes.get(i + 1) == Some(&b':') {
            i += 2;
            start = i;
            continue;
        }
        break;
    }
    let ident = &text[start..i];
    let rest = &text[i..];
    let looks_like_debug =
        rest.is_empty() || rest.starts_with('(') || rest.starts_with('{') || rest.starts_with(" {");
    looks_like_debug.then_some(ident)
}

#[cfg(test)]
mod tests {
    use super::leading_identifier;

    #[test]
    fn debug_shapes_give_their_variant_or_type_name() {
        assert_eq!(leading_identifier("Timeout { after: 5s }"), Some("Timeout"));
        assert_eq!(leading_identifier("Io(Custom { kind: Other })"), Some("Io"));
        assert_eq!(leading_identifier("NotFound"), Some("NotFound"));
        assert_eq!(leading_identifier("my_bot::Error::Gone"), Some("Gone"));
        assert_eq!(leading_identifier("Upstream{code: 3}"), Some("Upstream"));
    }

    #[test]
    fn prose_and_odd_text_give_none() {
        assert_eq!(leading_identifier("connection refused"), None);
        assert_eq!(leading_identifier("\"quoted\""), None);
        assert_eq!(leading_identifier(""), None);
        assert_eq!(leading_identifier("42 things"), None);
        assert_eq!(leading_identifier("Bad: thing"), None);
        assert_eq!(leading_identifier("a::"), None);
    }
}
