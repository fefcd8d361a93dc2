//! HTTP clients for tests: one-shot requests, held streams read incrementally, and raw TCP for
//! deliberately malformed HTTP.
//!
//! Every request uses a fresh connection (hyper's HTTP/1.1 client connection), so chunked
//! decoding is done by hyper and a clean end of a chunked body can be told apart from a broken
//! connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::KitBody;

/// Overall limit for one-shot requests (long enough for a 5 s response hold plus slack).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A complete response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent on the status line.
    pub reason: String,
    /// Headers.
    pub headers: HeaderMap,
    /// The complete (de-chunked) body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The first value of a header, lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }

    /// The body as lossy UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the response used `Transfer-Encoding: chunked`.
    pub fn is_chunked(&self) -> bool {
        is_chunked(&self.headers)
    }

    /// Names of headers starting with `prefix` (case-insensitive), lower-case.
    pub fn header_names_with_prefix(&self, prefix: &str) -> Vec<String> {
        names_with_prefix(&self.headers, prefix)
    }
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers.get_all("transfer-encoding").iter().any(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .to_ascii_lowercase()
            .contains("chunked")
    })
}

fn names_with_prefix(headers: &HeaderMap, prefix: &str) -> Vec<String> {
    let prefix = prefix.to_ascii_lowercase();
    headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

fn reason_of(resp: &http::Response<Incoming>) -> String {
    match resp.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => String::from_utf8_lossy(reason.as_bytes()).into_owned(),
        None => resp.status().canonical_reason().unwrap_or("").to_string(),
    }
}

/// Sends one request on a new connection and returns the response head with its still-open
/// body, plus the connection task.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: KitBody,
) -> Result<(http::Response<Incoming>, tokio::task::JoinHandle<()>), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| format!("method: {e}"))?;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .map_err(|e| format!("building request: {e}"))?;
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_str(&addr.to_string()).map_err(|e| format!("host: {e}"))?,
        );
    }
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|e| format!("header value {value:?}: {e}"))?;
        req.headers_mut().append(name, value);
    }
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, conn_task)),
        Err(e) => {
            conn_task.abort();
            Err(format!("request to {addr}{path}: {e}"))
        }
    }
}

/// Sends a request and reads the whole response, or says what went wrong (connection refused,
/// reset, truncated body, 30 s timeout). For tests where failure is an acceptable outcome.
pub async fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse, String> {
    let exchange = async {
        let (resp, conn_task) = send(addr, method, path, headers, KitBody::full(body)).await?;
        let status = resp.status().as_u16();
        let reason = reason_of(&resp);
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await;
        conn_task.abort();
        let body = collected
            .map_err(|e| format!("reading body of {status} response from {path}: {e}"))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            reason,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{method} {path} to {addr}: no complete response in {REQUEST_TIMEOUT:?}"
        )),
    }
}

/// Sends a request and reads the whole response; panics on any transport failure.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    match try_http_request(addr, method, path, headers, body).await {
        Ok(resp) => resp,
        Err(e) => panic!("{e}"),
    }
}

/// `GET path` with `headers`; panics on transport failure.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers, Bytes::new()).await
}

/// How a streamed body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Clean end (for chunked bodies: the zero-length terminating chunk was received).
    Clean,
    /// The connection broke (reset, or closed before the body was complete).
    Error(String),
    /// Still open when the wait ended.
    Timeout,
}

/// A response whose body is read incrementally: stream holds, SSE, long responses.
///
/// Received bytes accumulate in a buffer with a read cursor: `read_until` consumes up to and
/// including the needle, `read_for` consumes whatever arrived in the window.
pub struct StreamClient {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent on the status line.
    pub reason: String,
    /// Response headers.
    pub headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    pos: usize,
    end: Option<StreamEnd>,
    conn_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient")
            .field("status", &self.status)
            .field("received", &String::from_utf8_lossy(&self.buf))
            .field("end", &self.end)
            .finish()
    }
}

