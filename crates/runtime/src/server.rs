//! A small HTTP/1.1 server loop: accept, serve each connection with hyper, stop accepting on
//! shutdown and let in-flight exchanges finish.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Boxed error type for response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type every server here uses.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text response with the given status.
pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Strict percent-decoding (a channel in a path, a query parameter): `None` for a `%` not followed by two hex digits, or a result that
/// is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// Connection-level options.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request head (request line + headers) accepted; larger ⇒ 431.
    pub max_header_bytes: usize,
    /// Time allowed for a client to send a complete request head (`--client-header-timeout`).
    pub header_read_timeout: Duration,
    /// Longest wait for the next byte of a request body (`--client-body-timeout`); handlers
    /// wrap bodies with [`crate::body::client_body`], which answers 408 past it.
    pub body_timeout: Duration,
    /// Open connections at most; beyond it new ones get a 503 and are closed. Lowered, with
    /// a warning, to what fits under the open-file limit when the server starts
    /// ([`crate::fdlimit`]); `usize::MAX` (a listener without a limit of its own) is lowered
    /// silently.
    pub max_connections: usize,
    /// The open-connection count (shared, so upgraded connections can keep their slot).
    pub connections: ConnectionCounter,
    /// Serve TLS with this (swappable) configuration instead of plain HTTP.
    pub tls: Option<crate::tls::SharedTls>,
}

/// Default `--client-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--client-body-timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts open connections.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCounter(Arc<AtomicUsize>);

impl ConnectionCounter {
    /// Counts one more connection until the returned slot is dropped.
    pub fn take(&self) -> ConnectionSlot {
        self.0.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot(self.0.clone())
    }

    /// Open connections now.
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_header_bytes: 16 * 1024,
            header_read_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: usize::MAX,
            connections: ConnectionCounter::default(),
            tls: None,
        }
    }
}

/// Pending-connection queue asked of `listen(2)`; the kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4). `tokio::net::TcpListener::bind`
/// (through mio) asks for 128: a burst of opens beyond the queue loses SYNs, and those
/// clients retry only after a second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, so a restarted process
/// can bind while old connections linger in `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then stops accepting and waits
/// for in-flight exchanges to finish (bound the wait with a timeout at the call site).
///
/// `handler` gets each request and the peer address. Upgrades (WebSocket) are enabled.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    options: ServerOptions,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let open = options.connections.clone();
    let builder = http1_builder(&options);
    let max_connections = connection_limit(&options);
    let mut spare = SpareFd::new();
    loop {
        spare.refill();
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                on_accept_error(&listener, err, &mut spare, &tracker).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if open.current() >= max_connections {
            // A clear answer instead of a silent reset, written off the accept loop.
            tracker.spawn(refuse(stream));
            continue;
        }
        let slot = open.take();
        let conn = Accepted {
            stream,
            tls: options.tls.as_ref().map(|t| t.load_full()),
            handshake_timeout: options.header_read_timeout,
            info: ConnInfo {
                peer,
                tls: options.tls.is_some(),
                abort: CancellationToken::new(),
                body_timeout: options.body_timeout,
            },
        };
        let (builder, handler, shutdown) = (builder.clone(), handler.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _slot = slot;
            serve_accepted(conn, builder, handler, shutdown).await;
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// The hyper connection builder every connection is served with.
fn http1_builder(options: &ServerOptions) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
}

/// Open connections at most, fitted under the open-file limit.
fn connection_limit(options: &ServerOptions) -> usize {
    // Checked here, once the process is about to serve (after configuration errors had their
    // chance to end it with one line).
    let nofile = crate::fdlimit::current_nofile_limit();
    if options.max_connections == usize::MAX {
        crate::fdlimit::budget(nofile)
    } else {
        crate::fdlimit::fit_connections(options.max_connections, nofile)
    }
}

/// Handles a failed `accept` before the loop goes on.
async fn on_accept_error(
    listener: &TcpListener,
    err: std::io::Error,
    spare: &mut SpareFd,
    tracker: &TaskTracker,
) {
    if is_out_of_fds(&err) && spare.release() {
        // Out of descriptors: the spare one takes the waiting client, which gets
        // a 503 instead of waiting unanswered in the kernel's queue.
        if let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
        {
            tracker.spawn(refuse(stream));
        }
        return;
    }
    // Out of file descriptors and similar: back off instead of spinning.
    tracing::warn!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// An accepted connection and what serving it needs.
struct Accepted {
    stream: tokio::net::TcpStream,
    /// The TLS configuration current when it was accepted; `None` for plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake_timeout: Duration,
    info: ConnInfo,
}

/// Serves one accepted connection, plain or TLS.
async fn serve_accepted<H, Fut>(
    conn: Accepted,
    builder: hyper::server::conn::http1::Builder,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // Each kind of connection is its own heap allocation, sized for what it holds: a
    // task's future is as large as its largest state, and the TLS one (a rustls
    // connection inline) would otherwise make every plain connection pay for it.
    match conn.tls {
        None => {
            let io = TokioIo::new(conn.stream);
            Box::pin(serve_connection(builder, io, conn.info, handler, shutdown)).await;
        }
        Some(config) => {
            Box::pin(serve_tls(
                builder,
                conn.stream,
                config,
                conn.handshake_timeout,
                conn.info,
                handler,
                shutdown,
            ))
            .await;
        }
    }
}

/// One descriptor held back for answering clients when the process runs out (the classic
/// reserve-descriptor trick): `accept` cannot hand over a client without a free descriptor.
struct SpareFd(Option<std::fs::File>);

impl SpareFd {
    fn new() -> SpareFd {
        let mut spare = SpareFd(None);
        spare.refill();
        spare
    }

    /// Takes the descriptor back when one is free again.
    fn refill(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }

    /// Frees the descriptor; false when there was none to free.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }
}

fn is_out_of_fds(err: &std::io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide).
    matches!(err.raw_os_error(), Some(24 | 23))
}

/// What the handler may want to know about a request's connection (a request extension).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// The client connected with TLS.
    pub tls: bool,
    /// Cancelling it drops the connection at once (no graceful end): for clients that stopped
    /// reading, whose responses hyper can no longer make progress on.
    pub abort: CancellationToken,
    /// The listener's `--client-body-timeout`.
    pub body_timeout: Duration,
}

