//! One WebSocket connection after the handshake: relays client messages to the origin
//! (events over HTTP, or frames on the origin WebSocket), origin messages to the client (with
//! GRIP `c:`/`m:` handling), and published messages from the fan-out queue.

use super::over_http::{OverHttpError, Reply};
use super::{GripMode, Upstream, Ws};
use crate::EdgeInner;
use crate::conn::{CloseReason, ConnQueue, Transport};
use crate::delivery::{Delivery, WsOut};
use crate::filtering::{ConnFilters, Verdict};
use crate::hold::HoldGuard;
use crate::registry::SubscribeError;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use grip::instruct::KeepAliveMode;
use grip::publish::WsMessageType;
use grip::wscontrol::ControlMessage;
use grip::wsevents::WsEvent;
use hyper_util::rt::TokioIo;
use routes::{Route, Target};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};

/// Largest events body sent to the origin in one request.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Published messages written per flush.
const MAX_WRITE_BATCH: usize = 64;
/// Time allowed to finish a close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Time a slow consumer gets to take its close frame before its socket is dropped.
const SLOW_CLOSE_GRACE: Duration = Duration::from_millis(250);

/// tungstenite's read buffer per client WebSocket, allocated with the connection. Clients
/// mostly receive; a larger client message is read in chunks of this size.
const CLIENT_READ_BUFFER: usize = 1024;
/// Bytes of frames buffered before tungstenite writes without waiting for the flush.
const CLIENT_WRITE_BUFFER: usize = 16 * 1024;

