//! The auth sidecar: asks the upstream API gateway whether a client may connect
//! (forward-auth), caches the answer, coalesces concurrent checks for one credential, stops
//! calling a failing gateway for a while (circuit breaker), and forgets revoked credentials.
//!
//! [`Authorizer::check`] is the whole decision; [`serve`] exposes it as
//! `gripmesh.v1.Authorization/Check`. Standalone embeds an [`Authorizer`] directly.

mod breaker;
mod cache;
pub mod credential;
mod error;
mod gateway;
pub mod limits;
mod metrics;

use breaker::Breaker;
use bus::cluster_state::{CaughtUp, RevocationSet};
use cache::DecisionCache;
use dashmap::DashMap;
use error::Refusal;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use proto::v1::{AuthzHeader, CheckRequest, CheckResponse, Decision};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use gateway::GatewayError;

/// Sidecar settings.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    /// Gateway base URL: the client's path and query are appended (`https://api.example/auth`).
    pub gateway: String,
    /// Where credentials are read from, in order.
    pub sources: Vec<credential::Source>,
    /// Gateway response headers copied onto the origin request on allow (lower case).
    pub forward_headers: Vec<String>,
    /// How long an allow is cached.
    pub allow_ttl: Duration,
    /// How long a deny is cached.
    pub deny_ttl: Duration,
    /// Time allowed for one gateway call.
    pub gateway_timeout: Duration,
    /// Consecutive gateway errors that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails checks without calling the gateway.
    pub breaker_cooldown: Duration,
    /// Cached decisions at most (`--authz-cache-entries`).
    pub cache_entries: usize,
    /// Bytes of cached decisions at most (`--authz-cache-bytes`), bookkeeping included.
    pub cache_bytes: usize,
}

impl AuthzConfig {
    /// Defaults (docs/protocol.md, "Auth sidecar") for a gateway URL.
    pub fn new(gateway: impl Into<String>) -> AuthzConfig {
        AuthzConfig {
            gateway: gateway.into(),
            sources: credential::default_sources(),
            forward_headers: ["x-developer-app", "x-api-product", "x-auth-subject"]
                .map(String::from)
                .to_vec(),
            allow_ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(10),
            gateway_timeout: Duration::from_secs(5),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(10),
            cache_entries: 100_000,
            cache_bytes: 64 << 20,
        }
    }
}

/// What the gateway said, in a form that can be shared by coalesced callers and cached.
#[derive(Debug, Clone)]
enum Outcome {
    Allow {
        headers: Vec<(String, String)>,
        /// Per-key limits and expiry from the gateway (and a JWT credential's `exp`).
        limits: limits::Limits,
    },
    /// Denied or undecided; only the gateway's own denies are cached.
    Refused(Refusal),
}

impl Outcome {
    /// Bytes this outcome holds (for the cache's byte bound).
    fn weight(&self) -> usize {
        match self {
            Outcome::Allow { headers, .. } => header_weight(headers),
            Outcome::Refused(refusal) => refusal.weight(),
        }
    }

    /// The `decision` label of `gripmesh_authz_checks_total`.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Allow { .. } => "allow",
            Outcome::Refused(refusal) => refusal.decision(),
        }
    }
}

/// Bytes a list of headers holds in the cache, bookkeeping included.
fn header_weight(headers: &[(String, String)]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 48).sum()
}

