//! Outbound HTTP/1.1 connections: TCP (with a connect timeout), optional TLS (rustls, WebPKI
//! roots, or no verification for `insecure` endpoints).
//!
//! Requests go out on pooled keep-alive connections ([`HttpClient::request`]): a new
//! connection per request leaves a `TIME_WAIT` socket behind and caps one process at a few
//! hundred requests per second towards one origin address. A connection goes back to its
//! endpoint's idle list once its response body was read to the end ([`PooledBody`]); a body
//! dropped early closes it. The pool is bounded per endpoint and in total, and idle
//! connections are closed after [`POOL_IDLE_TIMEOUT`].
//!
//! The guarantees a proxy needs are kept (as nginx's upstream keep-alive and hyper-util's
//! pool do): a request is sent again on another connection only when hyper hands it back
//! unsent (the idle connection turned out closed or not ready before anything was written),
//! so a request body is never replayed; [`RequestError::Connect`] (nothing sent, the next
//! target may be tried) only comes from making a new connection.
//!
//! WebSocket passthrough gets a connection of its own ([`HttpClient::connect`]) that it
//! upgrades.

use crate::server::Body;
use http_body::{Body as _, Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle keep-alive connections kept per endpoint (the open-file budget keeps room for them).
pub const POOL_MAX_IDLE_PER_ENDPOINT: usize = crate::fdlimit::ORIGIN_CONNECTIONS;
/// Idle keep-alive connections kept over all endpoints.
pub const POOL_MAX_IDLE: usize = 4096;
/// How long an idle connection is kept: below common origin keep-alive timeouts (Node.js
/// closes idle connections after 5 s), so a connection is rarely reused just as the origin
/// closes it.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pooled connection whose last response just ended may take to be ready for the
/// next request before a new connection is made instead.
const POOL_READY_WAIT: Duration = Duration::from_millis(500);

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Use TLS.
    pub tls: bool,
    /// Do not verify the server certificate.
    pub insecure: bool,
    /// TLS server name when it differs from `host` (e.g. a rewritten Host header).
    pub server_name: Option<String>,
}

/// Why an outbound request (to an origin, a gateway, a webhook) failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// TCP or TLS connection could not be established (the next target may be tried).
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        /// host:port tried.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The exchange failed after connecting.
    #[error("origin request failed: {0}")]
    Request(#[from] hyper::Error),
    /// No response head within the response timeout.
    #[error("origin did not answer in time")]
    Timeout,
}

impl RequestError {
    /// True when nothing was sent, so another target may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, RequestError::Connect { .. })
    }
}

/// A failed [`HttpClient::request`].
#[derive(Debug)]
pub struct RequestFailed {
    /// What failed.
    pub error: RequestError,
    /// The request, untouched (its body not polled), when none of it was sent: always there
    /// for [`RequestError::Connect`].
    pub unsent: Option<Box<http::Request<Body>>>,
}

/// A connected endpoint (an origin, usually), ready for one request.
pub type HttpSender = hyper::client::conn::http1::SendRequest<Body>;

/// An idle pooled connection.
struct Idle {
    sender: HttpSender,
    since: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        now.duration_since(self.since) < POOL_IDLE_TIMEOUT && !self.sender.is_closed()
    }
}

/// Idle connections per endpoint, most recently used last.
#[derive(Default)]
struct Pool {
    idle: HashMap<Endpoint, Vec<Idle>>,
    /// Connections in `idle`, over all endpoints.
    total: usize,
}

impl Pool {
    /// Drops expired and closed connections of every endpoint.
    fn sweep(&mut self, now: Instant) {
        self.idle.retain(|_, list| {
            list.retain(|c| c.usable(now));
            !list.is_empty()
        });
        self.total = self.idle.values().map(Vec::len).sum();
    }
}

/// The outbound HTTP/1.1 client every tier uses (origins, the gateway, the usage webhook, the
/// CLI): builds connections and keeps idle keep-alive ones for reuse.
#[derive(Clone)]
pub struct HttpClient {
    verified: Arc<rustls::ClientConfig>,
    insecure: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    response_timeout: Duration,
    pool: Arc<Mutex<Pool>>,
}

