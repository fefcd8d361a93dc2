//! The control tier: the Pushpin-compatible HTTP publish API.
//!
//! Control validates each publish batch whole, encodes every item once, stamps the accept time
//! and publishes it on its channel's bus subject; edges do the rest.

mod auth;
mod browser;
mod error;
mod grpc;
mod http_api;
mod items;
mod metrics;
mod outbox;
mod publish;
mod revoke;
pub mod routes;
pub mod webhook;

pub use auth::PublishAuth;
pub use revoke::RevocationStore;
pub use routes::{PutError, RouteStore, RoutesSource, RoutesVersion};

use bus::Bus;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Control settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Who may publish.
    pub auth: PublishAuth,
    /// Largest publish request body in bytes; larger ⇒ 413.
    pub max_body: usize,
    /// Longest channel name in bytes; a batch with a longer one ⇒ 400 `Invalid channel.`.
    pub max_channel_length: usize,
    /// Client connection options of the HTTP publish listener (header and body timeouts).
    pub server: runtime::server::ServerOptions,
    /// Channel history (`--history`): `None` ⇒ no channel keeps history.
    pub history: Option<ControlHistory>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            auth: PublishAuth::Open,
            max_body: 1_000_000,
            max_channel_length: 512,
            server: runtime::server::ServerOptions::default(),
            history: None,
        }
    }
}

/// Which channels keep history, and where it is stored.
#[derive(Clone)]
pub struct ControlHistory {
    /// `--history` rules.
    pub policy: bus::history::HistoryPolicy,
    /// The store (JetStream in a cluster, memory in standalone).
    pub store: Arc<dyn bus::history::HistoryStore>,
}

impl std::fmt::Debug for ControlHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHistory")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The control tier. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ControlConfig,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) metrics: metrics::ControlMetrics,
    pub(crate) routes: RouteStore,
    pub(crate) revocations: RevocationStore,
    /// Live publishes on their way to the bus.
    pub(crate) outbox: outbox::Outbox,
}

impl Control {
    /// A control plane publishing on `bus`, owning the route table in `routes` and writing
    /// revocations to `revocations`. Call within a Tokio runtime: it starts the task that
    /// puts queued publishes on the bus.
    pub fn new(
        config: ControlConfig,
        bus: Arc<dyn Bus>,
        routes: RouteStore,
        revocations: RevocationStore,
    ) -> Control {
        // Right away, so the first scrape has it ([`Control::track_routes_version`] follows).
        metrics::ControlMetrics::set_routes_version(routes.latest().version);
        Control {
            inner: Arc::new(Inner {
                config,
                outbox: outbox::Outbox::start(bus.clone()),
                bus,
                metrics: metrics::ControlMetrics::new(),
                routes,
                revocations,
            }),
        }
    }

    /// The route store.
    pub fn routes(&self) -> &RouteStore {
        &self.inner.routes
    }

    /// Keeps `gripmesh_control_routes_version` in step with the route table until `shutdown`
    /// (every tier that runs control, standalone included).
    pub async fn track_routes_version(&self, shutdown: CancellationToken) {
        metrics::ControlMetrics::track_routes_version(self.inner.routes.clone(), shutdown).await;
    }

    /// Serves the gRPC API (`gripmesh.v1.Publisher`, `gripmesh.v1.RouteService`) on `listener`
    /// until `shutdown` is cancelled; open `PublishStream` and `Watch` calls are ended then so
    /// the server can drain.
    pub async fn serve_grpc(&self, listener: TcpListener, shutdown: CancellationToken) {
        grpc::serve(self.inner.clone(), listener, shutdown).await;
    }

    /// Serves the HTTP publish API on `listener` until `shutdown` is cancelled. Browser
    /// cross-site requests are refused; while unauthenticated on a loopback address it answers
    /// only loopback `Host` names (DNS rebinding).
    pub async fn serve_publish(&self, listener: TcpListener, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        let loopback_only = !inner.config.auth.is_authenticated()
            && listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        runtime::server::serve(
            listener,
            self.inner.config.server.clone(),
            shutdown,
            move |req, _peer| http_api::handle(inner.clone(), req, loopback_only),
        )
        .await;
    }
}
