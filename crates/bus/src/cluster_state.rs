//! The cluster's state in buckets: the route table and revocations.
//!
//! - `gripmesh_routes`, key `table`: a sealed [`RoutesRecord`]. The bucket revision is the
//!   table's version (assigned by the store, so no writer can make a version from the future).
//!   Control writes it (compare-and-set); edges follow it.
//! - `gripmesh_revocations`, key = a credential's hex SHA-256: a sealed [`RevocationRecord`];
//!   entries expire with the bucket's `max_age` (the revocation TTL). Edges and sidecars
//!   follow it from the start, so a process started after a revocation knows it.

use crate::kv::{BucketConfig, KvBucket, KvEntry, KvError, WatchFrom};
use crate::records::{RecordCodec, Refused, RevocationRecord, RoutesRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Bucket holding the route table.
pub const ROUTES_BUCKET: &str = "gripmesh_routes";
/// The route table's key.
pub const ROUTES_KEY: &str = "table";
/// Bucket holding revocations.
pub const REVOCATIONS_BUCKET: &str = "gripmesh_revocations";
/// Revocations remembered per process at most; beyond it the soonest-expiring is forgotten.
pub const MAX_REVOCATIONS: usize = 100_000;

/// Milliseconds since the epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The routes bucket's settings.
pub fn routes_bucket(replicas: usize) -> BucketConfig {
    BucketConfig {
        name: ROUTES_BUCKET.into(),
        description: "gripmesh route table (key `table`), written by control".into(),
        // The last few tables stay readable (`nats kv history gripmesh_routes table`).
        history: 10,
        max_age: Duration::ZERO,
        replicas,
    }
}

/// The revocations bucket's settings.
pub fn revocations_bucket(ttl: Duration, replicas: usize) -> BucketConfig {
    BucketConfig {
        name: REVOCATIONS_BUCKET.into(),
        description: "gripmesh revoked credentials (key: hex SHA-256), kept for the revocation TTL"
            .into(),
        history: 1,
        max_age: ttl,
        replicas,
    }
}

/// One route table as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoutes {
    /// The bucket revision: the table's version.
    pub revision: u64,
    /// The table in routes-file syntax.
    pub text: String,
    /// The writer's sequence (see [`RoutesRecord::seq`]).
    pub seq: u64,
}

/// The route table bucket. Cheap to clone.
#[derive(Clone)]
pub struct RoutesBucket {
    kv: Arc<dyn KvBucket>,
    codec: RecordCodec,
    /// The highest sequence written or applied through this handle: a new table's sequence
    /// goes above it even when the bucket's latest record is a (refused) replay.
    high_seq: Arc<AtomicU64>,
}

impl RoutesBucket {
    /// The table in `kv`, sealed with `codec`.
    pub fn new(kv: Arc<dyn KvBucket>, codec: RecordCodec) -> RoutesBucket {
        RoutesBucket {
            kv,
            codec,
            high_seq: Arc::new(AtomicU64::new(0)),
        }
    }

    fn open(&self, e: KvEntry) -> Result<StoredRoutes, Refused> {
        let rec: RoutesRecord = self.codec.open(self.kv.name(), ROUTES_KEY, e.value)?;
        Ok(StoredRoutes {
            revision: e.revision,
            text: rec.text,
            seq: rec.seq,
        })
    }

    /// The table in the bucket (`None`: none yet). A record that does not verify is counted
    /// and reported as [`KvError::Unavailable`].
    pub async fn current(&self) -> Result<Option<StoredRoutes>, KvError> {
        match self.kv.entry(ROUTES_KEY).await? {
            None => Ok(None),
            Some(e) => self.open(e).map(Some).map_err(|r| {
                r.count(self.kv.name(), ROUTES_KEY);
                KvError::Unavailable(format!("the stored route table is refused: {r}"))
            }),
        }
    }

