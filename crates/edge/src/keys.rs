//! Per-key limits (SPEC §13): concurrent connections and delivered messages per key, the key
//! being the credential the sidecar read (its hash). Counted on this edge.
//!
//! A key's state exists while it has connections, or while its quota is spent for the
//! current period, so the table is bounded by live connections plus keys that exhausted a
//! quota the gateway granted them. Counting a delivery is one atomic add on the key's state —
//! no lock, no allocation, no cluster traffic on the fan-out path.

use crate::conn::{CloseReason, ConnHandle};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

/// One key's counters.
pub(crate) struct KeyState {
    connections: AtomicU32,
    /// Quota (0: none) and its period in seconds, as last granted.
    quota: AtomicU32,
    period: AtomicU32,
    /// Index of the period `delivered` counts in (unix seconds / period).
    window: AtomicU64,
    delivered: AtomicU64,
    /// Set once the quota is overrun in the current window (closes happen once).
    overrun: AtomicBool,
    /// The key's held connections, closed together when the quota is spent.
    conns: Mutex<HashMap<u64, Weak<ConnHandle>>>,
}

impl KeyState {
    fn new() -> KeyState {
        KeyState {
            connections: AtomicU32::new(0),
            quota: AtomicU32::new(0),
            period: AtomicU32::new(0),
            window: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            overrun: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// Moves the counters to the period containing `now`.
    fn roll(&self, now: u64) -> u64 {
        let period = u64::from(self.period.load(Ordering::Relaxed).max(1));
        let window = now / period;
        if self.window.swap(window, Ordering::AcqRel) != window {
            self.delivered.store(0, Ordering::Release);
            self.overrun.store(false, Ordering::Release);
        }
        window
    }

    /// True while the quota is spent for the current period.
    fn spent(&self, now: u64) -> bool {
        let quota = self.quota.load(Ordering::Acquire);
        if quota == 0 {
            return false;
        }
        self.roll(now);
        self.delivered.load(Ordering::Acquire) >= u64::from(quota)
    }

    /// Counts one delivery about to be queued to a connection of this key. `false`: over the
    /// quota — the delivery must not be sent, and the key's connections have been told to
    /// close.
    pub(crate) fn admit_delivery(&self) -> bool {
        let quota = self.quota.load(Ordering::Acquire);
        if quota == 0 {
            return true;
        }
        self.roll(unix_now());
        let n = self.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        if n <= u64::from(quota) {
            return true;
        }
        if !self.overrun.swap(true, Ordering::AcqRel) {
            crate::metrics::EdgeMetrics::key_limited("quota");
            let conns: Vec<Weak<ConnHandle>> = self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for c in conns.iter().filter_map(Weak::upgrade) {
                c.close(CloseReason::QuotaExceeded);
            }
        }
        false
    }

    /// Remembers a held connection of this key.
    pub(crate) fn register(&self, conn: &Arc<ConnHandle>) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn.id, Arc::downgrade(conn));
    }

    /// Forgets a held connection.
    pub(crate) fn unregister(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

type Table = DashMap<String, Arc<KeyState>>;

/// Every key with live connections (or a spent quota) on this edge.
#[derive(Default)]
pub(crate) struct KeyTable {
    keys: Arc<Table>,
}

/// A connection slot of a key; dropping it frees the slot.
pub(crate) struct KeySlot {
    keys: Arc<Table>,
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
        let now = unix_now();
        // Under the shard lock, so an acquire cannot pick up a state that is being removed.
        self.keys.remove_if(&self.hash, |_, s| {
            let left = s
                .connections
                .fetch_sub(1, Ordering::AcqRel)
                .saturating_sub(1);
            left == 0 && !s.spent(now)
        });
    }
}

impl KeyTable {
    /// Takes a connection slot for the key `hash` under `max_connections`, after checking
    /// that its quota (`quota`, as granted now) is not spent.
    pub(crate) fn acquire(
        &self,
        hash: &str,
        max_connections: Option<u32>,
        quota: Option<(u32, u32)>,
    ) -> Result<KeySlot, Limit> {
        let entry = self
            .keys
            .entry(hash.to_owned())
            .or_insert_with(|| Arc::new(KeyState::new()));
        let state = entry.value().clone();
        if let Some((n, period)) = quota {
            state.quota.store(n, Ordering::Release);
            state.period.store(period, Ordering::Release);
        }
        if state.spent(unix_now()) {
            drop(entry);
            self.forget_if_idle(hash);
            return Err(Limit::Quota);
        }
        let max = max_connections.unwrap_or(u32::MAX);
        let taken = state
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < max).then_some(c + 1)
            });
        drop(entry);
        match taken {
            Ok(_) => Ok(KeySlot {
                keys: self.keys.clone(),
                hash: hash.to_owned(),
                state,
            }),
            Err(_) => Err(Limit::Connections),
        }
    }

    fn forget_if_idle(&self, hash: &str) {
        let now = unix_now();
        self.keys.remove_if(hash, |_, s| {
            s.connections.load(Ordering::Acquire) == 0 && !s.spent(now)
        });
    }

    /// Keys tracked (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Transport;

    #[test]
    fn connection_slots_are_bounded_and_freed() {
        let t = KeyTable::default();
        let a = t.acquire("k", Some(2), None).expect("1st");
        let _b = t.acquire("k", Some(2), None).expect("2nd");
        assert_eq!(
            t.acquire("k", Some(2), None).err(),
            Some(Limit::Connections)
        );
        assert!(
            t.acquire("other", Some(2), None).is_ok(),
            "keys are separate"
        );
        drop(a);
        let _c = t.acquire("k", Some(2), None).expect("a slot was freed");
        assert!(t.acquire("k", None, None).is_ok(), "no limit");
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let t = KeyTable::default();
        let a = t.acquire("k", Some(1), None).expect("slot");
        assert_eq!(t.len(), 1);
        drop(a);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_spent_quota_closes_the_keys_connections_and_refuses_new_ones() {
        let t = KeyTable::default();
        let slot = t.acquire("k", None, Some((3, 3600))).expect("slot");
        let (conn, _queue) = ConnHandle::new(1, Transport::Ws, 10, 1 << 20);
        slot.state.register(&conn);
        for _ in 0..3 {
            assert!(slot.state.admit_delivery());
        }
        assert!(!slot.state.admit_delivery(), "the 4th is over the quota");
        let closed = futures_util::FutureExt::now_or_never(conn.closed());
        assert_eq!(closed, Some(CloseReason::QuotaExceeded));
        assert_eq!(t.acquire("k", None, None).err(), Some(Limit::Quota));
        drop(slot);
        assert_eq!(t.len(), 1, "a spent key is kept until its period ends");
    }
}
