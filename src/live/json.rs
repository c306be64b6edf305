//! A minimal JSON writer for the HTTP API (the crate has no serialisation dependency).

use std::fmt::Write as _;

/// Appends `s` as a JSON string literal.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a number; non-finite values become `null`.
pub(crate) fn number(out: &mut String, v: f64) {
    if v.is_finite() {
        if v == v.trunc() && v.abs() < 1e15 {
            let _ = write!(out, "{}", v as i64);
        } else {
            let _ = write!(out, "{v}");
        }
    } else {
        out.push_str("null");
    }
}

/// Writes a JSON object member by member.
pub(crate) struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        string(out, value);
        self
    }

    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub(crate) fn num(&mut self, key: &str, value: f64) -> &mut Self {
        let out = self.key(key);
        number(out, value);
        self
    }

    pub(crate) fn opt_num(&mut self, key: &str, value: Option<f64>) -> &mut Self {
        match value {
            Some(v) => self.num(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub(crate) fn int(&mut self, key: &str, value: u64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    /// A member whose value is already JSON text.
    pub(crate) fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    /// A nested object.
    pub(crate) fn object(&mut self, key: &str, f: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        let out = self.key(key);
        let mut inner = Object::new(out);
        f(&mut inner);
        inner.end();
        self
    }

    /// A nested array of objects.
    pub(crate) fn array<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Object<'_>, T),
    ) -> &mut Self {
        let out = self.key(key);
        out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut inner = Object::new(out);
            f(&mut inner, item);
            inner.end();
        }
        out.push(']');
        self
    }

    pub(crate) fn end(self) {
        self.out.push('}');
    }
}

/// Builds one object as a string.
pub(crate) fn object(f: impl FnOnce(&mut Object<'_>)) -> String {
    let mut out = String::new();
    let mut o = Object::new(&mut out);
    f(&mut o);
    o.end();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped_and_non_finite_numbers_are_null() {
        let text = super::object(|o| {
            o.str("a\"b", "x\\y\n\u{1}")
                .num("n", f64::NAN)
                .num("i", 3.0);
            o.num("f", 0.25);
        });
        assert_eq!(text, r#"{"a\"b":"x\\y\n\u0001","n":null,"i":3,"f":0.25}"#);
    }
}