/// Headers as the `CheckResponse` carries them.
fn header_pairs(headers: &[(String, String)]) -> Vec<AuthzHeader> {
    headers
        .iter()
        .map(|(name, value)| AuthzHeader {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

type InFlight = Shared<BoxFuture<'static, Outcome>>;

/// The decision engine. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthzConfig,
    gateway: gateway::Gateway,
    cache: DecisionCache,
    /// Gateway calls in flight, by decision key (concurrent identical checks share one).
    inflight: DashMap<cache::Key, InFlight>,
    /// Bumped by every revocation: a gateway answer that started before one is not cached,
    /// so a decision in flight while its credential is revoked cannot outlive the revocation.
    revocations: AtomicU64,
    breaker: Breaker,
    metrics: metrics::AuthzMetrics,
    /// Credentials revoked and not yet lapsed: refused without asking the gateway.
    revoked: RevocationSet,
}

/// A configuration the sidecar cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Authorizer {
    /// Builds the sidecar; fails on an unusable gateway URL.
    pub fn new(config: AuthzConfig) -> Result<Authorizer, ConfigError> {
        let gateway = gateway::Gateway::new(&config.gateway, config.gateway_timeout)
            .map_err(|e| ConfigError(format!("--gateway {}: {e}", config.gateway)))?;
        Ok(Authorizer {
            inner: Arc::new(Inner {
                breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
                cache: DecisionCache::new(cache::Bounds {
                    entries: config.cache_entries,
                    bytes: config.cache_bytes,
                }),
                config,
                gateway,
                inflight: DashMap::new(),
                revocations: AtomicU64::new(0),
                metrics: metrics::AuthzMetrics::new(),
                revoked: RevocationSet::new(),
            }),
        })
    }

    /// Decides one request.
    pub async fn check(&self, req: CheckRequest) -> CheckResponse {
        let inner = &self.inner;
        let presented = credential::presented(&inner.config.sources, &req.query, &req.headers);
        let hashes = credential::hashes(&presented);
        // Reused only for exactly what the gateway decided on: route, method, path, query and
        // every credential presented (docs/protocol.md, "Auth sidecar").
        let key = credential::decision_key(&inner.config.sources, &req, &presented);
        if hashes.iter().any(|h| inner.revoked.contains(h)) {
            // Revoked at the cluster: refused for the revocation's TTL, whatever the gateway
            // would say (it may take a while to propagate its own revocation).
            return self.answer(&Outcome::Refused(Refusal::Revoked), hashes, false);
        }
        if let Some(outcome) = inner.cache.get(&key, Instant::now()) {
            return self.answer(&outcome, hashes, true);
        }
        let revocations_before = inner.revocations.load(Ordering::Acquire);
        let fut = inner
            .inflight
            .entry(key)
            .or_insert_with(|| {
                let this = self.clone();
                let forwarded = forwarded_headers(&inner.config.sources, &req);
                let path_and_query = if req.query.is_empty() {
                    req.path.clone()
                } else {
                    format!("{}?{}", req.path, req.query)
                };
                async move { this.ask_gateway(path_and_query, forwarded).await }
                    .boxed()
                    .shared()
            })
            .clone();
        let mut outcome = fut.clone().await;
        // Whoever finishes first retires the flight; later callers start a new one only
        // after the cache entry below expires.
        inner.inflight.remove_if(&key, |_, f| f.ptr_eq(&fut));
        if let Outcome::Allow { limits, .. } = &mut outcome {
            // A Bearer JWT credential expires at its `exp` (the gateway verified it).
            for p in &presented {
                limits.expire_by(limits::bearer_jwt_exp(&p.value));
            }
        }
        let ttl = match &outcome {
            Outcome::Allow { .. } => Some(inner.config.allow_ttl),
            Outcome::Refused(Refusal::Denied { .. }) => Some(inner.config.deny_ttl),
            Outcome::Refused(_) => None,
        };
        // A cached allow never outlives the credential's expiry.
        let ttl = match (&outcome, ttl) {
            (
                Outcome::Allow {
                    limits:
                        limits::Limits {
                            expires_at: Some(at),
                            ..
                        },
                    ..
                },
                Some(t),
            ) => Some(t.min(Duration::from_secs(at.saturating_sub(unix_now())))),
            (_, t) => t,
        };
        let now = Instant::now();
        if let Some(expires) = ttl
            .filter(|t| !t.is_zero())
            .and_then(|t| now.checked_add(t))
            && inner.revocations.load(Ordering::Acquire) == revocations_before
        {
            let size = inner
                .cache
                .insert(key, outcome.clone(), hashes.clone(), expires, now);
            inner.metrics.cache_size(size.entries, size.bytes);
        }
        self.answer(&outcome, hashes, false)
    }

    async fn ask_gateway(&self, path_and_query: String, headers: Vec<(String, String)>) -> Outcome {
        let inner = &self.inner;
        if !inner.breaker.allow() {
            return Outcome::Refused(Refusal::CircuitOpen);
        }
        let started = Instant::now();
        let result = inner.gateway.check(&path_and_query, &headers).await;
        inner
            .metrics
            .gateway_duration(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(reply) if (200..300).contains(&reply.status) => Outcome::Allow {
                limits: limits::Limits::from_headers(&reply.headers),
                // Every configured name is listed; an empty value tells the edge to remove a
                // client-sent copy, so clients cannot forge these headers.
                headers: inner
                    .config
                    .forward_headers
                    .iter()
                    .map(|f| {
                        let value = reply
                            .headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(f))
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        (f.clone(), value)
                    })
                    .collect(),
            },
            Ok(reply) if matches!(reply.status, 401 | 403 | 429) => {
                Outcome::Refused(Refusal::Denied {
                    status: reply.status,
                    headers: reply.headers,
                    body: reply.body,
                })
            }
            Ok(reply) => Outcome::Refused(Refusal::GatewayStatus(reply.status)),
            Err(err) => Outcome::Refused(err.into()),
        };
        let failed = matches!(&outcome, Outcome::Refused(r) if r.is_failure());
        inner.breaker.record(!failed);
        if let (true, Outcome::Refused(reason)) = (failed, &outcome) {
            tracing::warn!(%reason, "gateway check failed");
        }
        outcome
    }

    /// The one answer to a check, counted once in `gripmesh_authz_checks_total`: an allow
    /// here, a refusal through [`Refusal::write`].
    fn answer(&self, outcome: &Outcome, hashes: Vec<String>, cached: bool) -> CheckResponse {
        self.inner.metrics.check(outcome.label(), cached);
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let mut resp = CheckResponse {
            credential_hash: hashes.first().cloned().unwrap_or_default(),
            credential_hashes: hashes,
            cached,
            ..Default::default()
        };
        match outcome {
            Outcome::Allow { headers, limits } => {
                resp.decision = Decision::Allow as i32;
                resp.allow_headers = header_pairs(headers);
                resp.cache_ttl_seconds = secs(self.inner.config.allow_ttl);
                resp.max_connections = limits.max_connections.unwrap_or(0);
                if let Some((n, period)) = limits.message_quota {
                    resp.message_quota = n;
                    resp.quota_period_seconds = period;
                }
                resp.expires_at = limits.expires_at.unwrap_or(0);
            }
            Outcome::Refused(refusal) => {
                refusal.write(&mut resp, secs(self.inner.config.deny_ttl));
            }
        }
        resp
    }

    /// Forgets every cached decision made for a request that presented the credential (in
    /// any source, alongside any other); returns how many were dropped.
    pub fn revoke(&self, credential_hash: &str) -> usize {
        self.inner.revocations.fetch_add(1, Ordering::AcqRel);
        let (dropped, size) = self.inner.cache.revoke(credential_hash);
        self.inner.metrics.cache_size(size.entries, size.bytes);
        self.inner.metrics.revoked();
        dropped
    }

    /// Follows the revocations bucket in `state` until `shutdown`: every live revocation
    /// (also those made before this sidecar started) is refused until it lapses, and its
    /// cached decisions are dropped. `on_current` runs once the revocations that existed at
    /// the start are known (readiness waits for it).
    pub async fn follow_revocations(
        &self,
        state: Arc<dyn bus::kv::StateStore>,
        codec: bus::records::RecordCodec,
        on_current: CaughtUp,
        shutdown: CancellationToken,
    ) {
        bus::cluster_state::follow_revocations(
            state.as_ref(),
            codec,
            &shutdown,
            on_current,
            |hash, expires| {
                self.inner.revoked.insert(hash, expires);
                let dropped = self.revoke(hash);
                tracing::info!(dropped, "revocation applied");
            },
        )
        .await;
    }
}

