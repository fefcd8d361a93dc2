//! Held requests: the subscription guard shared by both hold kinds, and the streaming body.

use crate::EdgeInner;
use crate::conn::{CloseReason, ConnHandle, ConnQueue, Transport};
use crate::delivery::StreamOut;
use crate::registry::SubscribeError;
use bytes::Bytes;
use grip::instruct::{KeepAlive, KeepAliveMode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use runtime::server::{Body, BoxError};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Owns a held connection's registration: its subscriptions, its place in the held set and
/// its gauge. Dropping it (client gone, hold answered, stream ended) undoes all of them.
pub struct HoldGuard {
    edge: Arc<EdgeInner>,
    /// The connection's fan-out handle.
    pub conn: Arc<ConnHandle>,
    channels: Vec<String>,
}

impl HoldGuard {
    /// Registers a new held connection and returns it with its delivery queue.
    pub fn new(edge: Arc<EdgeInner>, transport: Transport) -> (HoldGuard, ConnQueue) {
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
            },
            rx,
        )
    }

    /// Records the connection's authorization (for revocation and re-checks).
    pub fn authorize(&self, authorized: Option<Arc<crate::authz::Authorized>>) {
        if let Some(a) = authorized {
            self.edge.authorized.insert(self.conn.id, a);
        }
    }

    /// Subscribes one channel (no-op if already subscribed); returns once it is live.
    pub async fn subscribe(&mut self, channel: String) -> Result<(), SubscribeError> {
        if self.channels.contains(&channel) {
            return Ok(());
        }
        self.channels.push(channel.clone());
        self.edge.registry.subscribe(&self.conn, &channel).await
    }

    /// Unsubscribes one channel.
    pub fn unsubscribe(&mut self, channel: &str) {
        if let Some(pos) = self.channels.iter().position(|c| c == channel) {
            self.channels.swap_remove(pos);
            self.edge.registry.unsubscribe(self.conn.id, channel);
        }
    }

    /// Number of subscribed channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The edge this connection belongs to.
    pub(crate) fn edge(&self) -> &Arc<EdgeInner> {
        &self.edge
    }

    /// Subscribes every channel; returns once all are live on the bus.
    pub async fn subscribe_all(&mut self, channels: Vec<String>) -> Result<(), SubscribeError> {
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
        self.edge.authorized.remove(&self.conn.id);
        self.edge
            .metrics
            .transport(self.conn.transport)
            .connections
            .decrement(1.0);
    }
}

struct KeepAliveTimer {
    content: Bytes,
    period: Duration,
    mode: KeepAliveMode,
    sleep: Pin<Box<Sleep>>,
}

impl KeepAliveTimer {
    fn new(ka: &KeepAlive) -> KeepAliveTimer {
        let period = Duration::from_secs(ka.timeout_secs.max(1));
        KeepAliveTimer {
            content: ka.content.clone(),
            period,
            mode: ka.mode,
            sleep: Box::pin(tokio::time::sleep(jittered(period))),
        }
    }

    fn restart(&mut self) {
        self.sleep
            .as_mut()
            .reset(Instant::now() + jittered(self.period));
    }
}

/// Pushpin shortens each keep-alive period by up to 999 ms so that many streams opened
/// together do not all wake at once.
fn jittered(period: Duration) -> Duration {
    let jitter = Duration::from_millis(fastrand::u64(0..1000));
    period
        .checked_sub(jitter)
        .filter(|d| !d.is_zero())
        .unwrap_or(period)
}

/// Next-link state of a stream hold.
struct NextState {
    fetcher: Arc<crate::next_link::NextFetcher>,
    link: grip::instruct::NextLink,
    /// Fires after `link.timeout_secs` without channel activity.
    deadline: Pin<Box<Sleep>>,
    in_flight: Option<futures_util::future::BoxFuture<'static, crate::next_link::Fetched>>,
}