/// The WebSocket settings for client connections.
pub(crate) fn client_ws_config(edge: &EdgeInner) -> WebSocketConfig {
    let max = edge.config.max_ws_message_size;
    WebSocketConfig::default()
        // Small buffers: most connections are idle most of the time.
        .read_buffer_size(CLIENT_READ_BUFFER)
        // Frames fed by one session batch collect here and leave in one `send()` at the
        // flush (tungstenite allocates it on the first write, not per idle connection).
        .write_buffer_size(CLIENT_WRITE_BUFFER)
        .max_write_buffer_size(
            edge.config
                .max_ws_message_size
                .saturating_mul(4)
                .max(1 << 20),
        )
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Something to do to the client.
enum Action {
    Send(Message),
    Close(Option<(u16, String)>),
    /// Drop the client without a close frame (origin sent `DISCONNECT`).
    Drop,
}

struct KeepAlive {
    message: Message,
    period: Duration,
    mode: KeepAliveMode,
    deadline: Instant,
}

/// A `send-delayed` message waiting for its time (Pushpin's `WsSession::sendDelayed`).
struct Delayed {
    message: Message,
    at: Instant,
}

type InFlight = Pin<Box<dyn Future<Output = Result<Reply, OverHttpError>> + Send>>;

/// A WebSocket session, built during the handshake and run once the client is upgraded.
pub(crate) struct Session {
    guard: HoldGuard,
    rx: ConnQueue,
    grip: Option<GripMode>,
    upstream: Option<Upstream>,
    prefix: String,
    implicit: Vec<String>,
    early: Vec<Action>,
    keep_alive: Option<KeepAlive>,
    detached: bool,
    /// Resumes history could not serve: (channel as the origin named it, last id), sent to a
    /// WebSocket-over-HTTP origin as `Grip-Last` on the next request.
    grip_last: Vec<(String, String)>,
    /// Subscription filters and meta (`set-meta`, `Set-Meta-*`).
    filters: ConnFilters,
    /// The pending `send-delayed` message.
    delayed: Option<Delayed>,
    /// A refresh arrived while a request was in flight: send one when it is answered.
    refresh_pending: bool,
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
        let mut filters = ConnFilters::default();
        filters.meta = meta;
        let mut upstream = upstream;
        let mut cid = None;
        if let Some(Upstream::OverHttp(oh)) = &mut upstream {
            oh.set_meta(&filters.meta);
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
            grip,
            upstream,
            prefix,
            implicit,
            early: Vec::new(),
            keep_alive: None,
            detached: false,
            grip_last: Vec::new(),
            filters,
            delayed: None,
            refresh_pending: false,
            cid,
        }
    }

    /// Subscribes implicit channels and acts on the rest of the origin's first answer, so
    /// subscriptions are live before the client gets its 101.
    pub(crate) async fn prepare(&mut self, events: Vec<WsEvent>) -> Result<(), SubscribeError> {
        for ch in self.implicit.clone() {
            self.filters.subscribe(&ch, &[], None);
            self.guard.subscribe(ch).await?;
        }
        let actions = self.on_origin_events(events).await?;
        self.early = actions;
        Ok(())
    }

    /// Interprets origin events: GRIP control messages are executed here; the rest become
    /// actions on the client.
    async fn on_origin_events(
        &mut self,
        events: Vec<WsEvent>,
    ) -> Result<Vec<Action>, SubscribeError> {
        let mut out = Vec::new();
        for ev in events {
            match ev {
                WsEvent::Text(data) => {
                    if let Some(payload) = self.unwrap_grip(&data, &mut out).await? {
                        match Utf8Bytes::try_from(payload) {
                            Ok(t) => out.push(Action::Send(Message::Text(t))),
                            Err(_) => tracing::debug!("dropping non-UTF-8 text from origin"),
                        }
                    }
                }
                WsEvent::Binary(data) => {
                    if let Some(payload) = self.unwrap_grip(&data, &mut out).await? {
                        out.push(Action::Send(Message::Binary(payload)));
                    }
                }
                WsEvent::Ping(d) => out.push(Action::Send(Message::Ping(d))),
                WsEvent::Pong(d) => out.push(Action::Send(Message::Pong(d))),
                WsEvent::Close(payload) => {
                    out.push(Action::Close(grip::wsevents::close_code_reason(&payload)));
                }
                WsEvent::Disconnect | WsEvent::Open => out.push(Action::Drop),
            }
        }
        Ok(out)
    }

    /// Applies GRIP framing to an origin message: executes `c:` control messages, strips the
    /// message prefix, drops unprefixed messages. Without GRIP mode the message passes as is.
    async fn unwrap_grip(
        &mut self,
        data: &Bytes,
        out: &mut Vec<Action>,
    ) -> Result<Option<Bytes>, SubscribeError> {
        let Some(grip) = &self.grip else {
            return Ok(Some(data.clone()));
        };
        if let Some(json) = grip::wscontrol::strip_control_prefix(data) {
            match grip::wscontrol::parse(json) {
                Ok(msg) => self.on_control(msg, out).await?,
                Err(err) => tracing::debug!(error = %err, "ignoring invalid control message"),
            }
            return Ok(None);
        }
        if data.starts_with(&grip.prefix) {
            return Ok(Some(data.slice(grip.prefix.len()..)));
        }
        tracing::debug!("dropping origin message without the GRIP message prefix");
        Ok(None)
    }

    async fn on_control(
        &mut self,
        msg: ControlMessage,
        out: &mut Vec<Action>,
    ) -> Result<(), SubscribeError> {
        match msg {
            ControlMessage::Subscribe {
                channel,
                prev_id,
                filters,
            } => {
                let max = self.guard.edge().config.max_channels_per_connection;
                let full = format!("{}{channel}", self.prefix);
                if self.guard.channel_count() >= max {
                    tracing::debug!(channel = %full, "subscription limit reached; subscribe ignored");
                } else {
                    // Filters first: a publish racing the subscription must meet them.
                    self.filters.subscribe(&full, &filters, None);
                    self.guard.subscribe(full.clone()).await?;
                    if let Some(prev) = prev_id {
                        self.resume(channel, &full, prev, out).await;
                    }
                }
            }
            ControlMessage::Unsubscribe { channel } => {
                let full = format!("{}{channel}", self.prefix);
                if !self.implicit.contains(&full) {
                    self.guard.unsubscribe(&full);
                    self.filters.unsubscribe(&full);
                }
            }
            ControlMessage::Detach => self.detached = true,
            ControlMessage::KeepAlive {
                content,
                timeout_secs,
                mode,
            } => {
                self.keep_alive = content.and_then(|(kind, data)| {
                    let period = Duration::from_secs(timeout_secs.max(1));
                    Some(KeepAlive {
                        message: ws_message(kind, data)?,
                        period,
                        mode,
                        deadline: Instant::now() + period,
                    })
                });
            }
            ControlMessage::SetMeta { name, value } => {
                self.filters.set_meta(name, value);
                self.meta_changed();
            }
            ControlMessage::SendDelayed {
                kind,
                content,
                timeout_secs,
            } => {
                // Pushpin: a new delayed message first sends the pending one.
                if let Some(d) = self.delayed.take() {
                    out.push(Action::Send(d.message));
                }
                // Pushpin treats a timeout of 0 as the default (1 s).
                let secs = if timeout_secs == 0 {
                    grip::wscontrol::DEFAULT_SEND_DELAYED_SECS
                } else {
                    timeout_secs
                };
                match ws_message(kind, content) {
                    Some(message) => {
                        self.delayed = Some(Delayed {
                            message,
                            // Clamped to a day when parsed: the deadline cannot overflow.
                            at: Instant::now() + Duration::from_secs(secs),
                        });
                    }
                    None => tracing::debug!("dropping send-delayed: text content is not UTF-8"),
                }
            }
            ControlMessage::FlushDelayed => {
                if let Some(d) = self.delayed.take() {
                    out.push(Action::Send(d.message));
                }
            }
            ControlMessage::Session { .. } => {
                tracing::debug!("ignoring the session control message (not implemented)");
            }
        }
        Ok(())
    }

    /// Replays `full`'s history after `prev` (the subscription is already live). When history
    /// cannot serve it: a WebSocket-over-HTTP origin gets a request with `Grip-Last` at once; a
    /// passthrough client is closed with 4410, so it never silently misses items.
    async fn resume(&mut self, channel: String, full: &str, prev: String, out: &mut Vec<Action>) {
        let edge = self.guard.edge().clone();
        match crate::resume::resume(&edge, &mut self.rx, full, &prev).await {
            crate::resume::Resumed::Recovered | crate::resume::Resumed::Off => {}
            crate::resume::Resumed::Gap => match &self.upstream {
                Some(Upstream::Passthrough(_)) => {
                    out.push(Action::Close(Some((4410, "history unavailable".into()))));
                }
                _ => self.grip_last.push((channel, prev)),
            },
        }
    }

    /// Hands the subscription meta to the WebSocket-over-HTTP requests (`Meta-*` headers).
    fn meta_changed(&mut self) {
        if let Some(Upstream::OverHttp(oh)) = &mut self.upstream {
            oh.set_meta(&self.filters.meta);
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
        let mut state = LoopState::default();
        let early = std::mem::take(&mut self.early);
        if !self.apply(&mut client, early, &mut state).await {
            self.finish(&mut client, &mut state).await;
            return;
        }
        let mut in_flight: Option<InFlight> = None;
        let mut last_request = Instant::now();
        let upstream_bound = {
            let config = &self.guard.edge().config;
            (
                config.ws_upstream_queue_messages,
                config.ws_upstream_queue_bytes,
            )
        };
        loop {
            if state
                .closing
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                break;
            }
            if self.refresh_pending && (self.detached || state.closing.is_some()) {
                // Pushpin only refreshes connected sessions.
                self.refresh_pending = false;
            }
            if let Some(Upstream::OverHttp(oh)) = &self.upstream
                && in_flight.is_none()
                && !self.grip_last.is_empty()
                && !self.detached
            {
                // A resume history could not serve: an event-less request with Grip-Last.
                let last = std::mem::take(&mut self.grip_last);
                in_flight = Some(Box::pin(oh.request_with_last(Vec::new(), last)));
                last_request = Instant::now();
            }
            if let Some(Upstream::OverHttp(oh)) = &self.upstream
                && in_flight.is_none()
                && (!state.outbox.is_empty() || self.refresh_pending)
                && !self.detached
            {
                // Any request satisfies a pending refresh; with nothing queued it is empty.
                self.refresh_pending = false;
                let batch = state.outbox.take_batch(oh.one_event());
                in_flight = Some(Box::pin(oh.request(batch)));
                last_request = Instant::now();
            }
            // A finished close handshake ends the session once nothing is owed to the origin.
            let origin_idle = in_flight.is_none() && (state.outbox.is_empty() || self.detached);
            if state.closing.is_some() && state.client_done && origin_idle {
                break;
            }
            let ka_deadline = self.keep_alive.as_ref().map(|k| k.deadline);
            let kai_deadline = match &self.upstream {
                Some(Upstream::OverHttp(oh))
                    if in_flight.is_none() && !self.detached && state.closing.is_none() =>
                {
                    oh.keep_alive_interval.map(|d| last_request + d)
                }
                _ => None,
            };
            let delayed_at = self.delayed.as_ref().map(|d| d.at);
            // One timer for keep-alives, keep-alive-interval requests, the delayed message
            // and the close deadline.
            let timer = [ka_deadline, kai_deadline, delayed_at, state.closing]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                reason = self.guard.conn.closed(), if state.closing.is_none() => {
                    let (code, text) = match reason {
                        CloseReason::Drain => (1012, "service restart"),
                        CloseReason::Revoked => (4401, "credential revoked"),
                        CloseReason::Expired => (4401, "credential expired"),
                        CloseReason::QuotaExceeded => (4429, "quota exceeded"),
                        // Counted per dropped message by the fan-out.
                        CloseReason::SlowConsumer => (1013, "send queue overflow"),
                    };
                    state.disconnect_origin = true;
                    if reason == CloseReason::SlowConsumer {
                        // The client is not reading: offer the close frame briefly, then drop
                        // the socket rather than wait on it.
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: Utf8Bytes::from(text),
                        };
                        let _ = tokio::time::timeout(
                            SLOW_CLOSE_GRACE,
                            client.send(Message::Close(Some(frame))),
                        )
                        .await;
                        state.client_done = true;
                        state.abandoned = true;
                        break;
                    }
                    self.close_client(&mut client, Some((code, text.to_owned())), &mut state).await;
                }
                delivery = self.rx.recv(), if state.closing.is_none() => {
                    let Some(first) = delivery else { break };
                    let mut batch = vec![first];
                    while batch.len() < MAX_WRITE_BATCH {
                        match self.rx.try_recv() {
                            Some(d) => batch.push(d),
                            None => break,
                        }
                    }
                    if !self.deliver(&mut client, batch, &mut state).await {
                        break;
                    }
                }
                // Backpressure: while the queue toward the origin is full the client is not
                // read (TCP pushes back on it) instead of its messages piling up here.
                msg = client.next(), if !state.client_done && (self.detached || !state.outbox.is_full(upstream_bound)) => {
                    match msg {
                        Some(Ok(m)) => self.on_client_message(m, &mut state).await,
                        Some(Err(err)) => {
                            self.on_client_error(&mut client, err, &mut state).await;
                        }
                        None => {
                            state.client_done = true;
                            if state.closing.is_none() {
                                state.disconnect_origin = true;
                                break;
                            }
                        }
                    }
                    if state.client_done && state.closing.is_none() {
                        break;
                    }
                }
                reply = poll_opt(&mut in_flight) => {
                    in_flight = None;
                    match reply {
                        Ok(reply) => {
                            if let Some(Upstream::OverHttp(oh)) = &mut self.upstream {
                                oh.apply_keep_alive(&reply.headers);
                                super::over_http::apply_set_meta(&reply.headers, &mut self.filters.meta);
                            }
                            self.meta_changed();
                            match self.on_origin_events(reply.events).await {
                                Ok(actions) => {
                                    if !self.apply(&mut client, actions, &mut state).await && state.closing.is_none() {
                                        break;
                                    }
                                }
                                Err(err) => {
                                    tracing::warn!(error = %err, "subscribe failed");
                                    self.close_client(&mut client, Some(subscribe_failure_close(&err)), &mut state).await;
                                }
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "websocket-over-http request failed; closing the client");
                            if state.closing.is_some() {
                                break;
                            }
                            self.origin_ended();
                            self.close_client(&mut client, Some((1011, "origin error".into())), &mut state).await;
                        }
                    }
                }
                msg = next_origin_message(&mut self.upstream) => {
                    if !self.on_passthrough_message(&mut client, msg, &mut state).await {
                        break;
                    }
                }
                _ = sleep_until_opt(timer) => {
                    let now = Instant::now();
                    if state.closing.is_some_and(|d| now >= d) {
                        break;
                    }
                    if ka_deadline.is_some_and(|d| now >= d)
                        && let Some(ka) = &mut self.keep_alive
                    {
                        ka.deadline = now + ka.period;
                        let msg = ka.message.clone();
                        if !self.write(&mut client, [msg], &mut state).await {
                            break;
                        }
                    }
                    if delayed_at.is_some_and(|d| now >= d)
                        && let Some(d) = self.delayed.take()
                        && !self.write(&mut client, [d.message], &mut state).await
                    {
                        break;
                    }
                    if kai_deadline.is_some_and(|d| now >= d)
                        && let Some(Upstream::OverHttp(oh)) = &self.upstream
                    {
                        in_flight = Some(Box::pin(oh.request(Vec::new())));
                        last_request = now;
                    }
                }
            }
        }
        self.finish(&mut client, &mut state).await;
    }

    /// Cleanup after the loop: tell the origin when the client vanished.
    async fn finish(&mut self, client: &mut Ws, state: &mut LoopState) {
        if !state.abandoned {
            // Delivers a queued close reply; bounded, as the client may have stopped reading.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        }
        match self.upstream.take() {
            Some(Upstream::OverHttp(oh)) if state.disconnect_origin && !self.detached => {
                // Best effort; the session is over whatever the origin answers. Spawned as is
                // (not wrapped in another async block, which would hold the future twice).
                drop(tokio::spawn(oh.request(vec![WsEvent::Disconnect])));
            }
            Some(Upstream::Passthrough(mut ws)) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), SinkExt::close(&mut *ws)).await;
            }
            _ => {}
        }
    }

    async fn on_client_message(&mut self, msg: Message, state: &mut LoopState) {
        if self.detached {
            return;
        }
        match &mut self.upstream {
            Some(Upstream::OverHttp(_)) => {
                let ev = match msg {
                    Message::Text(t) => WsEvent::Text(Bytes::from(t)),
                    Message::Binary(b) => WsEvent::Binary(b),
                    Message::Ping(p) => WsEvent::Ping(p),
                    Message::Pong(p) => WsEvent::Pong(p),
                    Message::Close(frame) => {
                        state.client_done = true;
                        state.start_closing();
                        match frame {
                            Some(f) => WsEvent::close(u16::from(f.code), f.reason.as_str()),
                            None => WsEvent::Close(Bytes::new()),
                        }
                    }
                    Message::Frame(_) => return,
                };
                state.outbox.push(ev);
            }
            Some(Upstream::Passthrough(ws)) => {
                let closing = matches!(msg, Message::Close(_));
                if ws.send(msg).await.is_err() {
                    state.disconnect_origin = false;
                }
                if closing {
                    state.client_done = true;
                    state.start_closing();
                }
            }
            None => {}
        }
    }

    async fn on_client_error(
        &mut self,
        client: &mut Ws,
        err: tungstenite::Error,
        state: &mut LoopState,
    ) {
        state.client_done = true;
        state.disconnect_origin = true;
        let close = match &err {
            tungstenite::Error::Capacity(_) => Some((1009, "message too big")),
            tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
                Some((1002, "protocol error"))
            }
            _ => None,
        };
        tracing::debug!(error = %err, "client websocket error");
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from(reason),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                client.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    /// Origin WebSocket message (passthrough). Returns false to end the session.
    async fn on_passthrough_message(
        &mut self,
        client: &mut Ws,
        msg: Option<Result<Message, tungstenite::Error>>,
        state: &mut LoopState,
    ) -> bool {
        let ev = match msg {
            Some(Ok(Message::Text(t))) => WsEvent::Text(Bytes::from(t)),
            Some(Ok(Message::Binary(b))) => WsEvent::Binary(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return true,
            Some(Ok(Message::Close(frame))) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                self.upstream = None;
                self.close_client(client, close, state).await;
                return true;
            }
            Some(Err(_)) | None => {
                self.upstream = None;
                if state.closing.is_some() {
                    return false;
                }
                self.origin_ended();
                self.close_client(client, Some((1011, "origin disconnected".into())), state)
                    .await;
                return true;
            }
        };
        match self.on_origin_events(vec![ev]).await {
            Ok(actions) => self.apply(client, actions, state).await || state.closing.is_some(),
            Err(err) => {
                tracing::warn!(error = %err, "subscribe failed");
                self.close_client(client, Some(subscribe_failure_close(&err)), state)
                    .await;
                true
            }
        }
    }

    /// Applies actions to the client. Returns false when the client is gone or dropped.
    async fn apply(
        &mut self,
        client: &mut Ws,
        actions: Vec<Action>,
        state: &mut LoopState,
    ) -> bool {
        let mut pending: Vec<Message> = Vec::new();
        for action in actions {
            match action {
                Action::Send(m) => pending.push(m),
                Action::Close(close) => {
                    // The origin's answer to the client's own close is not the origin's doing.
                    if state.closing.is_none() {
                        self.origin_ended();
                    }
                    if !self.write(client, pending.drain(..), state).await {
                        return false;
                    }
                    self.close_client(client, close, state).await;
                    return true;
                }
                Action::Drop => {
                    if state.closing.is_none() {
                        self.origin_ended();
                    }
                    let _ = self.write(client, pending.drain(..), state).await;
                    state.disconnect_origin = false;
                    return false;
                }
            }
        }
        self.write(client, pending, state).await
    }

    /// Delivers published messages. Returns false when the client is gone.
    async fn deliver(
        &mut self,
        client: &mut Ws,
        batch: Vec<Arc<Delivery>>,
        state: &mut LoopState,
    ) -> bool {
        let mut msgs = Vec::with_capacity(batch.len());
        let metrics = self.guard.edge().metrics.clone();
        for d in &batch {
            let Some(out) = &d.ws else { continue };
            let content_filters = d.content_filters.ws_message.as_deref();
            // Close and refresh meet the delivery filters too (Pushpin filters every action).
            let verdict = match out {
                WsOut::Message(m) => self.filters.judge(d, content_filters, &message_bytes(m)),
                _ => self.filters.judge(d, None, &Bytes::new()),
            };
            if verdict == Verdict::Drop {
                continue;
            }
            match out {
                WsOut::Message(m) => {
                    let m = match verdict {
                        Verdict::Own(content) => match with_payload(m, content) {
                            Some(m) => m,
                            None => continue,
                        },
                        _ => m.clone(),
                    };
                    msgs.push(m);
                    metrics.record_latency(d.accepted_unix_nanos);
                }
                WsOut::Refresh => self.refresh_pending = true,
                WsOut::Close(close) => {
                    let wire = wire_size(&msgs);
                    if !self.write(client, msgs.drain(..), state).await {
                        return false;
                    }
                    self.count(wire);
                    self.origin_ended();
                    // The origin hears a bare CLOSE, as from Pushpin.
                    if let Some(Upstream::OverHttp(_)) = &self.upstream {
                        state.outbox.push(WsEvent::Close(Bytes::new()));
                    }
                    self.close_client(client, close.clone(), state).await;
                    return true;
                }
            }
        }
        let wire = wire_size(&msgs);
        let written = self.write(client, msgs, state).await;
        if written {
            self.count(wire);
        }
        written
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
    async fn write(
        &mut self,
        client: &mut Ws,
        msgs: impl IntoIterator<Item = Message>,
        state: &mut LoopState,
    ) -> bool {
        let mut n = 0u64;
        for m in msgs {
            if client.feed(m).await.is_err() {
                state.client_done = true;
                state.disconnect_origin = true;
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
            state.client_done = true;
            state.disconnect_origin = true;
            return false;
        }
        self.guard
            .edge()
            .metrics
            .transport(Transport::Ws)
            .sent
            .increment(n);
        if let Some(ka) = &mut self.keep_alive
            && ka.mode == KeepAliveMode::Idle
        {
            ka.deadline = Instant::now() + ka.period;
        }
        true
    }

    async fn close_client(
        &mut self,
        client: &mut Ws,
        close: Option<(u16, String)>,
        state: &mut LoopState,
    ) {
        let frame = close.map(|(code, reason)| CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        });
        let _ =
            tokio::time::timeout(Duration::from_secs(1), client.send(Message::Close(frame))).await;
        state.start_closing();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(cid) = &self.cid {
            self.guard.edge().ws_by_cid.remove(cid);
        }
    }
}

