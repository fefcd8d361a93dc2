//! A plain WebSocket origin ([`WsOrigin`]) for GRIP WebSocket passthrough, accepting with or
//! without the `grip` extension, or refusing the handshake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::Response as WsResponse;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};

use super::conn::{WsConn, client_config};

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
    let _ = accepted.send(WsConn::origin_end(ws, handshake.headers, handshake.uri));
}
