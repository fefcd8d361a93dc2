//! Authorization of connections on routes with the `authz` property: ask the sidecar before
//! the origin is contacted, remember the credential of live connections, close them on
//! revocation or when a periodic re-check denies them.

use crate::EdgeInner;
use crate::conn::CloseReason;
use crate::headers;
use futures_util::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use proto::v1::{AuthzHeader, CheckRequest, CheckResponse, Decision};
use routes::Route;
use runtime::server::{Body, full, text};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Time allowed for one check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Refusal over `--key-max-connections` (or the gateway's `Gripmesh-Max-Connections`).
pub const TOO_MANY_CONNECTIONS: &str = "Too many connections for this key.\n";
/// Refusal (and long-poll answer) once the key's message quota is spent.
pub const QUOTA_EXCEEDED: &str = "Message quota exceeded for this key.\n";
/// Refusal of a credential whose expiry has passed.
pub const CREDENTIAL_EXPIRED: &str = "Credential expired.\n";

/// How often live connections are checked for an expired credential.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// Something that decides checks: the embedded sidecar (standalone) or a gRPC client.
pub trait AuthzCheck: Send + Sync + 'static {
    /// Decides one request.
    fn check(&self, req: CheckRequest) -> BoxFuture<'_, Result<CheckResponse, String>>;
}

/// An allowed connection's authorization.
#[derive(Debug)]
pub struct Authorized {
    /// Headers to set on origin requests (an empty value removes the header).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Hex SHA-256 of the credential ("" when none): the first one presented.
    pub credential_hash: String,
    /// Hex SHA-256 of every credential presented, in any source; revoking any closes the
    /// connection.
    pub credential_hashes: Vec<String>,
    /// The check, kept for periodic re-checks.
    pub request: CheckRequest,
    /// The key's connection slot (freed when the connection ends); `None` without a
    /// credential or when the route failed open.
    pub(crate) slot: Option<crate::keys::KeySlot>,
    /// Unix seconds when the credential expires (0: never); a re-check may move it.
    pub(crate) expires_at: std::sync::atomic::AtomicU64,
}

impl Authorized {
    /// Applies the sidecar's headers to an origin request.
    pub fn apply(&self, h: &mut HeaderMap) {
        for (name, value) in &self.headers {
            h.remove(name);
            if !value.is_empty() {
                h.insert(name.clone(), value.clone());
            }
        }
    }
}

/// The outcome of the gate.
pub(crate) enum Gate {
    /// Go on (with the authorization when the route asked for one).
    Pass(Option<Arc<Authorized>>),
    /// Answer the client with this; the origin is not contacted.
    Reject(Response<Body>),
}

/// Checks a request on `route` (no-op unless the route has `authz`).
pub(crate) async fn gate(
    edge: &EdgeInner,
    route: &Route,
    method: &http::Method,
    uri: &http::Uri,
    client_headers: &HeaderMap,
    peer: SocketAddr,
) -> Gate {
    if !route.authz {
        return Gate::Pass(None);
    }
    let Some(checker) = edge.authz.as_ref() else {
        tracing::error!(route = %route.id, "route requires authz but no sidecar is configured (--authz)");
        return Gate::Reject(unavailable());
    };
    let request = CheckRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers::to_origin(client_headers)
            .iter()
            .filter_map(|(n, v)| {
                Some(AuthzHeader {
                    name: n.as_str().to_owned(),
                    value: v.to_str().ok()?.to_owned(),
                })
            })
            .collect(),
        client_addr: peer.to_string(),
        route_id: route.id.clone(),
    };
    let result = tokio::time::timeout(CHECK_TIMEOUT, checker.check(request.clone()))
        .await
        .map_err(|_| "authz check timed out".to_owned())
        .and_then(|r| r);
    let resp = match result {
        Ok(resp) => resp,
        Err(err) => CheckResponse {
            decision: Decision::Error as i32,
            error: err,
            ..Default::default()
        },
    };
    match Decision::try_from(resp.decision).unwrap_or(Decision::Unspecified) {
        // A sidecar that has not heard of a revocation yet (or follows no bus) cannot let a
        // revoked credential through this edge.
        Decision::Allow
            if std::iter::once(&resp.credential_hash)
                .chain(&resp.credential_hashes)
                .any(|h| !h.is_empty() && edge.revoked.contains(h)) =>
        {
            Gate::Reject(revoked())
        }
        Decision::Allow => match limited(edge, &resp).await {
            Ok(slot) => Gate::Pass(Some(authorized(edge, resp, request, slot))),
            Err((status, body)) => Gate::Reject(text(status, body)),
        },
        Decision::Deny => Gate::Reject(denied(&resp)),
        Decision::Error | Decision::Unspecified => {
            if route.authz_fail_open {
                tracing::warn!(route = %route.id, error = %resp.error, "authz unavailable; route fails open");
                Gate::Pass(Some(authorized(edge, resp, request, None)))
            } else {
                tracing::warn!(route = %route.id, error = %resp.error, "authz unavailable; route fails closed");
                Gate::Reject(unavailable())
            }
        }
    }
}

