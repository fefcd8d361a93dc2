//! The WebSocket session's state machine, without I/O.
//!
//! It is fed plain values: events from the origin, client messages, published deliveries,
//! the connection's close signal, the clock (`now`) and the outcome of what the driver did
//! (a write failed, a request was answered). It answers with what to do (`session/effects.rs`):
//! actions on the client, commands on the subscriber registry, requests toward a
//! WebSocket-over-HTTP origin, and when to wake up or end. `origin.rs` holds the origin's
//! side: GRIP framing and control messages. The driver (`session/mod.rs`) owns
//! the sockets, the registry handle and the in-flight request, and does exactly that.

mod origin;

use super::effects::{ConnClose, Delivered, Due, Finish, OriginRequest, Poll};
use super::frames::{message_bytes, with_payload};
use super::outbox::Outbox;
use crate::conn::CloseReason;
use crate::delivery::{Delivery, WsOut};
use crate::filtering::{ConnFilters, Verdict};
use crate::ws::GripMode;
use bytes::Bytes;
use grip::instruct::KeepAliveMode;
use grip::wsevents::WsEvent;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

/// Time allowed to finish a close handshake.
pub(in crate::ws::session) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How the origin is reached, as far as the session's decisions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ws::session) enum Origin {
    /// WebSocket-over-HTTP; `one_event`: at most one event per request.
    OverHttp { one_event: bool },
    /// A WebSocket to the origin.
    Passthrough,
    /// No origin (the passthrough WebSocket closed).
    Gone,
}

/// The edge's configured bounds for one session.
#[derive(Debug, Clone, Copy)]
pub(in crate::ws::session) struct Limits {
    /// `--max-channels-per-connection`.
    pub max_channels: usize,
    /// `--ws-upstream-queue-messages` and `--ws-upstream-queue-bytes`.
    pub upstream_queue: (usize, usize),
}

/// A periodic message to the client (`keep-alive` control message).
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

/// One session's state.
pub(in crate::ws::session) struct Machine {
    grip: Option<GripMode>,
    origin: Origin,
    limits: Limits,
    /// The route's channel prefix.
    prefix: String,
    /// The target's implicit channels (prefixed); the origin cannot unsubscribe them.
    implicit: Vec<String>,
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
    /// A WebSocket-over-HTTP request is in flight.
    in_flight: bool,
    /// When the last request was sent (for `Keep-Alive-Interval`).
    last_request: Instant,
}

impl Machine {
    /// A session's state before the origin's first events.
    pub(in crate::ws::session) fn new(
        grip: Option<GripMode>,
        origin: Origin,
        limits: Limits,
        prefix: String,
        implicit: Vec<String>,
        meta: BTreeMap<String, String>,
    ) -> Machine {
        let mut filters = ConnFilters::default();
        filters.meta = meta;
        Machine {
            grip,
            origin,
            limits,
            prefix,
            implicit,
            keep_alive: None,
            detached: false,
            grip_last: Vec::new(),
            filters,
            delayed: None,
            refresh_pending: false,
            outbox: Outbox::default(),
            closing: None,
            client_done: false,
            disconnect_origin: false,
            abandoned: false,
            in_flight: false,
            last_request: Instant::now(),
        }
    }

    /// The implicit channels, to subscribe before anything else.
    pub(in crate::ws::session) fn implicit(&self) -> &[String] {
        &self.implicit
    }

    /// Records an implicit subscription (no filters) before the driver makes it.
    pub(in crate::ws::session) fn subscribe_implicit(&mut self, channel: &str) {
        self.filters.subscribe(channel, &[], None);
    }

    /// The subscription meta, sent to a WebSocket-over-HTTP origin as `Meta-*`.
    pub(in crate::ws::session) fn meta(&self) -> &BTreeMap<String, String> {
        &self.filters.meta
    }

