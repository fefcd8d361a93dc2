//! Local subscribers per channel, and one bus subscription per channel with local interest.
//!
//! The first local subscriber of a channel creates its entry and spawns the channel's task,
//! which subscribes the bus subject; subscribers wait until that subscription is live, so a
//! hold is never released to the client before publishes can reach it. The task decodes each
//! bus message once, sequences it, renders it once ([`Delivery`]) and offers the shared result
//! to every local subscriber's bounded queue. When the last subscriber leaves, the entry lingers
//! for a while (so reconnecting long-polls don't churn the bus) and is then removed with its bus
//! subscription.
//!
//! Live items published while the bus connection was down never reach this edge. For channels
//! with history the channel's task closes that hole itself: when the bus is back it reads the
//! channel's history after the last position it delivered and delivers what it missed before
//! any later live item (skipping live copies of what the read returned). When history cannot
//! serve it, the channel's subscribers are closed so their clients resume by id.

use crate::conn::{CloseReason, ConnHandle, Offer};
use crate::delivery::Delivery;
use crate::delivery::Transport;
use crate::metrics::EdgeMetrics;
use crate::sequencer::Sequencer;
use bus::history::{HistoryStore, Resume};
use bus::{Bus, BusState};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Sequencing and interest settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How long a channel without subscribers keeps its bus subscription.
    pub linger: Duration,
    /// Same channel + id within this window is delivered once.
    pub dedup_window: Duration,
    /// How long an out-of-order item waits for its predecessor.
    pub sequence_wait: Duration,
    /// Longest channel name (bytes) a connection may subscribe; longer ⇒ refused, never sent
    /// to the bus (docs/protocol.md, "Limits and bad input").
    pub max_channel_length: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            linger: Duration::from_secs(10),
            dedup_window: Duration::from_secs(60),
            sequence_wait: Duration::from_secs(5),
            max_channel_length: DEFAULT_MAX_CHANNEL_LENGTH,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChannelState {
    Pending,
    Live,
    Failed(String),
}

struct ChannelEntry {
    generation: u64,
    subscribers: HashMap<u64, Arc<ConnHandle>>,
    state: watch::Receiver<ChannelState>,
    empty_since: Option<Instant>,
    /// Id of the last item delivered on the channel (for response-hold `prev-id` checks).
    last_id: Option<String>,
}

/// Channel ⇒ local subscribers. Cheap to clone.
#[derive(Clone)]
pub struct SubscriberRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    channels: DashMap<Arc<str>, ChannelEntry>,
    bus: Arc<dyn Bus>,
    /// Channel history, to catch channels up after a bus outage (`None`: no history).
    history: Option<Arc<dyn HistoryStore>>,
    /// Bounds concurrent catch-up reads (one per channel after a reconnect).
    catch_ups: tokio::sync::Semaphore,
    metrics: Arc<EdgeMetrics>,
    config: RegistryConfig,
    next_generation: AtomicU64,
}

/// Default of [`RegistryConfig::max_channel_length`] (`--max-channel-length`).
pub const DEFAULT_MAX_CHANNEL_LENGTH: usize = 512;

/// Channels reading their history at once after a bus reconnect; the others wait their turn
/// (their live items queue in the bus subscription meanwhile).
const MAX_CONCURRENT_CATCH_UPS: usize = 32;

/// Subscribing failed: the channel name is refused, or the bus could not subscribe it.
#[derive(Debug, thiserror::Error)]
#[error("could not subscribe channel {channel}: {reason}")]
pub struct SubscribeError {
    /// Channel (cut to its first 64 bytes for logs when too long).
    pub channel: String,
    /// Why.
    pub reason: String,
    /// The name itself is refused (the origin's fault: 502), not the bus (503).
    pub invalid_channel: bool,
}

