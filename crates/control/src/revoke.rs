//! Credential revocation: hashed here, broadcast on the bus to every sidecar (drop the cached
//! decision) and every edge (close the live connections opened with it).

use crate::Inner;
use sha2::{Digest, Sha256};

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

/// Publishes a revocation.
pub(crate) async fn broadcast(inner: &Inner, credential_hash: &str) -> Result<(), bus::BusError> {
    tracing::info!("credential revoked");
    inner
        .bus
        .publish(
            bus::payload::REVOKE_SUBJECT.into(),
            bytes::Bytes::from(credential_hash.to_owned()),
        )
        .await
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
