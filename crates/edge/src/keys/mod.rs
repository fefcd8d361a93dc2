//! Per-key limits (docs/protocol.md, "Key limits and usage"): concurrent connections and
//! delivered messages per key, the key being the credential the sidecar read (its hex
//! SHA-256, never the credential), counted across the cluster through two state buckets
//! (`bus::key_state`).
//!
//! **Connections.** Each edge keeps a lease per key — its live connections of the key — in
//! `gripmesh_key_leases`, and follows the other edges' leases through a watch (a bounded local
//! view). An admission under a connection limit is *write-then-read*: the edge writes its
//! lease with the new connection counted, waits until its watch has delivered that write (so
//! every lease written before it is in the view), and only then compares the total with the
//! limit, taking the slot back if it is over. Of two simultaneous admissions on two edges, the
//! later write sees the earlier one, so the limit holds exactly (simultaneous admissions may
//! both back off at the very limit; never both pass). The admissions of one key on one edge
//! are serialized (a per-key async lock; one KV write each), keys are independent; a key no
//! connection limit applies to has no lease (no cluster traffic at all). Freed
//! slots are published in batches (every [`FLUSH_EVERY`]), leases are rewritten every
//! `LEASE_REFRESH` (10 s) and count for `LEASE_COUNTS_FOR` (25 s) after they were written (the
//! bucket drops them after 30 s): a killed edge's connections stop counting within 30 s. When the bucket cannot be written (NATS down) an edge admits against
//! its last view of the others and logs it.
//!
//! **Messages.** Counting a delivery is one atomic operation on the key's state — no lock, no
//! allocation, no cluster traffic on the fan-out path. Each edge settles its count for the
//! quota period into `gripmesh_key_usage` every [`SETTLE_EVERY`] (only keys whose count moved)
//! and follows the other edges' counts; a key is spent when its edge's count plus the others'
//! reaches the quota, which closes its connections on every edge. Overshoot: at most what the
//! other edges deliver to the key in one settlement interval (plus the watch's propagation).
//!
//! A key's state exists while it has connections, a published lease, unsettled deliveries or
//! a spent quota, so the table is bounded by live connections plus keys that exhausted a
//! quota; the views of the other edges are bounded at [`MAX_VIEW_KEYS`] keys of at most
//! [`MAX_VIEW_EDGES`] edges each.

mod cluster;
mod state;

use bus::key_state::{LEASE_REFRESH, UsageRecord};
use bus::kv::StateStore;
use bus::records::RecordCodec;
use cluster::ClusterCounts;
use dashmap::DashMap;
use futures_util::StreamExt;
use state::KeyState;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often freed slots are published (and idle keys forgotten).
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How often delivered counts are settled into the usage bucket (the quota's settlement
/// interval).
pub const SETTLE_EVERY: Duration = Duration::from_secs(1);
/// Keys in each view of the other edges' counts, at most.
pub const MAX_VIEW_KEYS: usize = 100_000;
/// Edges per key in a view, at most.
pub const MAX_VIEW_EDGES: usize = 256;
/// Writes to the buckets in flight at once from the background ticks.
const BACKGROUND_WRITES: usize = 32;

/// Limits applied to every key unless the gateway's answer overrides them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimitsConfig {
    /// `--key-max-connections`: concurrent connections per key (`None`: unlimited).
    pub max_connections: Option<u32>,
    /// `--key-message-quota N/PERIOD`: (messages, period seconds) per key.
    pub message_quota: Option<(u32, u32)>,
}

/// Which limit refused a connection (the `limit` label of `gripmesh_edge_key_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Too many connections for the key.
    Connections,
    /// The key's message quota is spent for this period.
    Quota,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The table's shared part.
#[derive(Default)]
struct TableInner {
    keys: DashMap<String, Arc<KeyState>>,
    /// Keys whose lease may differ from their live count, or that may be idle.
    dirty: Mutex<HashSet<String>>,
    /// The other edges' counts, once the buckets are open.
    cluster: OnceLock<Arc<ClusterCounts>>,
}

