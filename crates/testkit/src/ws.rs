//! WebSocket test helpers.
//!
//! - [`WsConn`]: one end of a WebSocket connection (tokio-tungstenite). [`WsConn::connect`]
//!   opens a client connection with custom handshake headers; [`WsConn::try_connect`] returns
//!   the HTTP status, headers and complete body when the handshake is refused.
//!   [`WsOrigin::accept`] hands out the origin's end of proxied connections.
//! - [`RawWs`]: a client on raw TCP that completes the handshake and then writes hand-crafted
//!   (possibly invalid) frames, for bad-input tests.
//! - [`WsEvent`], [`encode_events`], [`decode_events`]: the `application/websocket-events`
//!   encoding of WebSocket-over-HTTP, written independently of the code under test.
//! - [`WohOrigin`]: a WebSocket-over-HTTP origin (on top of [`Origin`]) whose handler sees the
//!   decoded events of each request; [`echo_reply`] is the standard GRIP echo behaviour.
//! - [`WsOrigin`]: a plain WebSocket origin for GRIP WebSocket passthrough, accepting with or
//!   without the `grip` extension, or refusing the handshake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::server::Response as WsResponse;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::body::KitBody;
use crate::origin::{Origin, OriginResponse, RecordedRequest};
use crate::wait::wait_until;

/// Content-Type (and Accept) of WebSocket-over-HTTP requests and responses.
pub const EVENTS_CONTENT_TYPE: &str = "application/websocket-events";

/// Limit for a whole client handshake (long enough for an edge to time out a hanging origin).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest message the test clients accept (well above any edge limit under test).
const CLIENT_MAX_MESSAGE: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------
// The application/websocket-events encoding
// ---------------------------------------------------------------------------------------------

/// One WebSocket-over-HTTP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// `OPEN`.
    Open,
    /// `TEXT` with its bytes.
    Text(Bytes),
    /// `BINARY` with its bytes.
    Binary(Bytes),
    /// `PING` (payload possibly empty).
    Ping(Bytes),
    /// `PONG` (payload possibly empty).
    Pong(Bytes),
    /// `CLOSE`: raw payload (2-byte big-endian code + UTF-8 reason, or empty).
    Close(Bytes),
    /// `DISCONNECT`.
    Disconnect,
}

impl WsEvent {
    /// A `TEXT` event.
    pub fn text(text: impl AsRef<str>) -> WsEvent {
        WsEvent::Text(Bytes::copy_from_slice(text.as_ref().as_bytes()))
    }

    /// A `BINARY` event.
    pub fn binary(data: impl AsRef<[u8]>) -> WsEvent {
        WsEvent::Binary(Bytes::copy_from_slice(data.as_ref()))
    }

    /// A GRIP data message: `TEXT` with the default `m:` prefix.
    pub fn message(text: impl AsRef<str>) -> WsEvent {
        WsEvent::text(format!("m:{}", text.as_ref()))
    }

    /// A GRIP control message: `TEXT` `c:` + the JSON.
    pub fn control(json: &serde_json::Value) -> WsEvent {
        WsEvent::text(format!("c:{json}"))
    }

    /// The GRIP control message subscribing the connection to `channel`.
    pub fn subscribe(channel: &str) -> WsEvent {
        WsEvent::control(&serde_json::json!({"type": "subscribe", "channel": channel}))
    }

    /// A `CLOSE` event with `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> WsEvent {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        WsEvent::Close(Bytes::from(payload))
    }

    /// The code and reason of a `CLOSE` event with a code.
    pub fn close_code_reason(&self) -> Option<(u16, String)> {
        match self {
            WsEvent::Close(p) if p.len() >= 2 => Some((
                u16::from_be_bytes([p[0], p[1]]),
                String::from_utf8_lossy(&p[2..]).into_owned(),
            )),
            _ => None,
        }
    }

    /// The text of a `TEXT` event (lossy UTF-8).
    pub fn as_text(&self) -> Option<String> {
        match self {
            WsEvent::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        }
    }

    /// The wire name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            WsEvent::Open => "OPEN",
            WsEvent::Text(_) => "TEXT",
            WsEvent::Binary(_) => "BINARY",
            WsEvent::Ping(_) => "PING",
            WsEvent::Pong(_) => "PONG",
            WsEvent::Close(_) => "CLOSE",
            WsEvent::Disconnect => "DISCONNECT",
        }
    }

    fn content(&self) -> Option<&Bytes> {
        match self {
            WsEvent::Open | WsEvent::Disconnect => None,
            WsEvent::Text(b) | WsEvent::Binary(b) => Some(b),
            // Pushpin writes these without content when the payload is empty.
            WsEvent::Ping(b) | WsEvent::Pong(b) | WsEvent::Close(b) => (!b.is_empty()).then_some(b),
        }
    }
}

