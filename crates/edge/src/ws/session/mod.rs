//! One WebSocket connection after the handshake: relays client messages to the origin
//! (events over HTTP, or frames on the origin WebSocket), origin messages to the client (with
//! GRIP `c:`/`m:` handling), and published messages from the fan-out queue.
//!
//! The decisions live in [`machine`], a state machine without I/O (unit-tested with plain
//! values); this module is its driver: it owns the client socket, the origin connection, the
//! registry handle and the in-flight request, feeds the machine and carries out its answers.

mod effects;
mod frames;
mod machine;
mod outbox;

use super::over_http::{OverHttpError, Reply};
use super::{GripMode, Upstream, Ws, client_ws_config};
use crate::conn::{CloseReason, ConnQueue, Transport};
use crate::delivery::Delivery;
use crate::hold::HoldGuard;
use crate::registry::SubscribeError;
use effects::{Action, Close, Command, FromOrigin, OriginRequest, Poll};
use frames::wire_size;
use futures_util::{SinkExt, StreamExt};
use grip::wsevents::WsEvent;
use hyper_util::rt::TokioIo;
use machine::{Limits, Machine, Origin};
use routes::{Route, Target};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};

/// Published messages written per flush.
const MAX_WRITE_BATCH: usize = 64;
/// Time a slow consumer gets to take its close frame before its socket is dropped.
const SLOW_CLOSE_GRACE: Duration = Duration::from_millis(250);
/// Time allowed for one close frame (or the final flush) to reach a peer.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

type InFlight = Pin<Box<dyn Future<Output = Result<Reply, OverHttpError>> + Send>>;

/// Whether the session goes on after a step.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    End,
}

impl Flow {
    fn from_alive(alive: bool) -> Flow {
        if alive { Flow::Continue } else { Flow::End }
    }
}

/// A WebSocket session, built during the handshake and run once the client is upgraded.
pub(crate) struct Session {
    guard: HoldGuard,
    rx: ConnQueue,
    upstream: Option<Upstream>,
    machine: Machine,
    /// Actions from the origin's first answer, applied once the client is upgraded.
    early: Vec<Action>,
    /// `Connection-Id` under which `refresh` commands find this connection.
    cid: Option<String>,
}

impl Session {
    pub(crate) fn new(
        guard: HoldGuard,
        rx: ConnQueue,
        grip: Option<GripMode>,
        upstream: Option<Upstream>,
        route: &Route,
        target: &Target,
        meta: std::collections::BTreeMap<String, String>,
    ) -> Session {
        let prefix = route.prefix.clone().unwrap_or_default();
        let implicit = target.sub.iter().map(|s| format!("{prefix}{s}")).collect();
        let config = &guard.edge().config;
        let limits = Limits {
            max_channels: config.max_channels_per_connection,
            upstream_queue: (
                config.ws_upstream_queue_messages,
                config.ws_upstream_queue_bytes,
            ),
        };
        let origin = match &upstream {
            Some(Upstream::OverHttp(oh)) => Origin::OverHttp {
                one_event: oh.one_event(),
            },
            Some(Upstream::Passthrough(_)) => Origin::Passthrough,
            None => Origin::Gone,
        };
        let machine = Machine::new(grip, origin, limits, prefix, implicit, meta);
        let mut upstream = upstream;
        let mut cid = None;
        if let Some(Upstream::OverHttp(oh)) = &mut upstream {
            oh.set_meta(machine.meta());
            // `refresh` commands name the connection by its Connection-Id.
            guard
                .edge()
                .ws_by_cid
                .insert(oh.connection_id.clone(), guard.conn.clone());
            cid = Some(oh.connection_id.clone());
        }
        Session {
            guard,
            rx,
            upstream,
            machine,
            early: Vec::new(),
            cid,
        }
    }

    /// Subscribes implicit channels and acts on the rest of the origin's first answer, so
    /// subscriptions are live before the client gets its 101.
    pub(crate) async fn prepare(&mut self, events: Vec<WsEvent>) -> Result<(), SubscribeError> {
        for ch in self.machine.implicit().to_vec() {
            self.machine.subscribe_implicit(&ch);
            self.guard.subscribe(ch).await?;
        }
        let actions = self.origin_events(events).await?;
        self.early = actions;
        Ok(())
    }

    /// Feeds origin events to the machine, making the subscriptions it asks for in order.
    async fn origin_events(&mut self, events: Vec<WsEvent>) -> Result<Vec<Action>, SubscribeError> {
        let mut out = Vec::new();
        for ev in events {
            let channels = self.guard.channel_count();
            match self
                .machine
                .origin_event(ev, channels, Instant::now(), &mut out)
            {
                Some(Command::Subscribe { full, resume }) => {
                    self.guard.subscribe(full.clone()).await?;
                    if let Some((channel, prev)) = resume {
                        self.resume(channel, &full, prev, &mut out).await;
                    }
                }
                Some(Command::Unsubscribe(full)) => self.guard.unsubscribe(&full),
                None => {}
            }
        }
        Ok(out)
    }

