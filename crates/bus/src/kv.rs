//! The seam in front of the cluster's state store: versioned key-value buckets.
//!
//! The cluster keeps its state (route table, revocations, later counters) in NATS JetStream
//! key-value buckets ([`JetStreamState`]); standalone without NATS keeps it in memory
//! ([`MemoryState`]) behind the same traits. Both pass one conformance suite
//! (`crates/bus/tests/kv_conformance.rs`).
//!
//! Semantics are JetStream's: every write gets the bucket's next revision (so revisions are
//! assigned by the store, never by a writer), `update` is compare-and-set on the key's
//! revision, and a watch delivers either the current value of every matching key followed by
//! every later change, or every change from a given revision on.

mod jetstream;
mod memory;

pub use jetstream::JetStreamState;
pub use memory::MemoryState;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;

/// A state store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The store cannot be reached right now (NATS down, request timed out).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The NATS server has no JetStream (or not for this account).
    #[error("JetStream is not enabled on the NATS server: {0}")]
    NoJetStream(String),
    /// The bucket does not exist (yet).
    #[error("bucket {0} does not exist")]
    NoBucket(String),
    /// `create` on a key that exists, or `update` with a revision that is not the key's last.
    #[error("the key changed meanwhile")]
    WrongRevision,
    /// Not a valid key.
    #[error("invalid key")]
    InvalidKey,
}

/// One value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Key.
    pub key: String,
    /// Value (empty for a deletion).
    pub value: Bytes,
    /// The bucket revision this write got; increases with every write to the bucket.
    pub revision: u64,
    /// True when this entry records a deletion.
    pub deleted: bool,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// The current value of every matching key, then every later change.
    Current,
    /// Every change with a revision at least this one.
    Revision(u64),
}

/// A watch: entries in revision order. It ends (or yields an error) when the store connection
/// breaks for good; callers re-watch from the revision after the last one they applied.
pub type KvWatch = BoxStream<'static, Result<KvEntry, KvError>>;

/// How a bucket is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// Bucket name (`[A-Za-z0-9_-]+`).
    pub name: String,
    /// What the bucket holds (shown by `nats kv ls`).
    pub description: String,
    /// Values kept per key (1 = only the latest).
    pub history: i64,
    /// Entries older than this disappear (zero: never).
    pub max_age: Duration,
    /// Copies kept by a NATS cluster (1 on a single server; 3 in production).
    pub replicas: usize,
}

/// A key-value bucket.
pub trait KvBucket: Send + Sync + 'static {
    /// The bucket's name.
    fn name(&self) -> &str;

    /// The latest entry of `key` (`None` if never written or deleted).
    fn entry(&self, key: &str) -> BoxFuture<'_, Result<Option<KvEntry>, KvError>>;

    /// Writes `value`; returns its revision.
    fn put(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>>;

    /// Writes `value` only if `key` has no value; [`KvError::WrongRevision`] otherwise.
    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>>;

    /// Writes `value` only if `key`'s latest revision is `revision` (compare-and-set);
    /// [`KvError::WrongRevision`] otherwise.
    fn update(&self, key: &str, value: Bytes, revision: u64)
    -> BoxFuture<'_, Result<u64, KvError>>;

    /// Deletes `key` (watchers see an entry with `deleted`).
    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), KvError>>;

    /// Watches `key`, or every key with `>`.
    fn watch(&self, key: &str, from: WatchFrom) -> BoxFuture<'_, Result<KvWatch, KvError>>;

    /// The revision of the bucket's latest write still held (`None` when it holds nothing):
    /// a watch from [`WatchFrom::Current`] has caught up once it delivered this revision.
    fn last_revision(&self) -> BoxFuture<'_, Result<Option<u64>, KvError>>;
}

/// A place buckets live in.
pub trait StateStore: Send + Sync + 'static {
    /// Opens the bucket; with `create`, creates it (or brings its settings up to `config`)
    /// first. Without `create` a missing bucket is [`KvError::NoBucket`].
    fn open(
        &self,
        config: &BucketConfig,
        create: bool,
    ) -> BoxFuture<'_, Result<Arc<dyn KvBucket>, KvError>>;

    /// Whether the store can be used right now: `Err` names what is missing (JetStream).
    fn check(&self) -> BoxFuture<'_, Result<(), KvError>>;
}

/// Opens a bucket, trying again every second until it works or `shutdown`. Followers use it:
/// the bucket may not exist until control has started, or NATS may be down for a while.
pub async fn open_retrying(
    store: &dyn StateStore,
    config: &BucketConfig,
    create: bool,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Arc<dyn KvBucket>> {
    let mut logged = false;
    loop {
        match store.open(config, create).await {
            Ok(bucket) => return Some(bucket),
            Err(err) => {
                if !logged {
                    tracing::info!(bucket = %config.name, error = %err, "state bucket not available yet; retrying");
                    logged = true;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// True for a key JetStream accepts: `[-/_=.A-Za-z0-9]`, not starting or ending with `.`.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}