/// Encodes events: `TYPE SP hex(len) CRLF content CRLF`, or `TYPE CRLF` without content.
pub fn encode_events(events: &[WsEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.extend_from_slice(event.type_name().as_bytes());
        match event.content() {
            Some(content) => {
                out.extend_from_slice(format!(" {:x}\r\n", content.len()).as_bytes());
                out.extend_from_slice(content);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"\r\n"),
        }
    }
    out
}

/// Decodes a websocket-events body; hex lengths in either case; content on `OPEN` and
/// `DISCONNECT` is tolerated and ignored.
pub fn decode_events(body: &[u8]) -> Result<Vec<WsEvent>, String> {
    let mut events = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| format!("event line without CRLF: {:?}", lossy(rest)))?;
        let line = std::str::from_utf8(&rest[..eol])
            .map_err(|_| format!("event line is not UTF-8: {:?}", lossy(&rest[..eol])))?;
        rest = &rest[eol + 2..];
        let (name, content) = match line.split_once(' ') {
            Some((name, hex)) => {
                let len = usize::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad hex length in {line:?}"))?;
                if rest.len() < len + 2 || &rest[len..len + 2] != b"\r\n" {
                    return Err(format!("content of {line:?} is truncated or lacks CRLF"));
                }
                let content = Bytes::copy_from_slice(&rest[..len]);
                rest = &rest[len + 2..];
                (name, content)
            }
            None => (line, Bytes::new()),
        };
        events.push(match name {
            "OPEN" => WsEvent::Open,
            "TEXT" => WsEvent::Text(content),
            "BINARY" => WsEvent::Binary(content),
            "PING" => WsEvent::Ping(content),
            "PONG" => WsEvent::Pong(content),
            "CLOSE" => WsEvent::Close(content),
            "DISCONNECT" => WsEvent::Disconnect,
            other => return Err(format!("unknown event type {other:?}")),
        });
    }
    Ok(events)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `200` websocket-events response carrying `events` (no `grip` extension: plain relay).
pub fn events_response(events: &[WsEvent]) -> OriginResponse {
    OriginResponse::new(200)
        .header("Content-Type", EVENTS_CONTENT_TYPE)
        .body(encode_events(events))
}

/// Like [`events_response`], with `Sec-WebSocket-Extensions: grip` (GRIP mode).
pub fn grip_events_response(events: &[WsEvent]) -> OriginResponse {
    events_response(events).header("Sec-WebSocket-Extensions", "grip")
}

// ---------------------------------------------------------------------------------------------
// WebSocket-over-HTTP origin
// ---------------------------------------------------------------------------------------------

/// A WebSocket-over-HTTP request as the origin received it, with its decoded events.
#[derive(Debug, Clone)]
pub struct WohRequest {
    /// The raw request.
    pub request: RecordedRequest,
    /// The decoded events (empty when the body is empty or could not be decoded).
    pub events: Vec<WsEvent>,
    /// Why the body could not be decoded, if it could not.
    pub decode_error: Option<String>,
}

