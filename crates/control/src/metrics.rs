//! Every control metric, declared once (SPEC §8).

use metrics::Counter;

/// Handles created once at start.
pub struct ControlMetrics {
    /// `gripmesh_control_publish_items_total{api="http"}`.
    pub items_http: Counter,
}

impl ControlMetrics {
    /// Describes the metrics and creates the handles.
    pub fn new() -> ControlMetrics {
        metrics::describe_counter!(
            "gripmesh_control_publish_items_total",
            "Items accepted for publishing, by API."
        );
        metrics::describe_counter!(
            "gripmesh_control_publish_rejected_total",
            "Publish requests rejected, by reason."
        );
        ControlMetrics {
            items_http: metrics::counter!("gripmesh_control_publish_items_total", "api" => "http"),
        }
    }

    /// Counts a rejected publish request.
    pub fn rejected(reason: &'static str) {
        metrics::counter!("gripmesh_control_publish_rejected_total", "reason" => reason)
            .increment(1);
    }
}