/// Completes the TLS handshake within `handshake_timeout`, then serves the connection.
async fn serve_tls<H, Fut>(
    builder: hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    info: ConnInfo,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let peer = info.peer;
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(handshake_timeout, accept).await {
        Ok(Ok(tls_stream)) => {
            serve_connection(builder, TokioIo::new(tls_stream), info, handler, shutdown).await;
        }
        Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_connection<IO, H, Fut>(
    builder: hyper::server::conn::http1::Builder,
    io: IO,
    info: ConnInfo,
    handler: H,
    shutdown: CancellationToken,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let peer = info.peer;
    let abort = info.abort.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let fut = handler(req, peer);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = builder.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = abort.cancelled() => {
            tracing::debug!(%peer, "connection aborted");
            return;
        }
        _ = shutdown.cancelled() => {
            // Finish the exchange in flight, then close; upgraded sockets live on in their own
            // tasks and are drained by their owners.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with error");
    }
}

/// Counts an open connection for as long as it lives.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over the limit with 503 and closes it. The request head is read
/// first (briefly), so clients that write before they read see the answer, not a reset.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read_head = async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read_head).await;
    metrics::counter!("gripmesh_connections_refused_total").increment(1);
    const BODY: &str = "Too many connections.\n";
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(resp.as_bytes())).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections to a listener that has not accepted yet all complete their
    /// handshake: the kernel queues them (a backlog of 128 would leave the rest waiting for a
    /// SYN retry that can never succeed while nobody accepts).
    #[tokio::test]
    async fn listener_queues_a_burst_beyond_128_connections() {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut connects = Vec::new();
        for _ in 0..600 {
            connects.push(tokio::spawn(tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(addr),
            )));
        }
        let mut connected = Vec::new();
        for c in connects {
            if let Ok(Ok(Ok(stream))) = c.await {
                connected.push(stream);
            }
        }
        assert_eq!(
            connected.len(),
            600,
            "connections completed without an accept"
        );
        drop(listener);
    }
}
