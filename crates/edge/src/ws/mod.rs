//! WebSocket clients: the handshake toward the origin (WebSocket-over-HTTP, passthrough to a
//! WebSocket origin, or the built-in test origin), then one session task per connection.
//!
//! Subscriptions requested in the origin's first answer are live before the client receives
//! its `101`, so no publish is lost between the origin's answer and the subscription.

mod over_http;
mod session;

use crate::EdgeInner;
use crate::conn::Transport;
use crate::headers;
use crate::hold::HoldGuard;
use crate::origin::OriginSender;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use routes::{Route, Target, TargetAddr};
use runtime::server::{Body, full, text};
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

pub(crate) use over_http::OverHttp;

/// Largest body read from an origin's answer that rejects a handshake.
const MAX_REJECT_BODY: usize = 100_000;

/// A WebSocket over an upgraded hyper connection.
pub(crate) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How the edge talks to the origin for one connection.
pub(crate) enum Upstream {
    /// WebSocket-over-HTTP (target `over_http`, or the built-in test origin).
    OverHttp(OverHttp),
    /// A WebSocket to the origin (plain target).
    Passthrough(Box<Ws>),
}

/// GRIP message framing on the origin side, when the origin accepted the `grip` extension.
#[derive(Debug, Clone)]
pub(crate) struct GripMode {
    /// Prefix of data messages (default `m:`); stripped before relaying to the client.
    pub prefix: Bytes,
}

/// Parses `Sec-WebSocket-Extensions` for `grip[; message-prefix=...]`.
fn grip_mode(headers: &HeaderMap) -> Option<GripMode> {
    for value in headers.get_all("sec-websocket-extensions") {
        let Ok(value) = value.to_str() else { continue };
        for ext in value.split(',') {
            let mut params = ext.split(';').map(str::trim);
            if params
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("grip"))
            {
                let mut prefix = Bytes::from_static(grip::wscontrol::DEFAULT_MESSAGE_PREFIX);
                for p in params {
                    if let Some((k, v)) = p.split_once('=')
                        && k.trim().eq_ignore_ascii_case("message-prefix")
                    {
                        prefix = Bytes::from(v.trim().trim_matches('"').to_owned());
                    }
                }
                return Some(GripMode { prefix });
            }
        }
    }
    None
}

/// The client's handshake, checked.
struct ClientHandshake {
    accept: HeaderValue,
}

fn check_client_handshake(req: &Request<Incoming>) -> Result<ClientHandshake, &'static str> {
    if req.method() != http::Method::GET {
        return Err("WebSocket handshake must use GET");
    }
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        return Err("unsupported Sec-WebSocket-Version");
    }
    let key = req
        .headers()
        .get("sec-websocket-key")
        .ok_or("missing Sec-WebSocket-Key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = HeaderValue::from_str(&accept).map_err(|_| "bad Sec-WebSocket-Key")?;
    Ok(ClientHandshake { accept })
}

/// Client handshake headers as replayed to the origin on every request.
///
/// The session keeps them for its whole life, so every value is copied into its own
/// allocation: values parsed by hyper are slices of the connection's 8 KiB read buffer, and
/// keeping one of them alive would keep that whole buffer (measured: 17.3 → 10.9 KiB RSS per
/// idle WebSocket without it, BENCHMARKS.md).
fn replay_headers(client: &HeaderMap) -> HeaderMap {
    let h = headers::to_origin(client);
    let keep = |n: &HeaderName| {
        let n = n.as_str();
        !(n.starts_with("meta-")
            || n == "sec-websocket-extensions"
            || n == "content-length"
            || n == "content-type"
            || n == "accept"
            || n == "connection-id")
    };
    let mut out = HeaderMap::with_capacity(h.keys().filter(|n| keep(n)).count());
    for (name, value) in &h {
        if keep(name) {
            out.append(name.clone(), headers::detach(value));
        }
    }
    out
}

/// tungstenite's read buffer per client WebSocket, allocated with the connection. Clients
/// mostly receive; a larger client message is read in chunks of this size.
const CLIENT_READ_BUFFER: usize = 1024;
/// Bytes of frames buffered before tungstenite writes without waiting for the flush.
const CLIENT_WRITE_BUFFER: usize = 16 * 1024;

