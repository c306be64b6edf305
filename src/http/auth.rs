//! The bearer token: given as `Authorization: Bearer <token>`, or as a `token` query parameter
//! (for the page and `EventSource`, which cannot set headers), compared in constant time.

use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::Uri;

use crate::decode::percent_decode;

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries `token` (always, when there is none).
pub(crate) fn authorised(token: Option<&str>, uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()));
    from_header
        || uri.query().is_some_and(|q| {
            q.split('&')
                .filter_map(|p| p.strip_prefix("token="))
                .filter_map(|v| percent_decode(v, true))
                .any(|given| same(given.as_bytes(), token.as_bytes()))
        })
}
