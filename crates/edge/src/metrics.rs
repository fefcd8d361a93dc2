//! Every edge metric, declared once (names and labels are part of the contract: docs/protocol.md, "Metrics").

use crate::delivery::Transport;
use metrics::{Counter, Gauge, Histogram};

/// Every `reason` of `gripmesh_edge_messages_dropped_total`.
pub(crate) const DROP_REASONS: &[&str] = &["slow_consumer", "bad_payload"];

/// Every `result` of `gripmesh_edge_gone_requests_total`.
pub(crate) const GONE_RESULTS: &[&str] = &["sent", "rejected", "failed"];

/// Every `status_class` of `gripmesh_edge_origin_requests_total`.
const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx", "other", "error"];

/// Handles for the hot paths: created once, then only atomics are touched.
pub struct EdgeMetrics {
    /// `gripmesh_edge_channels`.
    pub channels: Gauge,
    /// `gripmesh_edge_subscriptions`.
    pub subscriptions: Gauge,
    /// `gripmesh_edge_delivery_latency_seconds`.
    pub delivery_latency: Histogram,
    /// `gripmesh_edge_origin_duration_seconds`.
    pub origin_duration: Histogram,
    stream: TransportMetrics,
    response: TransportMetrics,
    ws: TransportMetrics,
}

/// Per-transport handles.
pub struct TransportMetrics {
    /// `gripmesh_edge_connections{transport}`.
    pub connections: Gauge,
    /// `gripmesh_edge_connections_opened_total{transport}`.
    pub opened: Counter,
    /// `gripmesh_edge_messages_sent_total{transport}`.
    pub sent: Counter,
}

impl TransportMetrics {
    fn new(t: Transport) -> TransportMetrics {
        let l = t.label();
        TransportMetrics {
            connections: metrics::gauge!("gripmesh_edge_connections", "transport" => l),
            opened: metrics::counter!("gripmesh_edge_connections_opened_total", "transport" => l),
            sent: metrics::counter!("gripmesh_edge_messages_sent_total", "transport" => l),
        }
    }
}

impl EdgeMetrics {
    /// Describes the metrics and creates the handles.
    pub fn new() -> EdgeMetrics {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!("gripmesh_edge_connections", "Held client connections.");
        describe_counter!(
            "gripmesh_edge_connections_opened_total",
            "Client connections that became held."
        );
        describe_gauge!("gripmesh_edge_channels", "Channels with local subscribers.");
        describe_gauge!(
            "gripmesh_edge_subscriptions",
            "Connection x channel subscriptions."
        );
        describe_counter!(
            "gripmesh_edge_messages_sent_total",
            "Messages written to clients."
        );
        describe_counter!(
            "gripmesh_edge_messages_dropped_total",
            "Messages not delivered, by reason."
        );
        describe_counter!(
            "gripmesh_edge_origin_requests_total",
            "Requests sent to origins, by response status class."
        );
        describe_histogram!(
            "gripmesh_edge_origin_duration_seconds",
            Unit::Seconds,
            "Time from sending a request to an origin to its response head."
        );
        describe_histogram!(
            "gripmesh_edge_delivery_latency_seconds",
            Unit::Seconds,
            "Publish accepted by control to written to the client socket."
        );
        describe_counter!(
            "gripmesh_edge_gone_requests_total",
            "Grip-Link rel=gone requests sent when a connection ended, by result (sent, rejected, failed)."
        );
        describe_counter!(
            "gripmesh_edge_routes_reload_errors_total",
            "Routes files rejected on reload."
        );
        describe_counter!(
            "gripmesh_edge_key_limited_total",
            "Per-key limits enforced: connections refused (connections), quota spent (quota), credential expired (expired)."
        );
        // Present at zero, so a dashboard's rate() has a series before the first refusal.
        for limit in ["connections", "quota", "expired"] {
            metrics::counter!("gripmesh_edge_key_limited_total", "limit" => limit).absolute(0);
        }
        // Every series this tier can produce exists from the start, at 0 (Prometheus practice:
        // rate() and absence alerts misbehave on series that appear late).
        for reason in DROP_REASONS {
            metrics::counter!("gripmesh_edge_messages_dropped_total", "reason" => *reason)
                .absolute(0);
        }
        for class in STATUS_CLASSES {
            metrics::counter!("gripmesh_edge_origin_requests_total", "status_class" => *class)
                .absolute(0);
        }
        metrics::counter!("gripmesh_edge_routes_reload_errors_total").absolute(0);
        metrics::counter!("gripmesh_connections_refused_total").absolute(0);
        describe_counter!(
            "gripmesh_edge_recoveries_total",
            "Resumes by prev-id: served from history (recovered) or not (gap, fallback taken)."
        );
        describe_counter!(
            "gripmesh_edge_bus_loss_closes_total",
            "Held connections closed because the edge was without NATS for --bus-loss-close."
        );
        describe_counter!(
            "gripmesh_edge_catch_ups_total",
            "Channels read from history after a bus outage: caught up (recovered), or not (gap: \
             their subscribers were closed to resume by id)."
        );
        for result in ["recovered", "gap"] {
            metrics::counter!("gripmesh_edge_recoveries_total", "result" => result).absolute(0);
            metrics::counter!("gripmesh_edge_catch_ups_total", "result" => result).absolute(0);
        }
        metrics::counter!("gripmesh_edge_bus_loss_closes_total").absolute(0);
        for result in GONE_RESULTS {
            metrics::counter!("gripmesh_edge_gone_requests_total", "result" => *result).absolute(0);
        }
        bus::records::Refused::declare_metrics(&[
            bus::cluster_state::ROUTES_BUCKET,
            bus::cluster_state::REVOCATIONS_BUCKET,
            bus::key_state::LEASES_BUCKET,
            bus::key_state::USAGE_BUCKET,
        ]);
        EdgeMetrics {
            channels: metrics::gauge!("gripmesh_edge_channels"),
            subscriptions: metrics::gauge!("gripmesh_edge_subscriptions"),
            delivery_latency: metrics::histogram!("gripmesh_edge_delivery_latency_seconds"),
            origin_duration: metrics::histogram!("gripmesh_edge_origin_duration_seconds"),
            stream: TransportMetrics::new(Transport::HttpStream),
            response: TransportMetrics::new(Transport::HttpResponse),
            ws: TransportMetrics::new(Transport::Ws),
        }
    }

