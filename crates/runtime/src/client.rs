//! Outbound HTTP/1.1 connections: TCP (with a connect timeout), optional TLS (rustls, WebPKI
//! roots, or no verification for `insecure` endpoints).
//!
//! Proxied requests get their own connection ([`OriginClient::connect`]). That keeps failover
//! exact — an endpoint is skipped only when connecting to it fails, before any of the request
//! was sent — and lets WebSocket passthrough upgrade the same connection later.
//!
//! Requests whose answers are read to the end (WebSocket-over-HTTP events) may instead reuse
//! an idle keep-alive connection ([`OriginClient::send_pooled`], [`OriginClient::checkin`]):
//! one connection per event would leave a `TIME_WAIT` socket per request and cap the edge at
//! a few hundred requests per second to one origin address.

use crate::server::Body;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle keep-alive connections kept per endpoint.
const POOL_MAX_IDLE_PER_ENDPOINT: usize = 64;
/// How long an idle connection is kept: below common origin keep-alive timeouts (Node.js
/// closes idle connections after 5 s), so a connection is rarely reused just as the origin
/// closes it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Why a request to an origin failed.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
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

impl OriginError {
    /// True when nothing was sent, so another target may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, OriginError::Connect { .. })
    }
}

/// A connected origin, ready for one request.
pub type OriginSender = hyper::client::conn::http1::SendRequest<Body>;

/// An idle pooled connection.
struct Idle {
    sender: OriginSender,
    since: Instant,
}

impl Idle {
    fn usable(&self) -> bool {
        self.since.elapsed() < POOL_IDLE_TIMEOUT && !self.sender.is_closed()
    }
}

/// Builds outbound connections (and keeps idle ones for [`OriginClient::send_pooled`]).
#[derive(Clone)]
pub struct OriginClient {
    verified: Arc<rustls::ClientConfig>,
    insecure: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle: Arc<Mutex<HashMap<Endpoint, Vec<Idle>>>>,
}

impl OriginClient {
    /// A client trusting the WebPKI roots (and nothing for `insecure` targets).
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<OriginClient, rustls::Error> {
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
        Ok(OriginClient {
            verified: Arc::new(verified),
            insecure: Arc::new(insecure),
            connect_timeout,
            response_timeout,
            idle: Arc::default(),
        })
    }

    /// Sends `req` on an idle connection to `endpoint` when there is one, else on a new
    /// connection; returns the response and the connection, which the caller hands back with
    /// [`OriginClient::checkin`] once it has read the response body to the end.
    ///
    /// An idle connection that turns out unusable before any of the request was written
    /// (closed by the origin, not ready) is dropped and the next one, or a new connection,
    /// is tried. Only a failure to make a new connection is [`OriginError::Connect`].
    pub async fn send_pooled(
        &self,
        endpoint: &Endpoint,
        mut req: http::Request<Body>,
    ) -> Result<(http::Response<hyper::body::Incoming>, OriginSender), OriginError> {
        while let Some(mut sender) = self.checkout(endpoint) {
            match tokio::time::timeout(self.response_timeout, sender.try_send_request(req)).await {
                Err(_) => return Err(OriginError::Timeout),
                Ok(Ok(resp)) => return Ok((resp, sender)),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(OriginError::Request(err.into_error())),
                },
            }
        }
        let mut sender = self.connect(endpoint).await?;
        let resp = tokio::time::timeout(self.response_timeout, sender.send_request(req))
            .await
            .map_err(|_| OriginError::Timeout)?
            .map_err(OriginError::Request)?;
        Ok((resp, sender))
    }

    /// Returns a connection whose last response was read to the end, for reuse.
    pub fn checkin(&self, endpoint: &Endpoint, sender: OriginSender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let list = idle.entry(endpoint.clone()).or_default();
        list.retain(Idle::usable);
        if list.len() < POOL_MAX_IDLE_PER_ENDPOINT {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used idle connection to `endpoint` that is still usable.
    fn checkout(&self, endpoint: &Endpoint) -> Option<OriginSender> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(endpoint)?;
        while let Some(conn) = list.pop() {
            if conn.usable() {
                return Some(conn.sender);
            }
        }
        idle.remove(endpoint);
        None
    }

    /// Opens a connection to `endpoint` and performs the HTTP/1.1 handshake.
    ///
    /// The returned future owns everything it needs (`'static`), which keeps it `Send` for
    /// the server loop.
    pub fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<OriginSender, OriginError>> + Send + 'static + use<> {
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
            let err = |reason: String| OriginError::Connect {
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
        mut sender: OriginSender,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, OriginError> {
        tokio::time::timeout(self.response_timeout, sender.send_request(req))
            .await
            .map_err(|_| OriginError::Timeout)?
            .map_err(OriginError::Request)
    }
}

async fn handshake<IO>(io: IO) -> Result<OriginSender, hyper::Error>
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
