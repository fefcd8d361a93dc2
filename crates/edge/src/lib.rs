//! The edge tier: holds client connections, proxies their first request to the origin, acts
//! on the origin's GRIP instructions, and fans published items out to held connections.
//!
//! An [`Edge`] takes its configuration, a [`bus::Bus`] and a shared route table; the caller
//! binds the listener and owns shutdown (see `gripmesh standalone`).

mod app_labels;
pub mod authz;
mod commands;
mod conn;
mod cors;
mod delivery;
mod error;
mod filtering;
mod gone;
mod headers;
mod hold;
mod http;
mod jsonp;
pub mod keys;
mod metrics;
mod origin;
mod proxy;
pub mod registry;
mod resume;
pub mod routes_follow;
mod sequencer;
mod test_origin;
pub mod usage;
mod ws;

use crate::conn::{CloseReason, ConnHandle};
use crate::metrics::EdgeMetrics;
use crate::origin::HttpClient;
use crate::registry::{RegistryConfig, SubscriberRegistry};
use arc_swap::ArcSwap;
use bus::Bus;
use dashmap::DashMap;
use grip::sig::SigKey;
use routes::RouteTable;
use runtime::server::ServerOptions;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Edge settings. Every field has a flag in the binary.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Key for the `Grip-Sig` sent to origins (default: Pushpin's `changeme`, so stock GRIP
    /// libraries recognise the edge as a GRIP proxy out of the box).
    pub sig_key: SigKey,
    /// `iss` claim of the `Grip-Sig`.
    pub sig_iss: String,
    /// Largest GRIP instruct body (non-stream hold body or grip-instruct JSON) read from an
    /// origin; larger ⇒ 502.
    pub max_instruct_body: usize,
    /// Channels one connection may subscribe; extra channels are ignored.
    pub max_channels_per_connection: usize,
    /// Largest WebSocket message (and frame) accepted from a client or origin; larger ⇒ 1009.
    pub max_ws_message_size: usize,
    /// Messages queued per connection before it counts as a slow consumer and is closed.
    pub send_queue_messages: usize,
    /// Payload bytes queued per connection before it counts as a slow consumer and is closed.
    pub send_queue_bytes: usize,
    /// Time allowed to connect (TCP + TLS) to an origin target.
    pub origin_connect_timeout: Duration,
    /// Time allowed for an origin to send its response head.
    pub origin_response_timeout: Duration,
    /// Client WebSocket messages waiting for an in-flight WebSocket-over-HTTP request, at
    /// most: at the bound the session stops reading the client (backpressure).
    pub ws_upstream_queue_messages: usize,
    /// Bytes of such messages, at most (one message may cross the bound).
    pub ws_upstream_queue_bytes: usize,
    /// Client connection options (header size limit, header read timeout).
    pub server: ServerOptions,
    /// Channel interest, de-dup and sequencing.
    pub registry: RegistryConfig,
    /// Held connections closed per second while draining.
    pub drain_rate: usize,
    /// Headers the auth sidecar sets from the gateway's answer (`--forward-headers`, lower
    /// case): client-sent copies are removed on every `authz` route, whatever the decision.
    pub forward_headers: Vec<::http::HeaderName>,
    /// Usage records and per-app metrics.
    pub usage: usage::UsageConfig,
    /// Per-key limits (`--key-max-connections`, `--key-message-quota`), for `authz` routes.
    pub key_limits: keys::KeyLimitsConfig,
    /// Channel history read on resumes (`None`: no history; `prev-id` behaves as in Pushpin).
    pub history: Option<EdgeHistory>,
    /// Held connections are closed after the bus was lost for this long (`--bus-loss-close`),
    /// so their clients reconnect to a healthy edge and resume there.
    pub bus_loss_close: Duration,
}

/// The history store as the edge reads it.
#[derive(Clone)]
pub struct EdgeHistory(pub Arc<dyn bus::history::HistoryStore>);

