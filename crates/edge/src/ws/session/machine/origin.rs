//! The origin's side of the state machine: GRIP framing (`c:` control messages, the message
//! prefix) and what each origin event, control message and passthrough frame does.

use super::{Delayed, KeepAlive, Machine, Origin};
use crate::ws::session::effects::{Action, Command, FromOrigin};
use crate::ws::session::frames::ws_message;
use bytes::Bytes;
use grip::wscontrol::ControlMessage;
use grip::wsevents::WsEvent;
use http::HeaderMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::{self, Message};

/// A GRIP-framed origin message, unwrapped.
enum Framed {
    /// Data for the client.
    Data(Bytes),
    /// Not for the client: a control message (maybe with a registry command) or dropped.
    Consumed(Option<Command>),
}

impl Machine {
    /// Interprets one origin event: GRIP control messages are executed here; the rest become
    /// actions on the client. `channels` is the connection's current subscription count.
    pub(in crate::ws::session) fn origin_event(
        &mut self,
        ev: WsEvent,
        channels: usize,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<Command> {
        match ev {
            WsEvent::Text(data) => match self.unwrap_grip(&data, channels, now, out) {
                Framed::Data(payload) => {
                    match Utf8Bytes::try_from(payload) {
                        Ok(t) => out.push(Action::Send(Message::Text(t))),
                        Err(_) => tracing::debug!("dropping non-UTF-8 text from origin"),
                    }
                    None
                }
                Framed::Consumed(command) => command,
            },
            WsEvent::Binary(data) => match self.unwrap_grip(&data, channels, now, out) {
                Framed::Data(payload) => {
                    out.push(Action::Send(Message::Binary(payload)));
                    None
                }
                Framed::Consumed(command) => command,
            },
            WsEvent::Ping(d) => {
                out.push(Action::Send(Message::Ping(d)));
                None
            }
            WsEvent::Pong(d) => {
                out.push(Action::Send(Message::Pong(d)));
                None
            }
            WsEvent::Close(payload) => {
                out.push(Action::Close(grip::wsevents::close_code_reason(&payload)));
                None
            }
            WsEvent::Disconnect | WsEvent::Open => {
                out.push(Action::Drop);
                None
            }
        }
    }

    /// Applies GRIP framing to an origin message: executes `c:` control messages, strips the
    /// message prefix, drops unprefixed messages. Without GRIP mode the message passes as is.
    fn unwrap_grip(
        &mut self,
        data: &Bytes,
        channels: usize,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Framed {
        let Some(grip) = &self.grip else {
            return Framed::Data(data.clone());
        };
        if let Some(json) = grip::wscontrol::strip_control_prefix(data) {
            return Framed::Consumed(match grip::wscontrol::parse(json) {
                Ok(msg) => self.on_control(msg, channels, now, out),
                Err(err) => {
                    tracing::debug!(error = %err, "ignoring invalid control message");
                    None
                }
            });
        }
        if data.starts_with(&grip.prefix) {
            return Framed::Data(data.slice(grip.prefix.len()..));
        }
        tracing::debug!("dropping origin message without the GRIP message prefix");
        Framed::Consumed(None)
    }

    fn on_control(
        &mut self,
        msg: ControlMessage,
        channels: usize,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<Command> {
        match msg {
            ControlMessage::Subscribe {
                channel,
                prev_id,
                filters,
            } => {
                let full = format!("{}{channel}", self.prefix);
                if channels >= self.limits.max_channels {
                    tracing::debug!(channel = %full, "subscription limit reached; subscribe ignored");
                    return None;
                }
                // Filters first: a publish racing the subscription must meet them.
                self.filters.subscribe(&full, &filters, None);
                let resume = prev_id.map(|prev| (channel, prev));
                return Some(Command::Subscribe { full, resume });
            }
            ControlMessage::Unsubscribe { channel } => {
                let full = format!("{}{channel}", self.prefix);
                if !self.implicit.contains(&full) {
                    self.filters.unsubscribe(&full);
                    return Some(Command::Unsubscribe(full));
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
                        deadline: now + period,
                    })
                });
            }
            ControlMessage::SetMeta { name, value } => self.filters.set_meta(name, value),
            ControlMessage::SendDelayed {
                kind,
                content,
                timeout_secs,
            } => self.send_delayed(ws_message(kind, content), timeout_secs, now, out),
            ControlMessage::FlushDelayed => {
                if let Some(d) = self.delayed.take() {
                    out.push(Action::Send(d.message));
                }
            }
            ControlMessage::Session { .. } => {
                tracing::debug!("ignoring the session control message (not implemented)");
            }
        }
        None
    }

