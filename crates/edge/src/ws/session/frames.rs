//! Conversions between published payloads, GRIP message types and tungstenite messages, and
//! the wire size of what the client is sent (for usage metering).

use bytes::Bytes;
use grip::publish::WsMessageType;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

/// Messages and wire bytes (frame headers included) of published messages.
pub(super) fn wire_size(msgs: &[Message]) -> (u64, u64) {
    let bytes = msgs
        .iter()
        .map(|m| crate::usage::ws_frame_len(m.len()))
        .sum();
    (msgs.len() as u64, bytes)
}

/// A published message's payload (a refcount bump).
pub(super) fn message_bytes(m: &Message) -> Bytes {
    match m {
        Message::Text(t) => Bytes::from(t.clone()),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.clone(),
        Message::Close(_) | Message::Frame(_) => Bytes::new(),
    }
}

/// `m`'s kind with another payload (a subscriber's filtered content). Text that is no longer
/// UTF-8 cannot be sent: `None`.
pub(super) fn with_payload(m: &Message, content: Bytes) -> Option<Message> {
    Some(match m {
        Message::Text(_) => Message::Text(Utf8Bytes::try_from(content).ok()?),
        Message::Binary(_) => Message::Binary(content),
        Message::Ping(_) => Message::Ping(content),
        Message::Pong(_) => Message::Pong(content),
        Message::Close(_) | Message::Frame(_) => return None,
    })
}

/// The message a control message asks for (`keep-alive`, `send-delayed`); text that is not
/// UTF-8 cannot be sent: `None`.
pub(super) fn ws_message(kind: WsMessageType, data: Bytes) -> Option<Message> {
    Some(match kind {
        WsMessageType::Text => Message::Text(Utf8Bytes::try_from(data).ok()?),
        WsMessageType::Binary => Message::Binary(data),
        WsMessageType::Ping => Message::Ping(data),
        WsMessageType::Pong => Message::Pong(data),
    })
}