/// The WebSocket settings for client connections.
pub(crate) fn client_ws_config(edge: &EdgeInner) -> WebSocketConfig {
    let max = edge.config.max_ws_message_size;
    WebSocketConfig::default()
        // Small buffers: most connections are idle most of the time.
        .read_buffer_size(CLIENT_READ_BUFFER)
        // Frames fed by one session batch collect here and leave in one `send()` at the
        // flush (tungstenite allocates it on the first write, not per idle connection).
        .write_buffer_size(CLIENT_WRITE_BUFFER)
        .max_write_buffer_size(
            edge.config
                .max_ws_message_size
                .saturating_mul(4)
                .max(1 << 20),
        )
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// What the handshake produced: the answer for the client, and (on success) the session.
pub(crate) enum Handshake {
    /// Answer the client with this and do not upgrade.
    Reject(Response<Body>),
    /// Upgrade, then run the session.
    Accept {
        response: Response<Body>,
        session: Box<session::Session>,
    },
}

/// Errors that end the handshake with a plain error response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    #[error("bad handshake: {0}")]
    BadRequest(&'static str),
    #[error("{0}")]
    BadGateway(String),
    #[error("bus: {0}")]
    Unavailable(String),
}

impl WsError {
    pub(crate) fn into_response(self) -> Response<Body> {
        match self {
            WsError::BadRequest(_) => text(StatusCode::BAD_REQUEST, "Bad WebSocket handshake.\n"),
            WsError::BadGateway(_) => {
                text(StatusCode::BAD_GATEWAY, "Error while proxying to origin.\n")
            }
            WsError::Unavailable(_) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable.\n")
            }
        }
    }
}

/// Handles a WebSocket upgrade request routed to `route`.
pub(crate) async fn handle(
    edge: Arc<EdgeInner>,
    mut req: Request<Incoming>,
    route: Route,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match handshake(edge, &mut req, route, peer).await {
        Ok(Handshake::Reject(resp)) => resp,
        Ok(Handshake::Accept { response, session }) => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let session_task = async move {
                match on_upgrade.await {
                    Ok(upgraded) => session.run(upgraded).await,
                    Err(err) => tracing::debug!(error = %err, "client upgrade failed"),
                }
            };
            tokio::spawn(tracing::Instrument::instrument(
                session_task,
                tracing::Span::current(),
            ));
            response
        }
        Err(err) => {
            match &err {
                WsError::BadRequest(_) => {
                    tracing::debug!(%path, error = %err, "bad websocket handshake")
                }
                _ => tracing::warn!(%path, error = %err, "websocket handshake failed"),
            }
            err.into_response()
        }
    }
}

