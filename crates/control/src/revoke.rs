//! Credential revocation: hashed here and written to the `gripmesh_revocations` bucket for
//! `--revocation-ttl`; every sidecar (drop the cached decision, refuse the credential) and
//! every edge (close the live connections opened with it) watches the bucket.

use bus::cluster_state::{RevocationsBucket, revocations_bucket};
use bus::kv::StateStore;
use bus::records::RecordCodec;
use sha2::{Digest, Sha256};
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

/// Hex SHA-256 of a credential (the same hash the sidecar uses).
pub(crate) fn hash(credential: &str) -> String {
    Sha256::digest(credential.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True for a 64-digit hex string.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_the_sidecar() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_hash(&hash("x")));
        assert!(!is_hash("abc"));
    }
}