impl NextState {
    fn idle_period(&self) -> Duration {
        Duration::from_secs(self.link.timeout_secs.max(1))
    }

    fn activity(&mut self) {
        let period = self.idle_period();
        self.deadline.as_mut().reset(Instant::now() + period);
    }

    fn start(&mut self) {
        if self.in_flight.is_none() {
            self.in_flight = Some(self.fetcher.fetch(self.link.clone()));
        }
    }
}

/// The body of a stream hold: the initial body, then every published chunk, keep-alives in
/// between; ends cleanly on a `close` publish or drain, aborts on overflow.
pub struct StreamBody {
    initial: Option<Body>,
    rx: ConnQueue,
    keep_alive: Option<KeepAliveTimer>,
    next: Option<NextState>,
    guard: HoldGuard,
    done: bool,
}

impl StreamBody {
    /// Builds the body; `guard` must already be subscribed.
    pub fn new(
        initial: Body,
        rx: ConnQueue,
        keep_alive: Option<&KeepAlive>,
        guard: HoldGuard,
        next: Option<(Arc<crate::next_link::NextFetcher>, grip::instruct::NextLink)>,
    ) -> StreamBody {
        StreamBody {
            initial: Some(initial),
            rx,
            keep_alive: keep_alive.map(KeepAliveTimer::new),
            next: next.map(|(fetcher, link)| {
                let period = Duration::from_secs(link.timeout_secs.max(1));
                NextState {
                    fetcher,
                    link,
                    deadline: Box::pin(tokio::time::sleep(period)),
                    in_flight: None,
                }
            }),
            guard,
            done: false,
        }
    }

    fn wrote(&mut self) {
        if let Some(ka) = &mut self.keep_alive
            && ka.mode == KeepAliveMode::Idle
        {
            ka.restart();
        }
    }
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(reason) = this.guard.conn.poll_closed(cx) {
            this.done = true;
            return Poll::Ready(match reason {
                // A clean end: the client sees the terminating chunk.
                CloseReason::Drain | CloseReason::Revoked => None,
                // Abort without the terminating chunk, so the client knows data is missing.
                CloseReason::SlowConsumer => Some(Err("send queue overflow".into())),
            });
        }
        // The origin's initial body goes out first, whole, before any published data.
        if let Some(initial) = this.initial.as_mut() {
            match Pin::new(initial).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.wrote();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Trailers from the origin are dropped: the stream goes on.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => this.initial = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(delivery)) => match &delivery.stream {
                Some(StreamOut::Data(data)) => {
                    let data = data.clone();
                    if let Some(next) = this.next.as_mut() {
                        next.activity();
                    }
                    let edge = &this.guard.edge;
                    edge.metrics
                        .transport(Transport::HttpStream)
                        .sent
                        .increment(1);
                    edge.metrics.record_latency(delivery.accepted_unix_nanos);
                    this.wrote();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(StreamOut::Close) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Some(StreamOut::Hint) => {
                    if let Some(next) = this.next.as_mut() {
                        next.start();
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                None => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            },
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some(next) = this.next.as_mut() {
            if next.in_flight.is_none() && next.deadline.as_mut().poll(cx).is_ready() {
                next.start();
            }
            if let Some(fut) = next.in_flight.as_mut()
                && let Poll::Ready(result) = fut.as_mut().poll(cx)
            {
                next.in_flight = None;
                match result {
                    Ok((body, link)) => {
                        next.link = link;
                        next.activity();
                        let _ = next.deadline.as_mut().poll(cx);
                        if !body.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(body))));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "next link fetch failed; retrying after the timeout");
                        next.activity();
                        let _ = next.deadline.as_mut().poll(cx);
                    }
                }
            }
        }
        if let Some(ka) = this.keep_alive.as_mut()
            && ka.sleep.as_mut().poll(cx).is_ready()
        {
            ka.restart();
            let data = ka.content.clone();
            // Register the new deadline with this task before returning.
            let _ = ka.sleep.as_mut().poll(cx);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
