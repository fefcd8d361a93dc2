//! Every sidecar metric, declared once (docs/protocol.md, "Metrics").

/// Sidecar metrics. Handles are looked up at each use, not cached, so a sidecar built before a
/// recorder is installed (in tests) still counts.
pub(crate) struct AuthzMetrics;

impl AuthzMetrics {
    pub(crate) fn new() -> AuthzMetrics {
        metrics::describe_counter!(
            "gripmesh_authz_checks_total",
            "Authorization checks, by decision and cache use."
        );
        metrics::describe_histogram!(
            "gripmesh_authz_gateway_duration_seconds",
            metrics::Unit::Seconds,
            "Duration of forward-auth calls to the gateway."
        );
        metrics::describe_counter!(
            "gripmesh_authz_revocations_total",
            "Revocations applied to the decision cache."
        );
        metrics::describe_gauge!(
            "gripmesh_authz_cache_entries",
            "Decisions in the sidecar's cache (at most --authz-cache-entries)."
        );
        metrics::describe_gauge!(
            "gripmesh_authz_cache_bytes",
            metrics::Unit::Bytes,
            "Bytes held by the sidecar's decision cache (at most --authz-cache-bytes)."
        );
        // Every series at 0 from the start (Prometheus practice), when the recorder is already
        // installed (every tier installs it before building the sidecar).
        for decision in ["allow", "deny", "error"] {
            for cache in ["hit", "miss"] {
                metrics::counter!("gripmesh_authz_checks_total", "decision" => decision, "cache" => cache)
                    .absolute(0);
            }
        }
        metrics::counter!("gripmesh_authz_revocations_total").absolute(0);
        bus::records::Refused::declare_metrics(&[bus::cluster_state::REVOCATIONS_BUCKET]);
        metrics::gauge!("gripmesh_authz_cache_entries").set(0.0);
        metrics::gauge!("gripmesh_authz_cache_bytes").set(0.0);
        let _ = metrics::histogram!("gripmesh_authz_gateway_duration_seconds");
        AuthzMetrics
    }

    /// Sets the cache gauges.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn cache_size(&self, entries: usize, bytes: usize) {
        metrics::gauge!("gripmesh_authz_cache_entries").set(entries as f64);
        metrics::gauge!("gripmesh_authz_cache_bytes").set(bytes as f64);
    }

    /// Records the duration of one gateway call.
    pub(crate) fn gateway_duration(&self, seconds: f64) {
        metrics::histogram!("gripmesh_authz_gateway_duration_seconds").record(seconds);
    }

    /// Counts one revocation.
    pub(crate) fn revoked(&self) {
        metrics::counter!("gripmesh_authz_revocations_total").increment(1);
    }

    /// Counts one check.
    pub(crate) fn check(&self, decision: &'static str, cached: bool) {
        let cache = if cached { "hit" } else { "miss" };
        metrics::counter!("gripmesh_authz_checks_total", "decision" => decision, "cache" => cache)
            .increment(1);
    }
}
