//! Following the route table that control broadcasts over the bus.

use arc_swap::ArcSwap;
use bus::Bus;
use routes::RouteTable;
use runtime::Health;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Readiness condition name used while no table has arrived yet.
pub const READY_CONDITION: &str = "routes";

/// Applies every newer snapshot from `gripmesh.routes` to `table` until `shutdown`. Until the
/// first one arrives the edge is not ready; it asks control for the current table every two
/// seconds meanwhile.
pub async fn follow(
    bus: Arc<dyn Bus>,
    table: Arc<ArcSwap<RouteTable>>,
    health: Health,
    shutdown: CancellationToken,
) {
    health.set_not_ready(READY_CONDITION, "waiting for the route table from control");
    let version_gauge = metrics::gauge!("gripmesh_edge_routes_version");
    let mut version: Option<u64> = None;
    loop {
        let mut sub = match bus.subscribe(bus::payload::ROUTES_SUBJECT.into()).await {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(error = %err, "cannot subscribe to route broadcasts yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut ask = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ask.tick(), if version.is_none() => {
                    let _ = bus
                        .publish(bus::payload::ROUTES_REQUEST_SUBJECT.into(), bytes::Bytes::new())
                        .await;
                }
                msg = sub.next() => {
                    let Some(payload) = msg else { break };
                    let (v, text) = match bus::payload::decode_routes(payload) {
                        Ok(x) => x,
                        Err(err) => {
                            tracing::warn!(error = %err, "ignoring an undecodable route broadcast");
                            continue;
                        }
                    };
                    if version.is_some_and(|cur| v <= cur) {
                        continue;
                    }
                    match RouteTable::parse(&text) {
                        Ok(new) => {
                            tracing::info!(version = v, routes = new.routes().len(), "route table applied");
                            table.store(Arc::new(new));
                            version = Some(v);
                            #[allow(clippy::cast_precision_loss)]
                            version_gauge.set(v as f64);
                            health.set_ready(READY_CONDITION);
                        }
                        Err(err) => {
                            // Control validates before broadcasting; this means a version skew.
                            tracing::error!(version = v, line = err.line, reason = %err.reason, "route broadcast rejected");
                            metrics::counter!("gripmesh_edge_routes_reload_errors_total").increment(1);
                        }
                    }
                }
            }
        }
    }
}