impl StreamClient {
    /// `GET path` and wait (10 s) for the response head.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> StreamClient {
        StreamClient::open_request(addr, "GET", path, headers, KitBody::Full(None)).await
    }

    /// Any request (the body may be streamed, see [`KitBody::channel`]); waits (10 s) for the
    /// response head.
    pub async fn open_request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: KitBody,
    ) -> StreamClient {
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            send(addr, method, path, headers, body),
        )
        .await;
        let (resp, conn_task) = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("{method} {path} to {addr}: no response head within 10 s"),
        };
        let status = resp.status().as_u16();
        let reason = reason_of(&resp);
        let (parts, body) = resp.into_parts();
        StreamClient {
            status,
            reason,
            headers: parts.headers,
            body,
            buf: Vec::new(),
            pos: 0,
            end: None,
            conn_task,
        }
    }

    /// The first value of a header, lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }

    /// Whether the response used `Transfer-Encoding: chunked`.
    pub fn is_chunked(&self) -> bool {
        is_chunked(&self.headers)
    }

    /// Names of headers starting with `prefix` (case-insensitive), lower-case.
    pub fn header_names_with_prefix(&self, prefix: &str) -> Vec<String> {
        names_with_prefix(&self.headers, prefix)
    }

    /// Everything received so far (consumed or not).
    pub fn received(&self) -> &[u8] {
        &self.buf
    }

    /// Everything received so far, lossy UTF-8.
    pub fn received_text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// How the body ended, if it has.
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }

    /// Reads one more frame (or the end) before `deadline`; returns false on timeout or if the
    /// body already ended.
    async fn pull(&mut self, deadline: Instant) -> bool {
        if self.end.is_some() {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.body.frame()).await {
            Err(_) => false,
            Ok(None) => {
                self.end = Some(StreamEnd::Clean);
                true
            }
            Ok(Some(Err(e))) => {
                self.end = Some(StreamEnd::Error(e.to_string()));
                true
            }
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.buf.extend_from_slice(data);
                }
                true
            }
        }
    }

    /// Reads until `needle` appears after the cursor; returns the bytes from the cursor through
    /// the needle and moves the cursor past it. Panics on timeout or end of body, showing what
    /// was received.
    pub async fn read_until(&mut self, needle: impl AsRef<[u8]>, timeout: Duration) -> Bytes {
        let needle = needle.as_ref();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = find(&self.buf[self.pos..], needle) {
                let start = self.pos;
                self.pos += at + needle.len();
                return Bytes::copy_from_slice(&self.buf[start..self.pos]);
            }
            if !self.pull(deadline).await {
                panic!(
                    "stream: {:?} not received within {timeout:?} (end: {:?}); received so far: {:?}",
                    String::from_utf8_lossy(needle),
                    self.end,
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Like [`StreamClient::read_until`], but returns `None` instead of panicking.
    pub async fn try_read_until(
        &mut self,
        needle: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Option<Bytes> {
        let needle = needle.as_ref();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = find(&self.buf[self.pos..], needle) {
                let start = self.pos;
                self.pos += at + needle.len();
                return Some(Bytes::copy_from_slice(&self.buf[start..self.pos]));
            }
            if !self.pull(deadline).await {
                return None;
            }
        }
    }

    /// Reads for `duration` (or until the body ends); returns everything after the cursor and
    /// moves the cursor to the end.
    pub async fn read_for(&mut self, duration: Duration) -> Bytes {
        let deadline = Instant::now() + duration;
        while self.pull(deadline).await {}
        let start = self.pos;
        self.pos = self.buf.len();
        Bytes::copy_from_slice(&self.buf[start..])
    }

    /// Reads until the body ends or `timeout`; reports how it ended. Consumes everything.
    pub async fn wait_end(&mut self, timeout: Duration) -> StreamEnd {
        let deadline = Instant::now() + timeout;
        while self.pull(deadline).await {}
        self.pos = self.buf.len();
        self.end.clone().unwrap_or(StreamEnd::Timeout)
    }

    /// Waits for a clean end of the body (terminating chunk) and returns the bytes after the
    /// cursor; panics on a broken connection or timeout.
    pub async fn expect_eof(&mut self, timeout: Duration) -> Bytes {
        let start = self.pos;
        match self.wait_end(timeout).await {
            StreamEnd::Clean => Bytes::copy_from_slice(&self.buf[start..]),
            other => panic!(
                "stream: expected a clean end within {timeout:?}, got {other:?}; received: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Closes the connection from the client side.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `request` verbatim on a new TCP connection and reads the answer until the peer
/// closes, a complete response (head plus `Content-Length` body) has arrived, or `timeout`.
/// Write errors and resets are tolerated: whatever was received is returned.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(request).await;
        let _ = wr.flush().await;
    };
    let read = async {
        loop {
            match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    if response_complete(&out) {
                        break;
                    }
                }
            }
        }
    };
    // Read while writing: a server may answer (e.g. 431) before it has read everything.
    tokio::join!(write, read);
    out
}

fn response_complete(data: &[u8]) -> bool {
    let Some(head_end) = find(data, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(len) => data.len() >= head_end + 4 + len,
        None => false,
    }
}

/// The status code of a raw HTTP/1.x response (`HTTP/1.1 400 Bad Request` ⇒ 400).
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}
