//! The other edges' counts, as followed from the key buckets (`gripmesh_key_leases`,
//! `gripmesh_key_usage`): their leases and every edge's settled deliveries, in views bounded
//! at [`super::MAX_VIEW_KEYS`] keys of [`super::MAX_VIEW_EDGES`] edges; and this edge's
//! writes to them.

use super::{MAX_VIEW_EDGES, MAX_VIEW_KEYS, lock, unix_now};
use bus::key_state::{
    LEASE_COUNTS_FOR, LEASES_BUCKET, LeaseRecord, USAGE_BUCKET, UsageRecord, entry_key,
    split_entry_key,
};
use bus::kv::{KvBucket, KvEntry, KvError};
use bus::records::{RecordCodec, Refused};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time allowed for one write to a bucket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for the watch to bring an admission's own write back.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one log line per this long about failing writes.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One key's leases on the other edges: edge → (live connections, when last written).
type EdgeLeases = HashMap<String, (u32, Instant)>;

/// The other edges' leases and every edge's deliveries, as followed from the buckets.
pub(super) struct ClusterCounts {
    pub(super) leases: Arc<dyn KvBucket>,
    usage: Arc<dyn KvBucket>,
    pub(super) codec: RecordCodec,
    /// This edge's id in entry keys (random per process).
    pub(super) me: String,
    /// Key hash → edge → (live connections, when last written).
    lease_view: Mutex<HashMap<String, EdgeLeases>>,
    /// Key hash → edge → deliveries of its current period (this edge's too).
    usage_view: Mutex<HashMap<String, HashMap<String, UsageRecord>>>,
    /// The last lease revision applied to the view.
    applied: tokio::sync::watch::Sender<u64>,
    last_log: Mutex<Option<Instant>>,
}

impl ClusterCounts {
    pub(super) fn new(
        leases: Arc<dyn KvBucket>,
        usage: Arc<dyn KvBucket>,
        codec: RecordCodec,
    ) -> Self {
        ClusterCounts {
            leases,
            usage,
            codec,
            me: bus::key_state::new_edge_id(),
            lease_view: Mutex::new(HashMap::new()),
            usage_view: Mutex::new(HashMap::new()),
            applied: tokio::sync::watch::Sender::new(0),
            last_log: Mutex::new(None),
        }
    }

    /// The other edges' live connections of `hash` (leases not rewritten within the TTL do
    /// not count).
    pub(super) fn others_connections(&self, hash: &str) -> u32 {
        lock(&self.lease_view).get(hash).map_or(0, |edges| {
            edges
                .values()
                .filter(|(_, seen)| seen.elapsed() < LEASE_COUNTS_FOR)
                .fold(0u32, |sum, (n, _)| sum.saturating_add(*n))
        })
    }

    /// (this edge's, the other edges') deliveries to `hash` in the period starting at
    /// `window_start`.
    pub(super) fn usage_of(&self, hash: &str, window_start: u64, period: u32) -> (u64, u64) {
        let view = lock(&self.usage_view);
        let Some(edges) = view.get(hash) else {
            return (0, 0);
        };
        let mut out = (0u64, 0u64);
        for (edge, r) in edges {
            if r.window_start == window_start && r.period_secs == period {
                if *edge == self.me {
                    out.0 = out.0.saturating_add(r.delivered);
                } else {
                    out.1 = out.1.saturating_add(r.delivered);
                }
            }
        }
        out
    }

    async fn write(bucket: &dyn KvBucket, key: &str, value: bytes::Bytes) -> Result<u64, KvError> {
        tokio::time::timeout(WRITE_TIMEOUT, bucket.put(key, value))
            .await
            .map_err(|_| KvError::Unavailable("write timed out".into()))?
    }

    pub(super) async fn publish_lease(&self, hash: &str, connections: u32) -> Result<u64, KvError> {
        let key = entry_key(hash, &self.me);
        let value = self
            .codec
            .seal(LEASES_BUCKET, &key, &LeaseRecord { connections });
        Self::write(self.leases.as_ref(), &key, value).await
    }

    pub(super) async fn publish_usage(
        &self,
        hash: &str,
        record: &UsageRecord,
    ) -> Result<u64, KvError> {
        let key = entry_key(hash, &self.me);
        let value = self.codec.seal(USAGE_BUCKET, &key, record);
        Self::write(self.usage.as_ref(), &key, value).await
    }