impl SubscriberRegistry {
    /// An empty registry over `bus`; with `history`, channels that keep history are caught
    /// up from it after a bus outage.
    pub fn new(
        bus: Arc<dyn Bus>,
        history: Option<Arc<dyn HistoryStore>>,
        metrics: Arc<EdgeMetrics>,
        config: RegistryConfig,
    ) -> SubscriberRegistry {
        SubscriberRegistry {
            inner: Arc::new(Inner {
                channels: DashMap::new(),
                bus,
                history,
                catch_ups: tokio::sync::Semaphore::new(MAX_CONCURRENT_CATCH_UPS),
                metrics,
                config,
                next_generation: AtomicU64::new(1),
            }),
        }
    }

    /// Adds `conn` to `channel` and waits until publishes on it reach this edge.
    pub async fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        channel: &str,
    ) -> Result<(), SubscribeError> {
        // The one door every subscription passes: no name over the limit reaches the bus.
        if channel.len() > self.inner.config.max_channel_length {
            let mut cut = 64.min(channel.len());
            while !channel.is_char_boundary(cut) {
                cut -= 1;
            }
            return Err(SubscribeError {
                channel: format!("{}...", &channel[..cut]),
                reason: format!(
                    "name of {} bytes is longer than {}",
                    channel.len(),
                    self.inner.config.max_channel_length
                ),
                invalid_channel: true,
            });
        }
        let mut state = {
            let inner = &self.inner;
            match inner.channels.entry(Arc::from(channel)) {
                Entry::Occupied(mut e) => {
                    let entry = e.get_mut();
                    if entry.subscribers.is_empty() {
                        // A lingering channel has local subscribers again.
                        inner.metrics.channels.increment(1.0);
                    }
                    if entry.subscribers.insert(conn.id, conn.clone()).is_none() {
                        inner.metrics.subscriptions.increment(1.0);
                    }
                    entry.empty_since = None;
                    entry.state.clone()
                }
                Entry::Vacant(v) => {
                    let (tx, rx) = watch::channel(ChannelState::Pending);
                    let generation = inner.next_generation.fetch_add(1, Ordering::Relaxed);
                    let key = v.key().clone();
                    v.insert(ChannelEntry {
                        generation,
                        subscribers: HashMap::from([(conn.id, conn.clone())]),
                        state: rx.clone(),
                        empty_since: None,
                        last_id: None,
                    });
                    inner.metrics.channels.increment(1.0);
                    inner.metrics.subscriptions.increment(1.0);
                    tokio::spawn(channel_task(self.inner.clone(), key, generation, tx));
                    rx
                }
            }
        };
        let result = state
            .wait_for(|s| *s != ChannelState::Pending)
            .await
            .map(|s| s.clone());
        match result {
            Ok(ChannelState::Live) => Ok(()),
            Ok(ChannelState::Failed(reason)) => Err(SubscribeError {
                channel: channel.to_owned(),
                reason,
                invalid_channel: false,
            }),
            Ok(ChannelState::Pending) | Err(_) => Err(SubscribeError {
                channel: channel.to_owned(),
                reason: "channel task ended".to_owned(),
                invalid_channel: false,
            }),
        }
    }

    /// Removes `conn_id` from `channel` (no-op if absent).
    pub fn unsubscribe(&self, conn_id: u64, channel: &str) {
        if let Some(mut entry) = self.inner.channels.get_mut(channel)
            && entry.subscribers.remove(&conn_id).is_some()
        {
            self.inner.metrics.subscriptions.decrement(1.0);
            if entry.subscribers.is_empty() {
                entry.empty_since = Some(Instant::now());
                // Lingering channels keep their bus subscription but have no local
                // subscribers: they are not counted.
                self.inner.metrics.channels.decrement(1.0);
            }
        }
    }

    /// Id of the last item this edge delivered on `channel`, while it has an entry.
    pub fn last_id(&self, channel: &str) -> Option<String> {
        self.inner
            .channels
            .get(channel)
            .and_then(|e| e.last_id.clone())
    }

    /// The local subscribers of `channel`.
    pub fn subscribers(&self, channel: &str) -> Vec<Arc<ConnHandle>> {
        self.inner
            .channels
            .get(channel)
            .map(|e| e.subscribers.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets every channel's last id (Pushpin's `recover`).
    pub fn clear_last_ids(&self) {
        for mut entry in self.inner.channels.iter_mut() {
            entry.last_id = None;
        }
    }

    /// Number of channels with an entry (with local subscribers, or lingering).
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }
}

