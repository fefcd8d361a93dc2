//! A plain WebSocket to the origin (a target without `over_http`): the edge opens it with
//! the client's handshake headers, offering the `grip` extension, and relays frames both ways.

use super::{Ws, reject_with};
use crate::EdgeInner;
use crate::origin::HttpSender;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use routes::{Route, Target};
use runtime::server::{Body, full};
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The origin's answer to the passthrough handshake.
pub(super) enum PassthroughReply {
    /// Not upgraded: the client's handshake gets this response.
    Rejected(Response<Body>),
    /// Upgraded: the origin's `101` headers and the WebSocket.
    Accepted { headers: HeaderMap, ws: Box<Ws> },
}

/// A failed passthrough handshake.
#[derive(Debug, thiserror::Error)]
pub(super) enum PassthroughError {
    #[error(transparent)]
    Origin(#[from] crate::origin::RequestError),
    #[error("origin upgrade failed: {0}")]
    Upgrade(hyper::Error),
    #[error("cannot build the origin request: {0}")]
    Build(#[from] http::Error),
}

impl PassthroughError {
    /// True when nothing was sent (another target may be tried).
    pub(super) fn is_connect(&self) -> bool {
        matches!(self, PassthroughError::Origin(e) if e.is_connect())
    }
}

/// Opens a WebSocket to a plain target, offering the `grip` extension.
pub(super) async fn open(
    edge: Arc<EdgeInner>,
    req: &Request<Incoming>,
    route: &Route,
    target: &Target,
    path: &str,
    replay: &HeaderMap,
) -> Result<PassthroughReply, PassthroughError> {
    let sender: HttpSender = crate::origin::connect(&edge.origin, target).await?;
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
