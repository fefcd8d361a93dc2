//! WebSocket clients: the handshake toward the origin (WebSocket-over-HTTP, passthrough to a
//! WebSocket origin, or the built-in test origin), then one session task per connection.
//!
//! - [`handshake`]: the client's upgrade, target by target, up to the `101`;
//! - [`over_http`]: WebSocket-over-HTTP requests to the origin;
//! - [`passthrough`]: a plain WebSocket to the origin;
//! - [`session`]: the connection after the upgrade (a state machine and the task driving it);
//! - [`error`]: the handshake's failures and their plain error responses.

mod handshake;
mod over_http;
mod passthrough;
mod session;

use crate::EdgeInner;
use crate::headers;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use routes::Route;
use runtime::server::{Body, full};
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::WsError;
use handshake::Handshake;
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

/// Handles a WebSocket upgrade request routed to `route`.
pub(crate) async fn handle(
    edge: Arc<EdgeInner>,
    mut req: Request<Incoming>,
    route: Route,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match handshake::handshake(edge, &mut req, route, peer).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
