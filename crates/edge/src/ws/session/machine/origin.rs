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