    /// Replays `full`'s history after `prev` (the subscription is already live); the machine
    /// decides what a gap means.
    async fn resume(&mut self, channel: String, full: &str, prev: String, out: &mut Vec<Action>) {
        let edge = self.guard.edge().clone();
        match crate::resume::resume(&edge, &mut self.rx, full, &prev).await {
            crate::resume::Resumed::Recovered | crate::resume::Resumed::Off => {}
            crate::resume::Resumed::Gap => self.machine.on_history_gap(channel, prev, out),
        }
    }

    /// Runs the connection until either side ends it.
    ///
    /// Takes the session boxed: the task's future then holds a pointer instead of a copy of
    /// the session (an async fn keeps both its argument and the moved-in local), which keeps
    /// every idle WebSocket's task small.
    pub(crate) async fn run(mut self: Box<Self>, upgraded: hyper::upgrade::Upgraded) {
        // The upgraded socket leaves hyper's connection count; it counts here until closed.
        let _slot = self.guard.edge().config.server.connections.take();
        let config = client_ws_config(self.guard.edge());
        let mut client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let early = std::mem::take(&mut self.early);
        if self.apply(&mut client, early).await {
            self.machine.start(Instant::now());
            self.run_loop(&mut client).await;
        }
        self.finish(&mut client).await;
    }

    /// One turn per event from the client, the fan-out queue, the origin or the timer.
    async fn run_loop(&mut self, client: &mut Ws) {
        let mut in_flight: Option<InFlight> = None;
        loop {
            match self.machine.poll(Instant::now()) {
                Poll::End => break,
                Poll::Run(request) => {
                    if let Some(request) = request {
                        in_flight = self.request(request);
                    }
                }
            }
            let timer = self.machine.next_timer(self.keep_alive_interval());
            let closing = self.machine.is_closing();
            let reads_client = self.machine.reads_client();
            // Rare turns (an origin reply or message, a timer) are boxed: the loop's future
            // is as large as its largest inline turn, and every idle WebSocket holds one.
            let flow = tokio::select! {
                biased;
                reason = self.guard.conn.closed(), if !closing => {
                    self.on_conn_closed(client, reason).await
                }
                delivery = self.rx.recv(), if !closing => self.on_delivery(client, delivery).await,
                msg = client.next(), if reads_client => self.on_client_read(client, msg).await,
                reply = poll_opt(&mut in_flight) => {
                    in_flight = None;
                    self.machine.request_done();
                    Box::pin(self.on_reply(client, reply)).await
                }
                msg = next_origin_message(&mut self.upstream) => {
                    Box::pin(self.on_passthrough_message(client, msg)).await
                }
                _ = sleep_until_opt(timer) => Box::pin(self.on_timer(client, &mut in_flight)).await,
            };
            if flow == Flow::End {
                break;
            }
        }
    }

    /// A WebSocket-over-HTTP request the machine asked for, with the current meta.
    fn request(&mut self, request: OriginRequest) -> Option<InFlight> {
        let Some(Upstream::OverHttp(oh)) = &mut self.upstream else {
            return None;
        };
        oh.set_meta(self.machine.meta());
        Some(Box::pin(
            oh.request_with_last(request.events, request.grip_last),
        ))
    }

    /// `Keep-Alive-Interval` as the WebSocket-over-HTTP origin asked.
    fn keep_alive_interval(&self) -> Option<Duration> {
        match &self.upstream {
            Some(Upstream::OverHttp(oh)) => oh.keep_alive_interval,
            _ => None,
        }
    }

    /// The edge closes the connection (drain, revocation, quota, slow consumer).
    async fn on_conn_closed(&mut self, client: &mut Ws, reason: CloseReason) -> Flow {
        let close = self.machine.on_conn_closed(reason);
        if close.abandon {
            // The client is not reading: offer the close frame briefly, then drop the socket
            // rather than wait on it.
            let frame = close_frame(Some((close.code, close.reason.to_owned())));
            let _ =
                tokio::time::timeout(SLOW_CLOSE_GRACE, client.send(Message::Close(frame))).await;
            return Flow::End;
        }
        self.close_client(client, Some((close.code, close.reason.to_owned())))
            .await;
        Flow::Continue
    }