/// Headers the gateway gets: those of the request named by a header credential source, plus
/// `User-Agent` and `X-Request-Id` for its analytics, and `X-Forwarded-For` set to the real
/// client address alone. A client-sent `X-Forwarded-For` is dropped (Pushpin's
/// `x_forwarded_for=truncate:0,append`): the gateway's IP allow-lists and rate limits must see
/// the address the edge saw, whichever entry they read.
fn forwarded_headers(sources: &[credential::Source], req: &CheckRequest) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|h| {
            let n = h.name.to_ascii_lowercase();
            n == "user-agent"
                || n == "x-request-id"
                || sources
                    .iter()
                    .any(|s| matches!(s, credential::Source::Header(name) if *name == n))
        })
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    if let Some(ip) = client_ip(&req.client_addr) {
        out.push(("X-Forwarded-For".into(), ip.to_string()));
    }
    out
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The IP of an `ip:port` (or bare IP) client address.
fn client_ip(addr: &str) -> Option<std::net::IpAddr> {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| addr.trim_matches(['[', ']']).parse())
        .ok()
}

/// Serves `gripmesh.v1.Authorization` on `listener` until `shutdown`.
pub async fn serve(authorizer: Authorizer, listener: TcpListener, shutdown: CancellationToken) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let svc = proto::v1::authorization_server::AuthorizationServer::new(Service(authorizer));
    let result = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(svc, incoming, shutdown.cancelled_owned())
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, "authz gRPC server failed");
    }
}

struct Service(Authorizer);

#[tonic::async_trait]
impl proto::v1::authorization_server::Authorization for Service {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            self.0.check(request.into_inner()).await,
        ))
    }
}