    /// `send-delayed`: replaces the pending delayed message, sending the old one first.
    fn send_delayed(
        &mut self,
        message: Option<Message>,
        timeout_secs: u64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
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
        match message {
            Some(message) => {
                self.delayed = Some(Delayed {
                    message,
                    // Clamped to a day when parsed: the deadline cannot overflow.
                    at: now + Duration::from_secs(secs),
                });
            }
            None => tracing::debug!("dropping send-delayed: text content is not UTF-8"),
        }
    }

    /// A resume history could not serve: a WebSocket-over-HTTP origin gets a request with
    /// `Grip-Last` at once; a passthrough client is closed with 4410, so it never silently
    /// misses items.
    pub(in crate::ws::session) fn on_history_gap(
        &mut self,
        channel: String,
        prev: String,
        out: &mut Vec<Action>,
    ) {
        match self.origin {
            Origin::Passthrough => {
                out.push(Action::Close(Some((4410, "history unavailable".into()))));
            }
            _ => self.grip_last.push((channel, prev)),
        }
    }

    /// Applies an origin answer's `Set-Meta-*` headers to the subscription meta.
    pub(in crate::ws::session) fn apply_set_meta(&mut self, headers: &HeaderMap) {
        crate::ws::over_http::apply_set_meta(headers, &mut self.filters.meta);
    }