impl WohRequest {
    /// Decodes `request`'s body.
    pub fn new(request: RecordedRequest) -> WohRequest {
        let (events, decode_error) = match decode_events(&request.body) {
            Ok(events) => (events, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        WohRequest {
            request,
            events,
            decode_error,
        }
    }

    /// The `Connection-Id` header.
    pub fn connection_id(&self) -> Option<String> {
        self.request.header("connection-id")
    }

    /// Whether this is the OPEN request of a connection.
    pub fn is_open(&self) -> bool {
        self.events.first() == Some(&WsEvent::Open)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.request.header(name)
    }

    /// A query parameter of the request target (not percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        self.request.query(name)
    }
}

/// The standard GRIP echo origin's answer to one request (a building block for custom
/// handlers):
/// - `OPEN` ⇒ `OPEN`, then a `subscribe` control message for each comma-separated channel in
///   the `channel` query parameter;
/// - `TEXT t` ⇒ `TEXT m:t`; `BINARY b` ⇒ `BINARY m:b` (the GRIP prefix applies to both);
/// - `CLOSE` ⇒ the same `CLOSE` back;
/// - anything else (and an empty keep-alive body) ⇒ nothing.
///
/// Always answered with `Sec-WebSocket-Extensions: grip`.
pub fn echo_reply(req: &WohRequest) -> OriginResponse {
    grip_events_response(&echo_events(req))
}

/// The events of [`echo_reply`].
pub fn echo_events(req: &WohRequest) -> Vec<WsEvent> {
    let mut out = Vec::new();
    for event in &req.events {
        match event {
            WsEvent::Open => {
                out.push(WsEvent::Open);
                if let Some(channels) = req.query("channel") {
                    for channel in channels.split(',').filter(|c| !c.is_empty()) {
                        out.push(WsEvent::subscribe(channel));
                    }
                }
            }
            WsEvent::Text(t) => {
                let mut m = b"m:".to_vec();
                m.extend_from_slice(t);
                out.push(WsEvent::Text(Bytes::from(m)));
            }
            WsEvent::Binary(b) => {
                let mut m = b"m:".to_vec();
                m.extend_from_slice(b);
                out.push(WsEvent::Binary(Bytes::from(m)));
            }
            WsEvent::Close(p) => out.push(WsEvent::Close(p.clone())),
            WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Disconnect => {}
        }
    }
    out
}

/// A fake WebSocket-over-HTTP origin: an [`Origin`] whose handler gets each request with its
/// decoded events. Every request is recorded; requests are grouped by `Connection-Id`.
#[derive(Debug)]
pub struct WohOrigin {
    origin: Origin,
}

impl WohOrigin {
    /// Starts an origin answering every request with `handler(request)`.
    pub async fn start<F>(handler: F) -> WohOrigin
    where
        F: Fn(&WohRequest) -> OriginResponse + Send + Sync + 'static,
    {
        let origin = Origin::start(move |req| handler(&WohRequest::new(req))).await;
        WohOrigin { origin }
    }

    /// Starts the standard GRIP echo origin ([`echo_reply`]).
    pub async fn echo() -> WohOrigin {
        WohOrigin::start(echo_reply).await
    }

    /// The underlying HTTP origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// `127.0.0.1:PORT` as used in a routes file target (add `,over_http`).
    pub fn target(&self) -> String {
        self.origin.target()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<WohRequest> {
        self.origin
            .requests()
            .into_iter()
            .map(WohRequest::new)
            .collect()
    }

    /// The requests of one connection, in arrival order.
    pub fn requests_of(&self, connection_id: &str) -> Vec<WohRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.connection_id().as_deref() == Some(connection_id))
            .collect()
    }

    /// Every event the origin received from one connection, in order, over all its requests.
    pub fn events_of(&self, connection_id: &str) -> Vec<WsEvent> {
        self.requests_of(connection_id)
            .into_iter()
            .flat_map(|r| r.events)
            .collect()
    }

