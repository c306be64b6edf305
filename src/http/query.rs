//! Query strings, parsed strictly: only the names an endpoint accepts (and `token`), each at
//! most once, percent-decoded.

use hyper::{Response, StatusCode, Uri};

use super::response::{error, Body};
use crate::decode::percent_decode;
use crate::live::Window;

/// The request's query as (name, value) pairs, checked against `allowed` names.
pub(crate) fn query<'a>(uri: &'a Uri, allowed: &[&str]) -> Result<Vec<(&'a str, String)>, String> {
    let mut out: Vec<(&str, String)> = Vec::new();
    let Some(query) = uri.query() else {
        return Ok(out);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) && name != "token" {
            let mut known = allowed.join(", ");
            if known.is_empty() {
                known.push_str("none");
            }
            return Err(format!("unknown query parameter; accepted: {known}"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("query parameter `{name}` given twice"));
        }
        let value = percent_decode(value, true).ok_or("malformed percent-encoding in the query")?;
        out.push((name, value));
    }
    Ok(out)
}

/// The value of parameter `name`.
pub(crate) fn param<'a>(params: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// The window named `name` (`1m`, `5m`, `1h`).
pub(crate) fn window(name: &str) -> Option<Window> {
    Window::from_name(name)
}

/// The answer to a request naming an unknown window.
pub(crate) fn unknown_window() -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "unknown window; use 1m, 5m or 1h")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_parsed_strictly() {
        let uri: Uri = "/api/commands?window=5m".parse().unwrap();
        assert_eq!(
            query(&uri, &["window"]).unwrap(),
            vec![("window", "5m".to_owned())]
        );
        for bad in [
            "/x?window=1m&window=5m",
            "/x?bogus=1",
            "/x?window=%zz",
            "/x?window=%ff",
        ] {
            let uri: Uri = bad.parse().unwrap();
            assert!(query(&uri, &["window"]).is_err(), "{bad}");
        }
    }
}