async fn handshake(
    edge: Arc<EdgeInner>,
    req: &mut Request<Incoming>,
    route: Route,
    peer: std::net::SocketAddr,
) -> Result<Handshake, WsError> {
    let client = check_client_handshake(req).map_err(WsError::BadRequest)?;
    let authorized =
        match crate::authz::gate(&edge, &route, req.method(), req.uri(), req.headers(), peer).await
        {
            crate::authz::Gate::Pass(a) => a,
            crate::authz::Gate::Reject(resp) => return Ok(Handshake::Reject(resp)),
        };
    let mut replay = replay_headers(req.headers());
    if let Some(a) = &authorized {
        // Replayed on every WebSocket-over-HTTP request, like the client's own headers.
        a.apply(&mut replay);
    }
    let path = route.rewrite_path(req.uri().path_and_query().map_or("/", |pq| pq.as_str()));
    let route = Arc::new(route);
    let mut last_err = String::from("route has no usable target");
    for (index, target) in route.targets.iter().enumerate() {
        if target.addr == TargetAddr::Test || target.over_http {
            let mut upstream = OverHttp::new(
                edge.clone(),
                route.clone(),
                index,
                path.clone(),
                replay.clone(),
            );
            let reply = match upstream.open().await {
                Ok(reply) => reply,
                Err(err) if err.is_connect() => {
                    last_err = err.to_string();
                    continue;
                }
                Err(err) => return Err(WsError::BadGateway(err.to_string())),
            };
            let reply = match reply {
                over_http::OpenReply::Rejected(resp) => return Ok(Handshake::Reject(resp)),
                over_http::OpenReply::Accepted(reply) => reply,
            };
            let mut response_headers = headers::to_client(&reply.headers, true);
            for name in [
                "content-length",
                "content-type",
                "keep-alive-interval",
                "sec-websocket-extensions",
            ] {
                response_headers.remove(name);
            }
            let set_meta: Vec<HeaderName> = response_headers
                .keys()
                .filter(|n| n.as_str().starts_with("set-meta-"))
                .cloned()
                .collect();
            for n in set_meta {
                response_headers.remove(n);
            }
            let mut meta = std::collections::BTreeMap::new();
            over_http::apply_set_meta(&reply.headers, &mut meta);
            let accepted = Accepted {
                grip: grip_mode(&reply.headers),
                upstream: Upstream::OverHttp(upstream),
                gone: gone_url(&reply.headers),
                response_headers,
                first_events: reply.events,
                meta,
            };
            return accepted
                .into_handshake(&edge, authorized, &route, target, &client, (&path, &replay))
                .await;
        }
        match passthrough(edge.clone(), req, &route, target, &path, &replay).await {
            Ok(PassthroughReply::Rejected(resp)) => return Ok(Handshake::Reject(resp)),
            Ok(PassthroughReply::Accepted { headers: h, ws }) => {
                let grip = grip_mode(&h);
                let mut response_headers = headers::to_client(&h, true);
                for name in [
                    "sec-websocket-extensions",
                    "sec-websocket-accept",
                    "content-length",
                ] {
                    response_headers.remove(name);
                }
                let accepted = Accepted {
                    grip,
                    upstream: Upstream::Passthrough(ws),
                    gone: gone_url(&h),
                    response_headers,
                    first_events: Vec::new(),
                    meta: std::collections::BTreeMap::new(),
                };
                return accepted
                    .into_handshake(&edge, authorized, &route, target, &client, (&path, &replay))
                    .await;
            }
            Err(err) if err.is_connect() => {
                last_err = err.to_string();
                continue;
            }
            Err(err) => return Err(WsError::BadGateway(err.to_string())),
        }
    }
    Err(WsError::BadGateway(last_err))
}

/// An origin that accepted the connection, whichever way it is reached.
struct Accepted {
    grip: Option<GripMode>,
    upstream: Upstream,
    response_headers: HeaderMap,
    /// Events that came with the origin's acceptance (the rest of the OPEN answer).
    first_events: Vec<grip::wsevents::WsEvent>,
    /// `Set-Meta-*` of the acceptance.
    meta: std::collections::BTreeMap<String, String>,
    /// `Grip-Link: <url>; rel=gone` of the acceptance.
    gone: Option<String>,
}

/// The `rel=gone` link of an origin's WebSocket acceptance, if any (a malformed `Grip-*`
/// header elsewhere does not matter here).
fn gone_url(headers: &HeaderMap) -> Option<String> {
    if !headers.contains_key("grip-link") {
        return None;
    }
    let mut only_links = HeaderMap::new();
    for v in headers.get_all("grip-link") {
        only_links.append("grip-link", v.clone());
    }
    grip::instruct::parse_headers(&only_links)
        .ok()
        .and_then(|i| i.gone_link)
}

impl Accepted {
    /// Registers the connection, acts on the first events (subscriptions first) so they are
    /// live before the client gets its 101, and builds the 101.
    async fn into_handshake(
        self,
        edge: &Arc<EdgeInner>,
        authorized: Option<Arc<crate::authz::Authorized>>,
        route: &Arc<Route>,
        target: &Target,
        client: &ClientHandshake,
        (path, replay): (&str, &HeaderMap),
    ) -> Result<Handshake, WsError> {
        let (mut guard, rx) = HoldGuard::new(edge.clone(), Transport::Ws);
        guard.authorize(authorized.clone(), &route.id);
        guard.set_gone(self.gone.map(|url| {
            crate::gone::GoneLink::new(edge.clone(), route.clone(), path, &url, replay, authorized)
        }));
        let mut session = session::Session::new(
            guard,
            rx,
            self.grip,
            Some(self.upstream),
            route,
            target,
            self.meta,
        );
        session.prepare(self.first_events).await.map_err(|e| {
            if e.invalid_channel {
                WsError::BadGateway(e.to_string())
            } else {
                WsError::Unavailable(e.to_string())
            }
        })?;
        Ok(Handshake::Accept {
            response: switching_protocols(self.response_headers, client),
            session: Box::new(session),
        })
    }
}