/// Per-run loop state.
#[derive(Default)]
struct LoopState {
    /// Events waiting for the next WebSocket-over-HTTP request.
    outbox: Outbox,
    /// Set once a close handshake started: the session ends by this deadline.
    closing: Option<Instant>,
    /// The client's side is finished (closed or errored).
    client_done: bool,
    /// Tell the origin with `DISCONNECT` at the end.
    disconnect_origin: bool,
    /// The client stopped reading: its socket is dropped without waiting on it.
    abandoned: bool,
}

impl LoopState {
    fn start_closing(&mut self) {
        if self.closing.is_none() {
            self.closing = Some(Instant::now() + CLOSE_GRACE);
        }
    }
}

/// Messages and wire bytes (frame headers included) of published messages.
fn wire_size(msgs: &[Message]) -> (u64, u64) {
    let bytes = msgs
        .iter()
        .map(|m| crate::usage::ws_frame_len(m.len()))
        .sum();
    (msgs.len() as u64, bytes)
}

/// Client events waiting for the next WebSocket-over-HTTP request, with their encoded size,
/// so the session can bound them (`--ws-upstream-queue-messages`/`-bytes`).
#[derive(Default)]
struct Outbox {
    events: std::collections::VecDeque<WsEvent>,
    bytes: usize,
}

