//! JSON-P on routes with `aco` (Pushpin's `requestsession.cpp` `tryApplyJsonp` and
//! `httpsession.cpp` `respond`).
//!
//! A GET with the callback parameter (route `jsonp_cb`, default `callback`) — or with the
//! route's body parameter when the route has a default callback — is rewritten before it goes
//! to the origin: the JSON-P parameters leave the query, `_method` overrides the method (else
//! the route's default), `_headers` (a JSON object) adds request headers, the body parameter
//! (or `_body`) becomes the body, and `Accept: */*` is set. The answer (a relayed response or a
//! response hold's) is wrapped: always `200 OK`, `Content-Type: application/javascript`,
//! `Cache-Control` mirrored, body `/**/cb({"code":…,"reason":…,"headers":{…},"body":"…"});\n`
//! (extended mode) or `/**/cb(<body without its trailing newline>);\n` (basic mode).
//!
//! Deliberate differences: the callback must look like a JavaScript name (letters, digits,
//! `_`, `$`, `.`, `[`, `]`; Pushpin only refuses an empty one), and stream holds are not
//! wrapped (Pushpin does not wrap them either; their body never ends).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use routes::JsonpConfig;
use runtime::server::{Body, full, text};

/// Largest response body wrapped; larger ⇒ 500, as when the body cannot be encoded.
const MAX_WRAPPED_BODY: usize = 1_000_000;

/// A request that JSON-P applies to: how to wrap its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jsonp {
    callback: String,
    extended: bool,
}

/// Marks a response that must not be wrapped (a stream hold's endless body).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoWrap;

/// Rewrites `req` when JSON-P applies. `Ok(None)`: not a JSON-P request. `Ok(Some((jsonp,
/// body)))`: rewritten; `body` replaces the request body when given. `Err(text)`: answer 400
/// with `text`.
pub(crate) fn apply_request<B>(
    config: &JsonpConfig,
    req: &mut Request<B>,
) -> Result<Option<(Jsonp, Option<Bytes>)>, &'static str> {
    if req.method() != Method::GET {
        return Ok(None);
    }
    let mut items = query_items(req.uri().query().unwrap_or(""));
    let has = |items: &[(String, String)], k: &str| items.iter().any(|(n, _)| n == k);
    let body_param = config.body_param.as_deref();
    let by_default =
        config.default_callback.is_some() && body_param.is_some_and(|b| has(&items, b));
    if !has(&items, &config.callback_param) && !by_default {
        return Ok(None);
    }
    let callback = take_callback(&mut items, config)?;
    let method = take_method(&mut items, config)?;
    let mut extra = take_headers(&mut items)?;
    let body = take_body(&mut items, body_param, &mut extra)?;
    rewrite(req, &items, method, extra, body.is_some())?;
    Ok(Some((
        Jsonp {
            callback,
            extended: config.extended,
        },
        body,
    )))
}

/// The query's `name=value` items, in order (a bare `name` has an empty value).
fn query_items(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect()
}

/// The callback parameter (else the route's default callback).
fn take_callback(
    items: &mut Vec<(String, String)>,
    config: &JsonpConfig,
) -> Result<String, &'static str> {
    match take(items, &config.callback_param) {
        Some(raw) => {
            let cb = runtime::server::percent_decode(&raw).ok_or("Invalid callback parameter.")?;
            if cb.is_empty() || !cb.bytes().all(is_callback_byte) {
                return Err("Invalid callback parameter.");
            }
            Ok(cb)
        }
        None => Ok(config.default_callback.clone().unwrap_or_default()),
    }
}

/// The `_method` parameter (else the route's default method).
fn take_method(
    items: &mut Vec<(String, String)>,
    config: &JsonpConfig,
) -> Result<Method, &'static str> {
    match take(items, "_method") {
        Some(raw) => {
            let m = runtime::server::percent_decode(&raw).ok_or("Invalid _method parameter.")?;
            Method::from_bytes(m.as_bytes()).map_err(|_| "Invalid _method parameter.")
        }
        None => Ok(Method::from_bytes(config.default_method.as_bytes()).unwrap_or(Method::GET)),
    }
}

