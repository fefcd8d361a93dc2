//! Bus metrics shared by every tier (docs/protocol.md, "Metrics").

use metrics::{Counter, Gauge};

/// `gripmesh_bus_connected` and `gripmesh_bus_reconnects_total`.
#[derive(Clone)]
pub struct BusMetrics {
    /// 1 while connected.
    pub connected: Gauge,
    /// Reconnections after the first connection.
    pub reconnects: Counter,
}

impl BusMetrics {
    /// Describes and registers the bus metrics.
    pub fn new() -> BusMetrics {
        metrics::describe_gauge!("gripmesh_bus_connected", "1 while the bus is connected.");
        metrics::describe_counter!(
            "gripmesh_bus_reconnects_total",
            "Bus reconnections after the first connection."
        );
        BusMetrics {
            connected: metrics::gauge!("gripmesh_bus_connected"),
            reconnects: metrics::counter!("gripmesh_bus_reconnects_total"),
        }
    }
}

impl Default for BusMetrics {
    fn default() -> Self {
        BusMetrics::new()
    }
}

/// `gripmesh_usage_publish_failures_total`: usage records JetStream did not acknowledge (each
/// is retried until it is stored).
pub fn usage_publish_failed(records: usize) {
    metrics::describe_counter!(
        "gripmesh_usage_publish_failures_total",
        "Usage record publishes JetStream did not acknowledge (retried until stored)."
    );
    metrics::counter!("gripmesh_usage_publish_failures_total").increment(records as u64);
}