    /// Writes `text` (already validated) unless the bucket holds it already; returns what the
    /// bucket holds afterwards. Compare-and-set, so concurrent writers never interleave.
    pub async fn put(&self, text: &str, only_if_changed: bool) -> Result<StoredRoutes, KvError> {
        for _ in 0..10 {
            let cur = self.kv.entry(ROUTES_KEY).await?;
            let decoded = cur.clone().and_then(|e| self.open(e).ok());
            if only_if_changed
                && let Some(d) = &decoded
                && d.text == text
            {
                return Ok(d.clone());
            }
            let seq = now_unix_ms()
                .max(decoded.as_ref().map_or(0, |d| d.seq.saturating_add(1)))
                .max(self.high_seq.load(Ordering::SeqCst).saturating_add(1));
            let value = self.codec.seal(
                self.kv.name(),
                ROUTES_KEY,
                &RoutesRecord {
                    text: text.to_owned(),
                    seq,
                },
            );
            let written = match &cur {
                None => self.kv.create(ROUTES_KEY, value).await,
                Some(e) => self.kv.update(ROUTES_KEY, value, e.revision).await,
            };
            match written {
                Ok(revision) => {
                    self.high_seq.fetch_max(seq, Ordering::SeqCst);
                    return Ok(StoredRoutes {
                        revision,
                        text: text.to_owned(),
                        seq,
                    });
                }
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(KvError::Unavailable(
            "the route table kept changing under this write".into(),
        ))
    }

    /// Writes `text` only if the bucket holds no table yet (first start of a cluster).
    pub async fn seed(&self, text: &str) -> Result<(), KvError> {
        let value = self.codec.seal(
            self.kv.name(),
            ROUTES_KEY,
            &RoutesRecord {
                text: text.to_owned(),
                seq: now_unix_ms(),
            },
        );
        match self.kv.create(ROUTES_KEY, value).await {
            Ok(_) | Err(KvError::WrongRevision) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Calls `on_table` with the current table and every later one, until `shutdown`. A broken
    /// watch is re-opened from the revision after the last one seen; refused records are
    /// counted and skipped; with a cluster key a table whose sequence is not above the applied
    /// one is refused as a replay.
    pub async fn follow(
        &self,
        shutdown: &CancellationToken,
        mut on_table: impl FnMut(StoredRoutes),
    ) {
        let mut last_revision: Option<u64> = None;
        let mut applied_seq: Option<u64> = None;
        follow_key(
            self.kv.as_ref(),
            ROUTES_KEY,
            shutdown,
            &mut last_revision,
            |e| {
                if e.deleted {
                    return;
                }
                match self.open(e) {
                    Ok(t) => {
                        if self.codec.is_signed() && applied_seq.is_some_and(|s| t.seq <= s) {
                            Refused::Replayed.count(self.kv.name(), ROUTES_KEY);
                            return;
                        }
                        applied_seq = Some(t.seq);
                        self.high_seq.fetch_max(t.seq, Ordering::SeqCst);
                        on_table(t);
                    }
                    Err(r) => r.count(self.kv.name(), ROUTES_KEY),
                }
            },
        )
        .await;
    }
}

/// How often a follower compares what its watch delivered with what the bucket holds.
pub const STALL_CHECK: Duration = Duration::from_secs(10);

/// Watches `key` (or `>`) until `shutdown`, resuming from `*last + 1` after a break.
///
/// A watch that breaks (its consumer's idle heartbeats stop) yields an error and is resumed.
/// One can also stall without breaking: after a NATS node is lost its consumer may keep
/// heartbeating while no new entry reaches it. So every [`STALL_CHECK`] the follower asks the
/// bucket for its latest revision (of `key`, or of the bucket for `>`); when a revision the
/// bucket held at one check has still not been delivered at the next, the watch is resumed.
/// That costs one request per check and bounds how long a follower can miss a change (two
/// checks), whatever went wrong with the consumer.
pub async fn follow_key(
    kv: &dyn KvBucket,
    key: &str,
    shutdown: &CancellationToken,
    last: &mut Option<u64>,
    mut on_entry: impl FnMut(KvEntry),
) {
    loop {
        let from = last.map_or(WatchFrom::Current, |r| {
            WatchFrom::Revision(r.saturating_add(1))
        });
        match kv.watch(key, from).await {
            Ok(mut watch) => {
                let mut check = tokio::time::interval(STALL_CHECK);
                check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                check.reset();
                // A revision the bucket held at the previous check, not yet delivered then.
                let mut owed: Option<u64> = None;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = futures_util::StreamExt::next(&mut watch) => match next {
                            Some(Ok(e)) => {
                                if last.is_some_and(|l| e.revision <= l) {
                                    continue;
                                }
                                *last = Some(e.revision);
                                on_entry(e);
                            }
                            Some(Err(err)) => {
                                tracing::warn!(bucket = kv.name(), error = %err, "watch broke; resuming");
                                break;
                            }
                            None => {
                                tracing::warn!(bucket = kv.name(), "watch ended; resuming");
                                break;
                            }
                        },
                        _ = check.tick() => {
                            let delivered = last.unwrap_or(0);
                            if owed.is_some_and(|o| o > delivered) {
                                tracing::warn!(bucket = kv.name(), delivered, held = owed, "watch stalled; resuming");
                                break;
                            }
                            owed = latest_revision(kv, key).await.filter(|&r| r > delivered);
                        }
                    }
                }
            }
            Err(err) => tracing::debug!(bucket = kv.name(), error = %err, "cannot watch yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The latest revision of `key` (of the whole bucket for `>`); `None` when unknown right now.
async fn latest_revision(kv: &dyn KvBucket, key: &str) -> Option<u64> {
    let latest = if key == ">" {
        kv.last_revision().await
    } else {
        kv.entry(key).await.map(|e| e.map(|e| e.revision))
    };
    latest.ok().flatten()
}

/// The revocations bucket. Cheap to clone.
#[derive(Clone)]
pub struct RevocationsBucket {
    kv: Arc<dyn KvBucket>,
    codec: RecordCodec,
}

/// True for a 64-digit lower-case hex string (a credential hash).
pub fn is_credential_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A credential's hash: lower-case hex SHA-256. The sidecar hashes what a client presents,
/// control what a revocation names; revocations are keyed by it, and credentials are never
/// kept or logged in clear.
pub fn credential_hash(credential: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(credential.as_bytes()))
}

impl RevocationsBucket {
    /// Revocations in `kv`, sealed with `codec`.
    pub fn new(kv: Arc<dyn KvBucket>, codec: RecordCodec) -> RevocationsBucket {
        RevocationsBucket { kv, codec }
    }

    /// Records a revocation of `credential_hash` lasting `ttl`.
    pub async fn revoke(&self, credential_hash: &str, ttl: Duration) -> Result<u64, KvError> {
        if !is_credential_hash(credential_hash) {
            return Err(KvError::InvalidKey);
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_unix_ms = now_unix_ms().saturating_add(ttl_ms);
        let value = self.codec.seal(
            self.kv.name(),
            credential_hash,
            &RevocationRecord { expires_unix_ms },
        );
        self.kv.put(credential_hash, value).await
    }

    /// Calls `on_revoked(hash, expires_unix_ms)` for every revocation in the bucket and every
    /// later one, until `shutdown`; `on_current` once the bucket's revocations at the start
    /// have all been delivered (or after [`CATCH_UP_LIMIT`], whichever comes first). Refused
    /// and malformed records are skipped.
    pub async fn follow(
        &self,
        shutdown: &CancellationToken,
        on_current: CaughtUp,
        mut on_revoked: impl FnMut(&str, u64),
    ) {
        let target = self.kv.last_revision().await.ok().flatten();
        if target.is_none() {
            on_current.fire();
        } else {
            let timer = on_current.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CATCH_UP_LIMIT).await;
                timer.fire();
            });
        }
        let mut last = None;
        follow_key(self.kv.as_ref(), ">", shutdown, &mut last, |e| {
            let revision = e.revision;
            if !e.deleted {
                if is_credential_hash(&e.key) {
                    match self
                        .codec
                        .open::<RevocationRecord>(self.kv.name(), &e.key, e.value)
                    {
                        // Lapsed ones too: live connections are closed on any new revocation,
                        // and the set ignores what has lapsed.
                        Ok(r) => on_revoked(&e.key, r.expires_unix_ms),
                        Err(r) => r.count(self.kv.name(), &e.key),
                    }
                } else {
                    Refused::BadKey.count(self.kv.name(), &e.key);
                }
            }
            if target.is_some_and(|t| revision >= t) {
                on_current.fire();
            }
        })
        .await;
    }
}

/// How long a follower waits for the revocations that existed when it started before it
/// reports itself caught up anyway (an entry may lapse while it is being read).
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);

/// A callback run once, from whichever of several places gets there first. Cheap to clone.
#[derive(Clone)]
pub struct CaughtUp(Arc<Mutex<Option<Callback>>>);

/// A callback [`CaughtUp`] runs.
type Callback = Box<dyn FnOnce() + Send>;

impl CaughtUp {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce() + Send + 'static) -> CaughtUp {
        CaughtUp(Arc::new(Mutex::new(Some(Box::new(f)))))
    }

    /// Runs the callback unless it has run.
    pub fn fire(&self) {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            f();
        }
    }
}

