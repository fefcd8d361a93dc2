//! The registration of a held connection, shared by every hold kind (HTTP response and
//! stream holds in `http`, WebSocket sessions in `ws`): its subscriptions, its place in the
//! held set, its authorization, usage meter and gone link, all undone when it ends.

use crate::EdgeInner;
use crate::conn::{ConnHandle, ConnQueue, Transport};
use crate::registry::SubscribeError;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Owns a held connection's registration: its subscriptions, its place in the held set and
/// its gauge. Dropping it (client gone, hold answered, stream ended) undoes all of them.
pub(crate) struct HoldGuard {
    edge: Arc<EdgeInner>,
    /// The connection's fan-out handle.
    pub conn: Arc<ConnHandle>,
    channels: Vec<String>,
    /// Usage counters (connections on `authz` routes).
    usage: Option<Arc<crate::usage::UsageMeter>>,
    /// Sent (dropped) last, when everything else is undone.
    gone: Option<crate::gone::GoneLink>,
}

impl HoldGuard {
    /// Registers a new held connection and returns it with its delivery queue.
    pub(crate) fn new(edge: Arc<EdgeInner>, transport: Transport) -> (HoldGuard, ConnQueue) {
        let id = edge.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (conn, rx) = ConnHandle::new(
            id,
            transport,
            edge.config.send_queue_messages,
            edge.config.send_queue_bytes,
        );
        edge.held.insert(id, conn.clone());
        let m = edge.metrics.transport(transport);
        m.connections.increment(1.0);
        m.opened.increment(1);
        (
            HoldGuard {
                edge,
                conn,
                channels: Vec::new(),
                usage: None,
                gone: None,
            },
            rx,
        )
    }

    /// Records the connection's authorization (for revocation, re-checks, expiry and its
    /// key's limits) and starts metering its usage on `route`.
    pub(crate) fn authorize(
        &mut self,
        authorized: Option<Arc<crate::authz::Authorized>>,
        route: &str,
    ) {
        if let Some(a) = authorized {
            if let Some(slot) = &a.slot {
                slot.state.register(&self.conn);
                self.conn.set_key(slot.state.clone());
            }
            let meter = self
                .edge
                .usage
                .open(self.conn.id, self.conn.transport, route, &a);
            self.usage = Some(meter);
            self.edge.authorized.insert(self.conn.id, a);
        }
    }

    /// The connection's usage counters, when it is metered.
    pub(crate) fn usage(&self) -> Option<&crate::usage::UsageMeter> {
        self.usage.as_deref()
    }

    /// The gone link to call when this connection ends.
    pub(crate) fn set_gone(&mut self, gone: Option<crate::gone::GoneLink>) {
        self.gone = gone;
    }

    /// Subscribes one channel (no-op if already subscribed); returns once it is live.
    pub(crate) async fn subscribe(&mut self, channel: String) -> Result<(), SubscribeError> {
        if self.channels.contains(&channel) {
            return Ok(());
        }
        self.channels.push(channel.clone());
        self.edge.registry.subscribe(&self.conn, &channel).await
    }

    /// Unsubscribes one channel.
    pub(crate) fn unsubscribe(&mut self, channel: &str) {
        if let Some(pos) = self.channels.iter().position(|c| c == channel) {
            self.channels.swap_remove(pos);
            self.edge.registry.unsubscribe(self.conn.id, channel);
        }
    }

    /// Number of subscribed channels.
    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The edge this connection belongs to.
    pub(crate) fn edge(&self) -> &Arc<EdgeInner> {
        &self.edge
    }

    /// Subscribes every channel; returns once all are live on the bus.
    pub(crate) async fn subscribe_all(
        &mut self,
        channels: Vec<String>,
    ) -> Result<(), SubscribeError> {
        for ch in channels {
            // Record first: if subscribing fails half-way, Drop still cleans up.
            self.channels.push(ch.clone());
            self.edge.registry.subscribe(&self.conn, &ch).await?;
        }
        Ok(())
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        for ch in &self.channels {
            self.edge.registry.unsubscribe(self.conn.id, ch);
        }
        self.edge.held.remove(&self.conn.id);
        if let Some((id, a)) = self.edge.authorized.remove(&self.conn.id)
            && let Some(slot) = &a.slot
        {
            slot.state.unregister(id);
        }
        if let Some(meter) = &self.usage {
            self.edge
                .usage
                .close(self.conn.id, meter, self.conn.close_reason());
        }
        self.edge
            .metrics
            .transport(self.conn.transport)
            .connections
            .decrement(1.0);
        // Dropping the link sends it.
        drop(self.gone.take());
    }
}