    /// Waits for a request matching `pred`; returns the first such request.
    pub async fn wait_request(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&WohRequest) -> bool,
    ) -> WohRequest {
        let found = Mutex::new(None);
        wait_until(timeout, what, || {
            let hit = self.requests().into_iter().find(|r| pred(r));
            let done = hit.is_some();
            if done {
                *found.lock().unwrap_or_else(|p| p.into_inner()) = hit;
            }
            async move { done }
        })
        .await;
        found
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .expect("wait_until returned, so a request matched")
    }

    /// Waits for the OPEN request whose target (path and query) is `uri`; returns it (its
    /// `Connection-Id` identifies the connection in later requests).
    pub async fn wait_open(&self, uri: &str, timeout: Duration) -> WohRequest {
        self.wait_request(timeout, &format!("OPEN request for {uri}"), |r| {
            r.is_open() && r.request.uri == uri
        })
        .await
    }

    /// The `Connection-Id` of the OPEN request for `uri` (waits for it).
    pub async fn connection_id(&self, uri: &str, timeout: Duration) -> String {
        let open = self.wait_open(uri, timeout).await;
        open.connection_id()
            .unwrap_or_else(|| panic!("OPEN request for {uri} has no Connection-Id"))
    }

    /// Waits until the events received from `connection_id` satisfy `pred`; returns them all.
    pub async fn wait_events(
        &self,
        connection_id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[WsEvent]) -> bool,
    ) -> Vec<WsEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events_of(connection_id);
            if pred(&events) {
                return events;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what} (connection {connection_id}); \
                     events so far: {events:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `connection_id` has sent `event`; returns all its events.
    pub async fn wait_event(
        &self,
        connection_id: &str,
        event: &WsEvent,
        timeout: Duration,
    ) -> Vec<WsEvent> {
        self.wait_events(connection_id, timeout, &format!("event {event:?}"), |evs| {
            evs.contains(event)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket connections
// ---------------------------------------------------------------------------------------------

/// What [`WsConn::recv`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: code and reason, `None` for a close frame without a code.
    Close(Option<(u16, String)>),
    /// The connection ended without (further) close frame: EOF, reset or protocol error.
    Ended(String),
    /// Nothing within the timeout.
    Timeout,
}

/// A refused WebSocket handshake: the complete HTTP answer.
#[derive(Debug, Clone)]
pub struct WsRejection {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
}

impl WsRejection {
    /// The body as lossy UTF-8.
    pub fn text(&self) -> String {
        lossy(&self.body)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// Why [`WsConn::try_connect`] did not produce a connection.
#[derive(Debug, Clone)]
pub enum WsConnectError {
    /// The server answered the upgrade with a non-101 HTTP response.
    Rejected(WsRejection),
    /// Anything else: connect error, broken or invalid 101, timeout.
    Failed(String),
}

/// One end of a WebSocket connection: the client end from [`WsConn::connect`], or the origin
/// end from [`WsOrigin::accept`]. Dropping it closes the TCP connection without a close frame.
#[derive(Debug)]
pub struct WsConn {
    ws: WebSocketStream<TcpStream>,
    /// Client end: the headers of the `101` response. Origin end: the handshake request's
    /// headers.
    pub headers: HeaderMap,
    /// Origin end: the request target (path and query) of the handshake. Client end: the
    /// requested path.
    pub uri: String,
    /// Client end: the `Sec-WebSocket-Key` that was sent.
    pub key: String,
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MAX_MESSAGE))
        .max_frame_size(Some(CLIENT_MAX_MESSAGE))
}

/// The handshake headers a client sends by default; `extra` replaces a default with the same
/// name and is appended otherwise.
fn handshake_headers(addr: SocketAddr, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), addr.to_string()),
        ("Connection".into(), "Upgrade".into()),
        ("Upgrade".into(), "websocket".into()),
        ("Sec-WebSocket-Version".into(), "13".into()),
        ("Sec-WebSocket-Key".into(), generate_key()),
    ];
    for (name, value) in extra {
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = (*value).to_string(),
            None => headers.push(((*name).to_string(), (*value).to_string())),
        }
    }
    headers
}

