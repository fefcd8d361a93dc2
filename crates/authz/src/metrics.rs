//! Every sidecar metric, declared once (SPEC §8).

use metrics::{Counter, Histogram};

/// Handles created once.
pub struct AuthzMetrics {
    /// `gripmesh_authz_gateway_duration_seconds`.
    pub gateway_duration: Histogram,
    /// `gripmesh_authz_revocations_total`.
    pub revocations: Counter,
}

impl AuthzMetrics {
    pub fn new() -> AuthzMetrics {
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
        AuthzMetrics {
            gateway_duration: metrics::histogram!("gripmesh_authz_gateway_duration_seconds"),
            revocations: metrics::counter!("gripmesh_authz_revocations_total"),
        }
    }

    /// Counts one check.
    pub fn check(&self, decision: &'static str, cached: bool) {
        let cache = if cached { "hit" } else { "miss" };
        metrics::counter!("gripmesh_authz_checks_total", "decision" => decision, "cache" => cache)
            .increment(1);
    }
}