impl HttpClient {
    /// A client trusting the WebPKI roots (and nothing for `insecure` targets).
    ///
    /// Within a Tokio runtime, a background task closes idle connections past
    /// [`POOL_IDLE_TIMEOUT`] (it ends with the last clone of the client).
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<HttpClient, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let verified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())?;
        let insecure = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
                    .with_no_client_auth()
            })?;
        let pool: Arc<Mutex<Pool>> = Arc::default();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep_idle(Arc::downgrade(&pool)));
        }
        Ok(HttpClient {
            verified: Arc::new(verified),
            insecure: Arc::new(insecure),
            connect_timeout,
            response_timeout,
            pool,
        })
    }

    /// Sends `req` to `endpoint` on an idle keep-alive connection when one is ready, else on
    /// a new connection, and waits for the response head. The connection goes back to the
    /// pool once the returned body has been read to the end.
    ///
    /// An idle connection that turns out closed or not ready before any of the request was
    /// written (hyper hands the request back) is dropped and the next one, or a new
    /// connection, is tried. Only a failure to make a new connection is
    /// [`RequestError::Connect`]; any other failure may come after part of the request was
    /// sent, and is never retried.
    pub async fn request(
        &self,
        endpoint: &Endpoint,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<PooledBody>, RequestFailed> {
        let failed = |error| RequestFailed {
            error,
            unsent: None,
        };
        while let Some(mut sender) = self.checkout(endpoint).await {
            let sent = tokio::time::timeout(self.response_timeout, sender.try_send_request(req));
            match sent.await {
                Err(_) => return Err(failed(RequestError::Timeout)),
                Ok(Ok(resp)) => return Ok(self.pooled(endpoint, sender, resp)),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(failed(RequestError::Request(err.into_error()))),
                },
            }
        }
        let mut sender = match self.connect(endpoint).await {
            Ok(s) => s,
            Err(error) => {
                return Err(RequestFailed {
                    error,
                    unsent: Some(Box::new(req)),
                });
            }
        };
        let resp = tokio::time::timeout(self.response_timeout, sender.send_request(req))
            .await
            .map_err(|_| failed(RequestError::Timeout))?
            .map_err(|e| failed(RequestError::Request(e)))?;
        Ok(self.pooled(endpoint, sender, resp))
    }

    /// Idle connections currently pooled for `endpoint`.
    pub fn idle_count(&self, endpoint: &Endpoint) -> usize {
        self.pool
            .lock()
            .map_or(0, |p| p.idle.get(endpoint).map_or(0, Vec::len))
    }

    fn pooled(
        &self,
        endpoint: &Endpoint,
        sender: HttpSender,
        resp: http::Response<hyper::body::Incoming>,
    ) -> http::Response<PooledBody> {
        let back = Checkin {
            pool: Arc::downgrade(&self.pool),
            endpoint: endpoint.clone(),
            sender,
        };
        resp.map(|body| PooledBody::new(body, back))
    }

    /// The most recently used idle connection to `endpoint` that is ready for a request.
    async fn checkout(&self, endpoint: &Endpoint) -> Option<HttpSender> {
        loop {
            let mut idle = {
                let mut pool = self.pool.lock().ok()?;
                let list = pool.idle.get_mut(endpoint)?;
                let conn = list.pop();
                if list.is_empty() {
                    pool.idle.remove(endpoint);
                }
                let conn = conn?;
                pool.total = pool.total.saturating_sub(1);
                conn
            };
            if !idle.usable(Instant::now()) {
                continue;
            }
            // Back in the pool as soon as its last response ended: the connection task may
            // not have turned to the next request yet.
            if let Ok(Ok(())) = tokio::time::timeout(POOL_READY_WAIT, idle.sender.ready()).await {
                return Some(idle.sender);
            }
        }
    }

    /// Opens a connection to `endpoint` and performs the HTTP/1.1 handshake.
    ///
    /// The returned future owns everything it needs (`'static`), which keeps it `Send` for
    /// the server loop.
    pub fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<HttpSender, RequestError>> + Send + 'static + use<> {
        let tls = endpoint.tls.then(|| {
            let config = if endpoint.insecure {
                self.insecure.clone()
            } else {
                self.verified.clone()
            };
            (config, endpoint.server_name.clone())
        });
        let (host, port) = (endpoint.host.clone(), endpoint.port);
        let connect_timeout = self.connect_timeout;
        async move {
            let addr = format!("{host}:{port}");
            let err = |reason: String| RequestError::Connect {
                addr: addr.clone(),
                reason,
            };
            let tcp = match tokio::time::timeout(
                connect_timeout,
                TcpStream::connect((host.as_str(), port)),
            )
            .await
            {
                Err(_) => return Err(err("connect timed out".into())),
                Ok(Err(e)) => return Err(err(e.to_string())),
                Ok(Ok(tcp)) => tcp,
            };
            let _ = tcp.set_nodelay(true);
            let Some((config, sni_host)) = tls else {
                return handshake(tcp).await.map_err(|e| err(e.to_string()));
            };
            let name = sni_host
                .as_deref()
                .map(strip_port)
                .unwrap_or(host.as_str())
                .to_owned();
            let server_name = match rustls::pki_types::ServerName::try_from(name) {
                Ok(n) => n,
                Err(e) => return Err(err(format!("invalid TLS server name: {e}"))),
            };
            // Boxed: the TLS handshake's state is large (several KiB), and every caller's
            // future (each WebSocket-over-HTTP request) would otherwise carry it inline.
            Box::pin(async move {
                let connector = tokio_rustls::TlsConnector::from(config);
                let stream = match tokio::time::timeout(
                    connect_timeout,
                    connector.connect(server_name, tcp),
                )
                .await
                {
                    Err(_) => return Err(err("TLS handshake timed out".into())),
                    Ok(Err(e)) => return Err(err(format!("TLS: {e}"))),
                    Ok(Ok(s)) => s,
                };
                handshake(stream).await.map_err(|e| err(e.to_string()))
            })
            .await
        }
    }

    /// Sends one request on a connection and waits for the response head.
    pub async fn send(
        &self,
        mut sender: HttpSender,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, RequestError> {
        tokio::time::timeout(self.response_timeout, sender.send_request(req))
            .await
            .map_err(|_| RequestError::Timeout)?
            .map_err(RequestError::Request)
    }
}