impl WsConn {
    /// Opens a client connection to `ws://addr{path}` with extra handshake headers (a header
    /// named like a default one — `Host`, `Sec-WebSocket-Key`, ... — replaces it). Panics
    /// unless the handshake succeeds.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> WsConn {
        match WsConn::try_connect(addr, path, headers).await {
            Ok(conn) => conn,
            Err(WsConnectError::Rejected(r)) => panic!(
                "WebSocket handshake to {addr}{path} refused: {} {:?} body {:?}",
                r.status,
                r.headers,
                r.text()
            ),
            Err(WsConnectError::Failed(e)) => {
                panic!("WebSocket handshake to {addr}{path} failed: {e}")
            }
        }
    }

    /// Like [`WsConn::connect`], but expects the handshake to be refused with an HTTP answer;
    /// returns it. Panics if the connection opens or fails otherwise.
    pub async fn connect_rejected(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> WsRejection {
        match WsConn::try_connect(addr, path, headers).await {
            Ok(conn) => panic!(
                "WebSocket handshake to {addr}{path} succeeded (101 headers {:?}); expected a refusal",
                conn.headers
            ),
            Err(WsConnectError::Rejected(r)) => r,
            Err(WsConnectError::Failed(e)) => {
                panic!("WebSocket handshake to {addr}{path} failed without an HTTP answer: {e}")
            }
        }
    }

    /// Opens a client connection; on a non-101 answer returns its status, headers and complete
    /// body. The `101` is checked (`Upgrade`, `Sec-WebSocket-Accept`). 30 s limit.
    pub async fn try_connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsConn, WsConnectError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_inner(addr, path, headers)).await {
            Ok(result) => result,
            Err(_) => Err(WsConnectError::Failed(format!(
                "no handshake answer within {HANDSHAKE_TIMEOUT:?}"
            ))),
        }
    }

    /// A header of [`WsConn::headers`], lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Every value of a header of [`WsConn::headers`].
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// Sends a message; panics on error.
    pub async fn send(&mut self, message: Message) {
        let what = format!("{message:?}");
        if let Err(e) = self.ws.send(message).await {
            panic!("sending WebSocket message {what:.200}: {e}");
        }
    }

    /// Sends a message; returns the error instead of panicking.
    pub async fn try_send(&mut self, message: Message) -> Result<(), String> {
        self.ws.send(message).await.map_err(|e| e.to_string())
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(Message::text(text.into())).await;
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, data: impl Into<Vec<u8>>) {
        self.send(Message::binary(data.into())).await;
    }

    /// Sends a close frame with `code` and `reason` (the connection stays readable until the
    /// peer's close frame arrives).
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if let Err(e) = self.ws.close(Some(frame)).await {
            panic!("sending close frame {code} {reason:?}: {e}");
        }
    }

    /// Receives the next message, close or end within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Recv {
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => Recv::Timeout,
            Ok(None) => Recv::Ended("stream ended".into()),
            Ok(Some(Err(e))) => Recv::Ended(e.to_string()),
            Ok(Some(Ok(message))) => match message {
                Message::Text(t) => Recv::Text(t.as_str().to_owned()),
                Message::Binary(b) => Recv::Binary(b.to_vec()),
                Message::Ping(p) => Recv::Ping(p.to_vec()),
                Message::Pong(p) => Recv::Pong(p.to_vec()),
                Message::Close(frame) => {
                    // Answer the close handshake at once, as a real client does (tungstenite
                    // would otherwise only send its queued reply on the next read).
                    let _ = self.ws.flush().await;
                    Recv::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
                }
                Message::Frame(f) => Recv::Ended(format!("unexpected raw frame {f:?}")),
            },
        }
    }

    /// The next data or close event, skipping pings and pongs.
    async fn next_significant(&mut self, deadline: Instant) -> Recv {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Recv::Ping(_) | Recv::Pong(_) => continue,
                other => return other,
            }
        }
    }

    /// Expects the next message (pings/pongs skipped) to be text; returns it.
    pub async fn expect_text(&mut self, timeout: Duration) -> String {
        match self.next_significant(Instant::now() + timeout).await {
            Recv::Text(t) => t,
            other => panic!("expected a text message within {timeout:?}, got {other:?}"),
        }
    }

    /// Expects the next message (pings/pongs skipped) to be binary; returns it.
    pub async fn expect_binary(&mut self, timeout: Duration) -> Vec<u8> {
        match self.next_significant(Instant::now() + timeout).await {
            Recv::Binary(b) => b,
            other => panic!("expected a binary message within {timeout:?}, got {other:?}"),
        }
    }

    /// Expects the next `n` messages to be text; returns them.
    pub async fn expect_texts(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_significant(deadline).await {
                Recv::Text(t) => out.push(t),
                other => panic!(
                    "expected {n} text messages within {timeout:?}; after {out:?} got {other:?}"
                ),
            }
        }
        out
    }

    /// Reads until a close frame arrives (data messages before it are skipped); returns its
    /// code and reason (`1005`, "" for a close frame without a code). Panics if the connection
    /// ends without a close frame or nothing arrives within `timeout`.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_significant(deadline).await {
                Recv::Text(_) | Recv::Binary(_) => continue,
                Recv::Close(Some(cr)) => return cr,
                Recv::Close(None) => return (1005, String::new()),
                other => panic!("expected a close frame within {timeout:?}, got {other:?}"),
            }
        }
    }

    /// Reads until the connection ends, by a close frame (returns its code, `1005` without
    /// one) or by EOF/reset (returns `None`); data messages are skipped. Panics after
    /// `timeout`.
    pub async fn expect_end(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_significant(deadline).await {
                Recv::Text(_) | Recv::Binary(_) => continue,
                Recv::Close(Some((code, _))) => return Some(code),
                Recv::Close(None) => return Some(1005),
                Recv::Ended(_) => return None,
                Recv::Timeout => panic!("connection still open after {timeout:?}"),
                Recv::Ping(_) | Recv::Pong(_) => continue,
            }
        }
    }

    /// Drops the TCP connection with a reset (no close frame, no FIN).
    pub fn abort(self) {
        // A zero linger turns the close into an RST: the peer sees the connection vanish.
        let _ = self.ws.get_ref().set_zero_linger();
        drop(self);
    }

    /// Drops the TCP connection with a plain FIN, without a close frame.
    pub async fn drop_tcp(self) {
        let mut stream = self.ws.into_inner();
        let _ = stream.shutdown().await;
    }
}

