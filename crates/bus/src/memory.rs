//! The embedded in-process bus used by `gripmesh standalone`.

use crate::{Bus, BusError, BusState, Subscription};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Messages buffered per subscription before a publisher waits.
const SUBSCRIPTION_BUFFER: usize = 8192;

type Subscribers = Vec<(u64, mpsc::Sender<Bytes>)>;

/// An in-memory [`Bus`]. Publishing waits while a subscriber's buffer is full, so nothing is
/// lost in-process; each subscriber must keep reading.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    subjects: DashMap<String, Subscribers>,
    next_id: AtomicU64,
    state: tokio::sync::watch::Sender<BusState>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            subjects: DashMap::new(),
            next_id: AtomicU64::new(0),
            state: tokio::sync::watch::Sender::new(BusState::Connected),
        }
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> MemoryBus {
        let bus = MemoryBus::default();
        let m = crate::metrics::BusMetrics::new();
        m.connected.set(1.0);
        m.reconnects.absolute(0);
        bus
    }

    /// Number of live subscriptions on `subject` (for tests and metrics).
    pub fn subscriber_count(&self, subject: &str) -> usize {
        self.inner.subjects.get(subject).map_or(0, |s| s.len())
    }
}

struct Unsubscribe {
    inner: Arc<Inner>,
    subject: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.inner.subjects.remove_if_mut(&self.subject, |_, subs| {
            subs.retain(|(id, _)| *id != self.id);
            subs.is_empty()
        });
    }
}

impl Bus for MemoryBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        // Take the senders out of the map first: no lock is held across the awaits below.
        let senders: Vec<mpsc::Sender<Bytes>> = self
            .inner
            .subjects
            .get(&subject)
            .map(|subs| subs.iter().map(|(_, tx)| tx.clone()).collect())
            .unwrap_or_default();
        async move {
            for tx in senders {
                // A closed receiver is a subscription being dropped right now: skip it.
                let _ = tx.send(payload.clone()).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .subjects
            .entry(subject.clone())
            .or_default()
            .push((id, tx));
        let guard = Unsubscribe {
            inner: self.inner.clone(),
            subject,
            id,
        };
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            )
            .boxed();
        async move { Ok(Subscription::new(stream, Box::new(guard))) }.boxed()
    }

    fn state(&self) -> tokio::sync::watch::Receiver<BusState> {
        self.inner.state.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_to_every_subscriber_and_unsubscribes_on_drop() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("s".into()).await.expect("subscribe");
        let mut b = bus.subscribe("s".into()).await.expect("subscribe");
        let mut other = bus.subscribe("t".into()).await.expect("subscribe");
        for i in 0..100u8 {
            bus.publish("s".into(), Bytes::from(vec![i]))
                .await
                .expect("publish");
        }
        for i in 0..100u8 {
            assert_eq!(a.next().await.expect("a"), Bytes::from(vec![i]));
            assert_eq!(b.next().await.expect("b"), Bytes::from(vec![i]));
        }
        assert_eq!(bus.subscriber_count("s"), 2);
        drop(a);
        assert_eq!(bus.subscriber_count("s"), 1);
        drop(b);
        assert_eq!(bus.subscriber_count("s"), 0);
        bus.publish("s".into(), Bytes::from_static(b"x"))
            .await
            .expect("publish to nobody");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), other.next())
                .await
                .is_err(),
            "a message on another subject must not arrive"
        );
    }
}
