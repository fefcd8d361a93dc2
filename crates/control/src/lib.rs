//! The control tier: the Pushpin-compatible HTTP publish API.
//!
//! Control validates each publish batch whole, encodes every item once, stamps the accept time
//! and publishes it on its channel's bus subject; edges do the rest.

mod auth;
mod metrics;
mod publish;

pub use auth::PublishAuth;

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
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            auth: PublishAuth::Open,
            max_body: 1_000_000,
        }
    }
}

/// The control tier. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    config: ControlConfig,
    bus: Arc<dyn Bus>,
    metrics: metrics::ControlMetrics,
}

impl Control {
    /// A control plane publishing on `bus`.
    pub fn new(config: ControlConfig, bus: Arc<dyn Bus>) -> Control {
        Control {
            inner: Arc::new(Inner {
                config,
                bus,
                metrics: metrics::ControlMetrics::new(),
            }),
        }
    }

    /// Serves the HTTP publish API on `listener` until `shutdown` is cancelled.
    pub async fn serve_publish(&self, listener: TcpListener, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        runtime::server::serve(
            listener,
            runtime::server::ServerOptions::default(),
            shutdown,
            move |req, _peer| publish::handle(inner.clone(), req),
        )
        .await;
    }
}
