//! Requests to origins: built (headers, `Grip-Sig`), sent through the route's targets on the
//! pooled client (`runtime::client`), and their bodies read within a bound.
//!
//! Every tier of the edge that talks to an origin goes through here: the proxied request and
//! its GRIP re-requests (`proxy`), next links, gone links, WebSocket-over-HTTP and WebSocket
//! passthrough (`ws`). This module depends on nothing above it.

use crate::EdgeInner;
use crate::headers;
use crate::metrics::EdgeMetrics;
use crate::test_origin;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use routes::{Route, Target, TargetAddr};
use runtime::body::{BodyFault, BodyFaults, ClientBody};
use runtime::client::Endpoint;
pub(crate) use runtime::client::{HttpClient, HttpSender, RequestError, strip_port};
use runtime::server::{Body, full};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The endpoint of a route target; `None` for the built-in `test` origin.
pub(crate) fn endpoint(target: &Target) -> Option<Endpoint> {
    match &target.addr {
        TargetAddr::Host { host, port } => Some(Endpoint {
            host: host.clone(),
            port: *port,
            tls: target.ssl,
            insecure: target.insecure,
            server_name: target.host.as_deref().map(|h| strip_port(h).to_owned()),
        }),
        TargetAddr::Test => None,
    }
}

/// A connection of its own to a route target (WebSocket passthrough upgrades it).
pub(crate) fn connect(
    client: &HttpClient,
    target: &Target,
) -> impl Future<Output = Result<HttpSender, RequestError>> + Send + 'static + use<> {
    let endpoint = endpoint(target);
    let fut = endpoint.as_ref().map(|e| client.connect(e));
    async move {
        match fut {
            Some(f) => f.await,
            None => Err(RequestError::Connect {
                addr: "test".into(),
                reason: "the built-in test origin has no address".into(),
            }),
        }
    }
}

/// Why an origin request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AskError {
    /// No target answered, or the answer failed (the client gets 502).
    #[error("{0}")]
    BadGateway(String),
    /// The client's request body failed (timed out or malformed): its fault, not the origin's.
    #[error("client request body: {0:?}")]
    ClientBody(BodyFault),
}

/// The client's request body toward the origin: kept in memory when small enough that a GRIP
/// hold may re-request the origin with it, streamed otherwise. Either way it carries the
/// client-body timeout, and its failures are reported as the client's (400/408), not 502.
pub(crate) enum ReqBody {
    Buffered(Bytes),
    /// The body until it is sent (`None` once it was).
    Streamed(Option<Body>, BodyFaults),
}

impl ReqBody {
    /// Buffers `body` when its exact size is at most `max`, else streams it.
    pub(crate) async fn new(body: ClientBody, max: usize) -> Result<ReqBody, AskError> {
        use http_body::Body as _;
        let exact = body.size_hint().exact();
        match exact {
            Some(0) if body.is_end_stream() => Ok(ReqBody::Buffered(Bytes::new())),
            Some(n) if n <= max as u64 => {
                let faults = body.faults();
                let bytes = body
                    .collect()
                    .await
                    .map_err(|_| {
                        AskError::ClientBody(faults.get().unwrap_or(BodyFault::Malformed))
                    })?
                    .to_bytes();
                Ok(ReqBody::Buffered(bytes))
            }
            _ if body.is_end_stream() => Ok(ReqBody::Buffered(Bytes::new())),
            _ => {
                let faults = body.faults();
                let body = body.map_err(box_client_body_error).boxed_unsync();
                Ok(ReqBody::Streamed(Some(body), faults))
            }
        }
    }

    /// The body is streamed (it can be sent once).
    pub(crate) fn is_streamed(&self) -> bool {
        matches!(self, ReqBody::Streamed(..))
    }

    /// How the client's body failed, if it did.
    fn fault(&self) -> Option<BodyFault> {
        match self {
            ReqBody::Buffered(_) => None,
            ReqBody::Streamed(_, faults) => faults.get(),
        }
    }

    /// The body for one origin request (a streamed body can be sent once).
    fn take(&mut self) -> Body {
        match self {
            ReqBody::Buffered(b) => full(b.clone()),
            ReqBody::Streamed(b, _) => b.take().unwrap_or_else(|| full("")),
        }
    }

    /// Puts back a body that was taken but provably not sent (not polled either).
    fn restore(&mut self, body: Body) {
        if let ReqBody::Streamed(slot @ None, _) = self {
            *slot = Some(body);
        }
    }
}

/// What the origin gets for one client request.
pub(crate) struct OriginRequest {
    pub(crate) method: http::Method,
    /// Path and query in the origin's namespace.
    pub(crate) path: String,
    /// The client's headers (made origin headers by [`ask`]).
    pub(crate) headers: HeaderMap,
    pub(crate) body: ReqBody,
}

impl OriginRequest {
    /// An empty-body POST (gone links).
    pub(crate) fn post_empty(path: String, headers: HeaderMap) -> OriginRequest {
        OriginRequest {
            method: http::Method::POST,
            path,
            headers,
            body: ReqBody::Buffered(Bytes::new()),
        }
    }

    /// A body-less GET (next links).
    pub(crate) fn get(path: String, headers: HeaderMap) -> OriginRequest {
        OriginRequest {
            method: http::Method::GET,
            path,
            headers,
            body: ReqBody::Buffered(Bytes::new()),
        }
    }
}