    /// The session starts running now (the `Keep-Alive-Interval` clock starts).
    pub(in crate::ws::session) fn start(&mut self, now: Instant) {
        self.last_request = now;
    }

    /// A close handshake is under way.
    pub(in crate::ws::session) fn is_closing(&self) -> bool {
        self.closing.is_some()
    }
    /// and says which WebSocket-over-HTTP request to send, if any.
    pub(in crate::ws::session) fn poll(&mut self, now: Instant) -> Poll {
        if self.closing.is_some_and(|deadline| now >= deadline) {
            return Poll::End;
        }
        if self.refresh_pending && (self.detached || self.closing.is_some()) {
            // Pushpin only refreshes connected sessions.
            self.refresh_pending = false;
        }
        let request = self.next_request(now);
        // A finished close handshake ends the session once nothing is owed to the origin.
        let origin_idle = !self.in_flight && (self.outbox.is_empty() || self.detached);
        if self.closing.is_some() && self.client_done && origin_idle {
            return Poll::End;
        }
        Poll::Run(request)
    }

    fn next_request(&mut self, now: Instant) -> Option<OriginRequest> {
        let Origin::OverHttp { one_event } = self.origin else {
            return None;
        };
        if self.in_flight || self.detached {
            return None;
        }
        let request = if !self.grip_last.is_empty() {
            // A resume history could not serve: an event-less request with Grip-Last.
            OriginRequest {
                events: Vec::new(),
                grip_last: std::mem::take(&mut self.grip_last),
            }
        } else if !self.outbox.is_empty() || self.refresh_pending {
            // Any request satisfies a pending refresh; with nothing queued it is empty.
            self.refresh_pending = false;
            OriginRequest {
                events: self.outbox.take_batch(one_event),
                grip_last: Vec::new(),
            }
        } else {
            return None;
        };
        self.in_flight = true;
        self.last_request = now;
        Some(request)
    }

    /// The in-flight request was answered (or failed).
    pub(in crate::ws::session) fn request_done(&mut self) {
        self.in_flight = false;
    }

