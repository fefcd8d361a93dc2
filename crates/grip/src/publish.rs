//! Publish items: the Pushpin-compatible JSON (`{"items":[...]}`) and its validation.
//!
//! Error texts are Pushpin 1.36's, byte for byte; the HTTP layer appends `\n`.

use bytes::Bytes;
use std::collections::BTreeMap;

/// One item of a publish batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishItem {
    /// Target channel (non-empty).
    pub channel: String,
    /// Item id: de-dup key and the channel's new last id.
    pub id: Option<String>,
    /// Id of the item that precedes this one on the channel.
    pub prev_id: Option<String>,
    /// Publish meta for filters.
    pub meta: BTreeMap<String, String>,
    /// Bypass prev-id sequencing.
    pub no_seq: bool,
    /// At least one format is present.
    pub formats: Formats,
}

/// The per-transport renderings of an item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Formats {
    /// For response holds (long-polls).
    pub http_response: Option<HttpResponseFormat>,
    /// For stream holds (HTTP streaming, SSE).
    pub http_stream: Option<HttpStreamFormat>,
    /// For WebSockets.
    pub ws_message: Option<WsMessageFormat>,
}

/// What a response-hold delivery does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Answer the held request with this response.
    Send,
    /// Re-request the origin for the held request.
    Hint,
    /// Accepted and ignored for response holds (Pushpin does the same).
    Close,
}

/// `http-response` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseFormat {
    /// Action (default `send`).
    pub action: ResponseAction,
    /// Status code (default 200, 0–999).
    pub code: u16,
    /// Reason phrase (`None`: standard phrase).
    pub reason: Option<String>,
    /// Headers in order (object or list of pairs in JSON).
    pub headers: Vec<(String, String)>,
    /// Body from `body` or base64 `body-bin` (empty for hint/close).
    pub body: Bytes,
}

/// `http-stream` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpStreamFormat {
    /// Append these bytes to the stream (`content` or base64 `content-bin`).
    Send(Bytes),
    /// End the stream cleanly.
    Close,
    /// Fetch the next link now.
    Hint,
}

/// WebSocket message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMessageType {
    /// Text frame.
    Text,
    /// Binary frame.
    Binary,
    /// Ping frame.
    Ping,
    /// Pong frame.
    Pong,
}

/// `ws-message` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessageFormat {
    /// Send one message (`type` defaults to text, or binary with `content-bin`).
    Send {
        /// Frame type.
        kind: WsMessageType,
        /// Payload.
        content: Bytes,
    },
    /// Close the client connection.
    Close {
        /// Close code (`None`: no code in the close frame).
        code: Option<u16>,
        /// Close reason (may be empty).
        reason: String,
    },
    /// Force a WebSocket-over-HTTP request for the connection.
    Refresh,
}

/// A rejected publish request. `Display` is Pushpin's body text without the trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The body does not parse as JSON.
    #[error("Body is not valid JSON.")]
    NotJson,
    /// The body is JSON but not an object.
    #[error("Invalid format.")]
    NotObject,
    /// A structural problem; the text follows `Invalid format: `.
    #[error("Invalid format: {0}")]
    Invalid(String),
}

impl PublishError {
    /// Short machine-readable reason, used as the `reason` label of the rejection metric.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::NotJson => "not_json",
            PublishError::NotObject => "invalid_format",
            PublishError::Invalid(_) => "invalid_item",
        }
    }
}

/// Parses and validates a whole `{"items":[...]}` body. One bad item rejects the batch.
pub fn parse_publish_body(body: &[u8]) -> Result<Vec<PublishItem>, PublishError> {
    let _ = body;
    todo!()
}

/// Parses one item given as a JSON value (used by the batch parser and by other front ends).
pub fn parse_item(value: &serde_json::Value) -> Result<PublishItem, PublishError> {
    let _ = value;
    todo!()
}
