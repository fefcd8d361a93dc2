//! A held connection as the fan-out sees it: a bounded queue plus an out-of-band close signal.

use crate::delivery::Delivery;
use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Which kind of hold a connection is; publishes only reach holds of the matching format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP streaming / SSE (`http-stream` format).
    HttpStream,
    /// Long-poll (`http-response` format).
    HttpResponse,
    /// WebSocket (`ws-message` format).
    Ws,
}

impl Transport {
    /// The `transport` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::HttpStream => "http-stream",
            Transport::HttpResponse => "http-response",
            Transport::Ws => "ws",
        }
    }
}

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
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<CloseReason> {
        match v {
            1 => Some(CloseReason::Drain),
            2 => Some(CloseReason::SlowConsumer),
            3 => Some(CloseReason::Revoked),
            _ => None,
        }
    }
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
    tx: mpsc::Sender<Arc<Delivery>>,
    closed: AtomicU8,
    waker: AtomicWaker,
}

impl ConnHandle {
    /// A handle and the receiving end of its queue (`capacity` messages).
    pub fn new(
        id: u64,
        transport: Transport,
        capacity: usize,
    ) -> (Arc<ConnHandle>, mpsc::Receiver<Arc<Delivery>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let handle = ConnHandle {
            id,
            transport,
            tx,
            closed: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        };
        (Arc::new(handle), rx)
    }

    /// Queues a delivery without waiting. A full queue closes the connection.
    pub fn offer(&self, delivery: &Arc<Delivery>) -> Offer {
        match self.tx.try_send(delivery.clone()) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::SlowConsumer);
                Offer::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }

    /// Asks the connection to close. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if self
            .closed
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
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

    /// Resolves once the connection was asked to close.
    pub async fn closed(&self) -> CloseReason {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }
}