async fn connect_inner(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<WsConn, WsConnectError> {
    let fail = |e: String| WsConnectError::Failed(e);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(format!("HTTP handshake with {addr}: {e}")))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let headers = handshake_headers(addr, extra);
    let key = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut req = Request::builder()
        .method("GET")
        .uri(path)
        .body(KitBody::full(Bytes::new()))
        .map_err(|e| fail(format!("building request for {path:?}: {e}")))?;
    for (name, value) in &headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| fail(format!("header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| fail(format!("header value {value:?}: {e}")))?;
        req.headers_mut().append(name, value);
    }
    let mut resp = match sender.send_request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            conn_task.abort();
            return Err(fail(format!("upgrade request to {addr}{path}: {e}")));
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(format!("reading the body of the {status} answer: {e}")))?
            .to_bytes();
        conn_task.abort();
        return Err(WsConnectError::Rejected(WsRejection {
            status,
            headers,
            body,
        }));
    }
    let headers = resp.headers().clone();
    let has_token = |name: &str, token: &str| {
        headers.get_all(name).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(fail(format!(
            "101 without Upgrade: websocket / Connection: Upgrade: {headers:?}"
        )));
    }
    let expected_accept = derive_accept_key(key.as_bytes());
    let accept = headers
        .get("sec-websocket-accept")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if accept.as_deref() != Some(expected_accept.as_str()) {
        return Err(fail(format!(
            "101 with Sec-WebSocket-Accept {accept:?}, expected {expected_accept:?}"
        )));
    }
    let upgraded = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| fail(format!("taking over the upgraded connection: {e}")))?;
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| fail("upgraded connection is not the TCP stream".into()))?;
    let ws = WebSocketStream::from_partially_read(
        parts.io.into_inner(),
        parts.read_buf.to_vec(),
        Role::Client,
        Some(client_config()),
    )
    .await;
    Ok(WsConn {
        ws,
        headers,
        uri: path.to_string(),
        key,
    })
}

// ---------------------------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------------------------

/// WebSocket opcodes for hand-crafted frames.
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// A reserved (undefined) data opcode.
    pub const RESERVED_DATA: u8 = 0x3;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// Encodes one frame. `mask` `None` writes an unmasked frame (invalid from a client).
pub fn encode_frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// What [`RawWs::read_frame`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRead {
    /// A frame from the server.
    Frame {
        /// FIN bit.
        fin: bool,
        /// Opcode.
        opcode: u8,
        /// Unmasked payload.
        payload: Vec<u8>,
    },
    /// EOF or a read error.
    Closed(String),
    /// Nothing within the timeout.
    Timeout,
}

/// A client on raw TCP: completes a WebSocket handshake, then writes whatever bytes the test
/// wants and parses the server's frames.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server's response head (status line and headers).
    pub head: String,
}

