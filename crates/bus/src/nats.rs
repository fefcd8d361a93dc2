//! The NATS implementation of [`Bus`] (async-nats).
//!
//! async-nats owns the connection in its own task, reconnects on its own (trying every server
//! of a cluster) and re-registers every live subscription after a reconnect; this wrapper
//! turns its connection events into [`BusState`] and the bus metrics.

use crate::{Bus, BusError, BusState, Subscription};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How long a subscription may take to be confirmed by the server.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Confirms that the server has processed our earlier commands: a token published to a private
/// inbox on the same connection comes back only after everything sent before it (including a
/// SUB) was processed, since a server handles one connection's commands in order.
struct Barrier {
    subject: String,
    next: AtomicU64,
    seen: watch::Sender<u64>,
}

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URLs, comma-separated (`nats://a:4222,nats://b:4222`).
    pub urls: String,
    /// Client name shown by the server's monitoring (e.g. `gripmesh-edge`).
    pub name: String,
    /// Messages buffered per subscription before NATS counts the client as slow.
    pub subscription_capacity: usize,
}

/// A [`Bus`] on NATS core pub/sub. Cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    state: watch::Receiver<BusState>,
    barrier: Arc<Barrier>,
}

impl NatsBus {
    /// Starts connecting and returns at once; [`Bus::state`] tells when the bus is usable.
    /// Fails only on unusable options (bad URLs).
    pub async fn connect(options: NatsOptions) -> Result<NatsBus, BusError> {
        let servers: Vec<async_nats::ServerAddr> = options
            .urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse()
                    .map_err(|e| BusError::Unavailable(format!("invalid NATS URL {u}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err(BusError::Unavailable("no NATS URL given".into()));
        }
        let (tx, rx) = watch::channel(BusState::Disconnected);
        let tx = Arc::new(tx);
        let connected_once = Arc::new(AtomicBool::new(false));
        let metrics = crate::metrics::BusMetrics::new();
        metrics.connected.set(0.0);
        let cb_tx = tx.clone();
        let cb_once = connected_once.clone();
        let cb_metrics = metrics.clone();
        let client = async_nats::ConnectOptions::new()
            .name(options.name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .subscription_capacity(options.subscription_capacity)
            .event_callback(move |event| {
                let tx = cb_tx.clone();
                let once = cb_once.clone();
                let metrics = cb_metrics.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            if once.swap(true, Ordering::SeqCst) {
                                metrics.reconnects.increment(1);
                                tracing::info!("bus reconnected");
                            } else {
                                tracing::info!("bus connected");
                            }
                            metrics.connected.set(1.0);
                            tx.send_replace(BusState::Connected);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("bus disconnected");
                            metrics.connected.set(0.0);
                            tx.send_replace(BusState::Disconnected);
                        }
                        other => tracing::debug!(event = %other, "bus event"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        if client.connection_state() == async_nats::connection::State::Connected
            && !connected_once.swap(true, Ordering::SeqCst)
        {
            metrics.connected.set(1.0);
            tx.send_replace(BusState::Connected);
        }
        let barrier = Arc::new(Barrier {
            subject: client.new_inbox(),
            next: AtomicU64::new(0),
            seen: watch::Sender::new(0),
        });
        let mut probe = client
            .subscribe(barrier.subject.clone())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let seen = barrier.clone();
        tokio::spawn(async move {
            while let Some(msg) = probe.next().await {
                let token = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                seen.seen.send_if_modified(|v| {
                    let newer = token > *v;
                    if newer {
                        *v = token;
                    }
                    newer
                });
            }
        });
        Ok(NatsBus {
            client,
            state: rx,
            barrier,
        })
    }

    /// Waits until the server has processed every command sent so far.
    async fn confirm(&self) -> Result<(), BusError> {
        let token = self.barrier.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = self.barrier.seen.subscribe();
        self.client
            .publish(self.barrier.subject.clone(), Bytes::from(token.to_string()))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, seen.wait_for(|v| *v >= token)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(BusError::Unavailable(
                "NATS did not confirm the subscription in time".into(),
            )),
        }
    }

    /// The underlying NATS client (for JetStream: history, cluster state).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Waits until the client has sent everything it buffered.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

impl Bus for NatsBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        async move {
            crate::check_subject(&subject)?;
            // Fail fast while disconnected rather than queue behind a dead connection.
            if *self.state.borrow() != BusState::Connected {
                return Err(BusError::Unavailable("not connected to NATS".into()));
            }
            self.client
                .publish(subject, payload)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))
        }
        .boxed()
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        async move {
            crate::check_subject(&subject)?;
            let sub = self
                .client
                .subscribe(subject)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            // Only once the server has the SUB may a publish from another client reach it.
            self.confirm().await?;
            // Dropping the async-nats subscriber unsubscribes, so the stream is its own guard.
            let stream = sub.map(|m| m.payload).boxed();
            Ok(Subscription::new(stream, Box::new(())))
        }
        .boxed()
    }

    fn state(&self) -> watch::Receiver<BusState> {
        self.state.clone()
    }

    fn jetstream(&self) -> Option<async_nats::jetstream::Context> {
        Some(async_nats::jetstream::new(self.client.clone()))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        NatsBus::flush(self).boxed()
    }
}