impl TableInner {
    fn mark_dirty(&self, hash: &str) {
        let mut dirty = lock(&self.dirty);
        if !dirty.contains(hash) {
            dirty.insert(hash.to_owned());
        }
    }
}

/// Every key with live connections (or a spent quota) on this edge, and the cluster's
/// counts. Cheap to clone; clones share the table.
#[derive(Default, Clone)]
pub(crate) struct KeyTable {
    inner: Arc<TableInner>,
}

/// A connection slot of a key; dropping it frees the slot.
pub(crate) struct KeySlot {
    table: Arc<TableInner>,
    hash: String,
    pub(crate) state: Arc<KeyState>,
}

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySlot")
            .field(
                "connections",
                &self.state.connections.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::AcqRel);
        // The freed slot is published (and the key forgotten when idle) by the next flush.
        self.table.mark_dirty(&self.hash);
    }
}

impl KeyTable {
    /// Takes a connection slot for the key `hash` under `max_connections` (cluster-wide),
    /// after checking that its quota (`quota`, as granted now) is not spent.
    pub(crate) async fn acquire(
        &self,
        hash: &str,
        max_connections: Option<u32>,
        quota: Option<(u32, u32)>,
    ) -> Result<KeySlot, Limit> {
        let t = &self.inner;
        let cluster = t.cluster.get().cloned();
        loop {
            let mut created = false;
            let state = t
                .keys
                .entry(hash.to_owned())
                .or_insert_with(|| {
                    created = true;
                    Arc::new(KeyState::new())
                })
                .value()
                .clone();
            let now = unix_now();
            if let Some((n, period)) = quota {
                let period = period.max(1);
                state.quota.store(n, Ordering::Release);
                let before = state.period.swap(period, Ordering::AcqRel);
                if let Some(c) = &cluster
                    && (created || before != period)
                {
                    // This edge's own settled count of the period (a key forgotten and seen
                    // again) and the other edges'.
                    let window = now / u64::from(period);
                    let start = window * u64::from(period);
                    let (mine, others) = c.usage_of(hash, start, period);
                    state.window.store(window, Ordering::Release);
                    state.delivered.store(mine, Ordering::Release);
                    state.settled.store(mine, Ordering::Release);
                    state.settled_window.store(window + 1, Ordering::Release);
                    state.overrun.store(false, Ordering::Release);
                    state.set_others(window, others, now);
                }
            }
            if state.spent(now) {
                t.mark_dirty(hash);
                return Err(Limit::Quota);
            }
            let mut lease = state.lease.lock().await;
            if lease.retired {
                continue;
            }
            let local = state.connections.load(Ordering::Acquire);
            if max_connections.is_some() {
                state.limited.store(true, Ordering::Release);
            }
            match (max_connections, &cluster) {
                (Some(max), _) if local.saturating_add(cluster_others(&cluster, hash)) >= max => {
                    drop(lease);
                    t.mark_dirty(hash);
                    return Err(Limit::Connections);
                }
                (Some(max), Some(c)) => {
                    // Write, then read: the lease with this connection counted, then the
                    // view once it holds every lease written before ours.
                    let want = local.saturating_add(1);
                    match c.publish_lease(hash, want).await {
                        Ok(revision) => {
                            lease.published = want;
                            c.caught_up(revision).await;
                            if want.saturating_add(c.others_connections(hash)) > max {
                                drop(lease);
                                // The flush writes the lease back down.
                                t.mark_dirty(hash);
                                return Err(Limit::Connections);
                            }
                        }
                        Err(err) => {
                            // Admitted on the last view of the other edges.
                            c.write_failed(&err);
                            t.mark_dirty(hash);
                        }
                    }
                }
                _ => t.mark_dirty(hash),
            }
            state.connections.fetch_add(1, Ordering::AcqRel);
            drop(lease);
            return Ok(KeySlot {
                table: t.clone(),
                hash: hash.to_owned(),
                state,
            });
        }
    }

