//! GRIP instructions from an origin response: `Grip-*` headers and the
//! `application/grip-instruct` JSON body.
//!
//! The data model ([`Instruct`] and its parts) and the detection of a GRIP response live here;
//! the two wire forms are parsed in `headers` ([`parse_headers`]) and `json` ([`parse_json`]).

mod headers;
mod hvalue;
mod json;

use bytes::Bytes;
use http::HeaderMap;
use std::collections::BTreeMap;

pub use headers::parse_headers;
pub use json::parse_json;

/// Default response-hold timeout in seconds (`Grip-Timeout` absent).
pub const DEFAULT_HOLD_TIMEOUT_SECS: u64 = 55;
/// Smallest response-hold timeout; smaller values are raised to this.
pub const MIN_HOLD_TIMEOUT_SECS: u64 = 5;
/// Default keep-alive period in seconds.
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 55;
/// Largest number of filters one channel subscription may carry.
pub const MAX_FILTERS_PER_CHANNEL: usize = 5;
/// Smallest keep-alive period; smaller values (including 0) are raised to this.
pub const MIN_KEEP_ALIVE_SECS: u64 = 1;
/// Default `Grip-Link: <url>; rel=next` inactivity timeout in seconds.
pub const DEFAULT_NEXT_LINK_TIMEOUT_SECS: u64 = 120;
/// The Content-Type of a JSON instruct body.
pub const INSTRUCT_CONTENT_TYPE: &str = "application/grip-instruct";

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
    /// `Grip-Link` with `rel=gone` (Pushpin 1.41): the URL the edge POSTs to when the client's
    /// connection ends.
    pub gone_link: Option<String>,
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
    // `HeaderName`s are stored lowercase.
    headers
        .keys()
        .any(|name| name.as_str().starts_with("grip-"))
        || is_instruct_body(headers)
}

/// True when the Content-Type (parameters stripped, any case) is `application/grip-instruct`,
/// i.e. the body must be parsed with [`parse_json`].
pub fn is_instruct_body(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(INSTRUCT_CONTENT_TYPE)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::HeaderName;

    pub(super) fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    pub(super) fn ch(name: &str) -> ChannelSpec {
        ChannelSpec {
            name: name.into(),
            prev_id: None,
            filters: vec![],
        }
    }

    // ---- detection

    #[test]
    fn detects_grip_headers_any_case() {
        assert!(is_grip_response(&hm(&[("Grip-Hold", "stream")])));
        assert!(is_grip_response(&hm(&[("GRIP-FOO", "bar")])));
        assert!(is_grip_response(&hm(&[("grip-channel", "x")])));
        assert!(!is_grip_response(&hm(&[("X-Grip-Foo", "bar")])));
        assert!(!is_grip_response(&hm(&[("Gripx", "bar")])));
        assert!(!is_grip_response(&hm(&[("Content-Type", "text/plain")])));
        assert!(!is_grip_response(&HeaderMap::new()));
    }

    #[test]
    fn detects_instruct_content_type() {
        assert!(is_grip_response(&hm(&[(
            "Content-Type",
            "application/grip-instruct"
        )])));
        assert!(is_grip_response(&hm(&[(
            "Content-Type",
            "Application/GRIP-Instruct; charset=utf-8"
        )])));
        assert!(is_instruct_body(&hm(&[(
            "Content-Type",
            " application/grip-instruct ;x=y"
        )])));
        assert!(!is_grip_response(&hm(&[(
            "Content-Type",
            "application/grip-instructx"
        )])));
        assert!(!is_instruct_body(&hm(&[("Grip-Hold", "stream")])));
    }
}