/// The headers of the `_headers` parameter (a JSON object of strings; `Host` and `Accept`
/// ignored).
fn take_headers(
    items: &mut Vec<(String, String)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, &'static str> {
    let mut extra: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let Some(raw) = take(items, "_headers") else {
        return Ok(extra);
    };
    let doc = runtime::server::percent_decode(&raw)
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .ok_or("Invalid _headers parameter.")?;
    let serde_json::Value::Object(map) = doc else {
        return Err("Invalid _headers parameter.");
    };
    for (k, v) in map {
        let serde_json::Value::String(v) = v else {
            return Err("Invalid _headers parameter.");
        };
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| "Invalid _headers parameter.")?;
        if name == header::HOST || name == header::ACCEPT {
            continue;
        }
        let value = HeaderValue::from_str(&v).map_err(|_| "Invalid _headers parameter.")?;
        extra.push((name, value));
    }
    Ok(extra)
}

/// The request body: the route's body parameter (sent as JSON, overriding a `_headers`
/// content type), else `_body`.
fn take_body(
    items: &mut Vec<(String, String)>,
    body_param: Option<&str>,
    extra: &mut Vec<(HeaderName, HeaderValue)>,
) -> Result<Option<Bytes>, &'static str> {
    match body_param {
        Some(param) => {
            let Some(raw) = take(items, param) else {
                return Ok(None);
            };
            let body = runtime::server::percent_decode(&raw).ok_or("Invalid body parameter.")?;
            extra.retain(|(n, _)| *n != header::CONTENT_TYPE);
            extra.push((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
            Ok(Some(Bytes::from(body)))
        }
        None => match take(items, "_body") {
            Some(raw) => Ok(Some(Bytes::from(
                runtime::server::percent_decode(&raw).ok_or("Invalid _body parameter.")?,
            ))),
            None => Ok(None),
        },
    }
}

/// Rewrites `req` for the origin: the query without the JSON-P items, the method, the extra
/// headers and `Accept: */*`; a replaced body drops the client's framing headers.
fn rewrite<B>(
    req: &mut Request<B>,
    rest: &[(String, String)],
    method: Method,
    extra: Vec<(HeaderName, HeaderValue)>,
    new_body: bool,
) -> Result<(), &'static str> {
    let rest: Vec<String> = rest
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    let path = req.uri().path();
    let pq = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| "Invalid callback parameter.")?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| "Invalid callback parameter.")?;
    *req.method_mut() = method;
    let h = req.headers_mut();
    for (name, value) in extra {
        h.insert(name, value);
    }
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    if new_body {
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::TRANSFER_ENCODING);
    }
    Ok(())
}

fn is_callback_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.' | b'[' | b']')
}

/// Removes every `name` item; returns the first value.
fn take(items: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let first = items
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone());
    items.retain(|(k, _)| k != name);
    first
}

