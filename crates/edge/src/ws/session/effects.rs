//! What the session's state machine asks its driver to do: actions on the client, commands on
//! the subscriber registry, requests to the origin, and what timers, deliveries and the
//! session's end come to.

use crate::registry::SubscribeError;
use grip::wsevents::WsEvent;
use tokio_tungstenite::tungstenite::Message;

/// A close code and reason for the client (`None`: a close frame without a status).
pub(super) type Close = Option<(u16, String)>;

/// Something to do to the client.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// Write this message.
    Send(Message),
    /// Write what came before, then start the close handshake with this frame.
    Close(Close),
    /// Drop the client without a close frame (origin sent `DISCONNECT`).
    Drop,
}

/// A change of subscription for the driver to make on the registry before the next event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    /// Subscribe `full` (filters are already recorded), then replay history after
    /// `(channel as the origin named it, prev id)` if given.
    Subscribe {
        full: String,
        resume: Option<(String, String)>,
    },
    /// Unsubscribe `full`.
    Unsubscribe(String),
}

/// A WebSocket-over-HTTP request to send now (empty `events`: a keep-alive or refresh).
#[derive(Debug, PartialEq)]
pub(super) struct OriginRequest {
    pub events: Vec<WsEvent>,
    /// `Grip-Last` entries: resumes history could not serve.
    pub grip_last: Vec<(String, String)>,
}

/// What the driver does next, decided at the top of each turn.
#[derive(Debug, PartialEq)]
pub(super) enum Poll {
    /// The session is over.
    End,
    /// Keep going, sending this request first if any.
    Run(Option<OriginRequest>),
}

/// What a due timer asks for, in this order.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Due {
    /// The close handshake ran out of time: end.
    pub end: bool,
    /// The keep-alive message to write.
    pub keep_alive: Option<Message>,
    /// The `send-delayed` message to write.
    pub delayed: Option<Message>,
    /// A `Keep-Alive-Interval` request to send.
    pub request: Option<OriginRequest>,
}

/// Published deliveries turned into what the client gets.
#[derive(Debug, PartialEq)]
pub(super) struct Delivered {
    /// Messages to write, in order.
    pub messages: Vec<Message>,
    /// A publisher's close, after the messages (later deliveries are not looked at).
    pub close: Option<Close>,
}

/// The connection's close signal, as the client sees it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ConnClose {
    pub code: u16,
    pub reason: &'static str,
    /// The client is not reading: offer the frame briefly and end without waiting on it.
    pub abandon: bool,
}

/// What a message from a passthrough origin means.
#[derive(Debug, PartialEq)]
pub(super) enum FromOrigin {
    /// An event to interpret like a WebSocket-over-HTTP one.
    Event(WsEvent),
    /// Nothing to do (control frames).
    Nothing,
    /// The origin is gone: close the client with this; `origin_ended` when it is the
    /// origin's doing rather than an answer to the client's close.
    CloseClient { close: Close, origin_ended: bool },
    /// The origin is gone while the session was already closing: end.
    End,
}

/// What to do once the session ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Finish {
    /// Flush the client's socket (not for a client that stopped reading).
    pub flush_client: bool,
    /// Tell a WebSocket-over-HTTP origin with `DISCONNECT`.
    pub disconnect_origin: bool,
}

/// The close frame for a subscription the edge could not make: the origin asked for a channel
/// name over `--max-channel-length` (its fault, said plainly), or the bus failed.
pub(super) fn subscribe_failure_close(err: &SubscribeError) -> (u16, String) {
    if err.invalid_channel {
        (1011, "channel name too long".to_owned())
    } else {
        (1011, "internal error".to_owned())
    }
}
