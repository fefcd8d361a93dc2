//! Header rules between client, edge and origin.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones Pushpin never forwards.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Header names listed in `Connection` (also hop-by-hop).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A copy of `value` in its own allocation. Values hyper parsed share the connection's read
/// buffer; anything kept beyond the request (a WebSocket session's replayed headers) must not
/// pin that buffer.
pub(crate) fn detach(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// True for `Grip-*` header names.
pub(crate) fn is_grip(name: &HeaderName) -> bool {
    name.as_str().starts_with("grip-")
}

/// Client request headers as the origin should see them: hop-by-hop headers, every client
/// `Grip-*` header, `Accept-Encoding` (the edge may append to the body, so it must stay
/// uncompressed) and `Expect` removed. `Host` is kept.
pub(crate) fn to_origin(client: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(client);
    let mut out = HeaderMap::with_capacity(client.len() + 3);
    for (name, value) in client {
        if is_hop_by_hop(name)
            || is_grip(name)
            || name == header::ACCEPT_ENCODING
            || name == header::EXPECT
            || listed.iter().any(|l| l == name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Origin response headers as the client should see them: hop-by-hop removed, and `Grip-*`
/// removed when `strip_grip`.
pub(crate) fn to_client(origin: &HeaderMap, strip_grip: bool) -> HeaderMap {
    let listed = connection_listed(origin);
    let mut out = HeaderMap::with_capacity(origin.len());
    for (name, value) in origin {
        if is_hop_by_hop(name)
            || (strip_grip && is_grip(name))
            || listed.iter().any(|l| l == name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// True when the `Content-Type` media type (parameters aside) is `expected`.
pub(crate) fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn origin_never_sees_client_grip_or_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("h.example"));
        h.insert("grip-sig", HeaderValue::from_static("fake"));
        h.insert("grip-last", HeaderValue::from_static("x; last-id=1"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("accept-encoding", HeaderValue::from_static("gzip"));
        h.insert("meta-user", HeaderValue::from_static("evil"));
        let out = to_origin(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "meta-user"]);
    }

    #[test]
    fn client_response_loses_grip_headers_only_when_asked() {
        let mut h = HeaderMap::new();
        h.insert("grip-hold", HeaderValue::from_static("stream"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert_eq!(to_client(&h, true).len(), 1);
        assert_eq!(to_client(&h, false).len(), 2);
    }
}