    /// The top of each turn: ends the session when its close handshake is over or timed out,
    pub(in crate::ws::session) fn on_passthrough(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> FromOrigin {
        match msg {
            Some(Ok(Message::Text(t))) => FromOrigin::Event(WsEvent::Text(Bytes::from(t))),
            Some(Ok(Message::Binary(b))) => FromOrigin::Event(WsEvent::Binary(b)),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                FromOrigin::Nothing
            }
            Some(Ok(Message::Close(frame))) => {
                self.origin = Origin::Gone;
                FromOrigin::CloseClient {
                    close: frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    origin_ended: false,
                }
            }
            Some(Err(_)) | None => {
                self.origin = Origin::Gone;
                if self.closing.is_some() {
                    return FromOrigin::End;
                }
                FromOrigin::CloseClient {
                    close: Some((1011, "origin disconnected".into())),
                    origin_ended: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{OVER_HTTP, control, machine};
    use super::*;
    use crate::ws::GripMode;
    use crate::ws::session::effects::{OriginRequest, Poll};

    fn events(m: &mut Machine, evs: Vec<WsEvent>) -> Vec<Action> {
        let mut out = Vec::new();
        for ev in evs {
            assert_eq!(m.origin_event(ev, 0, Instant::now(), &mut out), None);
        }
        out
    }

    #[test]
    fn grip_framing_strips_the_prefix_and_drops_the_rest() {
        let mut m = machine(OVER_HTTP);
        let out = events(
            &mut m,
            vec![
                WsEvent::Text(Bytes::from_static(b"m:hi")),
                WsEvent::Text(Bytes::from_static(b"no prefix")),
                WsEvent::Binary(Bytes::from_static(b"m:\x00\xff")),
                WsEvent::Text(Bytes::from_static(b"m:\xff")),
                WsEvent::Text(Bytes::from_static(b"c:{not json")),
                WsEvent::Ping(Bytes::from_static(b"p")),
            ],
        );
        assert_eq!(
            out,
            [
                Action::Send(Message::text("hi")),
                Action::Send(Message::Binary(Bytes::from_static(b"\x00\xff"))),
                Action::Send(Message::Ping(Bytes::from_static(b"p"))),
            ]
        );
        // Without the grip extension, messages pass as they are.
        let mut plain = Machine::new(
            None,
            OVER_HTTP,
            m.limits,
            String::new(),
            Vec::new(),
            Default::default(),
        );
        let out = events(&mut plain, vec![WsEvent::Text(Bytes::from_static(b"c:x"))]);
        assert_eq!(out, [Action::Send(Message::text("c:x"))]);
        let mut custom = Machine::new(
            Some(GripMode {
                prefix: Bytes::new(),
            }),
            OVER_HTTP,
            m.limits,
            String::new(),
            Vec::new(),
            Default::default(),
        );
        let out = events(&mut custom, vec![WsEvent::Text(Bytes::from_static(b"all"))]);
        assert_eq!(out, [Action::Send(Message::text("all"))], "empty prefix");
    }

    #[test]
    fn origin_close_and_disconnect() {
        let mut m = machine(OVER_HTTP);
        let out = events(
            &mut m,
            vec![WsEvent::close(4000, "bye"), WsEvent::Disconnect],
        );
        assert_eq!(
            out,
            [Action::Close(Some((4000, "bye".into()))), Action::Drop]
        );
    }

    #[test]
    fn subscriptions_are_prefixed_limited_and_implicit_ones_stay() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        let (out, command) = control(
            &mut m,
            r#"{"type":"subscribe","channel":"a","prev-id":"41"}"#,
            1,
            now,
        );
        assert!(out.is_empty());
        assert_eq!(
            command,
            Some(Command::Subscribe {
                full: "p:a".into(),
                resume: Some(("a".into(), "41".into())),
            })
        );
        let (_, command) = control(&mut m, r#"{"type":"subscribe","channel":"b"}"#, 2, now);
        assert_eq!(command, None, "at the channel limit");
        let (_, command) = control(&mut m, r#"{"type":"unsubscribe","channel":"a"}"#, 2, now);
        assert_eq!(command, Some(Command::Unsubscribe("p:a".into())));
        let (_, command) = control(
            &mut m,
            r#"{"type":"unsubscribe","channel":"implicit"}"#,
            1,
            now,
        );
        assert_eq!(command, None, "implicit channels cannot be left");
    }

    #[test]
    fn send_delayed_waits_and_a_new_one_sends_the_pending_one() {
        let t0 = Instant::now();
        let mut m = machine(OVER_HTTP);
        let (out, _) = control(
            &mut m,
            r#"{"type":"send-delayed","content":"one","timeout":5}"#,
            0,
            t0,
        );
        assert!(out.is_empty());
        assert_eq!(m.next_timer(None), Some(t0 + Duration::from_secs(5)));
        let (out, _) = control(
            &mut m,
            r#"{"type":"send-delayed","content":"two","timeout":0}"#,
            0,
            t0,
        );
        assert_eq!(out, [Action::Send(Message::text("one"))]);
        assert_eq!(
            m.next_timer(None),
            Some(t0 + Duration::from_secs(1)),
            "a timeout of 0 is the default second"
        );
        let due = m.on_timer(t0 + Duration::from_secs(1), None);
        assert_eq!(due.delayed, Some(Message::text("two")));
        assert_eq!(m.next_timer(None), None);
        control(
            &mut m,
            r#"{"type":"send-delayed","content":"three","timeout":9}"#,
            0,
            t0,
        );
        let (out, _) = control(&mut m, r#"{"type":"flush-delayed"}"#, 0, t0);
        assert_eq!(out, [Action::Send(Message::text("three"))]);
        assert_eq!(m.next_timer(None), None);
    }

    #[test]
    fn a_history_gap_resyncs_over_http_and_closes_a_passthrough_client() {
        let now = Instant::now();
        let mut m = machine(OVER_HTTP);
        let mut out = Vec::new();
        m.on_history_gap("a".into(), "41".into(), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            m.poll(now),
            Poll::Run(Some(OriginRequest {
                events: Vec::new(),
                grip_last: vec![("a".into(), "41".into())],
            }))
        );
        let mut m = machine(Origin::Passthrough);
        m.on_history_gap("a".into(), "41".into(), &mut out);
        assert_eq!(
            out,
            [Action::Close(Some((4410, "history unavailable".into())))]
        );
    }
}
