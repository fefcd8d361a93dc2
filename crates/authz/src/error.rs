//! The one place a sidecar refusal becomes its answer.
//!
//! A check that does not end in an allow ends in a [`Refusal`]: a deny (revoked at the
//! cluster, or the gateway's own 401/403/429) or an error (the gateway could not decide).
//! [`Refusal::write`] is the only conversion into the `CheckResponse` the edge acts on
//! (docs/protocol.md, "Auth sidecar"), and [`Refusal::decision`] is the `decision` label of
//! `gripmesh_authz_checks_total`; the check is counted once, where its answer is built
//! (`Authorizer::answer`). An error's text is the `Display` of its variant.

use crate::GatewayError;
use bytes::Bytes;
use proto::v1::{AuthzHeader, CheckResponse, Decision};
use std::sync::Arc;

/// Why a check is not allowed. `Display` is the `error` text the edge logs for errors.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Refusal {
    /// The credential is revoked at the cluster: 403 whatever the gateway would say, and not
    /// to be cached by the edge (the revocation may lapse).
    #[error("credential revoked")]
    Revoked,
    /// The gateway refused (401, 403 or 429): its answer is relayed as it is.
    #[error("gateway denied with {status}")]
    Denied {
        /// The gateway's status.
        status: u16,
        /// The gateway's headers (bounded by the gateway client).
        headers: Vec<(String, String)>,
        /// The gateway's body (bounded by the gateway client).
        body: Bytes,
    },
    /// The breaker is open: the gateway is not called for a while.
    #[error("gateway circuit open")]
    CircuitOpen,
    /// The gateway answered a status that is neither success nor a refusal.
    #[error("gateway answered {0}")]
    GatewayStatus(u16),
    /// The gateway could not be asked, or its answer not read.
    #[error("{0}")]
    Gateway(Arc<GatewayError>),
}

/// The body a revoked credential gets.
const REVOKED_BODY: &[u8] = b"Credential revoked.\n";

impl Refusal {
    /// The `decision` label the check is counted under: `deny` or `error`.
    pub(crate) fn decision(&self) -> &'static str {
        if self.is_failure() { "error" } else { "deny" }
    }

    /// The gateway could not decide (what the breaker counts as a failure).
    pub(crate) fn is_failure(&self) -> bool {
        match self {
            Refusal::Revoked | Refusal::Denied { .. } => false,
            Refusal::CircuitOpen | Refusal::GatewayStatus(_) | Refusal::Gateway(_) => true,
        }
    }

    /// Bytes a cached refusal holds (only the gateway's denies are cached).
    pub(crate) fn weight(&self) -> usize {
        match self {
            Refusal::Denied { headers, body, .. } => crate::header_weight(headers) + body.len(),
            Refusal::Revoked
            | Refusal::CircuitOpen
            | Refusal::GatewayStatus(_)
            | Refusal::Gateway(_) => 0,
        }
    }

    /// Writes the refusal into `resp`: a deny's status, headers, body and how long the edge
    /// may cache it (`deny_ttl_seconds`), or an error's text.
    pub(crate) fn write(&self, resp: &mut CheckResponse, deny_ttl_seconds: u32) {
        match self {
            Refusal::Revoked => {
                resp.decision = Decision::Deny as i32;
                resp.deny_status = 403;
                resp.deny_headers = vec![AuthzHeader {
                    name: "Content-Type".into(),
                    value: "text/plain; charset=utf-8".into(),
                }];
                resp.deny_body = Bytes::from_static(REVOKED_BODY);
                resp.cache_ttl_seconds = 0;
            }
            Refusal::Denied {
                status,
                headers,
                body,
            } => {
                resp.decision = Decision::Deny as i32;
                resp.deny_status = u32::from(*status);
                resp.deny_headers = crate::header_pairs(headers);
                resp.deny_body = body.clone();
                resp.cache_ttl_seconds = deny_ttl_seconds;
            }
            Refusal::CircuitOpen | Refusal::GatewayStatus(_) | Refusal::Gateway(_) => {
                resp.decision = Decision::Error as i32;
                resp.error = self.to_string();
            }
        }
    }
}

impl From<GatewayError> for Refusal {
    fn from(err: GatewayError) -> Self {
        Refusal::Gateway(Arc::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(refusal: &Refusal) -> CheckResponse {
        let mut resp = CheckResponse::default();
        refusal.write(&mut resp, 10);
        resp
    }

    /// The answers are the documented ones, byte for byte.
    #[test]
    fn answers() {
        let revoked = written(&Refusal::Revoked);
        assert_eq!(revoked.decision, Decision::Deny as i32);
        assert_eq!((revoked.deny_status, revoked.cache_ttl_seconds), (403, 0));
        assert_eq!(&revoked.deny_body[..], b"Credential revoked.\n");
        assert_eq!(
            revoked
                .deny_headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect::<Vec<_>>(),
            vec![("Content-Type", "text/plain; charset=utf-8")]
        );

        let denied = written(&Refusal::Denied {
            status: 429,
            headers: vec![("Retry-After".into(), "5".into())],
            body: Bytes::from_static(b"slow down"),
        });
        assert_eq!(denied.decision, Decision::Deny as i32);
        assert_eq!((denied.deny_status, denied.cache_ttl_seconds), (429, 10));
        assert_eq!(&denied.deny_body[..], b"slow down");
        assert_eq!(denied.deny_headers[0].name, "Retry-After");
        assert!(denied.error.is_empty());

        let cases = [
            (Refusal::CircuitOpen, "gateway circuit open"),
            (Refusal::GatewayStatus(502), "gateway answered 502"),
            (
                GatewayError::Unreachable("refused".into()).into(),
                "gateway unreachable: refused",
            ),
            (GatewayError::Body("cut".into()).into(), "gateway body: cut"),
        ];
        for (refusal, text) in cases {
            let resp = written(&refusal);
            assert_eq!(resp.decision, Decision::Error as i32);
            assert_eq!((resp.error.as_str(), resp.cache_ttl_seconds), (text, 0));
            assert_eq!(refusal.decision(), "error");
        }
        assert_eq!(Refusal::Revoked.decision(), "deny");
    }
}
