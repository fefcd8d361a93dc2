//! The hand-off between the publish handlers and the bus: a bounded queue that one task puts
//! on the bus in order, so a publish call answers once its batch is validated and queued —
//! it never waits on the bus or on delivery.
//!
//! Order: batches leave in the order they were queued, and the items of a batch in batch
//! order, so everything one publisher sends on one channel keeps its order. Delivery stays at
//! most once: an accepted item whose bus publish fails is dropped (logged and counted under
//! `gripmesh_control_publish_rejected_total{reason="bus_unavailable"}`, the reason it was
//! refused with before the hand-off). Batches with history items wait for their turn on
//! the bus (`wait`), so "stored" still means "sent live".
//!
//! The queue is bounded in items and bytes; when full, the publish is refused with 503
//! (reason `queue_full`) rather than the queue growing.

use bus::{Bus, BusError, BusState};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot, watch};

/// Items queued at most.
pub(crate) const MAX_ITEMS: usize = 65_536;
/// Payload bytes queued at most (one batch may cross it when the queue is empty).
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Why a batch was not queued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The bus is not connected: nothing would leave.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The queue is at its bound.
    #[error("publish queue full")]
    Full,
}

/// One batch: `(subject, payload)` in order, and who waits for it to be on the bus.
struct Entry {
    items: Vec<(String, Bytes)>,
    bytes: usize,
    done: Option<oneshot::Sender<Result<(), BusError>>>,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Items queued or being published.
    items: usize,
    /// Payload bytes queued or being published.
    bytes: usize,
}

/// The publish queue. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    state: watch::Receiver<BusState>,
}

/// Waits for a batch queued with `wait` to be on the bus.
pub(crate) struct Sent(oneshot::Receiver<Result<(), BusError>>);

impl Sent {
    /// The bus's answer for the batch (its first failure, if any).
    pub(crate) async fn wait(self) -> Result<(), BusError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(BusError::Unavailable("publish queue stopped".into())))
    }
}

impl Outbox {
    /// A queue and the task that empties it onto `bus` (ends when every `Outbox` clone is
    /// dropped and the queue is empty).
    pub(crate) fn start(bus: Arc<dyn Bus>) -> Outbox {
        let outbox = Outbox {
            queue: Arc::default(),
            wake: Arc::new(Notify::new()),
            state: bus.state(),
        };
        tokio::spawn(drain(
            Arc::downgrade(&outbox.queue),
            outbox.wake.clone(),
            bus,
        ));
        outbox
    }

    /// Queues a batch. With `wait`, the returned [`Sent`] resolves once it is on the bus.
    pub(crate) fn push(
        &self,
        items: Vec<(String, Bytes)>,
        wait: bool,
    ) -> Result<Option<Sent>, Refused> {
        if *self.state.borrow() != BusState::Connected {
            return Err(BusError::Unavailable("not connected".into()).into());
        }
        // What the bus would refuse whatever its state is refused now, as before the hand-off.
        if let Some((subject, _)) = items
            .iter()
            .find(|(s, _)| s.len() > bus::subject::MAX_SUBJECT_LEN)
        {
            return Err(BusError::Refused(format!(
                "subject of {} bytes is longer than {}",
                subject.len(),
                bus::subject::MAX_SUBJECT_LEN
            ))
            .into());
        }
        let bytes: usize = items.iter().map(|(s, p)| s.len() + p.len()).sum();
        let (done, sent) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(Sent(rx)))
        } else {
            (None, None)
        };
        {
            let mut q = self.queue.lock().map_err(|_| Refused::Full)?;
            let over_items = q.items.saturating_add(items.len()) > MAX_ITEMS;
            let over_bytes = q.bytes > 0 && q.bytes.saturating_add(bytes) > MAX_BYTES;
            if over_items || over_bytes {
                return Err(Refused::Full);
            }
            q.items += items.len();
            q.bytes += bytes;
            q.entries.push_back(Entry { items, bytes, done });
        }
        self.wake.notify_one();
        Ok(sent)
    }
}

/// Publishes queued batches in order until the queue is gone.
async fn drain(queue: std::sync::Weak<Mutex<Queue>>, wake: Arc<Notify>, bus: Arc<dyn Bus>) {
    loop {
        let next = {
            let Some(q) = queue.upgrade() else {
                return;
            };
            let Ok(mut q) = q.lock() else {
                return;
            };
            q.entries.pop_front()
        };
        let Some(entry) = next else {
            // Woken by a push, or checking now and then that the queue still exists.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified()).await;
            continue;
        };
        let count = entry.items.len();
        let mut result = Ok(());
        for (subject, payload) in entry.items {
            if let Err(err) = bus.publish(subject, payload).await
                && result.is_ok()
            {
                result = Err(err);
            }
        }
        if let (Err(err), None) = (&result, &entry.done) {
            // Nobody waits for this batch: it is dropped here (at most once).
            crate::metrics::ControlMetrics::rejected("bus_unavailable");
            tracing::warn!(error = %err, "queued publish dropped");
        }
        if let Some(q) = queue.upgrade()
            && let Ok(mut q) = q.lock()
        {
            q.items = q.items.saturating_sub(count);
            q.bytes = q.bytes.saturating_sub(entry.bytes);
        }
        if let Some(done) = entry.done {
            let _ = done.send(result);
        }
    }
}
