//! The building blocks the tiers' wiring shares: the edge's and control's configuration from
//! their flags, the edge on its bound client listener, and the per-key count buckets.

use crate::cli::{ClientLimitFlags, EdgeFlags, KeyLimitFlags, PublishFlags, UsageFlags};
use crate::common::{self, Backend, Fatal};
use arc_swap::ArcSwap;
use control::ControlConfig;
use edge::{Edge, EdgeConfig};
use std::sync::Arc;
use std::time::Duration;

/// The edge's configuration from its flags (standalone and edge), with the client
/// listener's TLS (certificate files to watch, and the shared config the listener uses).
pub(super) fn edge_setup(
    flags: &EdgeFlags,
    limits: &ClientLimitFlags,
    forward_headers: &str,
    keys: &KeyLimitFlags,
) -> Result<(common::EdgeTls, EdgeConfig), Fatal> {
    let tls = common::edge_tls(flags)?;
    let mut config = common::edge_config(flags, limits)?;
    config.server.tls = tls.as_ref().map(|(_, shared)| shared.clone());
    config.forward_headers = common::forward_headers(forward_headers)?;
    config.key_limits = common::key_limits(keys)?;
    Ok((tls, config))
}

/// Binds the client listener and makes the edge on it (its node id, for usage records,
/// names the listener's port).
pub(super) async fn start_edge(
    mut config: EdgeConfig,
    listen: std::net::SocketAddr,
    usage: &UsageFlags,
    backend: &Backend,
    table: Arc<ArcSwap<routes::RouteTable>>,
    checker: Option<Arc<dyn edge::authz::AuthzCheck>>,
) -> Result<(Edge, tokio::net::TcpListener), Fatal> {
    let listener = common::listen("--listen", "edge", listen).await?;
    let node_id = crate::usage::node_id(usage.node_id.as_deref(), &listener);
    config.usage = crate::usage::edge_config(usage, node_id);
    let edge = Edge::new(config, backend.bus.clone(), table, checker)
        .map_err(|e| Fatal::Runtime(e.to_string()))?;
    Ok((edge, listener))
}

/// Control's configuration from its flags (standalone and control).
pub(super) fn control_config(
    auth: control::PublishAuth,
    publish: &PublishFlags,
    limits: &ClientLimitFlags,
    history: Option<control::ControlHistory>,
) -> Result<ControlConfig, Fatal> {
    Ok(ControlConfig {
        auth,
        max_body: publish.publish_max_body,
        max_channel_length: common::max_channel_length(limits)?,
        server: common::server_options(limits, 16 * 1024, None)?,
        history,
    })
}

/// Creates the per-key count buckets now when the store answers (standalone and demo, whose
/// embedded edge then opens them at once); otherwise `run_control_stores` keeps trying.
pub(crate) async fn prepare_key_buckets(backend: &Backend, replicas: usize) {
    let prepared = tokio::time::timeout(
        Duration::from_secs(2),
        bus::key_state::prepare(backend.state.as_ref(), replicas.max(1)),
    )
    .await;
    if !matches!(prepared, Ok(Ok(()))) {
        tracing::debug!("per-key count buckets not available yet");
    }
}
