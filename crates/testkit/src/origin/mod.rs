//! Scriptable fake origins.
//!
//! [`Origin`] is an HTTP/1.1 server (hyper) whose answers come from a test-supplied handler and
//! which records every request. [`RawOrigin`] writes canned bytes on a raw TCP socket, for
//! broken origins (garbage, early close), and [`ScriptedOrigin`] scripts connection handling per
//! request (both in `raw`).

mod raw;

pub use raw::{RawOrigin, ScriptedOrigin, ScriptedRequest, Step};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::body::{BodyChunk, KitBody};
use crate::wait::wait_until;

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target as sent (path and query).
    pub uri: String,
    /// All headers (names are case-insensitive).
    pub headers: HeaderMap,
    /// The complete request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// A query parameter's value (not percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        query_param(&self.uri, name)
    }

    /// The first value of a header, lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Every value of a header, lossy UTF-8.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// Header names that start with `prefix` (case-insensitive), lower-case.
    pub fn header_names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_ascii_lowercase();
        self.headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| k.starts_with(&prefix))
            .collect()
    }
}

/// Extracts a query parameter from a request target (`/p?a=1&b=2`); not percent-decoded.
pub fn query_param(uri: &str, name: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

/// What the origin answers.
#[derive(Debug)]
pub struct OriginResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order (repeats allowed).
    pub headers: Vec<(String, String)>,
    /// The body: complete, or streamed from a channel the test feeds.
    pub body: KitBody,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl OriginResponse {
    /// An empty response with `status`.
    pub fn new(status: u16) -> OriginResponse {
        OriginResponse {
            status,
            headers: Vec::new(),
            body: KitBody::Full(None),
            delay: None,
        }
    }

    /// 200 with `Content-Type: text/plain` and `body`.
    pub fn text(body: impl Into<Bytes>) -> OriginResponse {
        OriginResponse::new(200)
            .header("Content-Type", "text/plain")
            .body(body)
    }

    /// A GRIP stream hold: `Grip-Hold: stream`, `Grip-Channel: <channels>`, text/plain, `body`.
    pub fn stream_hold(channels: &str, body: impl Into<Bytes>) -> OriginResponse {
        OriginResponse::text(body)
            .header("Grip-Hold", "stream")
            .header("Grip-Channel", channels)
    }

    /// A GRIP response hold: `Grip-Hold: response`, `Grip-Channel: <channels>`, text/plain,
    /// `body` (what the client gets on timeout).
    pub fn response_hold(channels: &str, body: impl Into<Bytes>) -> OriginResponse {
        OriginResponse::text(body)
            .header("Grip-Hold", "response")
            .header("Grip-Channel", channels)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> OriginResponse {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets a complete body.
    pub fn body(mut self, body: impl Into<Bytes>) -> OriginResponse {
        self.body = KitBody::full(body);
        self
    }

    /// Streams the body from a channel; returns the sender with the response. Send
    /// [`BodyChunk::Abort`] to break the connection mid-body; drop the sender to end it.
    pub fn streamed(mut self) -> (OriginResponse, mpsc::Sender<BodyChunk>) {
        let (tx, body) = KitBody::channel();
        self.body = body;
        (self, tx)
    }

    /// Delays the answer.
    pub fn delay(mut self, delay: Duration) -> OriginResponse {
        self.delay = Some(delay);
        self
    }
}

type Handler = dyn Fn(RecordedRequest) -> OriginResponse + Send + Sync;

/// A fake HTTP origin on `127.0.0.1:0`. Stops (and closes its connections) when dropped.
pub struct Origin {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    body_bytes: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("addr", &self.addr).finish()
    }
}

impl Origin {
    /// Starts an origin answering every request with `handler(request)`. The request is
    /// recorded (after its body has been read completely) before the handler runs.
    pub async fn start<F>(handler: F) -> Origin
    where
        F: Fn(RecordedRequest) -> OriginResponse + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("origin local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let body_bytes = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = tokio::spawn(accept_loop(
            listener,
            handler,
            requests.clone(),
            body_bytes.clone(),
            connections.clone(),
        ));
        Origin {
            addr,
            requests,
            body_bytes,
            connections,
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

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests have been received.
    pub fn request_count(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Request body bytes received so far over all requests, counted as they arrive (before a
    /// request is complete) — lets a test prove that a request body is streamed.
    pub fn body_bytes_received(&self) -> usize {
        self.body_bytes.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (keep-alive reuse shows as fewer connections than
    /// requests).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived; returns them all.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        wait_until(
            timeout,
            &format!("origin to receive {n} request(s)"),
            || async { self.request_count() >= n },
        )
        .await;
        self.requests()
    }

    /// An address on which nothing listens (connections are refused).
    pub fn refusing_addr() -> SocketAddr {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding a throwaway port");
        let addr = listener.local_addr().expect("throwaway local addr");
        drop(listener);
        addr
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    body_bytes: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
) {
    // Connection tasks live in the set, so aborting this task closes them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let requests = requests.clone();
                let body_bytes = body_bytes.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        serve(req, handler.clone(), requests.clone(), body_bytes.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(
    req: http::Request<Incoming>,
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    body_bytes: Arc<AtomicUsize>,
) -> Result<Response<KitBody>, std::convert::Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes.fetch_add(data.len(), Ordering::SeqCst);
                    collected.extend_from_slice(data);
                }
            }
            Err(_) => break,
        }
    }
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.to_string()),
        headers: parts.headers,
        body: Bytes::from(collected),
    };
    requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(recorded.clone());
    let answer = handler(recorded);
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(answer.body);
    *response.status_mut() =
        StatusCode::from_u16(answer.status).expect("test origin status must be 100..=999");
    for (name, value) in &answer.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("test origin header name {name:?}: {e}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|e| panic!("test origin header value {value:?}: {e}"));
        response.headers_mut().append(name, value);
    }
    Ok(response)
}
