//! A held connection as the fan-out sees it: a bounded queue plus an out-of-band close signal.

use crate::delivery::Delivery;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

pub(crate) use crate::delivery::Transport;

/// Why a held connection is being closed by the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The process is draining.
    Drain = 1,
    /// The send queue overflowed: the client reads too slowly.
    SlowConsumer = 2,
    /// The connection's credential was revoked (or a re-check denied it).
    Revoked = 3,
    /// The key's message quota is spent for this period (docs/protocol.md, "Key limits and usage").
    QuotaExceeded = 4,
    /// The connection's credential expired (`Gripmesh-Expires`, a JWT's `exp`).
    Expired = 5,
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<CloseReason> {
        match v {
            1 => Some(CloseReason::Drain),
            2 => Some(CloseReason::SlowConsumer),
            3 => Some(CloseReason::Revoked),
            4 => Some(CloseReason::QuotaExceeded),
            5 => Some(CloseReason::Expired),
            _ => None,
        }
    }
}

/// A connection's key as the fan-out sees it: each delivery is counted against the key's
/// message quota before it is queued. The key's counters (`keys`) implement it; the
/// connection needs nothing more of them, so `keys` may close connections without this
/// module knowing keys.
pub(crate) trait DeliveryQuota: Send + Sync {
    /// Counts one delivery about to be queued. `false`: over the quota — the delivery must
    /// not be sent, and the key's connections have been told to close.
    fn admit_delivery(&self) -> bool;
}

/// Result of offering a delivery to a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// Queue full: the connection was told to close.
    Overflow,
    /// The connection is already gone.
    Gone,
}

/// The fan-out side of one held connection. Shared by the registry (one reference per
/// subscribed channel) and the connection's own body or future.
pub struct ConnHandle {
    /// Process-unique connection id.
    pub id: u64,
    /// Hold kind.
    pub transport: Transport,
    /// The deliveries queued for the connection (see [`Queue`]).
    queue: Mutex<Queue>,
    /// Most deliveries queued at once.
    capacity: usize,
    /// The connection's task, waiting for a delivery.
    rx_waker: AtomicWaker,
    closed: AtomicU8,
    waker: AtomicWaker,
    /// Payload bytes queued and not yet taken by the connection.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Drops the client's socket outright (HTTP holds, whose writes hyper owns).
    abort: std::sync::OnceLock<tokio_util::sync::CancellationToken>,
    /// The connection's key, when a message quota may apply (set once, when authorized).
    key: std::sync::OnceLock<Arc<dyn DeliveryQuota>>,
}

impl ConnHandle {
    /// A handle and its queue, bounded to `capacity` messages and `max_bytes` payload bytes.
    pub fn new(
        id: u64,
        transport: Transport,
        capacity: usize,
        max_bytes: usize,
    ) -> (Arc<ConnHandle>, ConnQueue) {
        let handle = Arc::new(ConnHandle {
            id,
            transport,
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            rx_waker: AtomicWaker::new(),
            closed: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            abort: std::sync::OnceLock::new(),
            key: std::sync::OnceLock::new(),
        });
        let queue = ConnQueue {
            conn: handle.clone(),
            replay: std::collections::VecDeque::new(),
            floors: Vec::new(),
        };
        (handle, queue)
    }

