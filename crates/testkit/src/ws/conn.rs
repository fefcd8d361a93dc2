//! One end of a WebSocket connection ([`WsConn`], tokio-tungstenite): the client handshake
//! with custom headers (or its refusal), sending, and receiving with timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{CLIENT_MAX_MESSAGE, HANDSHAKE_TIMEOUT, lossy};
use crate::body::KitBody;

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
/// end from [`WsOrigin::accept`](super::WsOrigin::accept). Dropping it closes the TCP
/// connection without a close frame.
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

/// The tungstenite configuration of every test connection (large message limits).
pub(super) fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MAX_MESSAGE))
        .max_frame_size(Some(CLIENT_MAX_MESSAGE))
}

/// The handshake headers a client sends by default; `extra` replaces a default with the same
/// name and is appended otherwise.
pub(super) fn handshake_headers(addr: SocketAddr, extra: &[(&str, &str)]) -> Vec<(String, String)> {
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

    /// The origin's end of a connection [`super::WsOrigin`] accepted.
    pub(super) fn origin_end(
        ws: WebSocketStream<TcpStream>,
        headers: HeaderMap,
        uri: String,
    ) -> WsConn {
        WsConn {
            ws,
            headers,
            uri,
            key: String::new(),
        }
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
