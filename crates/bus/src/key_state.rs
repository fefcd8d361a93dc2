//! Per-key counters shared by the edges of a cluster (docs/protocol.md, "Key limits and usage", "Cluster state").
//!
//! - `gripmesh_key_leases`, key `<key hash>.<edge>`: a sealed [`LeaseRecord`], the edge's live
//!   connections of that key. Edges rewrite their non-zero leases every [`LEASE_REFRESH`] and
//!   the bucket's `max_age` is [`LEASE_TTL`], so the leases of an edge that died stop counting
//!   within [`LEASE_TTL`].
//! - `gripmesh_key_usage`, key `<key hash>.<edge>`: a sealed [`UsageRecord`], the messages the
//!   edge delivered to the key's connections in the current quota period, settled about once a
//!   second (never per message).
//!
//! `<key hash>` is the credential's hex SHA-256 (never the credential), `<edge>` a random id
//! per edge process. Control creates both buckets (with `--state-replicas`); edges follow them.

use crate::kv::{BucketConfig, KvError, StateStore};
use std::time::Duration;

/// Bucket of per-edge connection leases.
pub const LEASES_BUCKET: &str = "gripmesh_key_leases";
/// Bucket of per-edge delivered counts per quota period.
pub const USAGE_BUCKET: &str = "gripmesh_key_usage";
/// A lease not rewritten for this long no longer counts (the bucket's `max_age`).
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often an edge rewrites its non-zero leases (well inside [`LEASE_TTL`]).
pub const LEASE_REFRESH: Duration = Duration::from_secs(10);
/// How long after an edge wrote a lease the others count it: two refreshes and some slack, and
/// below [`LEASE_TTL`], so a killed edge's connections stop counting within 30 s of its last
/// write.
pub const LEASE_COUNTS_FOR: Duration = Duration::from_secs(25);
/// The longest quota period (`1d`); usage entries live one period and a minute.
pub const LONGEST_PERIOD: Duration = Duration::from_secs(86_400);

/// An edge's live connections of one key (bucket `gripmesh_key_leases`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRecord {
    /// Live connections of the key on the edge.
    #[prost(uint32, tag = "1")]
    pub connections: u32,
}

/// An edge's deliveries to one key in one quota period (bucket `gripmesh_key_usage`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UsageRecord {
    /// Start of the period, in Unix seconds (a multiple of `period_secs`).
    #[prost(uint64, tag = "1")]
    pub window_start: u64,
    /// The period's length in seconds.
    #[prost(uint32, tag = "2")]
    pub period_secs: u32,
    /// Messages delivered in the period so far.
    #[prost(uint64, tag = "3")]
    pub delivered: u64,
}

/// The leases bucket's settings.
pub fn leases_bucket(replicas: usize) -> BucketConfig {
    BucketConfig {
        name: LEASES_BUCKET.into(),
        description:
            "gripmesh live connections per key (key: <key hash>.<edge>), rewritten every 10 s"
                .into(),
        history: 1,
        max_age: LEASE_TTL,
        replicas,
    }
}

/// The usage bucket's settings.
pub fn usage_bucket(replicas: usize) -> BucketConfig {
    BucketConfig {
        name: USAGE_BUCKET.into(),
        description:
            "gripmesh messages delivered per key and quota period (key: <key hash>.<edge>)".into(),
        history: 1,
        max_age: LONGEST_PERIOD + Duration::from_secs(60),
        replicas,
    }
}

/// Creates both buckets (or brings their settings up to date), so edges find them.
pub async fn prepare(state: &dyn StateStore, replicas: usize) -> Result<(), KvError> {
    state.open(&leases_bucket(replicas), true).await?;
    state.open(&usage_bucket(replicas), true).await?;
    Ok(())
}

/// The entry key of `edge`'s count for the key whose credential hash is `key_hash`.
pub fn entry_key(key_hash: &str, edge: &str) -> String {
    format!("{key_hash}.{edge}")
}

/// True for an edge id: 1 to 32 lower-case hex digits.
pub fn is_edge_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits an entry key into (key hash, edge id); `None` for a key no edge writes.
pub fn split_entry_key(key: &str) -> Option<(&str, &str)> {
    let (hash, edge) = key.split_once('.')?;
    (crate::cluster_state::is_credential_hash(hash) && is_edge_id(edge)).then_some((hash, edge))
}

/// A new random edge id (16 hex digits), one per process.
pub fn new_edge_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // A randomly seeded SipHash of the time and the process id.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_round_trip_and_refuse_strangers() {
        let hash = "a".repeat(64);
        let edge = new_edge_id();
        assert!(is_edge_id(&edge), "{edge}");
        assert_ne!(edge, new_edge_id(), "random per process start");
        let key = entry_key(&hash, &edge);
        assert!(crate::kv::is_valid_key(&key));
        assert_eq!(split_entry_key(&key), Some((hash.as_str(), edge.as_str())));
        for bad in [
            "abc.def",
            "table",
            &format!("{hash}.XYZ"),
            &format!("{hash}."),
        ] {
            assert_eq!(split_entry_key(bad), None, "{bad}");
        }
    }
}