impl RawWs {
    /// Connects and sends a handshake for `path` with `headers` added; panics unless the
    /// answer is `101`.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawWs {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut request = format!("GET {path} HTTP/1.1\r\n");
        for (name, value) in handshake_headers(addr, headers) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("writing handshake to {addr}: {e}"));
        let mut buf = Vec::new();
        let read_head = async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return Ok(end + 4);
                }
                match stream.read(&mut chunk).await {
                    Ok(0) => return Err("EOF before the end of the response head".to_string()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let end = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head).await {
            Ok(Ok(end)) => end,
            Ok(Err(e)) => panic!("raw handshake to {addr}{path}: {e}; got {:?}", lossy(&buf)),
            Err(_) => panic!("raw handshake to {addr}{path}: no answer"),
        };
        let head = lossy(&buf[..end]);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "raw handshake to {addr}{path} not accepted: {head:?}"
        );
        buf.drain(..end);
        RawWs { stream, buf, head }
    }

    /// Writes raw bytes; returns the error (the server may already have closed).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes one frame ([`encode_frame`]), masked with a fixed key when `masked`.
    pub async fn send_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        masked: bool,
        payload: &[u8],
    ) -> Result<(), String> {
        let mask = masked.then_some([0x12, 0x34, 0x56, 0x78]);
        self.send_raw(&encode_frame(fin, opcode, mask, payload))
            .await
    }

    /// Reads one frame from the server.
    pub async fn read_frame(&mut self, timeout: Duration) -> RawRead {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return RawRead::Timeout,
                Ok(Ok(0)) => return RawRead::Closed("EOF".into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return RawRead::Closed(e.to_string()),
            }
        }
    }

    /// Reads until the server ends the connection: returns the close frame's code (`1005`
    /// without a code) or `None` on EOF/reset without a close frame. Data frames are skipped.
    /// Panics if the connection is still open after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                RawRead::Frame {
                    opcode: opcode::CLOSE,
                    payload,
                    ..
                } => {
                    return Some(if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    });
                }
                RawRead::Frame { .. } => continue,
                RawRead::Closed(_) => return None,
                RawRead::Timeout => panic!("raw connection still open after {timeout:?}"),
            }
        }
    }
}