    /// Handles for one transport.
    pub fn transport(&self, t: Transport) -> &TransportMetrics {
        match t {
            Transport::HttpStream => &self.stream,
            Transport::HttpResponse => &self.response,
            Transport::Ws => &self.ws,
        }
    }

    /// Counts one enforcement of a per-key limit (`connections`, `quota`, `expired`).
    pub fn key_limited(limit: &'static str) {
        metrics::counter!("gripmesh_edge_key_limited_total", "limit" => limit).increment(1);
    }

    /// Counts a resume by prev-id: `recovered` from history, or a `gap` (fallback taken).
    pub fn recovery(recovered: bool) {
        let result = if recovered { "recovered" } else { "gap" };
        metrics::counter!("gripmesh_edge_recoveries_total", "result" => result).increment(1);
    }

    /// Counts a channel's catch-up from history after a bus outage.
    pub fn catch_up(recovered: bool) {
        let result = if recovered { "recovered" } else { "gap" };
        metrics::counter!("gripmesh_edge_catch_ups_total", "result" => result).increment(1);
    }

    /// Counts a message that was not delivered (`reason` is one of [`DROP_REASONS`]).
    pub fn dropped(reason: &'static str) {
        metrics::counter!("gripmesh_edge_messages_dropped_total", "reason" => reason).increment(1);
    }

    /// Counts a gone-link request by result (`sent`, `rejected`, `failed`).
    pub fn gone(result: &'static str) {
        metrics::counter!("gripmesh_edge_gone_requests_total", "result" => result).increment(1);
    }

    /// Counts an origin response by status class (`2xx`…, or `error`).
    pub fn origin_request(status: Option<u16>) {
        let class = match status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        metrics::counter!("gripmesh_edge_origin_requests_total", "status_class" => class)
            .increment(1);
    }

    /// Records the delivery latency of an item accepted at `accepted_unix_nanos`.
    pub fn record_latency(&self, accepted_unix_nanos: u64) {
        if accepted_unix_nanos == 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // Clocks of different hosts can disagree; a negative latency is recorded as 0.
        let nanos = now.saturating_sub(accepted_unix_nanos);
        #[allow(clippy::cast_precision_loss)]
        self.delivery_latency.record(nanos as f64 / 1e9);
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        EdgeMetrics::new()
    }
}
