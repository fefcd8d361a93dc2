//! History in process memory (standalone without NATS; lost on restart).

use super::{
    After, DEDUP_WINDOW, HistoryError, HistoryStore, Receipt, Record, Resume, StoreItem, now_nanos,
    resume_from,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How often stores sweep expired items out of every channel (nanoseconds).
const SWEEP_EVERY_NANOS: u64 = 5_000_000_000;

/// A [`HistoryStore`] in memory. Each channel keeps at most its SIZE items, dropped once older
/// than its AGE; channels whose items all expired are forgotten. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryHistory {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    channels: HashMap<String, ChannelLog>,
    next_seq: u64,
    last_sweep: u64,
}

#[derive(Default)]
struct ChannelLog {
    records: VecDeque<Record>,
    /// id ⇒ (stored at, seq), for de-dup within the window.
    ids: HashMap<String, (u64, u64)>,
    /// ids in store order, to expire `ids`.
    id_order: VecDeque<(u64, String)>,
}

impl ChannelLog {
    fn trim(&mut self, now: u64) {
        while let Some(r) = self.records.front() {
            let age = u64::try_from(r.limits.age.as_nanos()).unwrap_or(u64::MAX);
            let over_size = self.records.len() > r.limits.size as usize;
            if over_size || r.stored_nanos.saturating_add(age) <= now {
                self.records.pop_front();
            } else {
                break;
            }
        }
        let window = u64::try_from(DEDUP_WINDOW.as_nanos()).unwrap_or(u64::MAX);
        while let Some((at, _)) = self.id_order.front() {
            if at.saturating_add(window) > now {
                break;
            }
            if let Some((at, id)) = self.id_order.pop_front()
                && self.ids.get(&id).is_some_and(|(t, _)| *t == at)
            {
                self.ids.remove(&id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.ids.is_empty()
    }
}

impl MemoryHistory {
    /// An empty store.
    pub fn new() -> MemoryHistory {
        MemoryHistory::default()
    }

    /// Channels with stored items or remembered ids (for tests).
    pub fn channel_count(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.channels.len())
    }

    fn store_one(inner: &mut Inner, item: StoreItem, now: u64) -> Receipt {
        let log = inner.channels.entry(item.channel).or_default();
        log.trim(now);
        if let Some(id) = &item.id
            && let Some((_, seq)) = log.ids.get(id)
        {
            return Receipt {
                seq: *seq,
                duplicate: true,
            };
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        if let Some(id) = &item.id {
            log.ids.insert(id.clone(), (now, seq));
            log.id_order.push_back((now, id.clone()));
        }
        log.records.push_back(Record {
            seq,
            id: item.id,
            stored_nanos: now,
            limits: item.limits,
            payload: item.payload,
        });
        log.trim(now);
        Receipt {
            seq,
            duplicate: false,
        }
    }
}

impl MemoryHistory {
    fn read(&self, channel: &str, after: After<'_>) -> Result<Resume, HistoryError> {
        let now = now_nanos();
        let records: Vec<Record> = match self.inner.lock() {
            Ok(inner) => inner
                .channels
                .get(channel)
                .map(|log| log.records.iter().cloned().collect())
                .unwrap_or_default(),
            Err(_) => return Err(HistoryError::Unavailable("history store poisoned".into())),
        };
        resume_from(records, after, now)
    }
}

impl HistoryStore for MemoryHistory {
    fn store(&self, items: Vec<StoreItem>) -> BoxFuture<'_, Result<Vec<Receipt>, HistoryError>> {
        let now = now_nanos();
        let result = match self.inner.lock() {
            Ok(mut inner) => {
                if now.saturating_sub(inner.last_sweep) >= SWEEP_EVERY_NANOS {
                    inner.last_sweep = now;
                    inner.channels.retain(|_, log| {
                        log.trim(now);
                        !log.is_empty()
                    });
                }
                Ok(items
                    .into_iter()
                    .map(|item| Self::store_one(&mut inner, item, now))
                    .collect())
            }
            Err(_) => Err(HistoryError::Unavailable("history store poisoned".into())),
        };
        async move { result }.boxed()
    }

    fn read_after<'a>(
        &'a self,
        channel: &'a str,
        after_id: &'a str,
    ) -> BoxFuture<'a, Result<Resume, HistoryError>> {
        let result = self.read(channel, After::Id(after_id));
        async move { result }.boxed()
    }

    fn read_after_seq<'a>(
        &'a self,
        channel: &'a str,
        after_seq: u64,
    ) -> BoxFuture<'a, Result<Resume, HistoryError>> {
        let result = self.read(channel, After::Seq(after_seq));
        async move { result }.boxed()
    }
}