impl Inner {
    /// Offers a delivery to every local subscriber of `channel` whose hold takes it.
    fn fan_out(&self, channel: &str, delivery: Arc<Delivery>) {
        let Some(entry) = self.channels.get(channel) else {
            return;
        };
        // Only non-blocking work under the shard lock: a refcount bump and a try_send each.
        for conn in entry.subscribers.values() {
            let wanted = match conn.transport {
                Transport::HttpStream => delivery.stream.is_some(),
                Transport::HttpResponse => delivery.response.is_some(),
                Transport::Ws => delivery.ws.is_some(),
            };
            if wanted && conn.offer(&delivery) == Offer::Overflow {
                EdgeMetrics::dropped("slow_consumer");
            }
        }
    }

    /// Records the channel's last id when it changed (a write lock only then).
    fn note_last_id(&self, channel: &str, before: Option<String>, now: Option<&str>) {
        if before.as_deref() != now
            && let Some(mut entry) = self.channels.get_mut(channel)
        {
            entry.last_id = now.map(str::to_owned);
        }
    }

    /// Removes the entry if it is ours and has been empty for the linger time.
    fn remove_if_idle(&self, channel: &str, generation: u64) -> bool {
        let linger = self.config.linger;
        self.channels
            .remove_if(channel, |_, e| {
                e.generation == generation
                    && e.subscribers.is_empty()
                    && e.empty_since.is_some_and(|t| t.elapsed() >= linger)
            })
            .is_some()
    }

    fn remove_failed(&self, channel: &str, generation: u64) {
        if let Some((_, entry)) = self
            .channels
            .remove_if(channel, |_, e| e.generation == generation)
        {
            if !entry.subscribers.is_empty() {
                self.metrics.channels.decrement(1.0);
            }
            #[allow(clippy::cast_precision_loss)]
            self.metrics
                .subscriptions
                .decrement(entry.subscribers.len() as f64);
        }
    }
}

async fn channel_task(
    inner: Arc<Inner>,
    channel: Arc<str>,
    generation: u64,
    state: watch::Sender<ChannelState>,
) {
    let subject = bus::subject::channel_subject(&channel);
    let mut sub = match inner.bus.subscribe(subject).await {
        Ok(sub) => sub,
        Err(err) => {
            tracing::warn!(%channel, error = %err, "bus subscribe failed");
            inner.remove_failed(&channel, generation);
            state.send_replace(ChannelState::Failed(err.to_string()));
            return;
        }
    };
    state.send_replace(ChannelState::Live);
    let mut seq = Sequencer::new(inner.config.dedup_window, inner.config.sequence_wait);
    let mut linger_tick = tokio::time::interval(Duration::from_secs(1));
    linger_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Every later change of the bus state is a loss or a reconnect.
    let mut bus_state = inner.bus.state();
    bus_state.borrow_and_update();
    let mut bus_state_open = true;
    // History position of the newest item delivered here (0: none, or no history).
    let mut last_seq = 0u64;
    // Live items at or below this position were already delivered by a catch-up.
    let mut caught_up = 0u64;
    loop {
        let expiry = seq.next_expiry();
        tokio::select! {
            msg = sub.next() => {
                let Some(payload) = msg else {
                    tracing::warn!(%channel, "bus closed the subscription");
                    inner.remove_failed(&channel, generation);
                    return;
                };
                match bus::payload::decode_full(payload) {
                    Ok(decoded) if decoded.seq != 0 && decoded.seq <= caught_up => {}
                    Ok(decoded) => {
                        last_seq = last_seq.max(decoded.seq);
                        offer(&inner, &channel, &mut seq, Live(decoded));
                    }
                    Err(err) => {
                        tracing::warn!(%channel, error = %err, "dropping undecodable bus message");
                        EdgeMetrics::dropped("bad_payload");
                    }
                }
            }
            changed = bus_state.changed(), if bus_state_open => {
                if changed.is_err() {
                    bus_state_open = false;
                    continue;
                }
                let now = *bus_state.borrow_and_update();
                if now == BusState::Connected && last_seq != 0 {
                    last_seq = catch_up(&inner, &channel, last_seq, &mut seq).await;
                    caught_up = last_seq;
                }
            }
            _ = sleep_until_opt(expiry) => {
                let before = seq.last_id().map(str::to_owned);
                for live in seq.expire(Instant::now()) {
                    deliver(&inner, &channel, live);
                }
                inner.note_last_id(&channel, before, seq.last_id());
            }
            _ = linger_tick.tick() => {
                if inner.remove_if_idle(&channel, generation) {
                    return;
                }
            }
        }
    }
}

