//! The decision cache: bounded in entries and bytes, expired entries swept, revocable by any
//! credential a decision was made for.
//!
//! Every key costs the sidecar memory and comes from the client (any `?apikey=` value makes a
//! new one), so the cache never grows past its bounds: each insert first sweeps what has
//! expired, then, while still full, evicts the entry closest to expiry (the least useful one).
//! Entries are indexed by expiry, so both are O(log n). Inserts are the only way to grow, so
//! sweeping on insert keeps the cache at or under its bounds without a background task.

use crate::Outcome;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// A decision key (see [`crate::credential::decision_key`]).
pub(crate) type Key = [u8; 32];

/// Bookkeeping bytes counted per entry on top of its contents (map slot, index node, Vec and
/// String headers), so many tiny entries cannot hide behind small contents.
const ENTRY_OVERHEAD: usize = 192;

/// Bounds of the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Entries at most.
    pub(crate) entries: usize,
    /// Bytes at most (contents plus [`ENTRY_OVERHEAD`] per entry).
    pub(crate) bytes: usize,
}

struct Slot {
    outcome: Outcome,
    /// Hashes of every credential the request presented (revocation handles).
    credentials: Vec<String>,
    expires: Instant,
    seq: u64,
    weight: usize,
}

#[derive(Default)]
struct State {
    map: HashMap<Key, Slot>,
    /// (expiry, insertion sequence) → key: the sweep and eviction order.
    by_expiry: BTreeMap<(Instant, u64), Key>,
    seq: u64,
    bytes: usize,
}

impl State {
    fn remove(&mut self, key: &Key) -> Option<Slot> {
        let slot = self.map.remove(key)?;
        self.by_expiry.remove(&(slot.expires, slot.seq));
        self.bytes = self.bytes.saturating_sub(slot.weight);
        Some(slot)
    }

    /// Drops every entry expired at `now`.
    fn sweep(&mut self, now: Instant) {
        while let Some((&(expires, _), &key)) = self.by_expiry.first_key_value() {
            if expires > now {
                break;
            }
            self.remove(&key);
        }
    }

    /// Drops the entry closest to expiry.
    fn evict_one(&mut self) -> bool {
        match self.by_expiry.first_key_value() {
            Some((_, &key)) => self.remove(&key).is_some(),
            None => false,
        }
    }
}

/// The cache. Cheap operations under one short-held lock (never across an await).
pub(crate) struct DecisionCache {
    bounds: Bounds,
    state: Mutex<State>,
}

/// Sizes after a change, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    pub(crate) entries: usize,
    pub(crate) bytes: usize,
}