    /// Publishes the leases of keys whose count changed, and forgets idle keys.
    pub(crate) async fn flush(&self) {
        let t = &self.inner;
        let dirty: Vec<String> = lock(&t.dirty).drain().collect();
        let cluster = t.cluster.get().cloned();
        futures_util::stream::iter(dirty)
            .for_each_concurrent(BACKGROUND_WRITES, |hash| {
                let cluster = cluster.clone();
                async move {
                    let Some(state) = t.keys.get(&hash).map(|s| s.value().clone()) else {
                        return;
                    };
                    let mut lease = state.lease.lock().await;
                    if lease.retired {
                        return;
                    }
                    let n = state.connections.load(Ordering::Acquire);
                    let publish = state.limited.load(Ordering::Acquire) || lease.published != 0;
                    if n != lease.published && publish {
                        match &cluster {
                            Some(c) => match c.publish_lease(&hash, n).await {
                                Ok(_) => lease.published = n,
                                Err(err) => {
                                    c.write_failed(&err);
                                    t.mark_dirty(&hash);
                                    return;
                                }
                            },
                            None => lease.published = n,
                        }
                    }
                    if n == 0
                        && lease.published == 0
                        && (cluster.is_none() || state.settled_up())
                        && !state.spent(unix_now())
                    {
                        lease.retired = true;
                        t.keys.remove_if(&hash, |_, s| Arc::ptr_eq(s, &state));
                    }
                }
            })
            .await;
    }

    /// Rewrites every non-zero lease (so it outlives the bucket's `max_age`), and prunes the
    /// views.
    async fn refresh(&self) {
        let t = &self.inner;
        let Some(c) = t.cluster.get().cloned() else {
            return;
        };
        c.prune_usage(unix_now());
        c.prune_leases();
        let states: Vec<(String, Arc<KeyState>)> = t
            .keys
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        futures_util::stream::iter(states)
            .for_each_concurrent(BACKGROUND_WRITES, |(hash, state)| {
                let c = c.clone();
                async move {
                    let mut lease = state.lease.lock().await;
                    let n = state.connections.load(Ordering::Acquire);
                    let unlimited = !state.limited.load(Ordering::Acquire);
                    if lease.retired || (lease.published == 0 && (n == 0 || unlimited)) {
                        return;
                    }
                    match c.publish_lease(&hash, n).await {
                        Ok(_) => lease.published = n,
                        Err(err) => c.write_failed(&err),
                    }
                }
            })
            .await;
    }

    /// Settles the deliveries of every key whose count moved into the usage bucket; idle keys
    /// are queued to be forgotten.
    pub(crate) async fn settle(&self) {
        let t = &self.inner;
        let now = unix_now();
        let states: Vec<(String, Arc<KeyState>)> = t
            .keys
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (hash, state) in &states {
            if state.connections.load(Ordering::Acquire) == 0 {
                t.mark_dirty(hash);
            }
        }
        let Some(c) = t.cluster.get().cloned() else {
            return;
        };
        futures_util::stream::iter(states)
            .for_each_concurrent(BACKGROUND_WRITES, |(hash, state)| {
                let c = c.clone();
                async move {
                    if state.quota.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    let period = state.period();
                    let window = state.roll(now);
                    let delivered = state.delivered.load(Ordering::Acquire);
                    if delivered == 0 || state.settled_up() {
                        return;
                    }
                    let record = UsageRecord {
                        window_start: window * period,
                        period_secs: u32::try_from(period).unwrap_or(u32::MAX),
                        delivered,
                    };
                    match c.publish_usage(&hash, &record).await {
                        Ok(_) => {
                            state.settled.store(delivered, Ordering::Release);
                            state.settled_window.store(window + 1, Ordering::Release);
                        }
                        Err(err) => c.write_failed(&err),
                    }
                }
            })
            .await;
    }