/// Follows the revocations bucket in `state` until `shutdown` (see
/// [`RevocationsBucket::follow`]). A bucket that does not exist yet holds no revocations:
/// `on_current` fires at once, and the bucket is opened as soon as control has made it.
pub async fn follow_revocations(
    state: &dyn crate::kv::StateStore,
    codec: RecordCodec,
    shutdown: &CancellationToken,
    on_current: CaughtUp,
    on_revoked: impl FnMut(&str, u64),
) {
    let config = revocations_bucket(Duration::ZERO, 1);
    let kv = loop {
        match state.open(&config, false).await {
            Ok(kv) => break kv,
            Err(KvError::NoBucket(_)) => on_current.fire(),
            Err(err) => tracing::debug!(error = %err, "revocations bucket not available yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    RevocationsBucket::new(kv, codec)
        .follow(shutdown, on_current, on_revoked)
        .await;
}

/// Credentials revoked and not yet lapsed, as a process knows them. Bounded at
/// [`MAX_REVOCATIONS`]. Cheap to clone; clones share the set.
#[derive(Clone, Default)]
pub struct RevocationSet {
    inner: Arc<Mutex<HashMap<String, u64>>>,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Remembers that `hash` is revoked until `expires_unix_ms`.
    pub fn insert(&self, hash: &str, expires_unix_ms: u64) {
        let now = now_unix_ms();
        if expires_unix_ms <= now {
            return;
        }
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REVOCATIONS && !map.contains_key(hash) {
            map.retain(|_, exp| *exp > now);
            if map.len() >= MAX_REVOCATIONS
                && let Some(soonest) = map
                    .iter()
                    .min_by_key(|(_, exp)| **exp)
                    .map(|(k, _)| k.clone())
            {
                tracing::warn!("revocation set full; forgetting the soonest-expiring one");
                map.remove(&soonest);
            }
        }
        let exp = map.entry(hash.to_owned()).or_insert(0);
        *exp = (*exp).max(expires_unix_ms);
    }

    /// True while `hash` is revoked.
    pub fn contains(&self, hash: &str) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(hash) {
            Some(exp) if *exp > now_unix_ms() => true,
            Some(_) => {
                map.remove(hash);
                false
            }
            None => false,
        }
    }

    /// Revocations remembered (lapsed ones may still be counted until looked up).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvWatch, MemoryState, StateStore};
    use bytes::Bytes;
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    /// A bucket whose first watch never delivers anything and never breaks: a consumer
    /// stranded after a NATS node was lost.
    struct StallingFirstWatch {
        inner: Arc<dyn KvBucket>,
        watches: AtomicUsize,
    }

    impl KvBucket for StallingFirstWatch {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn entry(&self, key: &str) -> BoxFuture<'_, Result<Option<KvEntry>, KvError>> {
            self.inner.entry(key)
        }
        fn put(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>> {
            self.inner.put(key, value)
        }
        fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>> {
            self.inner.create(key, value)
        }
        fn update(
            &self,
            key: &str,
            value: Bytes,
            revision: u64,
        ) -> BoxFuture<'_, Result<u64, KvError>> {
            self.inner.update(key, value, revision)
        }
        fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), KvError>> {
            self.inner.delete(key)
        }
        fn watch(&self, key: &str, from: WatchFrom) -> BoxFuture<'_, Result<KvWatch, KvError>> {
            if self.watches.fetch_add(1, Ordering::SeqCst) == 0 {
                let stalled: KvWatch =
                    futures_util::StreamExt::boxed(futures_util::stream::pending());
                return async move { Ok(stalled) }.boxed();
            }
            self.inner.watch(key, from)
        }
        fn last_revision(&self) -> BoxFuture<'_, Result<Option<u64>, KvError>> {
            self.inner.last_revision()
        }
    }

    /// A watch that stalls without breaking is resumed within two stall checks, for one key
    /// and for the whole bucket; without the check the entry would never arrive.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_watch_is_resumed_and_delivers_what_it_missed() {
        for key in [ROUTES_KEY, ">"] {
            let inner = MemoryState::new()
                .open(&routes_bucket(1), true)
                .await
                .expect("memory bucket");
            let kv = StallingFirstWatch {
                inner,
                watches: AtomicUsize::new(0),
            };
            let rev = kv
                .put(ROUTES_KEY, Bytes::from_static(b"v1"))
                .await
                .expect("put");
            let stop = CancellationToken::new();
            let mut last = None;
            let mut got = Vec::new();
            let started = tokio::time::Instant::now();
            let _ = tokio::time::timeout(3 * STALL_CHECK, async {
                follow_key(&kv, key, &stop, &mut last, |e| {
                    got.push((e.revision, started.elapsed()));
                })
                .await;
            })
            .await;
            let [(revision, at)] = got[..] else {
                panic!("{key}: the missed entry, once: {got:?}");
            };
            assert_eq!(revision, rev);
            // Owed at the first check, still owed at the second: resumed then (virtual time).
            assert!(at >= 2 * STALL_CHECK && at < 2 * STALL_CHECK + Duration::from_secs(1));
            assert_eq!(kv.watches.load(Ordering::SeqCst), 2, "{key}: resumed once");
        }
    }
}