    /// When the next timer is due: keep-alive, `Keep-Alive-Interval` request (`interval`, as
    /// the origin asked), delayed message, or close deadline.
    pub(in crate::ws::session) fn next_timer(&self, interval: Option<Duration>) -> Option<Instant> {
        [
            self.keep_alive.as_ref().map(|k| k.deadline),
            self.interval_deadline(interval),
            self.delayed.as_ref().map(|d| d.at),
            self.closing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn interval_deadline(&self, interval: Option<Duration>) -> Option<Instant> {
        let idle = matches!(self.origin, Origin::OverHttp { .. })
            && !self.in_flight
            && !self.detached
            && self.closing.is_none();
        idle.then(|| interval.map(|d| self.last_request + d))
            .flatten()
    }

    /// The timer fired: what is due at `now`.
    pub(in crate::ws::session) fn on_timer(
        &mut self,
        now: Instant,
        interval: Option<Duration>,
    ) -> Due {
        if self.closing.is_some_and(|d| now >= d) {
            return Due {
                end: true,
                ..Due::default()
            };
        }
        let mut due = Due::default();
        if let Some(ka) = &mut self.keep_alive
            && now >= ka.deadline
        {
            ka.deadline = now + ka.period;
            due.keep_alive = Some(ka.message.clone());
        }
        if self.delayed.as_ref().is_some_and(|d| now >= d.at) {
            due.delayed = self.delayed.take().map(|d| d.message);
        }
        if self.interval_deadline(interval).is_some_and(|d| now >= d) {
            self.in_flight = true;
            self.last_request = now;
            due.request = Some(OriginRequest {
                events: Vec::new(),
                grip_last: Vec::new(),
            });
        }
        due
    }

    /// Messages were written to the client: an idle keep-alive waits a full period again.
    pub(in crate::ws::session) fn on_written(&mut self, now: Instant) {
        if let Some(ka) = &mut self.keep_alive
            && ka.mode == KeepAliveMode::Idle
        {
            ka.deadline = now + ka.period;
        }
    }

    /// Writing to the client failed: it is gone, and the origin is told.
    pub(in crate::ws::session) fn client_failed(&mut self) {
        self.client_done = true;
        self.disconnect_origin = true;
    }

    /// A close frame went to the client: the handshake has [`CLOSE_GRACE`] to finish.
    pub(in crate::ws::session) fn start_closing(&mut self, now: Instant) {
        if self.closing.is_none() {
            self.closing = Some(now + CLOSE_GRACE);
        }
    }

    /// The origin dropped the client (`DISCONNECT`): nothing more to tell it.
    pub(in crate::ws::session) fn origin_dropped(&mut self) {
        self.disconnect_origin = false;
    }

    /// Whether to read the client now. Backpressure: while the queue toward the origin is
    /// full the client is not read (TCP pushes back on it) instead of its messages piling up.
    pub(in crate::ws::session) fn reads_client(&self) -> bool {
        !self.client_done && (self.detached || !self.outbox.is_full(self.limits.upstream_queue))
    }

    /// The client's side ended before a close handshake: the session ends.
    pub(in crate::ws::session) fn client_left(&self) -> bool {
        self.client_done && self.closing.is_none()
    }

    /// A client message. Returns it when it is to be forwarded on the passthrough WebSocket
    /// (then [`Machine::forwarded`] follows); WebSocket-over-HTTP events are queued here.
    pub(in crate::ws::session) fn on_client_message(
        &mut self,
        msg: Message,
        now: Instant,
    ) -> Option<Message> {
        if self.detached {
            return None;
        }
        match self.origin {
            Origin::OverHttp { .. } => {
                let ev = match msg {
                    Message::Text(t) => WsEvent::Text(Bytes::from(t)),
                    Message::Binary(b) => WsEvent::Binary(b),
                    Message::Ping(p) => WsEvent::Ping(p),
                    Message::Pong(p) => WsEvent::Pong(p),
                    Message::Close(frame) => {
                        self.client_done = true;
                        self.start_closing(now);
                        match frame {
                            Some(f) => WsEvent::close(u16::from(f.code), f.reason.as_str()),
                            None => WsEvent::Close(Bytes::new()),
                        }
                    }
                    Message::Frame(_) => return None,
                };
                self.outbox.push(ev);
                None
            }
            Origin::Passthrough => Some(msg),
            Origin::Gone => None,
        }
    }

    /// A client message went to the passthrough origin (`sent`: without error).
    pub(in crate::ws::session) fn forwarded(&mut self, was_close: bool, sent: bool, now: Instant) {
        if !sent {
            self.disconnect_origin = false;
        }
        if was_close {
            self.client_done = true;
            self.start_closing(now);
        }
    }

    /// The client's socket errored: the close frame to offer it, if any.
    pub(in crate::ws::session) fn on_client_error(
        &mut self,
        err: &tungstenite::Error,
    ) -> Option<(u16, &'static str)> {
        self.client_failed();
        match err {
            tungstenite::Error::Capacity(_) => Some((1009, "message too big")),
            tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
                Some((1002, "protocol error"))
            }
            _ => None,
        }
    }

    /// The client's stream ended; without a close handshake the origin is told.
    pub(in crate::ws::session) fn on_client_end(&mut self) {
        self.client_done = true;
        if self.closing.is_none() {
            self.disconnect_origin = true;
        }
    }

    /// The connection was closed from the edge's side (drain, revocation, quota, slow
    /// consumer).
    pub(in crate::ws::session) fn on_conn_closed(&mut self, reason: CloseReason) -> ConnClose {
        let (code, text) = match reason {
            CloseReason::Drain => (1012, "service restart"),
            CloseReason::Revoked => (4401, "credential revoked"),
            CloseReason::Expired => (4401, "credential expired"),
            CloseReason::QuotaExceeded => (4429, "quota exceeded"),
            // Counted per dropped message by the fan-out.
            CloseReason::SlowConsumer => (1013, "send queue overflow"),
        };
        self.disconnect_origin = true;
        let abandon = reason == CloseReason::SlowConsumer;
        if abandon {
            // The client is not reading: the socket is dropped rather than waited on.
            self.client_done = true;
            self.abandoned = true;
        }
        ConnClose {
            code,
            reason: text,
            abandon,
        }
    }

    /// Published deliveries: runs each subscriber's filters and picks the messages to write;
    /// `on_message` sees each delivery that becomes a message (for the latency histogram).
    pub(in crate::ws::session) fn on_deliveries(
        &mut self,
        batch: &[Arc<Delivery>],
        mut on_message: impl FnMut(&Delivery),
    ) -> Delivered {
        let mut messages = Vec::with_capacity(batch.len());
        for d in batch {
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
                    messages.push(m);
                    on_message(d);
                }
                WsOut::Refresh => self.refresh_pending = true,
                WsOut::Close(close) => {
                    // The origin hears a bare CLOSE, as from Pushpin.
                    if let Origin::OverHttp { .. } = self.origin {
                        self.outbox.push(WsEvent::Close(Bytes::new()));
                    }
                    return Delivered {
                        messages,
                        close: Some(close.clone()),
                    };
                }
            }
        }
        Delivered {
            messages,
            close: None,
        }
    }

    /// A message (or the end) of the passthrough origin's WebSocket.
    /// What to do once the session ends.
    pub(in crate::ws::session) fn finish(&self) -> Finish {
        Finish {
            flush_client: !self.abandoned,
            disconnect_origin: self.disconnect_origin && !self.detached,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ws::session::effects::{Action, Command, FromOrigin};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    pub(crate) const OVER_HTTP: Origin = Origin::OverHttp { one_event: false };

    /// GRIP mode with the default prefix, channel prefix `p:`, one implicit channel, at most
    /// two channels, and an upstream queue of two messages or 1000 bytes.
    pub(crate) fn machine(origin: Origin) -> Machine {
        Machine::new(
            Some(GripMode {
                prefix: Bytes::from_static(b"m:"),
            }),
            origin,
            Limits {
                max_channels: 2,
                upstream_queue: (2, 1000),
            },
            "p:".into(),
            vec!["p:implicit".into()],
            BTreeMap::new(),
        )
    }

    /// Feeds the origin's `c:` control message; returns the actions and the command.
    pub(crate) fn control(
        m: &mut Machine,
        json: &str,
        channels: usize,
        now: Instant,
    ) -> (Vec<Action>, Option<Command>) {
        let mut out = Vec::new();
        let ev = WsEvent::Text(Bytes::from(format!("c:{json}")));
        let command = m.origin_event(ev, channels, now, &mut out);
        (out, command)
    }

    fn close_msg(code: u16, reason: &'static str) -> Message {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    }

    fn delivery(ws: WsOut) -> Arc<Delivery> {
        Arc::new(Delivery {
            stream: None,
            response: None,
            ws: Some(ws),
            accepted_unix_nanos: 7,
            channel: Arc::from("p:c"),
            prev_id: None,
            seq: 0,
            id: None,
            meta: BTreeMap::new(),
            content_filters: Default::default(),
        })
    }

    fn requested(poll: Poll) -> OriginRequest {
        match poll {
            Poll::Run(Some(request)) => request,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn client_messages_go_one_request_at_a_time() {
        let now = Instant::now();
        let mut m = machine(Origin::OverHttp { one_event: true });
        assert_eq!(m.poll(now), Poll::Run(None), "nothing to send");
        assert_eq!(m.on_client_message(Message::text("a"), now), None);
        assert_eq!(m.on_client_message(Message::text("b"), now), None);
        let first = requested(m.poll(now));
        assert_eq!(first.events, [WsEvent::Text(Bytes::from_static(b"a"))]);
        assert!(first.grip_last.is_empty());
        assert_eq!(m.poll(now), Poll::Run(None), "one request in flight");
        m.request_done();
        let second = requested(m.poll(now));
        assert_eq!(second.events, [WsEvent::Text(Bytes::from_static(b"b"))]);
    }

    #[test]
    fn a_full_upstream_queue_stops_reading_the_client() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        assert!(m.reads_client());
        m.on_client_message(Message::text("a"), now);
        assert!(m.reads_client(), "one of two messages");
        m.on_client_message(Message::text("b"), now);
        assert!(!m.reads_client(), "message bound reached");
        assert_eq!(requested(m.poll(now)).events.len(), 2);
        assert!(m.reads_client(), "the request took the queue");
        // Over the byte bound with a single message.
        let mut m = machine(OVER_HTTP);
        m.on_client_message(Message::binary(vec![0u8; 1000]), now);
        assert!(!m.reads_client(), "byte bound reached");
        // A detached session drops client messages, so it keeps reading.
        control(&mut m, r#"{"type":"detach"}"#, 0, now);
        assert!(m.reads_client());
        m.on_client_message(Message::text("ignored"), now);
        assert_eq!(m.poll(now), Poll::Run(None), "detached: no requests");
    }

    #[test]
    fn the_clients_close_goes_to_the_origin_before_the_session_ends() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        assert_eq!(m.on_client_message(close_msg(1000, "bye"), now), None);
        assert!(m.is_closing());
        assert!(!m.reads_client(), "nothing is read after the close");
        let request = requested(m.poll(now));
        assert_eq!(request.events, [WsEvent::close(1000, "bye")]);
        assert_eq!(m.poll(now), Poll::Run(None), "the close is in flight");
        m.request_done();
        assert_eq!(m.poll(now), Poll::End);
        assert_eq!(
            m.finish(),
            Finish {
                flush_client: true,
                disconnect_origin: false
            },
            "a clean close needs no DISCONNECT"
        );
    }

    #[test]
    fn a_close_handshake_has_a_deadline() {
        let t0 = Instant::now();
        let mut m = machine(Origin::Passthrough);
        m.start_closing(t0);
        m.start_closing(t0 + Duration::from_secs(3));
        let deadline = t0 + CLOSE_GRACE;
        assert_eq!(m.next_timer(None), Some(deadline), "the first close counts");
        assert_eq!(m.poll(deadline - Duration::from_millis(1)), Poll::Run(None));
        assert!(m.on_timer(deadline, None).end);
        assert_eq!(m.poll(deadline), Poll::End);
    }

    #[test]
    fn edge_side_closes_carry_their_reason() {
        for (reason, code, text) in [
            (CloseReason::Drain, 1012, "service restart"),
            (CloseReason::Revoked, 4401, "credential revoked"),
            (CloseReason::Expired, 4401, "credential expired"),
            (CloseReason::QuotaExceeded, 4429, "quota exceeded"),
        ] {
            let mut m = machine(OVER_HTTP);
            let close = m.on_conn_closed(reason);
            assert_eq!(
                (close.code, close.reason, close.abandon),
                (code, text, false)
            );
            assert_eq!(
                m.finish(),
                Finish {
                    flush_client: true,
                    disconnect_origin: true
                }
            );
        }
        let mut m = machine(OVER_HTTP);
        let close = m.on_conn_closed(CloseReason::SlowConsumer);
        assert_eq!(
            close,
            ConnClose {
                code: 1013,
                reason: "send queue overflow",
                abandon: true
            }
        );
        assert!(!m.reads_client());
        assert_eq!(
            m.finish(),
            Finish {
                flush_client: false,
                disconnect_origin: true
            },
            "a slow consumer's socket is not waited on"
        );
    }

    #[test]
    fn keep_alives_fire_and_idle_ones_wait_after_writes() {
        let t0 = Instant::now();
        let mut m = machine(Origin::Passthrough);
        control(
            &mut m,
            r#"{"type":"keep-alive","content":"ka","timeout":10}"#,
            0,
            t0,
        );
        let period = Duration::from_secs(10);
        assert_eq!(m.next_timer(None), Some(t0 + period));
        assert_eq!(m.on_timer(t0 + period / 2, None), Due::default(), "not due");
        let due = m.on_timer(t0 + period, None);
        assert_eq!(due.keep_alive, Some(Message::text("ka")));
        assert_eq!(m.next_timer(None), Some(t0 + 2 * period));
        m.on_written(t0 + period + Duration::from_secs(5));
        assert_eq!(
            m.next_timer(None),
            Some(t0 + 2 * period + Duration::from_secs(5)),
            "idle mode: a write pushes the keep-alive back"
        );
        control(
            &mut m,
            r#"{"type":"keep-alive","content":"ka","timeout":10,"mode":"interval"}"#,
            0,
            t0,
        );
        m.on_written(t0 + Duration::from_secs(5));
        assert_eq!(m.next_timer(None), Some(t0 + period), "interval mode");
        control(&mut m, r#"{"type":"keep-alive"}"#, 0, t0);
        assert_eq!(m.next_timer(None), None, "no content disables keep-alives");
    }

    #[test]
    fn keep_alive_interval_requests_only_when_idle() {
        let t0 = Instant::now();
        let interval = Some(Duration::from_secs(20));
        let mut m = machine(OVER_HTTP);
        m.start(t0);
        assert_eq!(m.next_timer(interval), Some(t0 + Duration::from_secs(20)));
        let due = m.on_timer(t0 + Duration::from_secs(20), interval);
        assert_eq!(
            due.request,
            Some(OriginRequest {
                events: Vec::new(),
                grip_last: Vec::new()
            })
        );
        assert_eq!(m.next_timer(interval), None, "in flight");
        m.request_done();
        assert_eq!(m.next_timer(interval), Some(t0 + Duration::from_secs(40)));
        let passthrough = machine(Origin::Passthrough);
        assert_eq!(passthrough.next_timer(interval), None);
    }

    #[test]
    fn deliveries_become_messages_until_a_close() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        let batch = [
            delivery(WsOut::Message(Message::text("one"))),
            delivery(WsOut::Close(Some((4000, "done".into())))),
            delivery(WsOut::Message(Message::text("after"))),
        ];
        let mut seen = 0;
        let delivered = m.on_deliveries(&batch, |d| seen += d.accepted_unix_nanos);
        assert_eq!(
            delivered,
            Delivered {
                messages: vec![Message::text("one")],
                close: Some(Some((4000, "done".into()))),
            }
        );
        assert_eq!(seen, 7, "latency recorded for the one message");
        assert_eq!(
            requested(m.poll(now)).events,
            [WsEvent::Close(Bytes::new())],
            "the origin hears a bare CLOSE"
        );
        let mut passthrough = machine(Origin::Passthrough);
        passthrough.on_deliveries(&batch[1..2], |_| {});
        assert_eq!(passthrough.poll(now), Poll::Run(None));
    }

    #[test]
    fn a_refresh_asks_the_origin_unless_detached() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        let delivered = m.on_deliveries(&[delivery(WsOut::Refresh)], |_| {});
        assert!(delivered.messages.is_empty() && delivered.close.is_none());
        assert!(requested(m.poll(now)).events.is_empty());
        m.request_done();
        assert_eq!(m.poll(now), Poll::Run(None), "one refresh, one request");
        control(&mut m, r#"{"type":"detach"}"#, 0, now);
        m.on_deliveries(&[delivery(WsOut::Refresh)], |_| {});
        assert_eq!(m.poll(now), Poll::Run(None));
    }

    #[test]
    fn subscription_filters_and_meta_judge_deliveries() {
        let now = Instant::now();
        let mut m = machine(Origin::Passthrough);
        control(
            &mut m,
            r#"{"type":"set-meta","name":"user","value":"alice"}"#,
            0,
            now,
        );
        control(
            &mut m,
            r#"{"type":"subscribe","channel":"c","filters":["skip-self"]}"#,
            0,
            now,
        );
        let from = |sender: &str| {
            let mut d = Delivery {
                meta: BTreeMap::from([("sender".to_owned(), sender.to_owned())]),
                ..Arc::into_inner(delivery(WsOut::Message(Message::text("x")))).expect("one")
            };
            d.channel = Arc::from("p:c");
            Arc::new(d)
        };
        let delivered = m.on_deliveries(&[from("alice"), from("bob")], |_| {});
        assert_eq!(
            delivered.messages,
            [Message::text("x")],
            "alice's own is skipped"
        );
    }

    #[test]
    fn client_errors_close_with_the_matching_code() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let too_big = tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        });
        let protocol = tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        for (err, close) in [
            (too_big, Some((1009, "message too big"))),
            (protocol, Some((1002, "protocol error"))),
            (tungstenite::Error::ConnectionClosed, None),
        ] {
            let mut m = machine(OVER_HTTP);
            assert_eq!(m.on_client_error(&err), close);
            assert!(m.client_left());
            assert!(m.finish().disconnect_origin);
        }
    }

    #[test]
    fn a_vanished_client_is_reported_unless_it_closed_first() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        m.on_client_end();
        assert!(m.client_left());
        assert!(m.finish().disconnect_origin);
        let mut m = machine(OVER_HTTP);
        m.start_closing(now);
        m.on_client_end();
        assert!(!m.client_left(), "the close handshake goes on");
        assert!(!m.finish().disconnect_origin);
        // A detached origin is never told.
        let mut m = machine(OVER_HTTP);
        control(&mut m, r#"{"type":"detach"}"#, 0, now);
        m.on_client_end();
        assert!(!m.finish().disconnect_origin);
    }

    #[test]
    fn passthrough_frames_and_the_origins_end() {
        let now = Instant::now();
        let mut m = machine(Origin::Passthrough);
        assert_eq!(
            m.on_client_message(Message::text("up"), now),
            Some(Message::text("up")),
            "forwarded as is"
        );
        assert_eq!(
            m.on_passthrough(Some(Ok(Message::text("m:hi")))),
            FromOrigin::Event(WsEvent::Text(Bytes::from_static(b"m:hi")))
        );
        assert_eq!(
            m.on_passthrough(Some(Ok(Message::Ping(Bytes::new())))),
            FromOrigin::Nothing
        );
        assert_eq!(
            m.on_passthrough(Some(Ok(close_msg(4001, "gone")))),
            FromOrigin::CloseClient {
                close: Some((4001, "gone".into())),
                origin_ended: false
            }
        );
        assert_eq!(
            m.on_client_message(Message::text("late"), now),
            None,
            "no origin any more"
        );
        let mut m = machine(Origin::Passthrough);
        assert_eq!(
            m.on_passthrough(None),
            FromOrigin::CloseClient {
                close: Some((1011, "origin disconnected".into())),
                origin_ended: true
            }
        );
        let mut m = machine(Origin::Passthrough);
        m.start_closing(now);
        assert_eq!(m.on_passthrough(None), FromOrigin::End);
    }

    #[test]
    fn a_forwarded_close_starts_the_handshake() {
        let now = Instant::now();
        let mut m = machine(Origin::Passthrough);
        let close = m.on_client_message(close_msg(1000, ""), now);
        assert!(close.is_some());
        assert!(!m.is_closing(), "not before it was sent");
        m.forwarded(true, false, now);
        assert!(m.is_closing());
        assert!(!m.client_left());
        assert!(!m.finish().disconnect_origin, "the origin's socket failed");
    }
}
