//! Credential revocation: hashed here and written to the `gripmesh_revocations` bucket for
//! `--revocation-ttl`; every sidecar (drop the cached decision, refuse the credential) and
//! every edge (close the live connections opened with it) watches the bucket.

use bus::cluster_state::{RevocationsBucket, revocations_bucket};
use bus::cluster_state::{credential_hash, is_credential_hash};
use bus::kv::StateStore;
use bus::records::RecordCodec;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Where revocations are written. Cheap to clone.
#[derive(Clone)]
pub struct RevocationStore {
    state: Arc<dyn StateStore>,
    codec: RecordCodec,
    ttl: Duration,
    replicas: usize,
    bucket: Arc<OnceCell<RevocationsBucket>>,
}

impl RevocationStore {
    /// Revocations on `state`, sealed with `codec`, lasting `ttl` (also the bucket's
    /// `max_age`), the bucket made with `replicas`.
    pub fn new(
        state: Arc<dyn StateStore>,
        codec: RecordCodec,
        ttl: Duration,
        replicas: usize,
    ) -> RevocationStore {
        RevocationStore {
            state,
            codec,
            ttl,
            replicas,
            bucket: Arc::new(OnceCell::new()),
        }
    }

    /// Creates the bucket (or brings its TTL up to date) now, so followers find it.
    pub async fn prepare(&self) -> Result<(), bus::kv::KvError> {
        self.bucket().await.map(|_| ())
    }

    async fn bucket(&self) -> Result<&RevocationsBucket, bus::kv::KvError> {
        self.bucket
            .get_or_try_init(|| async {
                let kv = self
                    .state
                    .open(&revocations_bucket(self.ttl, self.replicas), true)
                    .await?;
                Ok(RevocationsBucket::new(kv, self.codec.clone()))
            })
            .await
    }

    /// Records a revocation.
    pub(crate) async fn revoke(&self, credential_hash: &str) -> Result<(), bus::kv::KvError> {
        tracing::info!("credential revoked");
        self.bucket()
            .await?
            .revoke(credential_hash, self.ttl)
            .await
            .map(|_| ())
    }
}

/// The hash a revoke request names: a non-empty `credential` (hashed here), else a
/// `credential_hash` of 64 hex digits (lower-cased); `None` when it names neither.
pub(crate) fn requested_hash(credential: Option<&str>, hash: Option<&str>) -> Option<String> {
    match (credential, hash) {
        (Some(c), _) if !c.is_empty() => Some(credential_hash(c)),
        (_, Some(h)) if is_credential_hash(&h.to_ascii_lowercase()) => Some(h.to_ascii_lowercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_credential_or_its_hash() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(requested_hash(Some("abc"), None).as_deref(), Some(abc));
        assert_eq!(
            requested_hash(Some(""), Some(&abc.to_ascii_uppercase())).as_deref(),
            Some(abc)
        );
        assert_eq!(requested_hash(Some(""), Some("abc")), None);
        assert_eq!(requested_hash(None, None), None);
    }
}
