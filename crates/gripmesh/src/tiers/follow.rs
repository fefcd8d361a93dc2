//! What an edge (and the sidecar) follows in the background: revocations, per-key counts,
//! cluster-wide commands, periodic authz re-checks, and the loss of the bus.

use crate::common::Backend;
use edge::Edge;
use runtime::Health;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Revocations for the edge (close live connections, refuse revoked credentials) and the
/// sidecar (drop cached decisions, refuse without asking the gateway), and periodic re-checks
/// of authorized connections.
pub(crate) fn spawn_authz_tasks(
    edge: &Edge,
    authorizer: Option<&authz::Authorizer>,
    backend: &Backend,
    health: &Health,
    recheck_secs: u64,
    shutdown: &CancellationToken,
) {
    let caught_up = revocations_condition(health);
    tokio::spawn({
        let (edge, state, codec, stop) = (
            edge.clone(),
            backend.state.clone(),
            backend.codec.clone(),
            shutdown.clone(),
        );
        async move { edge.follow_revocations(state, codec, caught_up, stop).await }
    });
    // Per-key limits counted across the cluster (the key buckets); not ready until the other
    // edges' counts are known.
    health.set_not_ready("key-limits", "loading per-key counts");
    let counted = {
        let health = health.clone();
        bus::cluster_state::CaughtUp::new(move || health.set_ready("key-limits"))
    };
    tokio::spawn({
        let (edge, state, codec, stop) = (
            edge.clone(),
            backend.state.clone(),
            backend.codec.clone(),
            shutdown.clone(),
        );
        async move { edge.follow_key_limits(state, codec, counted, stop).await }
    });
    // Cluster-wide `recover` and `refresh` commands (not an authz matter, but every edge runs
    // these tasks).
    tokio::spawn({
        let (edge, bus, stop) = (edge.clone(), backend.bus.clone(), shutdown.clone());
        async move { edge.follow_commands(bus, stop).await }
    });
    if let Some(a) = authorizer {
        spawn_sidecar_revocations(a, backend, health, shutdown);
    }
    tokio::spawn({
        let (edge, stop) = (edge.clone(), shutdown.clone());
        let every = Duration::from_secs(recheck_secs.max(1));
        async move { edge.recheck_authz(every, stop).await }
    });
}

/// Closes the edge's held connections after `--bus-loss-close` seconds without NATS (0: never).
pub(crate) fn spawn_bus_loss_close(
    edge: &Edge,
    bus: &Arc<dyn bus::Bus>,
    secs: u64,
    shutdown: &CancellationToken,
) {
    if secs == 0 {
        return;
    }
    let (edge, state, stop) = (edge.clone(), bus.state(), shutdown.clone());
    tokio::spawn(async move { edge.close_on_bus_loss(state, stop).await });
}

/// The sidecar follows the revocations bucket.
pub(crate) fn spawn_sidecar_revocations(
    authorizer: &authz::Authorizer,
    backend: &Backend,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let caught_up = revocations_condition(health);
    let (a, state, codec, stop) = (
        authorizer.clone(),
        backend.state.clone(),
        backend.codec.clone(),
        shutdown.clone(),
    );
    tokio::spawn(async move { a.follow_revocations(state, codec, caught_up, stop).await });
}

/// The `revocations` readiness condition: not ready until the revocations that exist are
/// known, so a restarted edge or sidecar never lets a revoked credential through meanwhile.
fn revocations_condition(health: &Health) -> bus::cluster_state::CaughtUp {
    health.set_not_ready("revocations", "loading revocations");
    let health = health.clone();
    bus::cluster_state::CaughtUp::new(move || health.set_ready("revocations"))
}
