//! Forward-auth to the upstream API gateway: `GET <gateway URL><client path and query>` with
//! the client's credential headers; the status decides.

use bytes::Bytes;
use http::{Request, Uri, header};
use runtime::client::{Endpoint, HttpClient};
use std::time::Duration;

/// Largest gateway body kept (it is relayed to denied clients and cached): longer ones are cut
/// here (docs/protocol.md, "Auth sidecar"), so a gateway's or attacker-chosen fault page cannot fill the cache.
pub(crate) const MAX_DENY_BODY: usize = 4 * 1024;

/// Largest total of gateway header names and values kept; headers past it are dropped.
pub(crate) const MAX_DENY_HEADERS: usize = 4 * 1024;

/// A gateway call that did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Connection, request or timeout failure.
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    /// The gateway's body could not be read.
    #[error("gateway body: {0}")]
    Body(String),
}

/// The gateway's answer.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A parsed gateway URL and a client for it.
pub(crate) struct Gateway {
    endpoint: Endpoint,
    authority: String,
    base_path: String,
    client: HttpClient,
    timeout: Duration,
}

impl Gateway {
    /// Parses `http(s)://host[:port][/base]`.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Gateway, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("the URL must start with http:// or https://".into()),
        };
        let host = uri
            .host()
            .ok_or("the URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let client = HttpClient::new(timeout, timeout).map_err(|e| e.to_string())?;
        Ok(Gateway {
            endpoint: Endpoint {
                host,
                port,
                tls,
                insecure: false,
                server_name: None,
            },
            authority,
            base_path,
            client,
            timeout,
        })
    }

    /// Asks the gateway about `path_and_query` with `headers`.
    pub(crate) async fn check(
        &self,
        path_and_query: &str,
        headers: &[(String, String)],
    ) -> Result<Reply, GatewayError> {
        let fut = async {
            let sender = self
                .client
                .connect(&self.endpoint)
                .await
                .map_err(|e| GatewayError::Unreachable(e.to_string()))?;
            let mut builder = Request::get(format!("{}{}", self.base_path, path_and_query))
                .header(header::HOST, self.authority.as_str());
            for (name, value) in headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let req = builder
                .body(runtime::server::full(""))
                .map_err(|e| GatewayError::Unreachable(format!("bad request: {e}")))?;
            let resp = self
                .client
                .send(sender, req)
                .await
                .map_err(|e| GatewayError::Unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let mut kept = 0usize;
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter(|(n, _)| {
                    !matches!(
                        n.as_str(),
                        "connection"
                            | "keep-alive"
                            | "transfer-encoding"
                            | "content-length"
                            | "upgrade"
                    )
                })
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .take_while(|(n, v)| {
                    kept = kept.saturating_add(n.len() + v.len());
                    kept <= MAX_DENY_HEADERS
                })
                .collect();
            // Only a refusal's body is relayed; an allow's is not even read.
            let body = if (200..300).contains(&status) {
                Bytes::new()
            } else {
                read_prefix(resp.into_body(), MAX_DENY_BODY).await?
            };
            Ok(Reply {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| GatewayError::Unreachable("timed out".into()))?
    }
}

/// The first `max` bytes of a body; the rest is not read (the connection is dropped with it).
async fn read_prefix(mut body: hyper::body::Incoming, max: usize) -> Result<Bytes, GatewayError> {
    use http_body_util::BodyExt;
    let mut out = bytes::BytesMut::new();
    while out.len() < max {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| GatewayError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let room = max - out.len();
            out.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(out.freeze())
}