    /// Published messages: the first, and what else is queued up to a write batch.
    async fn on_delivery(&mut self, client: &mut Ws, first: Option<Arc<Delivery>>) -> Flow {
        let Some(first) = first else {
            return Flow::End;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_WRITE_BATCH {
            match self.rx.try_recv() {
                Some(d) => batch.push(d),
                None => break,
            }
        }
        Flow::from_alive(self.deliver(client, batch).await)
    }

    /// Delivers published messages. Returns false when the client is gone.
    async fn deliver(&mut self, client: &mut Ws, batch: Vec<Arc<Delivery>>) -> bool {
        let metrics = self.guard.edge().metrics.clone();
        let delivered = self
            .machine
            .on_deliveries(&batch, |d| metrics.record_latency(d.accepted_unix_nanos));
        let wire = wire_size(&delivered.messages);
        let written = self.write(client, delivered.messages).await;
        if written {
            self.count(wire);
        }
        match delivered.close {
            Some(close) if written => {
                self.origin_ended();
                self.close_client(client, close).await;
                true
            }
            _ => written,
        }
    }

    /// A read from the client: a message, an error or the end.
    async fn on_client_read(
        &mut self,
        client: &mut Ws,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Flow {
        match msg {
            Some(Ok(m)) => self.on_client_message(m).await,
            Some(Err(err)) => {
                let close = self.machine.on_client_error(&err);
                tracing::debug!(error = %err, "client websocket error");
                if let Some(close) = close {
                    let frame = close_frame(Some((close.0, close.1.to_owned())));
                    let _ = tokio::time::timeout(
                        CLOSE_SEND_TIMEOUT,
                        client.send(Message::Close(frame)),
                    )
                    .await;
                }
            }
            None => self.machine.on_client_end(),
        }
        Flow::from_alive(!self.machine.client_left())
    }

    /// A client message: queued for the next WebSocket-over-HTTP request by the machine, or
    /// forwarded on the passthrough WebSocket.
    async fn on_client_message(&mut self, msg: Message) {
        let Some(msg) = self.machine.on_client_message(msg, Instant::now()) else {
            return;
        };
        let Some(Upstream::Passthrough(ws)) = &mut self.upstream else {
            return;
        };
        let was_close = matches!(msg, Message::Close(_));
        let sent = ws.send(msg).await.is_ok();
        self.machine.forwarded(was_close, sent, Instant::now());
    }

    /// The WebSocket-over-HTTP origin answered (or the request failed).
    async fn on_reply(&mut self, client: &mut Ws, reply: Result<Reply, OverHttpError>) -> Flow {
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                tracing::warn!(error = %err, "websocket-over-http request failed; closing the client");
                if self.machine.is_closing() {
                    return Flow::End;
                }
                self.origin_ended();
                self.close_client(client, Some((1011, "origin error".into())))
                    .await;
                return Flow::Continue;
            }
        };
        if let Some(Upstream::OverHttp(oh)) = &mut self.upstream {
            oh.apply_keep_alive(&reply.headers);
            self.machine.apply_set_meta(&reply.headers);
        }
        match self.origin_events(reply.events).await {
            Ok(actions) => {
                let alive = self.apply(client, actions).await;
                Flow::from_alive(alive || self.machine.is_closing())
            }
            Err(err) => {
                self.subscribe_failed(client, &err).await;
                Flow::Continue
            }
        }
    }