    /// Applies the other edges' settled deliveries of `hash` to its state here.
    fn on_usage(&self, c: &ClusterCounts, hash: &str) {
        let Some(state) = self.inner.keys.get(hash).map(|s| s.value().clone()) else {
            return;
        };
        if state.quota.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = unix_now();
        let period = state.period();
        let window = state.roll(now);
        let (_, others) = c.usage_of(
            hash,
            window * period,
            u32::try_from(period).unwrap_or(u32::MAX),
        );
        state.set_others(window, others, now);
    }

    /// Counts keys cluster-wide through the buckets in `store` until `shutdown`: publishes
    /// this edge's leases and deliveries and follows the other edges'. Freed slots and idle
    /// keys are handled from the start; until the buckets open (control creates them) the
    /// counts are this edge's alone.
    /// `on_current` runs once the other edges' leases are known (or after
    /// `bus::cluster_state::CATCH_UP_LIMIT` without the buckets).
    pub(crate) async fn run(
        &self,
        store: Arc<dyn StateStore>,
        codec: RecordCodec,
        on_current: bus::cluster_state::CaughtUp,
        shutdown: CancellationToken,
    ) {
        tokio::spawn({
            let (table, stop) = (self.clone(), shutdown.clone());
            async move { table.ticks(stop).await }
        });
        tokio::spawn({
            let timer = on_current.clone();
            async move {
                tokio::time::sleep(bus::cluster_state::CATCH_UP_LIMIT).await;
                timer.fire();
            }
        });
        let Some(leases) = bus::kv::open_retrying(
            store.as_ref(),
            &bus::key_state::leases_bucket(1),
            false,
            &shutdown,
        )
        .await
        else {
            return;
        };
        let Some(usage) = bus::kv::open_retrying(
            store.as_ref(),
            &bus::key_state::usage_bucket(1),
            false,
            &shutdown,
        )
        .await
        else {
            return;
        };
        let cluster = Arc::new(ClusterCounts::new(leases.clone(), usage.clone(), codec));
        tracing::info!(edge = %cluster.me, "per-key limits counted cluster-wide");
        tokio::spawn({
            let (c, stop, leases) = (cluster.clone(), shutdown.clone(), leases.clone());
            async move {
                let mut last = None;
                bus::cluster_state::follow_key(leases.as_ref(), ">", &stop, &mut last, |e| {
                    c.apply_lease(e);
                })
                .await;
            }
        });
        tokio::spawn({
            let (c, stop, table) = (cluster.clone(), shutdown.clone(), self.clone());
            async move {
                let mut last = None;
                bus::cluster_state::follow_key(usage.as_ref(), ">", &stop, &mut last, |e| {
                    if let Some(hash) = c.apply_usage(e) {
                        table.on_usage(&c, &hash);
                    }
                })
                .await;
            }
        });
        let _ = self.inner.cluster.set(cluster.clone());
        // Connections admitted before the buckets opened count from now on.
        self.refresh().await;
        if let Ok(Some(revision)) = leases.last_revision().await {
            cluster.caught_up(revision).await;
        }
        on_current.fire();
    }

    /// The background work: flushes, settlements and lease refreshes, one at a time.
    async fn ticks(&self, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut settle = tokio::time::interval(SETTLE_EVERY);
        let mut refresh = tokio::time::interval(LEASE_REFRESH);
        for t in [&mut flush, &mut settle, &mut refresh] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = flush.tick() => self.flush().await,
                _ = settle.tick() => self.settle().await,
                _ = refresh.tick() => self.refresh().await,
            }
        }
    }

    /// Keys tracked (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.keys.len()
    }
}

