//! One key's counters on this edge: its live connections, its deliveries in the current
//! quota period (this edge's and, as last settled, the other edges'), and the connections
//! closed together when the quota is spent.

use super::{lock, unix_now};
use crate::conn::{CloseReason, ConnHandle, DeliveryQuota};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What this edge last wrote as the key's lease; guarded by the key's admission lock.
pub(super) struct Lease {
    pub(super) published: u32,
    /// The state left the table: an admission holding it must look the key up again.
    pub(super) retired: bool,
}

/// One key's counters.
pub(crate) struct KeyState {
    pub(super) connections: AtomicU32,
    /// A connection limit applied to the key here: only then is its lease published (keys
    /// without one cost no cluster traffic).
    pub(super) limited: AtomicBool,
    /// Quota (0: none) and its period in seconds, as last granted.
    pub(super) quota: AtomicU32,
    pub(super) period: AtomicU32,
    /// Index of the period `delivered` counts in (unix seconds / period).
    pub(super) window: AtomicU64,
    pub(super) delivered: AtomicU64,
    /// Set once the quota is overrun in the current window (closes happen once).
    pub(super) overrun: AtomicBool,
    /// The other edges' deliveries in window `others_window - 1` (0: none known).
    pub(super) others: AtomicU64,
    pub(super) others_window: AtomicU64,
    /// `delivered` as last settled, for window `settled_window - 1` (0: none).
    pub(super) settled: AtomicU64,
    pub(super) settled_window: AtomicU64,
    /// The key's held connections, closed together when the quota is spent.
    pub(super) conns: Mutex<HashMap<u64, Weak<ConnHandle>>>,
    /// Serializes this key's admissions and lease writes on this edge.
    pub(super) lease: tokio::sync::Mutex<Lease>,
}

impl KeyState {
    pub(super) fn new() -> KeyState {
        KeyState {
            connections: AtomicU32::new(0),
            limited: AtomicBool::new(false),
            quota: AtomicU32::new(0),
            period: AtomicU32::new(0),
            window: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            overrun: AtomicBool::new(false),
            others: AtomicU64::new(0),
            others_window: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            settled_window: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            lease: tokio::sync::Mutex::new(Lease {
                published: 0,
                retired: false,
            }),
        }
    }

    pub(super) fn period(&self) -> u64 {
        u64::from(self.period.load(Ordering::Acquire).max(1))
    }

    /// Moves the counters to the period containing `now`.
    pub(super) fn roll(&self, now: u64) -> u64 {
        let window = now / self.period();
        if self.window.swap(window, Ordering::AcqRel) != window {
            self.delivered.store(0, Ordering::Release);
            self.overrun.store(false, Ordering::Release);
        }
        window
    }

    /// The other edges' deliveries in `window`, as last settled.
    pub(super) fn others_in(&self, window: u64) -> u64 {
        if self.others_window.load(Ordering::Acquire) == window + 1 {
            self.others.load(Ordering::Acquire)
        } else {
            0
        }
    }

    /// True while the quota is spent for the current period, cluster-wide.
    pub(super) fn spent(&self, now: u64) -> bool {
        let quota = self.quota.load(Ordering::Acquire);
        if quota == 0 {
            return false;
        }
        let window = self.roll(now);
        self.delivered
            .load(Ordering::Acquire)
            .saturating_add(self.others_in(window))
            >= u64::from(quota)
    }

    /// True when every delivery of the current period has been settled.
    pub(super) fn settled_up(&self) -> bool {
        let delivered = self.delivered.load(Ordering::Acquire);
        self.quota.load(Ordering::Acquire) == 0
            || delivered == 0
            || (self.settled_window.load(Ordering::Acquire)
                == self.window.load(Ordering::Acquire) + 1
                && self.settled.load(Ordering::Acquire) == delivered)
    }

    /// Counts one delivery about to be queued to a connection of this key. `false`: over the
    /// quota — the delivery must not be sent, and the key's connections have been told to
    /// close.
    pub(crate) fn admit_delivery(&self) -> bool {
        let quota = self.quota.load(Ordering::Acquire);
        if quota == 0 {
            return true;
        }
        let window = self.roll(unix_now());
        let room = u64::from(quota).saturating_sub(self.others_in(window));
        let counted = self
            .delivered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d < room).then_some(d + 1)
            });
        if counted.is_ok() {
            return true;
        }
        self.close_all();
        false
    }

    /// Closes the key's connections, once per period.
    fn close_all(&self) {
        if !self.overrun.swap(true, Ordering::AcqRel) {
            crate::metrics::EdgeMetrics::key_limited("quota");
            let conns: Vec<Weak<ConnHandle>> = lock(&self.conns).values().cloned().collect();
            for c in conns.iter().filter_map(Weak::upgrade) {
                c.close(CloseReason::QuotaExceeded);
            }
        }
    }

    /// Sets the other edges' deliveries in `window`; when that spends the quota, the key's
    /// connections on this edge close.
    pub(super) fn set_others(&self, window: u64, delivered: u64, now: u64) {
        self.others.store(delivered, Ordering::Release);
        self.others_window.store(window + 1, Ordering::Release);
        let quota = self.quota.load(Ordering::Acquire);
        if quota != 0
            && self.roll(now) == window
            && self
                .delivered
                .load(Ordering::Acquire)
                .saturating_add(delivered)
                >= u64::from(quota)
            && !lock(&self.conns).is_empty()
        {
            self.close_all();
        }
    }

    /// Remembers a held connection of this key.
    pub(crate) fn register(&self, conn: &Arc<ConnHandle>) {
        lock(&self.conns).insert(conn.id, Arc::downgrade(conn));
    }

    /// Forgets a held connection.
    pub(crate) fn unregister(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }
}

impl DeliveryQuota for KeyState {
    fn admit_delivery(&self) -> bool {
        KeyState::admit_delivery(self)
    }
}