    /// Origin WebSocket message (passthrough).
    async fn on_passthrough_message(
        &mut self,
        client: &mut Ws,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Flow {
        let ev = match self.machine.on_passthrough(msg) {
            FromOrigin::Event(ev) => ev,
            FromOrigin::Nothing => return Flow::Continue,
            FromOrigin::End => {
                self.upstream = None;
                return Flow::End;
            }
            FromOrigin::CloseClient {
                close,
                origin_ended,
            } => {
                self.upstream = None;
                if origin_ended {
                    self.origin_ended();
                }
                self.close_client(client, close).await;
                return Flow::Continue;
            }
        };
        match self.origin_events(vec![ev]).await {
            Ok(actions) => {
                let alive = self.apply(client, actions).await;
                Flow::from_alive(alive || self.machine.is_closing())
            }
            Err(err) => {
                self.subscribe_failed(client, &err).await;
                Flow::Continue
            }
        }
    }

    /// A due timer: keep-alive, delayed message, `Keep-Alive-Interval` request, close deadline.
    async fn on_timer(&mut self, client: &mut Ws, in_flight: &mut Option<InFlight>) -> Flow {
        let due = self
            .machine
            .on_timer(Instant::now(), self.keep_alive_interval());
        if due.end {
            return Flow::End;
        }
        if let Some(msg) = due.keep_alive
            && !self.write(client, [msg]).await
        {
            return Flow::End;
        }
        if let Some(msg) = due.delayed
            && !self.write(client, [msg]).await
        {
            return Flow::End;
        }
        if let Some(request) = due.request {
            *in_flight = self.request(request);
        }
        Flow::Continue
    }

    /// The edge could not make a subscription the origin asked for: the client is closed.
    async fn subscribe_failed(&mut self, client: &mut Ws, err: &SubscribeError) {
        tracing::warn!(error = %err, "subscribe failed");
        let close = effects::subscribe_failure_close(err);
        self.close_client(client, Some(close)).await;
    }

    /// Cleanup after the loop: tell the origin when the client vanished.
    async fn finish(&mut self, client: &mut Ws) {
        let finish = self.machine.finish();
        if finish.flush_client {
            // Delivers a queued close reply; bounded, as the client may have stopped reading.
            let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, client.flush()).await;
        }
        match self.upstream.take() {
            Some(Upstream::OverHttp(mut oh)) if finish.disconnect_origin => {
                oh.set_meta(self.machine.meta());
                // Best effort; the session is over whatever the origin answers. Spawned as is
                // (not wrapped in another async block, which would hold the future twice).
                drop(tokio::spawn(oh.request(vec![WsEvent::Disconnect])));
            }
            Some(Upstream::Passthrough(mut ws)) => {
                let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, SinkExt::close(&mut *ws)).await;
            }
            _ => {}
        }
    }

    /// Applies actions to the client. Returns false when the client is gone or dropped.
    async fn apply(&mut self, client: &mut Ws, actions: Vec<Action>) -> bool {
        let mut pending: Vec<Message> = Vec::new();
        for action in actions {
            match action {
                Action::Send(m) => pending.push(m),
                Action::Close(close) => {
                    // The origin's answer to the client's own close is not the origin's doing.
                    if !self.machine.is_closing() {
                        self.origin_ended();
                    }
                    if !self.write(client, pending.drain(..)).await {
                        return false;
                    }
                    self.close_client(client, close).await;
                    return true;
                }
                Action::Drop => {
                    if !self.machine.is_closing() {
                        self.origin_ended();
                    }
                    let _ = self.write(client, pending.drain(..)).await;
                    self.machine.origin_dropped();
                    return false;
                }
            }
        }
        self.write(client, pending).await
    }

    /// Counts published messages written to the client (metered connections).
    fn count(&self, (messages, bytes): (u64, u64)) {
        if let Some(u) = self.guard.usage() {
            u.add(messages, bytes);
        }
    }

    /// Notes that the server side (origin or publisher) ended the session.
    fn origin_ended(&self) {
        if let Some(u) = self.guard.usage() {
            u.ended(crate::usage::EndReason::Origin);
        }
    }

    /// Writes messages and flushes once. Returns false when the client is gone.
    async fn write(&mut self, client: &mut Ws, msgs: impl IntoIterator<Item = Message>) -> bool {
        let mut n = 0u64;
        for m in msgs {
            if client.feed(m).await.is_err() {
                self.machine.client_failed();
                return false;
            }
            n += 1;
        }
        if n == 0 {
            return true;
        }
        // A client that stops reading must not pin this task: the slow-consumer signal (or
        // drain) interrupts a stuck flush.
        let flushed = tokio::select! {
            biased;
            r = client.flush() => r.is_ok(),
            reason = self.guard.conn.closed() => {
                if reason != CloseReason::SlowConsumer {
                    // Drain or revocation: the loop's close path finishes the flush and sends
                    // the close frame (bounded by its own timeout).
                    return true;
                }
                false
            }
        };
        if !flushed {
            self.machine.client_failed();
            return false;
        }
        self.guard
            .edge()
            .metrics
            .transport(Transport::Ws)
            .sent
            .increment(n);
        self.machine.on_written(Instant::now());
        true
    }

    /// Sends the client a close frame and starts the close handshake.
    async fn close_client(&mut self, client: &mut Ws, close: Close) {
        let _ = tokio::time::timeout(
            CLOSE_SEND_TIMEOUT,
            client.send(Message::Close(close_frame(close))),
        )
        .await;
        self.machine.start_closing(Instant::now());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(cid) = &self.cid {
            self.guard.edge().ws_by_cid.remove(cid);
        }
    }
}

fn close_frame(close: Close) -> Option<CloseFrame> {
    close.map(|(code, reason)| CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason),
    })
}

async fn poll_opt(fut: &mut Option<InFlight>) -> Result<Reply, OverHttpError> {
    match fut {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn next_origin_message(
    upstream: &mut Option<Upstream>,
) -> Option<Result<Message, tungstenite::Error>> {
    match upstream {
        Some(Upstream::Passthrough(ws)) => ws.next().await,
        _ => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
