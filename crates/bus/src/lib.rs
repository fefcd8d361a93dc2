//! The seam in front of the message bus.
//!
//! Tiers talk to each other only through [`Bus`]: control publishes items to a channel's
//! subject, edges subscribe the subjects of channels that have local subscribers. Payloads are
//! plain bytes ([`payload`] encodes them with prost), so every implementation — the embedded
//! [`MemoryBus`] here, NATS later — carries exactly the same thing.

mod memory;
pub mod payload;
pub mod subject;

pub use memory::MemoryBus;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus is not connected (or was shut down).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// A publish/subscribe message bus carrying opaque payloads on subjects.
///
/// Ordering: messages published by one caller on one subject are delivered to each subscriber
/// in publish order.
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` on `subject`. Returns once the bus has accepted it.
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>>;

    /// Subscribes to `subject`. Messages published after this returns are delivered to the
    /// returned [`Subscription`]; dropping it unsubscribes.
    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>>;
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Bytes>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// Wraps a receiver and a guard whose drop ends the subscription.
    pub fn new(rx: mpsc::Receiver<Bytes>, guard: Box<dyn Send + Sync>) -> Subscription {
        Subscription { rx, _guard: guard }
    }

    /// The next message, or `None` when the bus closed the subscription.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}
