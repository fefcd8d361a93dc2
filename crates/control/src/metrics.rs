//! Every control metric, declared once (docs/protocol.md, "Metrics").

use metrics::Counter;

/// Every `reason` of `gripmesh_control_publish_rejected_total` (one per kind of
/// [`crate::error::ApiError`]), each created at 0 at start.
pub(crate) const REJECT_REASONS: &[&str] = &[
    "unauthorized",
    "too_large",
    "bad_request",
    "not_acceptable",
    "not_json",
    "invalid_format",
    "invalid_item",
    "invalid_channel",
    "body_timeout",
    "cross_site",
    "host",
    "bus_unavailable",
    "history_unavailable",
    "queue_full",
    "not_found",
    "method_not_allowed",
    "invalid_routes",
    "routes_file_managed",
    "route_store_unavailable",
];

/// Handles created once at start.
pub(crate) struct ControlMetrics {
    /// `gripmesh_control_publish_items_total{api="http"}`.
    pub items_http: Counter,
}

impl ControlMetrics {
    /// Describes the metrics and creates the handles.
    pub(crate) fn new() -> ControlMetrics {
        metrics::describe_counter!(
            "gripmesh_control_publish_items_total",
            "Items accepted for publishing, by API."
        );
        metrics::describe_counter!(
            "gripmesh_control_publish_rejected_total",
            "Publish requests rejected, by reason."
        );
        metrics::describe_gauge!(
            "gripmesh_control_routes_version",
            "Version of the route table control serves."
        );
        // Every series this tier can produce exists from the start, at 0 (Prometheus
        // practice: rate() and absence alerts misbehave on series that appear late).
        metrics::counter!("gripmesh_control_publish_items_total", "api" => "grpc").absolute(0);
        for reason in REJECT_REASONS {
            metrics::counter!("gripmesh_control_publish_rejected_total", "reason" => *reason)
                .absolute(0);
        }
        bus::records::Refused::declare_metrics(&[
            bus::cluster_state::ROUTES_BUCKET,
            bus::cluster_state::REVOCATIONS_BUCKET,
        ]);
        ControlMetrics {
            items_http: metrics::counter!("gripmesh_control_publish_items_total", "api" => "http"),
        }
    }

    /// Sets `gripmesh_control_routes_version`.
    pub(crate) fn set_routes_version(version: u64) {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("gripmesh_control_routes_version").set(version as f64);
    }

    /// Keeps `gripmesh_control_routes_version` at the store's version until `shutdown`.
    pub(crate) async fn track_routes_version(
        store: crate::RouteStore,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut changes = store.watch();
        loop {
            Self::set_routes_version(changes.borrow_and_update().version);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Counts a refused request (`reason` is one of [`REJECT_REASONS`]); called
    /// only by [`crate::error::ApiError`]'s conversions.
    pub(crate) fn rejected(reason: &'static str) {
        metrics::counter!("gripmesh_control_publish_rejected_total", "reason" => reason)
            .increment(1);
    }
}
