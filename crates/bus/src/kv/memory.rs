//! The in-memory [`StateStore`] used by standalone without NATS (and by fast tests).

use crate::kv::{BucketConfig, KvBucket, KvEntry, KvError, KvWatch, StateStore, WatchFrom};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Changes buffered per watcher; a watcher that falls further behind gets an error and
/// re-watches from its last revision (as with JetStream).
const WATCH_BUFFER: usize = 1024;

/// In-memory buckets. Cheap to clone; clones share the buckets.
#[derive(Clone, Default)]
pub struct MemoryState {
    buckets: Arc<Mutex<HashMap<String, Arc<MemoryBucket>>>>,
}

impl MemoryState {
    /// An empty store.
    pub fn new() -> MemoryState {
        MemoryState::default()
    }
}

impl StateStore for MemoryState {
    fn open(
        &self,
        config: &BucketConfig,
        create: bool,
    ) -> BoxFuture<'_, Result<Arc<dyn KvBucket>, KvError>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let result = match buckets.get(&config.name) {
            Some(b) => {
                if create {
                    lock(&b.state).max_age = config.max_age;
                }
                Ok(b.clone() as Arc<dyn KvBucket>)
            }
            None if create => {
                let b = Arc::new(MemoryBucket::new(config));
                buckets.insert(config.name.clone(), b.clone());
                Ok(b as Arc<dyn KvBucket>)
            }
            None => Err(KvError::NoBucket(config.name.clone())),
        };
        async move { result }.boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), KvError>> {
        async { Ok(()) }.boxed()
    }
}

struct Stored {
    value: Bytes,
    revision: u64,
    written: Instant,
    deleted: bool,
}

struct State {
    revision: u64,
    max_age: Duration,
    keys: BTreeMap<String, Stored>,
}

impl State {
    fn expired(&self, s: &Stored) -> bool {
        !self.max_age.is_zero() && s.written.elapsed() >= self.max_age
    }

    fn latest(&self, key: &str) -> Option<&Stored> {
        self.keys
            .get(key)
            .filter(|s| !s.deleted && !self.expired(s))
    }
}

struct MemoryBucket {
    name: String,
    state: Mutex<State>,
    changes: broadcast::Sender<KvEntry>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn matches(filter: &str, key: &str) -> bool {
    if filter == ">" {
        return true;
    }
    match filter.strip_suffix(".>") {
        Some(prefix) => {
            key.len() > prefix.len() + 1
                && key.starts_with(prefix)
                && key.as_bytes()[prefix.len()] == b'.'
        }
        None => filter == key,
    }
}

impl MemoryBucket {
    fn new(config: &BucketConfig) -> MemoryBucket {
        MemoryBucket {
            name: config.name.clone(),
            state: Mutex::new(State {
                revision: 0,
                max_age: config.max_age,
                keys: BTreeMap::new(),
            }),
            changes: broadcast::channel(WATCH_BUFFER).0,
        }
    }

    /// Writes under the lock (so revisions and the change feed stay in one order).
    fn write(
        &self,
        key: &str,
        value: Bytes,
        deleted: bool,
        expect: Option<Option<u64>>,
    ) -> Result<u64, KvError> {
        if !crate::kv::is_valid_key(key) {
            return Err(KvError::InvalidKey);
        }
        let mut state = lock(&self.state);
        if let Some(expect) = expect {
            let current = state.latest(key).map(|s| s.revision);
            if current != expect {
                return Err(KvError::WrongRevision);
            }
        }
        state.revision += 1;
        let revision = state.revision;
        state.keys.insert(
            key.to_owned(),
            Stored {
                value: value.clone(),
                revision,
                written: Instant::now(),
                deleted,
            },
        );
        // No watcher is fine.
        let _ = self.changes.send(KvEntry {
            key: key.to_owned(),
            value,
            revision,
            deleted,
        });
        Ok(revision)
    }
}

impl KvBucket for MemoryBucket {
    fn name(&self) -> &str {
        &self.name
    }

    fn entry(&self, key: &str) -> BoxFuture<'_, Result<Option<KvEntry>, KvError>> {
        let state = lock(&self.state);
        let found = state.latest(key).map(|s| KvEntry {
            key: key.to_owned(),
            value: s.value.clone(),
            revision: s.revision,
            deleted: false,
        });
        drop(state);
        async move { Ok(found) }.boxed()
    }

    fn put(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>> {
        let r = self.write(key, value, false, None);
        async move { r }.boxed()
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>> {
        let r = self.write(key, value, false, Some(None));
        async move { r }.boxed()
    }

    fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'_, Result<u64, KvError>> {
        let r = self.write(key, value, false, Some(Some(revision)));
        async move { r }.boxed()
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), KvError>> {
        let r = self.write(key, Bytes::new(), true, None).map(|_| ());
        async move { r }.boxed()
    }

    fn last_revision(&self) -> BoxFuture<'_, Result<Option<u64>, KvError>> {
        let state = lock(&self.state);
        let last = state
            .keys
            .values()
            .filter(|s| !state.expired(s))
            .map(|s| s.revision)
            .max();
        drop(state);
        async move { Ok(last) }.boxed()
    }

    fn watch(&self, key: &str, from: WatchFrom) -> BoxFuture<'_, Result<KvWatch, KvError>> {
        let filter = key.to_owned();
        // Subscribe before the snapshot, under the lock: nothing falls between the two.
        let state = lock(&self.state);
        let live = self.changes.subscribe();
        let snapshot: Vec<KvEntry> = {
            let mut v: Vec<KvEntry> = state
                .keys
                .iter()
                .filter(|(k, s)| matches(&filter, k) && !state.expired(s))
                .filter(|(_, s)| match from {
                    WatchFrom::Current => !s.deleted,
                    WatchFrom::Revision(r) => s.revision >= r,
                })
                .map(|(k, s)| KvEntry {
                    key: k.clone(),
                    value: s.value.clone(),
                    revision: s.revision,
                    deleted: s.deleted,
                })
                .collect();
            v.sort_by_key(|e| e.revision);
            v
        };
        let seen = state.revision;
        drop(state);
        let live = futures_util::stream::unfold(
            (live, filter, false),
            move |(mut live, filter, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match live.recv().await {
                        Ok(e) if e.revision > seen && matches(&filter, &e.key) => {
                            return Some((Ok(e), (live, filter, false)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let err = KvError::Unavailable("watcher fell behind".into());
                            return Some((Err(err), (live, filter, true)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        let stream: KvWatch = futures_util::StreamExt::boxed(futures_util::StreamExt::chain(
            futures_util::stream::iter(snapshot.into_iter().map(Ok)),
            live,
        ));
        async move { Ok(stream) }.boxed()
    }
}