impl Jsonp {
    /// Wraps a complete answer. A body over the bound ⇒ 500, as Pushpin answers when it
    /// cannot encode one.
    pub(crate) async fn wrap(&self, resp: Response<Body>) -> Response<Body> {
        if resp.extensions().get::<NoWrap>().is_some() {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let Ok(body) = crate::origin::collect_limited(body, MAX_WRAPPED_BODY).await else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Upstream response could not be JSON-P encoded.\n",
            );
        };
        let reason = parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| parts.status.canonical_reason().unwrap_or("").to_owned());
        let out = self.render(parts.status.as_u16(), &reason, &parts.headers, &body);
        let mut resp = Response::new(full(out));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/javascript"),
        );
        for v in parts.headers.get_all(header::CACHE_CONTROL) {
            h.append(header::CACHE_CONTROL, v.clone());
        }
        resp
    }

    /// The wrapped body.
    fn render(&self, code: u16, reason: &str, headers: &HeaderMap, body: &[u8]) -> Bytes {
        let inner = if self.extended {
            // Same-name headers are joined with ", " (Pushpin's held responses).
            let mut map = serde_json::Map::new();
            for name in headers.keys() {
                if name == header::CONTENT_LENGTH {
                    continue;
                }
                let joined: Vec<String> = headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                map.insert(
                    name.as_str().to_owned(),
                    serde_json::Value::String(joined.join(", ")),
                );
            }
            let json = |v: serde_json::Value| v.to_string();
            format!(
                "{{\"code\":{code},\"reason\":{},\"headers\":{},\"body\":{}}}",
                json(reason.into()),
                json(serde_json::Value::Object(map)),
                json(String::from_utf8_lossy(body).into_owned().into()),
            )
        } else {
            let b = body
                .strip_suffix(b"\r\n")
                .or_else(|| body.strip_suffix(b"\n"))
                .unwrap_or(body);
            String::from_utf8_lossy(b).into_owned()
        };
        Bytes::from(format!("/**/{}({inner});\n", self.callback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .header("host", "example.com")
            .header("accept", "text/html")
            .body(())
            .expect("request")
    }

    #[test]
    fn rewrites_the_request() {
        let c = JsonpConfig::default();
        let mut r =
            req("/x?a=1&callback=cb&_method=POST&_headers=%7B%22X-A%22%3A%22v%22%7D&_body=hi");
        let (j, body) = apply_request(&c, &mut r).expect("ok").expect("jsonp");
        assert_eq!(j.callback, "cb");
        assert_eq!(body, Some(Bytes::from_static(b"hi")));
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri().to_string(), "/x?a=1");
        assert_eq!(r.headers()["x-a"], "v");
        assert_eq!(r.headers()["accept"], "*/*");
        let mut r = req("/x?a=1");
        assert_eq!(apply_request(&c, &mut r), Ok(None));
        let mut r = req("/x?callback=cb");
        apply_request(&c, &mut r).expect("ok");
        assert_eq!(r.uri().to_string(), "/x");
    }

    #[test]
    fn bad_parameters_are_400s() {
        let c = JsonpConfig::default();
        for (uri, err) in [
            ("/x?callback=", "Invalid callback parameter."),
            ("/x?callback=a(1)", "Invalid callback parameter."),
            ("/x?callback=cb&_method=G%20T", "Invalid _method parameter."),
            (
                "/x?callback=cb&_headers=%5B%5D",
                "Invalid _headers parameter.",
            ),
            (
                "/x?callback=cb&_headers=%7B%22a%22%3A1%7D",
                "Invalid _headers parameter.",
            ),
        ] {
            assert_eq!(apply_request(&c, &mut req(uri)), Err(err), "{uri}");
        }
    }

    #[test]
    fn default_callback_with_body_param() {
        let c = JsonpConfig {
            extended: false,
            body_param: Some("b".into()),
            default_callback: Some("dcb".into()),
            default_method: "POST".into(),
            ..JsonpConfig::default()
        };
        let mut r = req("/x?b=%7B%7D");
        let (j, body) = apply_request(&c, &mut r).expect("ok").expect("jsonp");
        assert_eq!((j.callback.as_str(), j.extended), ("dcb", false));
        assert_eq!(body, Some(Bytes::from_static(b"{}")));
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.headers()["content-type"], "application/json");
    }

    #[test]
    fn renders_both_modes() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("content-length", HeaderValue::from_static("3"));
        let j = Jsonp {
            callback: "cb".into(),
            extended: true,
        };
        assert_eq!(
            j.render(201, "Made", &h, b"a\"\n"),
            Bytes::from_static(
                b"/**/cb({\"code\":201,\"reason\":\"Made\",\"headers\":{\"x-a\":\"1, 2\"},\"body\":\"a\\\"\\n\"});\n"
            )
        );
        let j = Jsonp {
            callback: "cb".into(),
            extended: false,
        };
        assert_eq!(
            j.render(200, "OK", &h, b"{\"x\":1}\r\n"),
            Bytes::from_static(b"/**/cb({\"x\":1});\n")
        );
    }
}