impl std::fmt::Debug for EdgeHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeHistory")
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            sig_key: SigKey::pushpin_default(),
            sig_iss: "pushpin".to_owned(),
            max_instruct_body: 100_000,
            max_channels_per_connection: 20,
            max_ws_message_size: 1 << 20,
            send_queue_messages: 1024,
            send_queue_bytes: 1 << 20,
            origin_connect_timeout: Duration::from_secs(5),
            origin_response_timeout: Duration::from_secs(60),
            ws_upstream_queue_messages: 256,
            ws_upstream_queue_bytes: 1 << 20,
            server: ServerOptions::default(),
            registry: RegistryConfig::default(),
            drain_rate: 10_000,
            forward_headers: ["x-developer-app", "x-api-product", "x-auth-subject"]
                .map(::http::HeaderName::from_static)
                .to_vec(),
            usage: usage::UsageConfig::default(),
            key_limits: keys::KeyLimitsConfig::default(),
            history: None,
            bus_loss_close: Duration::from_secs(10),
        }
    }
}

/// Failure to build an edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The TLS client configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Shared state of one edge.
pub(crate) struct EdgeInner {
    pub(crate) config: EdgeConfig,
    pub(crate) routes: Arc<ArcSwap<RouteTable>>,
    pub(crate) registry: SubscriberRegistry,
    pub(crate) origin: HttpClient,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) held: DashMap<u64, Arc<ConnHandle>>,
    pub(crate) next_conn_id: AtomicU64,
    /// The sidecar (or the embedded one), for routes with `authz`.
    pub(crate) authz: Option<Arc<dyn authz::AuthzCheck>>,
    /// Live connections that passed an authz check, by connection id.
    pub(crate) authorized: DashMap<u64, Arc<authz::Authorized>>,
    /// Usage meters, records and per-app metrics.
    pub(crate) usage: Arc<usage::UsageTracker>,
    /// Per-key connection and message counts.
    pub(crate) keys: keys::KeyTable,
    /// Bounds concurrent history reads (see [`resume::MAX_CONCURRENT_RESUMES`]).
    pub(crate) resumes: tokio::sync::Semaphore,
    /// WebSocket-over-HTTP connections by `Connection-Id` (for `refresh` commands).
    pub(crate) ws_by_cid: DashMap<String, Arc<ConnHandle>>,
    /// Gone-link requests in flight (drain waits for them).
    pub(crate) gone_tasks: tokio_util::task::TaskTracker,
    /// Bounds gone requests in flight (see [`gone::MAX_CONCURRENT_GONE`]).
    pub(crate) gone_permits: tokio::sync::Semaphore,
    /// Bounds WebSocket-over-HTTP requests in flight, per origin address (256 each, what the
    /// pool keeps per origin). One entry per origin address; idle ones are dropped past 1,024.
    pub(crate) ws_origin_permits: DashMap<runtime::client::Endpoint, Arc<tokio::sync::Semaphore>>,
    /// Credentials revoked and not yet lapsed (from the revocations bucket).
    pub(crate) revoked: bus::cluster_state::RevocationSet,
}

impl EdgeInner {
    /// The `Grip-Sig` for a request on `route` (route keys override the global ones).
    pub(crate) fn grip_sig(&self, route: &routes::Route) -> Option<::http::HeaderValue> {
        let iss = route.sig_iss.as_deref().unwrap_or(&self.config.sig_iss);
        match &route.sig_key {
            Some(raw) => match SigKey::parse(raw) {
                Ok(key) => origin::sign(iss, &key),
                Err(err) => {
                    tracing::warn!(route = %route.id, error = %err, "route sig_key unusable; no Grip-Sig sent");
                    None
                }
            },
            None => origin::sign(iss, &self.config.sig_key),
        }
    }
}

/// The edge tier. Cheap to clone.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