/// The authorization of a connection let through (allowed, or failed open). Every
/// `--forward-headers` name is listed, with an empty value (remove) unless the sidecar gave one:
/// a client-sent copy never reaches the origin, whatever the decision and even when the sidecar
/// could not be asked.
fn authorized(
    edge: &EdgeInner,
    resp: CheckResponse,
    request: CheckRequest,
    slot: Option<crate::keys::KeySlot>,
) -> Arc<Authorized> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = resp
        .allow_headers
        .iter()
        .filter_map(|h| {
            Some((
                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                HeaderValue::from_str(&h.value).ok()?,
            ))
        })
        .collect();
    for name in &edge.config.forward_headers {
        if !headers.iter().any(|(n, _)| n == name) {
            headers.push((name.clone(), HeaderValue::from_static("")));
        }
    }
    let mut credential_hashes = resp.credential_hashes;
    if !resp.credential_hash.is_empty() && !credential_hashes.contains(&resp.credential_hash) {
        credential_hashes.insert(0, resp.credential_hash.clone());
    }
    Arc::new(Authorized {
        headers,
        credential_hash: resp.credential_hash,
        credential_hashes,
        request,
        slot,
        expires_at: std::sync::atomic::AtomicU64::new(resp.expires_at),
    })
}

/// Applies the key's limits to an allowed request (docs/protocol.md, "Key limits and usage"): an expired credential is
/// refused (401), a spent quota or a full connection count 429; otherwise the key's connection
/// slot (counted cluster-wide, see [`crate::keys`]). The gateway's per-key values override
/// the flags.
async fn limited(
    edge: &EdgeInner,
    resp: &CheckResponse,
) -> Result<Option<crate::keys::KeySlot>, (StatusCode, &'static str)> {
    if resp.expires_at != 0 && resp.expires_at <= crate::keys::unix_now() {
        crate::metrics::EdgeMetrics::key_limited("expired");
        return Err((StatusCode::UNAUTHORIZED, CREDENTIAL_EXPIRED));
    }
    if resp.credential_hash.is_empty() {
        return Ok(None);
    }
    let config = &edge.config.key_limits;
    let max = (resp.max_connections != 0)
        .then_some(resp.max_connections)
        .or(config.max_connections);
    let quota = (resp.quota_period_seconds != 0)
        .then_some((resp.message_quota, resp.quota_period_seconds))
        .or(config.message_quota);
    match edge.keys.acquire(&resp.credential_hash, max, quota).await {
        Ok(slot) => Ok(Some(slot)),
        Err(crate::keys::Limit::Connections) => {
            crate::metrics::EdgeMetrics::key_limited("connections");
            Err((StatusCode::TOO_MANY_REQUESTS, TOO_MANY_CONNECTIONS))
        }
        Err(crate::keys::Limit::Quota) => {
            crate::metrics::EdgeMetrics::key_limited("quota");
            Err((StatusCode::TOO_MANY_REQUESTS, QUOTA_EXCEEDED))
        }
    }
}

/// Closes live connections whose credential has expired, every [`EXPIRY_SWEEP`].
fn expire(edge: &EdgeInner) {
    let now = crate::keys::unix_now();
    let expired: Vec<u64> = edge
        .authorized
        .iter()
        .filter(|e| {
            let at = e
                .value()
                .expires_at
                .load(std::sync::atomic::Ordering::Acquire);
            at != 0 && at <= now
        })
        .map(|e| *e.key())
        .collect();
    for id in expired {
        if let Some(conn) = edge.held.get(&id) {
            crate::metrics::EdgeMetrics::key_limited("expired");
            conn.close(CloseReason::Expired);
        }
    }
}