fn cluster_others(cluster: &Option<Arc<ClusterCounts>>, hash: &str) -> u32 {
    cluster.as_ref().map_or(0, |c| c.others_connections(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{CloseReason, ConnHandle, Transport};
    use bus::key_state::{LEASES_BUCKET, LeaseRecord, entry_key};
    use bus::kv::MemoryState;

    const K: &str = "k";

    #[tokio::test]
    async fn connection_slots_are_bounded_and_freed() {
        let t = KeyTable::default();
        let a = t.acquire(K, Some(2), None).await.expect("1st");
        let _b = t.acquire(K, Some(2), None).await.expect("2nd");
        assert_eq!(
            t.acquire(K, Some(2), None).await.err(),
            Some(Limit::Connections)
        );
        assert!(
            t.acquire("other", Some(2), None).await.is_ok(),
            "keys are separate"
        );
        drop(a);
        let _c = t.acquire(K, Some(2), None).await.expect("a slot was freed");
        assert!(t.acquire(K, None, None).await.is_ok(), "no limit");
    }

    #[tokio::test]
    async fn idle_keys_are_forgotten() {
        let t = KeyTable::default();
        let a = t.acquire(K, Some(1), None).await.expect("slot");
        assert_eq!(t.len(), 1);
        drop(a);
        t.flush().await;
        assert_eq!(t.len(), 0);
    }

    #[tokio::test]
    async fn a_spent_quota_closes_the_keys_connections_and_refuses_new_ones() {
        let t = KeyTable::default();
        let slot = t.acquire(K, None, Some((3, 3600))).await.expect("slot");
        let (conn, _queue) = ConnHandle::new(1, Transport::Ws, 10, 1 << 20);
        slot.state.register(&conn);
        for _ in 0..3 {
            assert!(slot.state.admit_delivery());
        }
        assert!(!slot.state.admit_delivery(), "the 4th is over the quota");
        let closed = futures_util::FutureExt::now_or_never(conn.closed());
        assert_eq!(closed, Some(CloseReason::QuotaExceeded));
        assert_eq!(t.acquire(K, None, None).await.err(), Some(Limit::Quota));
        drop(slot);
        t.flush().await;
        assert_eq!(t.len(), 1, "a spent key is kept until its period ends");
    }

    fn hash(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    /// Two "edges" (tables) on one in-memory state store, counting through the buckets.
    async fn two_edges() -> (KeyTable, KeyTable, CancellationToken) {
        let store: Arc<dyn StateStore> = Arc::new(MemoryState::new());
        bus::key_state::prepare(store.as_ref(), 1)
            .await
            .expect("buckets");
        let stop = CancellationToken::new();
        let (a, b) = (KeyTable::default(), KeyTable::default());
        for t in [&a, &b] {
            let (t, store, stop) = (t.clone(), store.clone(), stop.clone());
            let ready = bus::cluster_state::CaughtUp::new(|| {});
            tokio::spawn(async move { t.run(store, RecordCodec::default(), ready, stop).await });
        }
        for t in [&a, &b] {
            while t.inner.cluster.get().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        (a, b, stop)
    }

    async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
        for _ in 0..400 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn connections_are_counted_across_edges_and_freed() {
        let (a, b, stop) = two_edges().await;
        let k = hash(1);
        let a1 = a.acquire(&k, Some(3), None).await.expect("a1");
        let _a2 = a.acquire(&k, Some(3), None).await.expect("a2");
        let _b1 = b.acquire(&k, Some(3), None).await.expect("b1");
        assert_eq!(
            b.acquire(&k, Some(3), None).await.err(),
            Some(Limit::Connections),
            "sequential opens are exact"
        );
        assert_eq!(
            a.acquire(&k, Some(3), None).await.err(),
            Some(Limit::Connections)
        );
        assert!(
            b.acquire(&hash(2), Some(3), None).await.is_ok(),
            "another key"
        );
        drop(a1);
        a.flush().await;
        eventually("the slot freed on a is free on b", async || {
            b.acquire(&k, Some(3), None)
                .await
                .map(std::mem::forget)
                .is_ok()
        })
        .await;
        stop.cancel();
    }

    #[tokio::test]
    async fn only_limited_keys_have_leases() {
        let (a, _b, stop) = two_edges().await;
        let c = a.inner.cluster.get().cloned().expect("cluster");
        let lease_of = |k: String| {
            let c = c.clone();
            async move {
                c.leases
                    .entry(&entry_key(&k, &c.me))
                    .await
                    .expect("read")
                    .map(|e| {
                        c.codec
                            .open::<LeaseRecord>(LEASES_BUCKET, &e.key, e.value)
                            .expect("record")
                            .connections
                    })
            }
        };
        let free = a.acquire(&hash(7), None, None).await.expect("free");
        let capped = a.acquire(&hash(8), Some(5), None).await.expect("capped");
        a.flush().await;
        a.refresh().await;
        assert_eq!(lease_of(hash(7)).await, None, "no limit, no lease");
        assert_eq!(lease_of(hash(8)).await, Some(1));
        drop((free, capped));
        a.flush().await;
        assert_eq!(
            lease_of(hash(8)).await,
            Some(0),
            "a freed slot is published"
        );
        assert_eq!(a.len(), 0, "both keys forgotten");
        stop.cancel();
    }

    #[tokio::test]
    async fn simultaneous_opens_on_two_edges_never_pass_the_limit() {
        let (a, b, stop) = two_edges().await;
        let k = hash(3);
        let tries = (0..100).map(|i| {
            let (t, k) = (if i % 2 == 0 { a.clone() } else { b.clone() }, k.clone());
            tokio::spawn(async move { t.acquire(&k, Some(10), None).await.ok() })
        });
        let slots: Vec<KeySlot> = futures_util::future::join_all(tries)
            .await
            .into_iter()
            .filter_map(|r| r.expect("task"))
            .collect();
        assert!(
            (1..=10).contains(&slots.len()),
            "admitted {} of 100 under a limit of 10",
            slots.len()
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn quota_is_shared_across_edges_and_closes_everywhere() {
        let (a, b, stop) = two_edges().await;
        let k = hash(4);
        let q = Some((10, 3600));
        let on_a = a.acquire(&k, None, q).await.expect("a");
        let on_b = b.acquire(&k, None, q).await.expect("b");
        let (conn_a, _qa) = ConnHandle::new(1, Transport::Ws, 10, 1 << 20);
        let (conn_b, _qb) = ConnHandle::new(2, Transport::Ws, 10, 1 << 20);
        on_a.state.register(&conn_a);
        on_b.state.register(&conn_b);
        for _ in 0..6 {
            assert!(on_a.state.admit_delivery());
        }
        a.settle().await;
        eventually("b sees a's deliveries", async || {
            on_b.state
                .others_in(on_b.state.window.load(Ordering::Acquire))
                == 6
        })
        .await;
        for _ in 0..4 {
            assert!(on_b.state.admit_delivery());
        }
        assert!(!on_b.state.admit_delivery(), "the 11th is over");
        let closed_b = futures_util::FutureExt::now_or_never(conn_b.closed());
        assert_eq!(closed_b, Some(CloseReason::QuotaExceeded));
        b.settle().await;
        eventually("a's connection closes too", async || {
            futures_util::FutureExt::now_or_never(conn_a.closed()).is_some()
        })
        .await;
        assert_eq!(a.acquire(&k, None, q).await.err(), Some(Limit::Quota));
        assert!(
            a.acquire(&hash(5), None, q).await.is_ok(),
            "other keys are not affected"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_forgotten_key_keeps_its_settled_deliveries() {
        let (a, _b, stop) = two_edges().await;
        let k = hash(6);
        let q = Some((5, 3600));
        let slot = a.acquire(&k, None, q).await.expect("slot");
        for _ in 0..3 {
            assert!(slot.state.admit_delivery());
        }
        a.settle().await;
        let c = a.inner.cluster.get().cloned().expect("cluster");
        let start = unix_now() / 3600 * 3600;
        eventually("a's settlement is back through the watch", async || {
            c.usage_of(&k, start, 3600).0 == 3
        })
        .await;
        drop(slot);
        eventually("forgotten", async || {
            a.flush().await;
            a.len() == 0
        })
        .await;
        let slot = a.acquire(&k, None, q).await.expect("again");
        assert!(slot.state.admit_delivery());
        assert!(slot.state.admit_delivery());
        assert!(!slot.state.admit_delivery(), "3 + 2 = the quota of 5");
        stop.cancel();
    }
}