impl Edge {
    /// Builds an edge over `bus`, serving the routes in `routes` (which may be swapped at any
    /// time, e.g. by `runtime::routes_file::watch`).
    pub fn new(
        config: EdgeConfig,
        bus: Arc<dyn Bus>,
        routes: Arc<ArcSwap<RouteTable>>,
        authz: Option<Arc<dyn authz::AuthzCheck>>,
    ) -> Result<Edge, EdgeError> {
        let metrics = Arc::new(EdgeMetrics::new());
        let origin = HttpClient::new(
            config.origin_connect_timeout,
            config.origin_response_timeout,
        )?;
        let registry = SubscriberRegistry::new(
            bus,
            config.history.as_ref().map(|h| h.0.clone()),
            metrics.clone(),
            config.registry.clone(),
        );
        let usage = usage::UsageTracker::new(config.usage.clone());
        Ok(Edge {
            inner: Arc::new(EdgeInner {
                config,
                routes,
                registry,
                origin,
                metrics,
                held: DashMap::new(),
                next_conn_id: AtomicU64::new(1),
                authz,
                authorized: DashMap::new(),
                usage,
                keys: keys::KeyTable::default(),
                resumes: tokio::sync::Semaphore::new(resume::MAX_CONCURRENT_RESUMES),
                ws_by_cid: DashMap::new(),
                gone_tasks: tokio_util::task::TaskTracker::new(),
                gone_permits: tokio::sync::Semaphore::new(gone::MAX_CONCURRENT_GONE),
                ws_origin_permits: DashMap::new(),
                revoked: bus::cluster_state::RevocationSet::new(),
            }),
        })
    }

