//! Deriving a low-cardinality `error.type` from an error's `Debug` text.

use std::fmt::{self, Write};

use super::text::{StackStr, ERROR_TYPE_CAP};

/// The start of a value's `Debug` text: enough of it to find its leading identifier. Formatting
/// stops at the first character past the leading path of identifiers that tells the shape, so
/// the fields of an error (`Io(Custom { kind: Other, error: "..." })`) are never formatted.
pub(crate) fn debug_head(value: &dyn fmt::Debug) -> StackStr<ERROR_TYPE_CAP> {
    let mut head = Head(StackStr::new());
    // Stopping early is reported as an error; what was written is kept.
    let _ = write!(head, "{value:?}");
    head.0
}

struct Head(StackStr<ERROR_TYPE_CAP>);

impl Write for Head {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s)?;
        let text = self.0.as_str();
        let body = text.trim_start();
        let path = body
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':')
            .count();
        // Past the path, one character tells (`(`, `{`, anything else), except a space, which
        // needs the next one (` {`).
        match body.as_bytes().get(path) {
            Some(b' ') if body.len() < path + 2 => Ok(()),
            Some(_) => Err(fmt::Error),
            None => Ok(()),
        }
    }
}

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
    fn the_head_of_a_debug_text_is_enough_and_stops_before_the_fields() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Failure {
            Timeout { after_ms: u64, detail: Detail },
            Io(Detail),
            Gone,
        }
        #[derive(Debug)]
        struct Detail;
        // A field whose `Debug` would show it was formatted.
        struct Loud;
        impl std::fmt::Debug for Loud {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("a field was formatted")
            }
        }
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Wrapper(Loud);

        let head = super::debug_head(&Failure::Timeout {
            after_ms: 5,
            detail: Detail,
        });
        assert_eq!(leading_identifier(head.as_str()), Some("Timeout"));
        let head = super::debug_head(&Failure::Io(Detail));
        assert_eq!(leading_identifier(head.as_str()), Some("Io"));
        let head = super::debug_head(&Failure::Gone);
        assert_eq!(leading_identifier(head.as_str()), Some("Gone"));
        let head = super::debug_head(&Wrapper(Loud));
        assert_eq!(leading_identifier(head.as_str()), Some("Wrapper"));
        let head = super::debug_head(&"connection refused");
        assert_eq!(leading_identifier(head.as_str()), None);
        let head = super::debug_head(&format_args!("plain prose"));
        assert_eq!(leading_identifier(head.as_str()), None);
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
