//! GRIP instructions from an origin response: `Grip-*` headers and the
//! `application/grip-instruct` JSON body.

use bytes::Bytes;
use http::HeaderMap;
use std::collections::BTreeMap;

/// Default response-hold timeout in seconds (`Grip-Timeout` absent).
pub const DEFAULT_HOLD_TIMEOUT_SECS: u64 = 55;
/// Smallest response-hold timeout; smaller values are raised to this.
pub const MIN_HOLD_TIMEOUT_SECS: u64 = 5;
/// Default keep-alive period in seconds.
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 55;
/// Largest number of filters one channel subscription may carry.
pub const MAX_FILTERS_PER_CHANNEL: usize = 5;

/// How the edge holds the client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMode {
    /// Long-poll: park the request, answer once with a published `http-response` or on timeout.
    Response,
    /// Stream: send the initial response now and append every published `http-stream` item.
    Stream,
}

/// One channel the held request subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Channel name as the origin gave it (the route prefix is applied by the edge).
    pub name: String,
    /// Id of the last item the origin knows on this channel.
    pub prev_id: Option<String>,
    /// Filter names (at most [`MAX_FILTERS_PER_CHANNEL`]).
    pub filters: Vec<String>,
}

/// Keep-alive mode for stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveMode {
    /// Send only after `timeout` seconds without any write (the timer restarts on every write).
    Idle,
    /// Send every `timeout` seconds regardless of other traffic.
    Interval,
}

/// Keep-alive data for stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// Bytes to send (already decoded from raw / cstring / base64). Never empty.
    pub content: Bytes,
    /// Period in seconds (≥ 1).
    pub timeout_secs: u64,
    /// Idle or interval.
    pub mode: KeepAliveMode,
}

/// `Grip-Status` override for the client-facing status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOverride {
    /// Status code, 0–999.
    pub code: u16,
    /// Reason phrase; `None` means the standard phrase.
    pub reason: Option<String>,
}

/// `Grip-Link: <url>; rel=next[; timeout=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextLink {
    /// Absolute or relative URL, as given between `<` and `>`.
    pub url: String,
    /// Seconds of inactivity on all channels after which the link is fetched (default 120).
    pub timeout_secs: u64,
}

/// The response the client gets, when given by a JSON instruct body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructResponse {
    /// Status code (default 200).
    pub code: u16,
    /// Reason phrase (`None`: standard phrase).
    pub reason: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body (from `body` or base64 `body-bin`).
    pub body: Bytes,
}

/// Parsed GRIP instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruct {
    /// `None` when the response carries Grip headers but no hold.
    pub hold: Option<HoldMode>,
    /// Channels, in order, de-duplicated by name (first wins).
    pub channels: Vec<ChannelSpec>,
    /// Response-hold timeout in seconds, already defaulted and clamped (≥ 5).
    pub timeout_secs: u64,
    /// Stream keep-alive.
    pub keep_alive: Option<KeepAlive>,
    /// `Grip-Status`.
    pub status: Option<StatusOverride>,
    /// `Grip-Link` with `rel=next`.
    pub next_link: Option<NextLink>,
    /// `Grip-Set-Meta` / JSON `meta`.
    pub meta: BTreeMap<String, String>,
    /// `Grip-Expose-Headers`: when `Some`, only these response headers reach the client.
    pub expose_headers: Option<Vec<String>>,
    /// JSON instruct `response` object (replaces the origin's own status, headers and body).
    pub response: Option<InstructResponse>,
}

/// Why instructions were rejected. The edge answers 502 for all of them; the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructError {
    /// A header had a value that does not parse.
    #[error("invalid {header} header: {reason}")]
    Header {
        /// The header name.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The JSON instruct body is not acceptable.
    #[error("invalid grip-instruct body: {0}")]
    Json(String),
}

/// True when an origin response carries GRIP instructions: any header whose name starts with
/// `Grip-` (any case) or a Content-Type (parameters stripped) of `application/grip-instruct`.
pub fn is_grip_response(headers: &HeaderMap) -> bool {
    let _ = headers;
    todo!()
}

/// Parses the `Grip-*` headers of an origin response.
pub fn parse_headers(headers: &HeaderMap) -> Result<Instruct, InstructError> {
    let _ = headers;
    todo!()
}

/// Parses an `application/grip-instruct` body.
pub fn parse_json(body: &[u8]) -> Result<Instruct, InstructError> {
    let _ = body;
    todo!()
}