    /// Queues a delivery without waiting. A queue over its message or byte bound closes the
    /// connection (one message larger than the byte bound still goes through an empty queue).
    pub fn offer(&self, delivery: &Arc<Delivery>) -> Offer {
        // A spent key quota: nothing more is delivered, and the key's connections close.
        if let Some(key) = self.key.get()
            && !key.admit_delivery()
        {
            // Closed even if it registered with its key after the others were closed.
            self.close(CloseReason::QuotaExceeded);
            return Offer::Gone;
        }
        let size = delivery.size_for(self.transport);
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.close(CloseReason::SlowConsumer);
            return Offer::Overflow;
        }
        let mut queue = self.queue();
        if queue.receiver_gone || queue.items.len() >= self.capacity {
            let gone = queue.receiver_gone;
            drop(queue);
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            if gone {
                return Offer::Gone;
            }
            self.close(CloseReason::SlowConsumer);
            return Offer::Overflow;
        }
        queue.items.push_back(delivery.clone());
        drop(queue);
        self.rx_waker.wake();
        Offer::Queued
    }

    /// The queue, locked. Nothing panics while holding it, so a poisoned lock still holds a
    /// consistent queue.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ties the connection to its key's counters (message quota).
    pub(crate) fn set_key(&self, key: Arc<dyn DeliveryQuota>) {
        let _ = self.key.set(key);
    }

    /// Sets the token that drops the client's socket (see [`ConnHandle::close`]).
    pub fn set_abort(&self, token: tokio_util::sync::CancellationToken) {
        let _ = self.abort.set(token);
    }

    /// Asks the connection to close. The first reason wins. A slow consumer's socket is also
    /// dropped outright when an abort token is set: a client that stopped reading would never
    /// let its response make progress to notice the request.
    /// Returns true when this call asked (false: it was already closing).
    pub fn close(&self, reason: CloseReason) -> bool {
        if self
            .closed
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
            if reason == CloseReason::SlowConsumer
                && let Some(abort) = self.abort.get()
            {
                abort.cancel();
            }
            return true;
        }
        false
    }

    /// True once the connection was asked to close.
    pub fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// Ready with the reason once [`ConnHandle::close`] was called.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Some(r) = CloseReason::from_u8(self.closed.load(Ordering::Acquire)) {
            return Poll::Ready(r);
        }
        self.waker.register(cx.waker());
        match CloseReason::from_u8(self.closed.load(Ordering::Acquire)) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    /// The reason the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.closed.load(Ordering::Acquire))
    }

    /// Resolves once the connection was asked to close.
    pub async fn closed(&self) -> CloseReason {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }
}

/// The receiving end of a connection's queue; taking a delivery releases its bytes.
///
/// A resumed connection also holds its replay (items read from history), which goes out
/// before anything live, and per channel the last history position it replayed: live
/// deliveries at or below it were in the replay (or before the client's last id) and are
/// skipped. Live deliveries that arrived while history was being read wait in the queue, so
/// the seam between replay and live loses and repeats nothing.
pub struct ConnQueue {
    conn: Arc<ConnHandle>,
    replay: std::collections::VecDeque<Arc<Delivery>>,
    /// (channel, last replayed position); at most one per subscribed channel.
    floors: Vec<(Arc<str>, u64)>,
}

impl ConnQueue {
    fn taken(&self, d: &Arc<Delivery>) {
        self.conn
            .queued_bytes
            .fetch_sub(d.size_for(self.conn.transport), Ordering::AcqRel);
    }

    /// Queues `items` (read from history, in order) ahead of every live delivery, and skips
    /// live deliveries of `channel` at or below position `floor` from now on.
    pub fn resume(&mut self, channel: &str, floor: u64, items: Vec<Arc<Delivery>>) {
        self.replay.extend(items);
        match self.floors.iter_mut().find(|(c, _)| &**c == channel) {
            Some((_, f)) => *f = (*f).max(floor),
            None => self.floors.push((Arc::from(channel), floor)),
        }
    }

    /// Live deliveries already replayed (or older than the client's last id) are skipped.
    fn replayed(&self, d: &Delivery) -> bool {
        d.seq != 0
            && self
                .floors
                .iter()
                .any(|(c, floor)| d.seq <= *floor && **c == *d.channel)
    }

    /// Takes the oldest live delivery, if any. An emptied queue that once grew past
    /// [`KEPT_CAPACITY`] gives its buffer back, so a burst leaves no memory behind on an idle
    /// connection.
    fn pop_live(&self) -> Option<Arc<Delivery>> {
        let mut queue = self.conn.queue();
        let d = queue.items.pop_front();
        if queue.items.is_empty() && queue.items.capacity() > KEPT_CAPACITY {
            queue.items = VecDeque::new();
        }
        drop(queue);
        if let Some(d) = &d {
            self.taken(d);
        }
        d
    }

    /// Polls for the next delivery. The handle lives as long as this queue, so the stream of
    /// deliveries never ends by itself: `Ready(None)` is never returned.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Delivery>>> {
        if let Some(d) = self.replay.pop_front() {
            return Poll::Ready(Some(d));
        }
        loop {
            if let Some(d) = self.pop_live() {
                if self.replayed(&d) {
                    continue;
                }
                return Poll::Ready(Some(d));
            }
            // Registered before the second look, so a delivery queued in between wakes us.
            self.conn.rx_waker.register(cx.waker());
            match self.pop_live() {
                Some(d) if self.replayed(&d) => continue,
                Some(d) => return Poll::Ready(Some(d)),
                None => return Poll::Pending,
            }
        }
    }

    /// The next delivery.
    pub async fn recv(&mut self) -> Option<Arc<Delivery>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Delivery>> {
        if let Some(d) = self.replay.pop_front() {
            return Some(d);
        }
        loop {
            let d = self.pop_live()?;
            if !self.replayed(&d) {
                return Some(d);
            }
        }
    }
}