/// Sequences one item and delivers what the sequencer lets out.
fn offer(inner: &Inner, channel: &str, seq: &mut Sequencer<Live>, item: Live) {
    let before = seq.last_id().map(str::to_owned);
    for live in seq.offer(item, Instant::now()) {
        deliver(inner, channel, live);
    }
    inner.note_last_id(channel, before, seq.last_id());
}

/// The bus is back after an outage: delivers the items of `channel` stored after position
/// `last_seq` (what this edge may have missed live meanwhile) and returns the newest position
/// delivered. When history cannot serve it (the position fell out of history, or the store
/// is unreachable), the channel's subscribers are closed as a drain closes them, so their
/// clients resume by id — here or elsewhere — and take the usual fallbacks. Counted in
/// `gripmesh_edge_catch_ups_total{result}`.
async fn catch_up(inner: &Inner, channel: &str, last_seq: u64, seq: &mut Sequencer<Live>) -> u64 {
    let Some(history) = &inner.history else {
        return last_seq;
    };
    // The subscription is re-made on the new connection before this flush's round trip ends:
    // every item stored after the read below reaches the subscription live.
    let read = match inner.bus.flush().await {
        Ok(()) => {
            let _permit = inner.catch_ups.acquire().await;
            history.read_after_seq(channel, last_seq).await
        }
        Err(err) => Err(bus::history::HistoryError::Unavailable(err.to_string())),
    };
    match read {
        Ok(Resume::Found { items, .. }) => {
            let mut newest = last_seq;
            let count = items.len();
            for stored in items {
                match bus::payload::decode_full(stored.payload) {
                    Ok(mut d) => {
                        // Not a live delivery: no latency sample.
                        d.accepted_unix_nanos = 0;
                        d.seq = stored.seq;
                        newest = newest.max(stored.seq);
                        offer(inner, channel, seq, Live(d));
                    }
                    Err(err) => {
                        tracing::warn!(%channel, error = %err, "skipping undecodable history item");
                        EdgeMetrics::dropped("bad_payload");
                    }
                }
            }
            tracing::info!(%channel, items = count, "caught up from history after a bus outage");
            EdgeMetrics::catch_up(true);
            newest
        }
        other => {
            let reason = match other {
                Err(err) => err.to_string(),
                Ok(_) => "last position no longer in history".to_owned(),
            };
            tracing::warn!(%channel, %reason, "cannot catch up after a bus outage: closing the channel's subscribers so they resume");
            EdgeMetrics::catch_up(false);
            if let Some(entry) = inner.channels.get(channel) {
                for conn in entry.subscribers.values() {
                    conn.close(CloseReason::Drain);
                }
            }
            last_seq
        }
    }
}

/// A live item with its accept time and history position, as the sequencer orders it.
struct Live(bus::payload::Decoded);

impl crate::sequencer::Sequenced for Live {
    fn id(&self) -> Option<&str> {
        self.0.item.id.as_deref()
    }
    fn prev_id(&self) -> Option<&str> {
        self.0.item.prev_id.as_deref()
    }
    fn no_seq(&self) -> bool {
        self.0.item.no_seq
    }
}

fn deliver(inner: &Inner, channel: &str, live: Live) {
    let bus::payload::Decoded {
        item,
        accepted_unix_nanos,
        seq,
    } = live.0;
    if let Some(mut d) = Delivery::render(item, accepted_unix_nanos) {
        d.seq = seq;
        inner.fan_out(channel, Arc::new(d));
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
