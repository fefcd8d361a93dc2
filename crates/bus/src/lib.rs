//! The seam in front of the message bus.
//!
//! Tiers talk to each other only through [`Bus`]: control publishes items to a channel's
//! subject, edges subscribe the subjects of channels that have local subscribers. Payloads are
//! plain bytes ([`payload`] encodes them with prost), so every implementation — the embedded
//! [`MemoryBus`] here, NATS later — carries exactly the same thing.

pub mod cluster_state;
pub mod history;
pub mod key_state;
pub mod kv;
mod memory;
pub mod metrics;
mod nats;
pub mod payload;
pub mod records;
pub mod subject;
pub mod usage;
pub mod wire;

pub use memory::MemoryBus;
pub use nats::{NatsAuth, NatsBus, NatsOptions};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::watch;

/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus is not connected (or was shut down).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus would refuse this request whatever its state (a subject longer than
    /// [`subject::MAX_SUBJECT_LEN`]): it is never sent, so the server never drops the
    /// connection over it.
    #[error("bus refuses: {0}")]
    Refused(String),
}

/// Refuses a subject the server would drop the connection over.
pub(crate) fn check_subject(subject: &str) -> Result<(), BusError> {
    if subject.len() > subject::MAX_SUBJECT_LEN {
        return Err(BusError::Refused(format!(
            "subject of {} bytes is longer than {}",
            subject.len(),
            subject::MAX_SUBJECT_LEN
        )));
    }
    Ok(())
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

    /// Connection state, for readiness and metrics. Backends that cannot disconnect stay
    /// [`BusState::Connected`].
    fn state(&self) -> watch::Receiver<BusState>;

    /// The JetStream context on this bus's connection (NATS only), for cluster state such as
    /// usage records.
    fn jetstream(&self) -> Option<async_nats::jetstream::Context> {
        None
    }

    /// Returns once everything published so far has left this process (so an acknowledged
    /// publish survives the process being killed right after). In-process buses have nothing
    /// to flush.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Whether the bus can carry messages right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusState {
    /// Connected; every live subscription is registered with the server.
    Connected,
    /// Not connected (reconnecting); publishes fail or queue, subscriptions are paused.
    Disconnected,
}

/// Calls `on_message` with every message on `subject` until `shutdown`, subscribing again
/// (every second) whenever the bus cannot subscribe yet or ends the subscription.
pub async fn follow(
    bus: &dyn Bus,
    subject: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut on_message: impl FnMut(Bytes),
) {
    loop {
        let mut sub = match bus.subscribe(subject.to_owned()).await {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(subject, error = %err, "cannot subscribe yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = sub.next() => match msg {
                    Some(payload) => on_message(payload),
                    None => break,
                },
            }
        }
    }
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    stream: BoxStream<'static, Bytes>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// Wraps a message stream and a guard whose drop ends the subscription.
    pub fn new(stream: BoxStream<'static, Bytes>, guard: Box<dyn Send + Sync>) -> Subscription {
        Subscription {
            stream,
            _guard: guard,
        }
    }

    /// The next message, or `None` when the bus closed the subscription.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.stream.next().await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}