impl Outbox {
    fn push(&mut self, ev: WsEvent) {
        self.bytes = self.bytes.saturating_add(ev.encoded_len());
        self.events.push_back(ev);
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// At or over either bound `(messages, bytes)`: stop reading the client.
    fn is_full(&self, (messages, bytes): (usize, usize)) -> bool {
        self.events.len() >= messages || self.bytes >= bytes
    }

    /// The next request's events: one (origin asked for one event per request), or as many
    /// as fit [`MAX_BATCH_BYTES`] (at least one).
    fn take_batch(&mut self, one_event: bool) -> Vec<WsEvent> {
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

/// The close frame for a subscription the edge could not make: the origin asked for a channel
/// name over `--max-channel-length` (its fault, said plainly), or the bus failed.
fn subscribe_failure_close(err: &SubscribeError) -> (u16, String) {
    if err.invalid_channel {
        (1011, "channel name too long".to_owned())
    } else {
        (1011, "internal error".to_owned())
    }
}

/// A published message's payload (a refcount bump).
fn message_bytes(m: &Message) -> Bytes {
    match m {
        Message::Text(t) => Bytes::from(t.clone()),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.clone(),
        Message::Close(_) | Message::Frame(_) => Bytes::new(),
    }
}

/// `m`'s kind with another payload (a subscriber's filtered content). Text that is no longer
/// UTF-8 cannot be sent: `None`.
fn with_payload(m: &Message, content: Bytes) -> Option<Message> {
    Some(match m {
        Message::Text(_) => Message::Text(Utf8Bytes::try_from(content).ok()?),
        Message::Binary(_) => Message::Binary(content),
        Message::Ping(_) => Message::Ping(content),
        Message::Pong(_) => Message::Pong(content),
        Message::Close(_) | Message::Frame(_) => return None,
    })
}

fn ws_message(kind: WsMessageType, data: Bytes) -> Option<Message> {
    Some(match kind {
        WsMessageType::Text => Message::Text(Utf8Bytes::try_from(data).ok()?),
        WsMessageType::Binary => Message::Binary(data),
        WsMessageType::Ping => Message::Ping(data),
        WsMessageType::Pong => Message::Pong(data),
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

#[cfg(test)]
mod tests {
    use super::*;

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
