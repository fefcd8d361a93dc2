//! A published item rendered once for every transport, shared by all local subscribers.

use bytes::Bytes;
use grip::publish::{
    HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction, WsMessageFormat,
    WsMessageType,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

/// Which kind of hold a connection is; publishes only reach holds of the matching format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP streaming / SSE (`http-stream` format).
    HttpStream,
    /// Long-poll (`http-response` format).
    HttpResponse,
    /// WebSocket (`ws-message` format).
    Ws,
}

impl Transport {
    /// The `transport` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::HttpStream => "http-stream",
            Transport::HttpResponse => "http-response",
            Transport::Ws => "ws",
        }
    }
}

/// What a stream hold does with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOut {
    /// Append these bytes.
    Data(Bytes),
    /// End the stream cleanly.
    Close,
    /// Fetch the stream's next link now.
    Hint,
}

/// What a WebSocket connection does with an item.
#[derive(Debug, Clone)]
pub enum WsOut {
    /// Send this message (its payload is shared `Bytes`; cloning it is a refcount bump).
    Message(Message),
    /// Close the client connection with this code and reason.
    Close(Option<(u16, String)>),
    /// Send the origin a WebSocket-over-HTTP request for the connection now.
    Refresh,
}

/// An item ready to hand to connections. Built once per item per edge; every subscriber gets
/// an `Arc` of it, so fan-out costs one refcount bump per subscriber.
#[derive(Debug)]
pub struct Delivery {
    /// For stream holds.
    pub stream: Option<StreamOut>,
    /// For response holds (`send` and `hint`; `close` is ignored, as by Pushpin).
    pub response: Option<HttpResponseFormat>,
    /// For WebSockets.
    pub ws: Option<WsOut>,
    /// When control accepted the publish (ns since the epoch), for the latency histogram.
    pub accepted_unix_nanos: u64,
    /// The channel it was published to.
    pub channel: std::sync::Arc<str>,
    /// The item's `prev-id` (response holds re-request the origin on a gap).
    pub prev_id: Option<String>,
    /// Position in the channel's history (0: the channel keeps none). A resumed connection
    /// skips live deliveries at or below the last position it replayed.
    pub seq: u64,
    /// The item's `id` (the channel's new last id, for `build-id`).
    pub id: Option<String>,
    /// Publish meta, for subscription filters.
    pub meta: std::collections::BTreeMap<String, String>,
    /// Each format's `content-filters`.
    pub content_filters: grip::publish::ContentFilters,
}

impl Delivery {
    /// Payload bytes this delivery puts in a connection's queue (for the byte bound).
    pub fn size_for(&self, transport: Transport) -> usize {
        match transport {
            Transport::HttpStream => match &self.stream {
                Some(StreamOut::Data(d)) => d.len(),
                _ => 0,
            },
            Transport::HttpResponse => self.response.as_ref().map_or(0, |r| r.body.len()),
            Transport::Ws => match &self.ws {
                Some(WsOut::Message(m)) => m.len(),
                _ => 0,
            },
        }
    }

    /// Renders an item. `None` when it has nothing for any hold this edge serves.
    pub fn render(item: PublishItem, accepted_unix_nanos: u64) -> Option<Delivery> {
        let stream = match item.formats.http_stream {
            Some(HttpStreamFormat::Send(data)) => Some(StreamOut::Data(data)),
            Some(HttpStreamFormat::Close) => Some(StreamOut::Close),
            Some(HttpStreamFormat::Hint) => Some(StreamOut::Hint),
            None => None,
        };
        let response = item
            .formats
            .http_response
            .filter(|r| r.action != ResponseAction::Close);
        let ws = match item.formats.ws_message {
            Some(WsMessageFormat::Send { kind, content }) => {
                ws_message(kind, content).map(WsOut::Message)
            }
            Some(WsMessageFormat::Close { code, reason }) => {
                Some(WsOut::Close(code.map(|c| (c, reason))))
            }
            Some(WsMessageFormat::Refresh) => Some(WsOut::Refresh),
            None => None,
        };
        if stream.is_none() && response.is_none() && ws.is_none() {
            return None;
        }
        Some(Delivery {
            stream,
            response,
            ws,
            accepted_unix_nanos,
            channel: std::sync::Arc::from(item.channel.as_str()),
            prev_id: item.prev_id,
            seq: 0,
            id: item.id,
            meta: item.meta,
            content_filters: item.formats.content_filters,
        })
    }
}

/// Builds a WebSocket message once. Text that is not UTF-8 cannot be a text frame: `None`.
fn ws_message(kind: WsMessageType, content: Bytes) -> Option<Message> {
    Some(match kind {
        WsMessageType::Text => match Utf8Bytes::try_from(content) {
            Ok(text) => Message::Text(text),
            Err(_) => {
                tracing::warn!("dropping ws-message: text content is not UTF-8");
                return None;
            }
        },
        WsMessageType::Binary => Message::Binary(content),
        WsMessageType::Ping => Message::Ping(content),
        WsMessageType::Pong => Message::Pong(content),
    })
}
