//! The client's upgrade: checks the client's handshake, asks the route's targets in turn
//! (WebSocket-over-HTTP `OPEN`, or a passthrough WebSocket), and turns the origin's acceptance
//! into the `101` and a prepared session.
//!
//! Subscriptions requested in the origin's first answer are live before the client receives
//! its `101`, so no publish is lost between the origin's answer and the subscription.

use super::over_http::{self, OverHttp};
use super::passthrough::{self, PassthroughReply};
use super::session::Session;
use super::{GripMode, Upstream, grip_mode};
use crate::EdgeInner;
use crate::conn::Transport;
use crate::error::WsError;
use crate::headers;
use crate::hold::HoldGuard;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use routes::{Route, Target, TargetAddr};
use runtime::server::{Body, full};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the handshake produced: the answer for the client, and (on success) the session.
pub(crate) enum Handshake {
    /// Answer the client with this and do not upgrade.
    Reject(Response<Body>),
    /// Upgrade, then run the session.
    Accept {
        response: Response<Body>,
        session: Box<Session>,
    },
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

/// One connection's handshake, everything the targets share.
struct Attempt<'a> {
    edge: Arc<EdgeInner>,
    route: Arc<Route>,
    authorized: Option<Arc<crate::authz::Authorized>>,
    client: ClientHandshake,
    /// The path as rewritten for the origin.
    path: String,
    /// The client's headers replayed to the origin.
    replay: HeaderMap,
    req: &'a Request<Incoming>,
}

/// How asking one target went.
enum Tried {
    /// The origin answered: done, whichever way.
    Done(Handshake),
    /// The target could not be reached: try the next one.
    Unreachable(String),
}

/// Checks the client's handshake and authorization, then asks the route's targets in turn
/// until one answers.
pub(super) async fn handshake(
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
    let attempt = Attempt {
        edge,
        route: Arc::new(route),
        authorized,
        client,
        path,
        replay,
        req,
    };
    let mut last_err = String::from("route has no usable target");
    for (index, target) in attempt.route.targets.iter().enumerate() {
        let tried = if target.addr == TargetAddr::Test || target.over_http {
            attempt.over_http(index, target).await?
        } else {
            attempt.passthrough(target).await?
        };
        match tried {
            Tried::Done(handshake) => return Ok(handshake),
            Tried::Unreachable(err) => last_err = err,
        }
    }
    Err(WsError::BadGateway(last_err))
}

impl Attempt<'_> {
    /// Sends `OPEN` to a WebSocket-over-HTTP target (or the built-in test origin).
    async fn over_http(&self, index: usize, target: &Target) -> Result<Tried, WsError> {
        let mut upstream = OverHttp::new(
            self.edge.clone(),
            self.route.clone(),
            index,
            self.path.clone(),
            self.replay.clone(),
        );
        let reply = match upstream.open().await {
            Ok(reply) => reply,
            Err(err) if err.is_connect() => return Ok(Tried::Unreachable(err.to_string())),
            Err(err) => return Err(WsError::BadGateway(err.to_string())),
        };
        let reply = match reply {
            over_http::OpenReply::Rejected(resp) => {
                return Ok(Tried::Done(Handshake::Reject(resp)));
            }
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
        let mut meta = BTreeMap::new();
        over_http::apply_set_meta(&reply.headers, &mut meta);
        let accepted = Accepted {
            grip: grip_mode(&reply.headers),
            upstream: Upstream::OverHttp(upstream),
            gone: gone_url(&reply.headers),
            response_headers,
            first_events: reply.events,
            meta,
        };
        Ok(Tried::Done(accepted.into_handshake(self, target).await?))
    }

    /// Opens a passthrough WebSocket to a plain target.
    async fn passthrough(&self, target: &Target) -> Result<Tried, WsError> {
        let reply = passthrough::open(
            self.edge.clone(),
            self.req,
            &self.route,
            target,
            &self.path,
            &self.replay,
        )
        .await;
        let (h, ws) = match reply {
            Ok(PassthroughReply::Rejected(resp)) => {
                return Ok(Tried::Done(Handshake::Reject(resp)));
            }
            Ok(PassthroughReply::Accepted { headers, ws }) => (headers, ws),
            Err(err) if err.is_connect() => return Ok(Tried::Unreachable(err.to_string())),
            Err(err) => return Err(WsError::BadGateway(err.to_string())),
        };
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
            meta: BTreeMap::new(),
        };
        Ok(Tried::Done(accepted.into_handshake(self, target).await?))
    }
}

/// An origin that accepted the connection, whichever way it is reached.
struct Accepted {
    grip: Option<GripMode>,
    upstream: Upstream,
    response_headers: HeaderMap,
    /// Events that came with the origin's acceptance (the rest of the OPEN answer).
    first_events: Vec<grip::wsevents::WsEvent>,
    /// `Set-Meta-*` of the acceptance.
    meta: BTreeMap<String, String>,
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
        attempt: &Attempt<'_>,
        target: &Target,
    ) -> Result<Handshake, WsError> {
        let edge = &attempt.edge;
        let route = &attempt.route;
        let authorized = attempt.authorized.clone();
        let (mut guard, rx) = HoldGuard::new(edge.clone(), Transport::Ws);
        guard.authorize(authorized.clone(), &route.id);
        guard.set_gone(self.gone.map(|url| {
            crate::gone::GoneLink::new(
                edge.clone(),
                route.clone(),
                &attempt.path,
                &url,
                &attempt.replay,
                authorized,
            )
        }));
        let mut session = Session::new(
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
            response: switching_protocols(self.response_headers, &attempt.client),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