/// Where a connection goes back once its response was read to the end.
struct Checkin {
    pool: Weak<Mutex<Pool>>,
    endpoint: Endpoint,
    sender: HttpSender,
}

impl Checkin {
    /// Returns the connection to its endpoint's idle list (unless closed or over a bound).
    fn checkin(self) {
        if self.sender.is_closed() {
            return;
        }
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let Ok(mut pool) = pool.lock() else {
            return;
        };
        let now = Instant::now();
        if pool.total >= POOL_MAX_IDLE {
            pool.sweep(now);
            if pool.total >= POOL_MAX_IDLE {
                return;
            }
        }
        let pool = &mut *pool;
        let list = pool.idle.entry(self.endpoint).or_default();
        if list.len() >= POOL_MAX_IDLE_PER_ENDPOINT {
            let before = list.len();
            list.retain(|c| c.usable(now));
            pool.total = pool.total.saturating_sub(before - list.len());
            if list.len() >= POOL_MAX_IDLE_PER_ENDPOINT {
                return;
            }
        }
        list.push(Idle {
            sender: self.sender,
            since: now,
        });
        pool.total += 1;
    }
}

/// A response body from a pooled connection: when it has been read to the end, the
/// connection goes back to the pool; dropped before that, the connection is closed (hyper
/// cannot reuse a connection with an unread body).
pub struct PooledBody {
    inner: hyper::body::Incoming,
    back: Option<Checkin>,
}

impl PooledBody {
    fn new(inner: hyper::body::Incoming, back: Checkin) -> PooledBody {
        let mut body = PooledBody {
            inner,
            back: Some(back),
        };
        if body.inner.is_end_stream() {
            body.done();
        }
        body
    }

    fn done(&mut self) {
        if let Some(back) = self.back.take() {
            back.checkin();
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl http_body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.done(),
            // A reader may stop at `is_end_stream` without polling for the end.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.done(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Closes idle connections past [`POOL_IDLE_TIMEOUT`] until the pool is dropped.
async fn sweep_idle(pool: Weak<Mutex<Pool>>) {
    let mut tick = tokio::time::interval(POOL_IDLE_TIMEOUT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if let Ok(mut pool) = pool.lock() {
            pool.sweep(Instant::now());
        }
    }
}

async fn handshake<IO>(io: IO) -> Result<HttpSender, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "origin connection ended with error");
        }
    });
    Ok(sender)
}

/// `host` of `host[:port]` (IPv6 in brackets kept as is).
pub fn strip_port(hostport: &str) -> &str {
    if hostport.starts_with('[') {
        return hostport.split_once(']').map_or(hostport, |(h, _)| &h[1..]);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

/// Accepts any origin certificate (target option `insecure`), still checking signatures so the
/// handshake itself is sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("::1"), "::1");
    }
}
