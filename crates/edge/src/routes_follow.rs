//! Following the cluster's route table in the `gripmesh_routes` bucket (edges without
//! `--routes`).

use arc_swap::ArcSwap;
use bus::cluster_state::{RoutesBucket, routes_bucket};
use bus::kv::StateStore;
use bus::records::RecordCodec;
use routes::RouteTable;
use runtime::Health;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Readiness condition name used while no table has arrived yet.
pub const READY_CONDITION: &str = "routes";

/// Applies the bucket's table and every later one to `table` until `shutdown`. Until the
/// first one is in the edge is not ready. The bucket may not exist until control has started;
/// a broken watch resumes from the last revision seen.
pub async fn follow(
    state: Arc<dyn StateStore>,
    codec: RecordCodec,
    table: Arc<ArcSwap<RouteTable>>,
    health: Health,
    shutdown: CancellationToken,
) {
    health.set_not_ready(
        READY_CONDITION,
        "waiting for the route table (bucket gripmesh_routes)",
    );
    let version_gauge = metrics::gauge!("gripmesh_edge_routes_version");
    let Some(kv) =
        bus::kv::open_retrying(state.as_ref(), &routes_bucket(1), false, &shutdown).await
    else {
        return;
    };
    RoutesBucket::new(kv, codec)
        .follow(&shutdown, |stored| match RouteTable::parse(&stored.text) {
            Ok(new) => {
                tracing::info!(version = stored.revision, routes = new.routes().len(), "route table applied");
                table.store(Arc::new(new));
                #[allow(clippy::cast_precision_loss)]
                version_gauge.set(stored.revision as f64);
                health.set_ready(READY_CONDITION);
            }
            Err(err) => {
                // Control validates before writing; this means a version skew.
                tracing::error!(version = stored.revision, line = err.line, reason = %err.reason, "stored route table rejected");
                metrics::counter!("gripmesh_edge_routes_reload_errors_total").increment(1);
            }
        })
        .await;
}