/// Sends the request to the route's first reachable target (the built-in test origin answers
/// in-process). `grip_last` adds `Grip-Last: <channel>; last-id=<id>` headers (re-requests).
///
/// A target is skipped only when nothing was sent to it (no connection could be made); the
/// request goes out on a pooled keep-alive connection when one is ready.
pub(crate) async fn ask<'r>(
    edge: &Arc<EdgeInner>,
    route: &'r Route,
    req: &mut OriginRequest,
    authorized: Option<&crate::authz::Authorized>,
    grip_last: &[(String, String)],
) -> Result<(Response<Body>, &'r Target), AskError> {
    let started = Instant::now();
    let mut last_err = String::from("route has no usable target");
    for target in &route.targets {
        let Some(endpoint) = endpoint(target) else {
            let uri: Uri = req.path.parse().unwrap_or_else(|_| Uri::from_static("/"));
            return Ok((
                test_origin::respond(&req.method, uri.path(), uri.query(), &req.headers),
                target,
            ));
        };
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.path.as_str());
        if let Some(h) = builder.headers_mut() {
            *h = headers(edge, &req.headers, route, target);
            if let Some(a) = authorized {
                a.apply(h);
            }
            append_grip_last(h, grip_last);
        }
        let origin_req = builder
            .body(req.body.take())
            .map_err(|e| AskError::BadGateway(format!("cannot build origin request: {e}")))?;
        let result = edge.origin.request(&endpoint, origin_req).await;
        let result = match result {
            Err(failed) if failed.error.is_connect() => {
                // Nothing was sent (the body was not read either): the next target gets it.
                tracing::warn!(route = %route.id, error = %failed.error, "origin target unavailable");
                if let Some(unsent) = failed.unsent {
                    req.body.restore(unsent.into_body());
                }
                last_err = failed.error.to_string();
                continue;
            }
            other => other,
        };
        edge.metrics
            .origin_duration
            .record(started.elapsed().as_secs_f64());
        return match result {
            Ok(resp) => {
                EdgeMetrics::origin_request(Some(resp.status().as_u16()));
                Ok((resp.map(boxed), target))
            }
            Err(failed) => {
                // A request that failed because the client's body did is the client's error.
                if let Some(fault) = req.body.fault() {
                    return Err(AskError::ClientBody(fault));
                }
                EdgeMetrics::origin_request(None);
                Err(AskError::BadGateway(failed.error.to_string()))
            }
        };
    }
    EdgeMetrics::origin_request(None);
    Err(AskError::BadGateway(last_err))
}

/// Adds `Grip-Last: <channel>; last-id=<id>` headers.
pub(crate) fn append_grip_last(h: &mut HeaderMap, grip_last: &[(String, String)]) {
    for (channel, id) in grip_last {
        if let Ok(v) = HeaderValue::from_str(&format!("{channel}; last-id={id}")) {
            h.append(HeaderName::from_static("grip-last"), v);
        }
    }
}

/// The headers an origin gets for a client's request to `target`: the client's end-to-end
/// headers, the target's or route's `Host`, the route's header rewrites, and (GRIP routes)
/// `Grip-Feature` and `Grip-Sig`.
pub(crate) fn headers(
    edge: &EdgeInner,
    client: &HeaderMap,
    route: &Route,
    target: &Target,
) -> HeaderMap {
    let mut h = headers::to_origin(client);
    let host_override = target.host.as_deref().or(route.as_host.as_deref());
    if let Some(host) = host_override.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(header::HOST, host);
    }
    for (name, value) in &route.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if value.is_empty() {
            h.remove(&name);
        } else if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    if !route.no_grip {
        h.insert(
            HeaderName::from_static("grip-feature"),
            HeaderValue::from_static(grip::GRIP_FEATURES),
        );
        if let Some(sig) = edge.grip_sig(route) {
            h.insert(HeaderName::from_static("grip-sig"), sig);
        }
    }
    h
}

/// Signs a `Grip-Sig` for an origin request.
pub(crate) fn sign(iss: &str, key: &grip::sig::SigKey) -> Option<HeaderValue> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    HeaderValue::from_str(&grip::sig::sign(iss, key, now, 3600)).ok()
}

/// Reads a whole body of at most `max` bytes.
pub(crate) async fn collect_limited(mut body: Body, max: usize) -> Result<Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(format!("body larger than {max} bytes"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Boxes a hyper error (a named function: closures here trip a rustc lifetime inference
/// limitation around `Send` futures).
pub(crate) fn box_hyper_error(e: hyper::Error) -> runtime::server::BoxError {
    Box::new(e)
}

/// Boxes a client body error (a named function for the same reason as [`box_hyper_error`]).
fn box_client_body_error(e: runtime::body::ClientBodyError) -> runtime::server::BoxError {
    Box::new(e)
}

/// A response body from an origin as the edge's [`Body`].
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    body.map_err(box_hyper_error).boxed_unsync()
}

/// The origin path for a link: absolute URLs keep their path and query (the route's targets
/// serve them); `/…` is taken as is; anything else is relative to `base`'s directory.
pub(crate) fn link_path(base: &str, link: &str) -> String {
    if let Some(rest) = link
        .strip_prefix("http://")
        .or_else(|| link.strip_prefix("https://"))
    {
        return rest
            .find('/')
            .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned());
    }
    if link.starts_with('/') {
        return link.to_owned();
    }
    let base_path = base.split('?').next().unwrap_or("/");
    let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{dir}/{link}")
}

#[cfg(test)]
mod tests {
    use super::link_path;

    #[test]
    fn resolves_links() {
        assert_eq!(link_path("/a/b?x=1", "/next"), "/next");
        assert_eq!(link_path("/a/b?x=1", "next?c=2"), "/a/next?c=2");
        assert_eq!(link_path("/b", "next"), "/next");
        assert_eq!(link_path("/a", "http://origin.example:8080/n?x"), "/n?x");
        assert_eq!(link_path("/a", "https://origin.example"), "/");
    }
}