impl DecisionCache {
    pub(crate) fn new(bounds: Bounds) -> DecisionCache {
        DecisionCache {
            bounds,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live decision for `key`, if any (an expired one is dropped).
    pub(crate) fn get(&self, key: &Key, now: Instant) -> Option<Outcome> {
        let mut s = self.lock();
        let expired = match s.map.get(key) {
            None => return None,
            Some(slot) if slot.expires > now => return Some(slot.outcome.clone()),
            Some(_) => true,
        };
        if expired {
            s.remove(key);
        }
        None
    }

    /// Stores a decision until `expires`, within the bounds. A decision larger than the
    /// whole byte bound is not stored.
    pub(crate) fn insert(
        &self,
        key: Key,
        outcome: Outcome,
        credentials: Vec<String>,
        expires: Instant,
        now: Instant,
    ) -> Size {
        let weight =
            ENTRY_OVERHEAD + outcome.weight() + credentials.iter().map(String::len).sum::<usize>();
        let mut s = self.lock();
        s.remove(&key);
        s.sweep(now);
        if self.bounds.entries == 0 || weight > self.bounds.bytes || expires <= now {
            return size(&s);
        }
        while s.map.len() >= self.bounds.entries
            || s.bytes.saturating_add(weight) > self.bounds.bytes
        {
            if !s.evict_one() {
                break;
            }
        }
        s.seq += 1;
        let seq = s.seq;
        s.by_expiry.insert((expires, seq), key);
        s.bytes += weight;
        s.map.insert(
            key,
            Slot {
                outcome,
                credentials,
                expires,
                seq,
                weight,
            },
        );
        size(&s)
    }

    /// Drops every decision made for a request that presented `credential_hash` in any
    /// source; returns how many, and the sizes after.
    pub(crate) fn revoke(&self, credential_hash: &str) -> (usize, Size) {
        let mut s = self.lock();
        let doomed: Vec<Key> = s
            .map
            .iter()
            .filter(|(_, slot)| slot.credentials.iter().any(|c| c == credential_hash))
            .map(|(k, _)| *k)
            .collect();
        for key in &doomed {
            s.remove(key);
        }
        (doomed.len(), size(&s))
    }

    /// Current sizes.
    #[cfg(test)]
    pub(crate) fn size(&self) -> Size {
        size(&self.lock())
    }
}

fn size(s: &State) -> Size {
    Size {
        entries: s.map.len(),
        bytes: s.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn key(n: u32) -> Key {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    fn allow() -> Outcome {
        Outcome::Allow {
            headers: Vec::new(),
            limits: Default::default(),
        }
    }

    fn deny(body: usize) -> Outcome {
        Outcome::Refused(crate::Refusal::Denied {
            status: 401,
            headers: Vec::new(),
            body: Bytes::from(vec![b'x'; body]),
        })
    }

    const BIG: Bounds = Bounds {
        entries: 100,
        bytes: usize::MAX,
    };

    #[test]
    fn never_grows_past_its_entry_bound() {
        let cache = DecisionCache::new(Bounds {
            entries: 10,
            bytes: usize::MAX,
        });
        let now = Instant::now();
        for n in 0..1000 {
            let size = cache.insert(key(n), allow(), vec![], now + Duration::from_secs(60), now);
            assert!(size.entries <= 10, "{size:?}");
        }
        assert_eq!(cache.size().entries, 10);
        // The newest survive; the oldest (closest to expiry) went first.
        assert!(cache.get(&key(999), now).is_some());
        assert!(cache.get(&key(0), now).is_none());
    }

    #[test]
    fn never_grows_past_its_byte_bound() {
        let cache = DecisionCache::new(Bounds {
            entries: 1000,
            bytes: 20_000,
        });
        let now = Instant::now();
        for n in 0..500 {
            let size = cache.insert(
                key(n),
                deny(4096),
                vec![],
                now + Duration::from_secs(10),
                now,
            );
            assert!(size.bytes <= 20_000, "{size:?}");
        }
        assert!(cache.size().entries <= 20_000 / 4096);
        // One decision larger than the whole cache is simply not kept.
        cache.insert(
            key(9999),
            deny(30_000),
            vec![],
            now + Duration::from_secs(10),
            now,
        );
        assert!(cache.get(&key(9999), now).is_none());
    }

    #[test]
    fn expired_entries_are_swept_on_insert_and_never_served() {
        let cache = DecisionCache::new(BIG);
        let now = Instant::now();
        for n in 0..50 {
            cache.insert(key(n), deny(10), vec![], now + Duration::from_secs(10), now);
        }
        assert!(cache.get(&key(1), now).is_some());
        let later = now + Duration::from_secs(11);
        assert!(cache.get(&key(1), later).is_none(), "expired");
        let size = cache.insert(
            key(100),
            allow(),
            vec![],
            later + Duration::from_secs(60),
            later,
        );
        assert_eq!(size.entries, 1, "the 49 other expired entries were swept");
    }

    #[test]
    fn revocation_drops_every_decision_that_presented_the_credential() {
        let cache = DecisionCache::new(BIG);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        cache.insert(key(1), allow(), vec!["good".into()], exp, now);
        cache.insert(
            key(2),
            allow(),
            vec!["alias".into(), "good".into()],
            exp,
            now,
        );
        cache.insert(key(3), allow(), vec!["other".into()], exp, now);
        let (dropped, size) = cache.revoke("good");
        assert_eq!((dropped, size.entries), (2, 1));
        assert!(
            cache.get(&key(2), now).is_none(),
            "the alias cannot ride the cache"
        );
        assert!(cache.get(&key(3), now).is_some());
    }

    #[test]
    fn replacing_an_entry_keeps_the_accounting_exact() {
        let cache = DecisionCache::new(BIG);
        let now = Instant::now();
        let a = cache.insert(key(1), deny(100), vec![], now + Duration::from_secs(5), now);
        let b = cache.insert(key(1), deny(100), vec![], now + Duration::from_secs(9), now);
        assert_eq!(a, b);
        cache.revoke("nothing");
        let later = now + Duration::from_secs(6);
        assert!(
            cache.get(&key(1), later).is_some(),
            "the newer expiry counts"
        );
    }
}