fn switching_protocols(mut headers: HeaderMap, client: &ClientHandshake) -> Response<Body> {
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert("sec-websocket-accept", client.accept.clone());
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}

/// A non-success origin answer, relayed to the client as the handshake's answer.
async fn reject_with(parts: http::response::Parts, body: Body) -> Response<Body> {
    let bytes = crate::origin::collect_limited(body, MAX_REJECT_BODY)
        .await
        .unwrap_or_default();
    let mut headers = headers::to_client(&parts.headers, true);
    headers.remove(header::CONTENT_LENGTH);
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = headers;
    resp
}

enum PassthroughReply {
    Rejected(Response<Body>),
    Accepted { headers: HeaderMap, ws: Box<Ws> },
}

#[derive(Debug, thiserror::Error)]
enum PassthroughError {
    #[error(transparent)]
    Origin(#[from] crate::origin::OriginError),
    #[error("origin upgrade failed: {0}")]
    Upgrade(hyper::Error),
    #[error("cannot build the origin request: {0}")]
    Build(#[from] http::Error),
}

impl PassthroughError {
    fn is_connect(&self) -> bool {
        matches!(self, PassthroughError::Origin(e) if e.is_connect())
    }
}

/// Opens a WebSocket to a plain target, offering the `grip` extension.
async fn passthrough(
    edge: Arc<EdgeInner>,
    req: &Request<Incoming>,
    route: &Route,
    target: &Target,
    path: &str,
    replay: &HeaderMap,
) -> Result<PassthroughReply, PassthroughError> {
    let sender: OriginSender = crate::origin::connect(&edge.origin, target).await?;
    let mut h = crate::origin::headers(&edge, replay, route, target);
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
    for name in [
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
    ] {
        if let Some(v) = req.headers().get(name) {
            h.insert(name, v.clone());
        }
    }
    let mut builder = Request::builder().method(http::Method::GET).uri(path);
    if let Some(hm) = builder.headers_mut() {
        *hm = h;
    }
    let origin_req = builder.body(full(""))?;
    let resp = edge.origin.send(sender, origin_req).await?;
    crate::metrics::EdgeMetrics::origin_request(Some(resp.status().as_u16()));
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        let body = crate::origin::boxed(body);
        return Ok(PassthroughReply::Rejected(reject_with(parts, body).await));
    }
    let headers = resp.headers().clone();
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(PassthroughError::Upgrade)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(edge.config.max_ws_message_size))
        .max_frame_size(Some(edge.config.max_ws_message_size));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config)).await;
    Ok(PassthroughReply::Accepted {
        headers,
        ws: Box::new(ws),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grip_extension_and_prefix() {
        let mut h = HeaderMap::new();
        assert!(grip_mode(&h).is_none());
        h.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
        assert_eq!(
            grip_mode(&h).map(|g| g.prefix),
            Some(Bytes::from_static(b"m:"))
        );
        h.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate, grip; message-prefix=\"\""),
        );
        assert_eq!(grip_mode(&h).map(|g| g.prefix), Some(Bytes::new()));
    }

    #[test]
    fn replayed_headers_drop_meta_and_transport_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("sec-websocket-key", "abc"),
            ("user-agent", "ua"),
            ("meta-user", "evil"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-extensions", "permessage-deflate"),
            ("grip-sig", "forged"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = replay_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["sec-websocket-key", "user-agent"]);
        // Owned copies: a kept value must not pin the buffer the request was parsed from.
        let shared = Bytes::from_static(b"ua-from-a-big-read-buffer");
        h.insert(
            "user-agent",
            HeaderValue::from_maybe_shared(shared.clone()).expect("valid"),
        );
        let out = replay_headers(&h);
        let kept = out.get("user-agent").expect("kept");
        assert_eq!(kept.as_bytes(), shared.as_ref());
        assert_ne!(kept.as_bytes().as_ptr(), shared.as_ptr());
    }
}