/// The answer for a revoked credential (docs/protocol.md, "Cluster state").
pub fn revoked() -> Response<Body> {
    text(StatusCode::FORBIDDEN, "Credential revoked.\n")
}

fn unavailable() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "Authorization unavailable.\n",
    )
}

/// The gateway's refusal, relayed (its status, headers and body).
fn denied(resp: &CheckResponse) -> Response<Body> {
    let status = u16::try_from(resp.deny_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::FORBIDDEN);
    let mut out = Response::new(full(resp.deny_body.clone()));
    *out.status_mut() = status;
    for h in &resp.deny_headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

/// Closes every live connection that presented `credential_hash` in any source; returns how
/// many.
pub(crate) fn revoke(edge: &EdgeInner, credential_hash: &str) -> usize {
    let ids: Vec<u64> = edge
        .authorized
        .iter()
        .filter(|e| {
            e.value()
                .credential_hashes
                .iter()
                .any(|h| h == credential_hash)
        })
        .map(|e| *e.key())
        .collect();
    for id in &ids {
        if let Some(conn) = edge.held.get(id) {
            conn.close(CloseReason::Revoked);
        }
    }
    ids.len()
}

/// Follows the revocations bucket until `shutdown`: remembers every live revocation (a
/// connection presenting a revoked credential is refused even if the sidecar allows it) and
/// closes the live connections opened with each new one.
pub(crate) async fn follow_revocations(
    edge: Arc<EdgeInner>,
    state: Arc<dyn bus::kv::StateStore>,
    codec: bus::records::RecordCodec,
    on_current: bus::cluster_state::CaughtUp,
    shutdown: CancellationToken,
) {
    bus::cluster_state::follow_revocations(
        state.as_ref(),
        codec,
        &shutdown,
        on_current,
        |hash, expires| {
            edge.revoked.insert(hash, expires);
            let closed = revoke(&edge, hash);
            tracing::info!(closed, "revocation applied");
        },
    )
    .await;
}

/// Re-checks every authorized live connection each `every`; denied ones are closed as revoked.
/// Also closes, every second, connections whose credential expired.
pub(crate) async fn recheck(edge: Arc<EdgeInner>, every: Duration, shutdown: CancellationToken) {
    // Expiry is checked on its own clock: a long re-check round must not delay it.
    tokio::spawn({
        let (edge, shutdown) = (edge.clone(), shutdown.clone());
        async move {
            let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sweep.tick() => expire(&edge),
                }
            }
        }
    });
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(checker) = edge.authz.as_ref() else {
            return;
        };
        let live: Vec<(u64, CheckRequest)> = edge
            .authorized
            .iter()
            .map(|e| (*e.key(), e.value().request.clone()))
            .collect();
        for (id, req) in live {
            let Ok(Ok(resp)) = tokio::time::timeout(CHECK_TIMEOUT, checker.check(req)).await else {
                continue;
            };
            // A re-check may extend (or shorten) the credential's life.
            if resp.decision == Decision::Allow as i32
                && let Some(a) = edge.authorized.get(&id)
            {
                a.expires_at
                    .store(resp.expires_at, std::sync::atomic::Ordering::Release);
            }
            if resp.decision == Decision::Deny as i32
                && let Some(conn) = edge.held.get(&id)
            {
                conn.close(CloseReason::Revoked);
            }
        }
    }
}

/// A client for a separate sidecar (`gripmesh edge --authz URL`), over a plain hyper HTTP/2
/// client (no tonic transport needed).
pub struct GrpcAuthz {
    client: proto::v1::authorization_client::AuthorizationClient<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            tonic::body::Body,
        >,
    >,
}

impl GrpcAuthz {
    /// A client for `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<GrpcAuthz, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("{url}: expected http://host:port"));
        }
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build(connector);
        Ok(GrpcAuthz {
            client: proto::v1::authorization_client::AuthorizationClient::with_origin(http, uri),
        })
    }
}

impl AuthzCheck for GrpcAuthz {
    fn check(&self, req: CheckRequest) -> BoxFuture<'_, Result<CheckResponse, String>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            client
                .check(req)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("sidecar: {}", s.message()))
        })
    }
}