/// Parses one unmasked or masked frame at the start of `buf`; `None` if incomplete.
fn parse_frame(buf: &[u8]) -> Option<(RawRead, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let key = if masked {
        if buf.len() < at + 4 {
            return None;
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < at + len {
        return None;
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((
        RawRead::Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    ))
}

// ---------------------------------------------------------------------------------------------
// Plain WebSocket origin (GRIP WebSocket passthrough)
// ---------------------------------------------------------------------------------------------

/// How a [`WsOrigin`] answers handshakes.
#[derive(Debug, Clone)]
pub enum WsOriginMode {
    /// Accept with `Sec-WebSocket-Extensions: grip` (GRIP mode).
    Grip,
    /// Accept without extensions (plain relay).
    Plain,
    /// Refuse with this status and body.
    Reject {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
}

/// A handshake request as the [`WsOrigin`] received it.
#[derive(Debug, Clone)]
pub struct WsHandshake {
    /// Request target (path and query).
    pub uri: String,
    /// Request headers.
    pub headers: HeaderMap,
}

impl WsHandshake {
    /// The first value of a header, lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// A fake WebSocket origin on `127.0.0.1:0`. Accepted connections are queued for the test
/// ([`WsOrigin::accept`]); every handshake is recorded. Stops when dropped.
pub struct WsOrigin {
    addr: SocketAddr,
    accepted: tokio::sync::Mutex<mpsc::UnboundedReceiver<WsConn>>,
    handshakes: Arc<Mutex<Vec<WsHandshake>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsOrigin")
            .field("addr", &self.addr)
            .finish()
    }
}

impl WsOrigin {
    /// Starts the origin.
    pub async fn start(mode: WsOriginMode) -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding WebSocket origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("WebSocket origin local addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let recorded = handshakes.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(accept_one(stream, mode.clone(), recorded.clone(), tx.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        WsOrigin {
            addr,
            accepted: tokio::sync::Mutex::new(rx),
            handshakes,
            task,
        }
    }

    /// The origin's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` as used in a routes file target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Every handshake request received so far.
    pub fn handshakes(&self) -> Vec<WsHandshake> {
        self.handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next accepted connection (the origin's end); panics after `timeout`.
    pub async fn accept(&self, timeout: Duration) -> WsConn {
        let mut rx = self.accepted.lock().await;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(conn)) => conn,
            Ok(None) => panic!("WebSocket origin stopped"),
            Err(_) => panic!("WebSocket origin: no connection accepted within {timeout:?}"),
        }
    }
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// The callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn accept_one(
    stream: TcpStream,
    mode: WsOriginMode,
    recorded: Arc<Mutex<Vec<WsHandshake>>>,
    accepted: mpsc::UnboundedSender<WsConn>,
) {
    let seen = Arc::new(Mutex::new(None));
    let seen_in_callback = seen.clone();
    let callback = move |req: &WsRequest, mut resp: WsResponse| {
        let handshake = WsHandshake {
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| req.uri().to_string()),
            headers: req.headers().clone(),
        };
        recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handshake.clone());
        *seen_in_callback.lock().unwrap_or_else(|p| p.into_inner()) = Some(handshake);
        match mode {
            WsOriginMode::Grip => {
                resp.headers_mut()
                    .insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
                Ok(resp)
            }
            WsOriginMode::Plain => Ok(resp),
            WsOriginMode::Reject { status, body } => {
                let mut err = ErrorResponse::new(Some(body));
                *err.status_mut() =
                    StatusCode::from_u16(status).expect("test origin status must be valid");
                err.headers_mut()
                    .insert("content-type", HeaderValue::from_static("text/plain"));
                Err(err)
            }
        }
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(client_config()))
            .await
    else {
        return;
    };
    let handshake = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| WsHandshake {
            uri: String::new(),
            headers: HeaderMap::new(),
        });
    let _ = accepted.send(WsConn {
        ws,
        headers: handshake.headers,
        uri: handshake.uri,
        key: String::new(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_match_pushpin_bytes() {
        let events = vec![
            WsEvent::Open,
            WsEvent::text("hi"),
            WsEvent::binary([0u8, 13, 10, 255]),
            WsEvent::close(4000, "client-bye"),
            WsEvent::Ping(Bytes::new()),
            WsEvent::Disconnect,
        ];
        let body = encode_events(&events);
        assert_eq!(
            body,
            b"OPEN\r\nTEXT 2\r\nhi\r\nBINARY 4\r\n\x00\r\n\xff\r\nCLOSE c\r\n\x0f\xa0client-bye\r\nPING\r\nDISCONNECT\r\n"
                .to_vec()
        );
        assert_eq!(decode_events(&body), Ok(events));
        assert_eq!(
            decode_events(b"TEXT A\r\n0123456789\r\n"),
            Ok(vec![WsEvent::text("0123456789")])
        );
        assert!(decode_events(b"TEXT zz\r\n").is_err());
        assert!(decode_events(b"TEXT 5\r\nab\r\n").is_err());
        assert_eq!(
            WsEvent::close(4000, "client-bye").close_code_reason(),
            Some((4000, "client-bye".to_string()))
        );
    }

    #[test]
    fn subscribe_event_is_the_case_33_bytes() {
        // 0x29 = 41 bytes, whatever the key order of the JSON object.
        let body = encode_events(&[WsEvent::subscribe("wstest")]);
        assert!(body.starts_with(b"TEXT 29\r\nc:{"), "{:?}", lossy(&body));
        let decoded = decode_events(&body).expect("own encoding decodes");
        let text = decoded[0].as_text().expect("a TEXT event");
        let json: serde_json::Value =
            serde_json::from_str(&text["c:".len()..]).expect("control JSON");
        assert_eq!(
            json,
            serde_json::json!({"type": "subscribe", "channel": "wstest"})
        );
    }

    #[test]
    fn frames_encode_and_parse() {
        let frame = encode_frame(true, opcode::TEXT, Some([1, 2, 3, 4]), b"hello");
        assert_eq!(
            parse_frame(&frame),
            Some((
                RawRead::Frame {
                    fin: true,
                    opcode: opcode::TEXT,
                    payload: b"hello".to_vec()
                },
                frame.len()
            ))
        );
        let long = vec![7u8; 70_000];
        let frame = encode_frame(false, opcode::BINARY, None, &long);
        assert_eq!(frame[1], 127);
        assert_eq!(parse_frame(&frame[..100]), None);
        let Some((RawRead::Frame { payload, fin, .. }, used)) = parse_frame(&frame) else {
            panic!("long frame did not parse");
        };
        assert_eq!((payload.len(), fin, used), (70_000, false, frame.len()));
    }
}
