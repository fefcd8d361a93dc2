//! Automatic CORS for routes with `aco`, as Pushpin does it: every response (proxied, held,
//! streamed) gets each CORS header the origin did not set itself. Preflights go to the origin.

use http::header::{HeaderMap, HeaderValue};

/// The request headers CORS answers depend on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    origin: Option<HeaderValue>,
    request_method: Option<HeaderValue>,
    request_headers: Option<HeaderValue>,
}

/// Response headers a browser exposes without being told.
const SIMPLE: &[&str] = &[
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
];

impl Cors {
    /// Captures what the answer needs from the client's request.
    pub(crate) fn from_request(h: &HeaderMap) -> Cors {
        Cors {
            origin: h.get(http::header::ORIGIN).cloned(),
            request_method: h.get(http::header::ACCESS_CONTROL_REQUEST_METHOD).cloned(),
            request_headers: h.get(http::header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        }
    }

    /// Adds the CORS headers the response lacks.
    pub(crate) fn apply(&self, h: &mut HeaderMap) {
        use http::header::*;
        let expose: Vec<String> = h
            .keys()
            .map(http::HeaderName::as_str)
            .filter(|n| {
                !SIMPLE.contains(n) && !n.starts_with("access-control-") && !n.starts_with("grip-")
            })
            .map(str::to_owned)
            .collect();
        let mut set = |name: HeaderName, value: HeaderValue| {
            if !h.contains_key(&name) {
                h.insert(name, value);
            }
        };
        set(
            ACCESS_CONTROL_ALLOW_METHODS,
            self.request_method
                .clone()
                .unwrap_or(HeaderValue::from_static(
                    "OPTIONS, HEAD, GET, POST, PUT, DELETE",
                )),
        );
        if let Some(v) = &self.request_headers {
            set(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if !expose.is_empty()
            && let Ok(v) = HeaderValue::from_str(&expose.join(", "))
        {
            set(ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        set(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        set(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            self.origin.clone().unwrap_or(HeaderValue::from_static("*")),
        );
        set(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushpin_cors_headers() {
        let mut req = HeaderMap::new();
        req.insert("origin", HeaderValue::from_static("http://example.com"));
        req.insert(
            "access-control-request-headers",
            HeaderValue::from_static("X-Foo"),
        );
        let mut resp = HeaderMap::new();
        resp.insert("content-type", HeaderValue::from_static("text/plain"));
        resp.insert("x-custom", HeaderValue::from_static("1"));
        resp.insert("access-control-max-age", HeaderValue::from_static("10"));
        Cors::from_request(&req).apply(&mut resp);
        let get = |n: &str| resp.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(
            get("access-control-allow-origin").as_deref(),
            Some("http://example.com")
        );
        assert_eq!(
            get("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(
            get("access-control-allow-headers").as_deref(),
            Some("X-Foo")
        );
        assert_eq!(
            get("access-control-allow-methods").as_deref(),
            Some("OPTIONS, HEAD, GET, POST, PUT, DELETE")
        );
        assert_eq!(
            get("access-control-expose-headers").as_deref(),
            Some("x-custom")
        );
        assert_eq!(
            get("access-control-max-age").as_deref(),
            Some("10"),
            "the origin's own value stays"
        );
        let mut bare = HeaderMap::new();
        Cors::default().apply(&mut bare);
        assert_eq!(
            bare.get("access-control-allow-origin")
                .map(|v| v.as_bytes()),
            Some(&b"*"[..])
        );
    }
}
