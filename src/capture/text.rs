//! Text without allocating: a string in a fixed stack buffer, cut at a char boundary when
//! full, and the caps on how much of a value is kept.

use std::fmt::{self, Write};

/// Longest command name or label value kept, in bytes; longer values are cut at a char boundary.
pub(crate) const VALUE_CAP: usize = 96;
/// Longest error type kept, in bytes.
pub(crate) const ERROR_TYPE_CAP: usize = 64;
/// A string in a fixed stack buffer. Writes past the end are cut at a char boundary and
/// reported as `fmt::Error`, which stops a `Debug` impl early instead of formatting megabytes.
#[derive(Clone, Copy)]
pub(crate) struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Set when a write did not fit and was cut.
    truncated: bool,
}

impl<const N: usize> StackStr<N> {
    pub(crate) const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    pub(crate) fn from_str(s: &str) -> Self {
        let mut out = Self::new();
        let _ = out.write_str(s);
        out
    }

    pub(crate) fn from_debug(value: &dyn fmt::Debug) -> Self {
        let mut out = Self::new();
        // A full buffer ends formatting with an error; what was written is kept.
        let _ = write!(out, "{value:?}");
        out
    }

    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: `write_str` only ever copies whole UTF-8 chars into `buf[..len]` (it cuts at a
        // char boundary), and nothing else writes to it.
        unsafe { std::str::from_utf8_unchecked(&self.buf[..self.len]) }
    }

    /// The text without the quotes that `Debug` puts around strings (`?name` on a `String`).
    /// A cut text has lost its closing quote, but its opening one goes all the same, so a long
    /// value gives the same label as its short prefix would (not one with a stray `"`).
    pub(crate) fn unquoted(&self) -> &str {
        let s = self.as_str();
        let Some(inner) = s.strip_prefix('"') else {
            return s;
        };
        if self.truncated {
            return inner;
        }
        inner.strip_suffix('"').unwrap_or(s)
    }
}

impl<const N: usize> Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        if s.len() <= room {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.buf[self.len..self.len + cut].copy_from_slice(&s.as_bytes()[..cut]);
        self.len += cut;
        self.truncated = true;
        Err(fmt::Error)
    }
}

impl<const N: usize> fmt::Debug for StackStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