impl Drop for ConnQueue {
    /// Later offers answer [`Offer::Gone`]; what is still queued is released now (the registry
    /// may keep the handle a little longer).
    fn drop(&mut self) {
        let mut queue = self.conn.queue();
        queue.receiver_gone = true;
        let items = std::mem::take(&mut queue.items);
        drop(queue);
        for d in &items {
            self.taken(d);
        }
    }
}

/// Most deliveries an empty queue keeps room for; a larger buffer is given back once emptied.
const KEPT_CAPACITY: usize = 16;

/// A connection's queued deliveries. The buffer is allocated by the first delivery, not with
/// the connection: an idle subscriber costs only this struct.
#[derive(Default)]
struct Queue {
    items: VecDeque<Arc<Delivery>>,
    /// The [`ConnQueue`] was dropped: nothing more is queued.
    receiver_gone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::StreamOut;
    use bytes::Bytes;

    fn delivery(body: &'static str) -> Arc<Delivery> {
        Arc::new(Delivery {
            stream: Some(StreamOut::Data(Bytes::from_static(body.as_bytes()))),
            response: None,
            ws: None,
            accepted_unix_nanos: 0,
            channel: Arc::from("ch"),
            prev_id: None,
            seq: 0,
            id: None,
            meta: Default::default(),
            content_filters: Default::default(),
        })
    }

    fn stream_conn(capacity: usize, max_bytes: usize) -> (Arc<ConnHandle>, ConnQueue) {
        ConnHandle::new(1, Transport::HttpStream, capacity, max_bytes)
    }

    #[test]
    fn deliveries_come_out_in_order_and_release_their_bytes() {
        let (conn, mut queue) = stream_conn(10, 1000);
        for body in ["a", "bb", "ccc"] {
            assert_eq!(conn.offer(&delivery(body)), Offer::Queued);
        }
        assert_eq!(conn.queued_bytes.load(Ordering::Acquire), 6);
        let got: Vec<_> = std::iter::from_fn(|| queue.try_recv())
            .map(|d| d.size_for(Transport::HttpStream))
            .collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(conn.queued_bytes.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        let (conn, _queue) = stream_conn(2, 1000);
        assert_eq!(conn.offer(&delivery("a")), Offer::Queued);
        assert_eq!(conn.offer(&delivery("b")), Offer::Queued);
        assert_eq!(conn.offer(&delivery("c")), Offer::Overflow);
        assert_eq!(conn.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(
            conn.queued_bytes.load(Ordering::Acquire),
            2,
            "the refused one is not counted"
        );
    }

    #[test]
    fn the_byte_bound_closes_too_but_an_empty_queue_takes_one_large_delivery() {
        let (conn, _queue) = stream_conn(100, 4);
        assert_eq!(conn.offer(&delivery("larger than four")), Offer::Queued);
        assert_eq!(conn.offer(&delivery("x")), Offer::Overflow);
        assert_eq!(conn.close_reason(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn after_the_queue_is_dropped_offers_are_gone_and_nothing_stays_counted() {
        let (conn, queue) = stream_conn(10, 1000);
        assert_eq!(conn.offer(&delivery("abc")), Offer::Queued);
        drop(queue);
        assert_eq!(conn.queued_bytes.load(Ordering::Acquire), 0);
        assert_eq!(conn.offer(&delivery("d")), Offer::Gone);
        assert_eq!(conn.queued_bytes.load(Ordering::Acquire), 0);
        assert_eq!(
            conn.close_reason(),
            None,
            "a gone connection is not a slow one"
        );
    }

    #[test]
    fn an_idle_connection_holds_no_buffer_and_a_burst_leaves_none_behind() {
        let (conn, mut queue) = stream_conn(1000, 1 << 20);
        assert_eq!(
            conn.queue().items.capacity(),
            0,
            "nothing allocated before a delivery"
        );
        for _ in 0..500 {
            conn.offer(&delivery("m"));
        }
        assert!(conn.queue().items.capacity() >= 500);
        while queue.try_recv().is_some() {}
        assert!(conn.queue().items.capacity() <= KEPT_CAPACITY);
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_an_offer_from_another_task() {
        let (conn, mut queue) = stream_conn(10, 1000);
        let waiting = tokio::spawn(async move { queue.recv().await.map(|d| d.seq) });
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "nothing was offered yet");
        assert_eq!(conn.offer(&delivery("x")), Offer::Queued);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the offer")
            .expect("task");
        assert_eq!(got, Some(0));
    }
}
