//! Client events waiting for the next WebSocket-over-HTTP request, counted in messages and
//! encoded bytes so the session can bound them (`--ws-upstream-queue-messages`/`-bytes`).

use grip::wsevents::WsEvent;
use std::collections::VecDeque;

/// Largest events body sent to the origin in one request.
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Client events waiting for the next WebSocket-over-HTTP request, with their encoded size.
#[derive(Default)]
pub(super) struct Outbox {
    events: VecDeque<WsEvent>,
    bytes: usize,
}

impl Outbox {
    /// Queues `ev` for the next request.
    pub(super) fn push(&mut self, ev: WsEvent) {
        self.bytes = self.bytes.saturating_add(ev.encoded_len());
        self.events.push_back(ev);
    }

    /// Nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// At or over either bound `(messages, bytes)`: stop reading the client.
    pub(super) fn is_full(&self, (messages, bytes): (usize, usize)) -> bool {
        self.events.len() >= messages || self.bytes >= bytes
    }

    /// The next request's events: one (origin asked for one event per request), or as many
    /// as fit [`MAX_BATCH_BYTES`] (at least one).
    pub(super) fn take_batch(&mut self, one_event: bool) -> Vec<WsEvent> {
        let mut size = 0;
        let mut n = 0;
        for ev in &self.events {
            size += ev.encoded_len();
            if n > 0 && (one_event || size > MAX_BATCH_BYTES) {
                break;
            }
            n += 1;
        }
        let batch: Vec<WsEvent> = self.events.drain(..n).collect();
        let taken: usize = batch.iter().map(WsEvent::encoded_len).sum();
        self.bytes = self.bytes.saturating_sub(taken);
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn batches_respect_one_event_and_size() {
        let mut outbox = Outbox::default();
        outbox.push(WsEvent::Text(Bytes::from_static(b"a")));
        outbox.push(WsEvent::Text(Bytes::from_static(b"b")));
        assert_eq!(outbox.take_batch(true).len(), 1);
        assert_eq!(outbox.events.len(), 1);
        let big = Bytes::from(vec![b'x'; MAX_BATCH_BYTES]);
        let mut outbox = Outbox::default();
        outbox.push(WsEvent::Binary(big.clone()));
        outbox.push(WsEvent::Binary(big));
        outbox.push(WsEvent::Open);
        assert_eq!(
            outbox.take_batch(false).len(),
            1,
            "a batch stops at the size limit"
        );
        assert_eq!(outbox.events.len(), 2);
    }

    #[test]
    fn outbox_counts_bytes_and_reports_full() {
        let mut outbox = Outbox::default();
        assert!(!outbox.is_full((2, 100)));
        outbox.push(WsEvent::Text(Bytes::from_static(b"hello")));
        assert!(!outbox.is_full((2, 100)));
        let one = outbox.bytes;
        assert!(one >= 5);
        assert!(outbox.is_full((2, one)), "byte bound reached");
        outbox.push(WsEvent::Text(Bytes::from_static(b"hello")));
        assert!(outbox.is_full((2, 1000)), "message bound reached");
        assert_eq!(outbox.take_batch(false).len(), 2);
        assert_eq!(outbox.bytes, 0);
        assert!(!outbox.is_full((2, one)));
    }
}