    /// Waits (a bounded time) until the lease watch has applied `revision`.
    pub(super) async fn caught_up(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(BARRIER_TIMEOUT, applied.wait_for(|r| *r >= revision)).await;
    }

    pub(super) fn write_failed(&self, err: &KvError) {
        let mut last = lock(&self.last_log);
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(error = %err, "per-key counts cannot be written; limits use this edge's last view of the cluster");
        }
    }

    /// Applies one lease entry from the watch.
    pub(super) fn apply_lease(&self, e: KvEntry) {
        let revision = e.revision;
        self.apply_lease_entry(e);
        self.applied.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    fn apply_lease_entry(&self, e: KvEntry) {
        let Some((hash, edge)) = split_entry_key(&e.key) else {
            Refused::BadKey.count(LEASES_BUCKET, &e.key);
            return;
        };
        if edge == self.me {
            return;
        }
        let n = if e.deleted {
            0
        } else {
            match self
                .codec
                .open::<LeaseRecord>(LEASES_BUCKET, &e.key, e.value)
            {
                Ok(r) => r.connections,
                Err(r) => {
                    r.count(LEASES_BUCKET, &e.key);
                    return;
                }
            }
        };
        let mut view = lock(&self.lease_view);
        if n == 0 {
            if let Some(edges) = view.get_mut(hash) {
                edges.remove(edge);
                if edges.is_empty() {
                    view.remove(hash);
                }
            }
            return;
        }
        if !view.contains_key(hash) && view.len() >= MAX_VIEW_KEYS {
            view.retain(|_, edges| {
                edges.retain(|_, (_, seen)| seen.elapsed() < LEASE_COUNTS_FOR);
                !edges.is_empty()
            });
            if view.len() >= MAX_VIEW_KEYS {
                tracing::warn!(
                    "per-key lease view full; a key's other connections are not counted"
                );
                return;
            }
        }
        let edges = view.entry(hash.to_owned()).or_default();
        if edges.contains_key(edge) || edges.len() < MAX_VIEW_EDGES {
            edges.insert(edge.to_owned(), (n, Instant::now()));
        }
    }

    /// Applies one usage entry from the watch; returns the key it is about.
    pub(super) fn apply_usage(&self, e: KvEntry) -> Option<String> {
        let Some((hash, edge)) = split_entry_key(&e.key) else {
            Refused::BadKey.count(USAGE_BUCKET, &e.key);
            return None;
        };
        let mut view = lock(&self.usage_view);
        let record = if e.deleted {
            None
        } else {
            match self
                .codec
                .open::<UsageRecord>(USAGE_BUCKET, &e.key, e.value.clone())
            {
                Ok(r) => Some(r),
                Err(r) => {
                    r.count(USAGE_BUCKET, &e.key);
                    return None;
                }
            }
        };
        let now = unix_now();
        match record.filter(|r| {
            r.period_secs > 0 && r.window_start.saturating_add(u64::from(r.period_secs)) > now
        }) {
            None => {
                if let Some(edges) = view.get_mut(hash) {
                    edges.remove(edge);
                    if edges.is_empty() {
                        view.remove(hash);
                    }
                }
            }
            Some(r) => {
                if !view.contains_key(hash) && view.len() >= MAX_VIEW_KEYS {
                    prune_usage(&mut view, now);
                    if view.len() >= MAX_VIEW_KEYS {
                        tracing::warn!(
                            "per-key usage view full; a key's deliveries elsewhere are not counted"
                        );
                        return None;
                    }
                }
                let edges = view.entry(hash.to_owned()).or_default();
                if edges.contains_key(edge) || edges.len() < MAX_VIEW_EDGES {
                    edges.insert(edge.to_owned(), r);
                }
            }
        }
        Some(hash.to_owned())
    }

    /// Forgets deliveries of periods that have ended.
    pub(super) fn prune_usage(&self, now: u64) {
        prune_usage(&mut lock(&self.usage_view), now);
    }

    /// Forgets leases that were not rewritten within the TTL.
    pub(super) fn prune_leases(&self) {
        lock(&self.lease_view).retain(|_, edges| {
            edges.retain(|_, (_, seen)| seen.elapsed() < LEASE_COUNTS_FOR);
            !edges.is_empty()
        });
    }
}

fn prune_usage(view: &mut HashMap<String, HashMap<String, UsageRecord>>, now: u64) {
    view.retain(|_, edges| {
        edges.retain(|_, r| r.window_start.saturating_add(u64::from(r.period_secs)) > now);
        !edges.is_empty()
    });
}