    /// Serves clients on `listener` until `shutdown` is cancelled; then stops accepting and
    /// returns once every connection has finished (call [`Edge::close_held`] to end holds).
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        runtime::server::serve(
            listener,
            self.inner.config.server.clone(),
            shutdown,
            move |req, peer| proxy::handle(inner.clone(), req, peer),
        )
        .await;
    }

    /// Follows the revocations bucket in `state` until `shutdown`: closes live connections
    /// opened with a newly revoked credential and refuses revoked credentials while their
    /// revocation lasts. `on_current` runs once the revocations made before it started are
    /// known.
    pub async fn follow_revocations(
        &self,
        state: Arc<dyn bus::kv::StateStore>,
        codec: bus::records::RecordCodec,
        on_current: bus::cluster_state::CaughtUp,
        shutdown: CancellationToken,
    ) {
        authz::follow_revocations(self.inner.clone(), state, codec, on_current, shutdown).await;
    }

    /// Counts per-key connections and deliveries cluster-wide through the key buckets in
    /// `state` (docs/protocol.md, "Key limits and usage"), until `shutdown`; before the buckets open, and without them, the
    /// counts are this edge's alone. `on_current` runs once the other edges' counts are known
    /// (or after a few seconds without the buckets).
    pub async fn follow_key_limits(
        &self,
        state: Arc<dyn bus::kv::StateStore>,
        codec: bus::records::RecordCodec,
        on_current: bus::cluster_state::CaughtUp,
        shutdown: CancellationToken,
    ) {
        self.inner
            .keys
            .run(state, codec, on_current, shutdown)
            .await;
    }

    /// Applies cluster-wide commands (`recover`, `refresh`) as they arrive on `bus`, until
    /// `shutdown`.
    pub async fn follow_commands(&self, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
        commands::follow(self.inner.clone(), bus, shutdown).await;
    }

    /// Re-checks authorized live connections every `every` until `shutdown`.
    pub async fn recheck_authz(&self, every: Duration, shutdown: CancellationToken) {
        authz::recheck(self.inner.clone(), every, shutdown).await;
    }

    /// The usage tracker: call [`usage::UsageTracker::records`] once to receive records, and
    /// run [`usage::UsageTracker::run`] for interim records and per-app metrics.
    pub fn usage(&self) -> &Arc<usage::UsageTracker> {
        &self.inner.usage
    }

    /// Closes held connections while the bus has been lost for longer than
    /// `--bus-loss-close` (WebSocket 1012, streams ended, as a drain does), at the drain rate,
    /// until the bus is back or `shutdown`. Their subscriptions are dead, and readiness already
    /// sends new clients elsewhere: closed clients reconnect to a healthy edge and resume there.
    pub async fn close_on_bus_loss(
        &self,
        mut state: tokio::sync::watch::Receiver<bus::BusState>,
        shutdown: CancellationToken,
    ) {
        let delay = self.inner.config.bus_loss_close;
        let batch = (self.inner.config.drain_rate / 10).max(1);
        let closed = ::metrics::counter!("gripmesh_edge_bus_loss_closes_total");
        loop {
            // Wait for a loss.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = state.wait_for(|s| *s == bus::BusState::Disconnected) => {
                    if r.is_err() { return; }
                }
            }
            // Give the bus `delay` to come back.
            let back = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(delay, state.wait_for(|s| *s == bus::BusState::Connected)) => r.is_ok(),
            };
            if back {
                continue;
            }
            tracing::warn!(
                held = self.inner.held.len(),
                after_secs = delay.as_secs(),
                "bus lost: closing held connections so their clients resume on a healthy edge"
            );
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while *state.borrow() == bus::BusState::Disconnected {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = state.changed() => continue,
                }
                closed.increment(self.close_some(batch) as u64);
            }
            tracing::info!("bus back: no longer closing held connections");
        }
    }

    /// Number of held connections.
    pub fn held_count(&self) -> usize {
        self.inner.held.len()
    }

    /// Waits until the gone-link requests of closed connections are sent (call after the
    /// connections ended; bound it with the drain deadline).
    pub async fn gone_sent(&self) {
        self.inner.gone_tasks.close();
        self.inner.gone_tasks.wait().await;
    }

    /// Closes every held connection (streams end cleanly, long-polls get their timeout
    /// response), at most `drain_rate` per second so clients don't reconnect all at once.
    pub async fn close_held(&self) {
        let batch = (self.inner.config.drain_rate / 10).max(1);
        // Until the last connection has ended: one that became held after a pass (it was
        // still being set up) is closed by the next.
        while !self.inner.held.is_empty() {
            self.close_some(batch);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks up to `batch` held connections that are not closing yet to close (as a drain
    /// does); returns how many it asked. Connections already closing are skipped, so each
    /// batch closes new ones even while earlier ones are still finishing their close.
    fn close_some(&self, batch: usize) -> usize {
        let mut n = 0;
        for conn in self.inner.held.iter() {
            if n >= batch {
                break;
            }
            if !conn.is_closing() && conn.close(CloseReason::Drain) {
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{ConnQueue, Transport};

    fn edge(drain_rate: usize) -> Edge {
        let config = EdgeConfig {
            drain_rate,
            ..EdgeConfig::default()
        };
        let bus: Arc<dyn Bus> = Arc::new(bus::MemoryBus::new());
        let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        Edge::new(config, bus, routes, None).expect("edge")
    }

    /// Held connections that, like clients slow to answer a close, stay held once asked.
    fn hold(edge: &Edge, n: u64) -> Vec<(Arc<ConnHandle>, ConnQueue)> {
        (0..n)
            .map(|id| {
                let (conn, queue) = ConnHandle::new(id, Transport::Ws, 8, 1 << 20);
                edge.inner.held.insert(id, conn.clone());
                (conn, queue)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_closes_a_new_batch_every_tick_while_earlier_ones_still_close() {
        let edge = edge(20); // 2 per 100 ms tick
        let held = hold(&edge, 6);
        let drain = tokio::spawn({
            let edge = edge.clone();
            async move { edge.close_held().await }
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        let closing = held.iter().filter(|(c, _)| c.is_closing()).count();
        assert_eq!(closing, 6, "three ticks of two, none asked twice");
        assert!(
            !drain.is_finished(),
            "the drain waits for the connections to end"
        );
        edge.inner.held.clear();
        tokio::time::timeout(Duration::from_secs(1), drain)
            .await
            .expect("the drain ends once nothing is held")
            .expect("drain task");
    }
}
