//! GRIP WebSocket control messages (`c:` prefix).
//!
//! When the origin accepted the `grip` WebSocket extension, a TEXT message from the origin that
//! starts with [`CONTROL_PREFIX`] carries a JSON object with a `type`; [`parse`] reads that JSON
//! (the bytes after the prefix). Other origin messages must start with the message prefix
//! ([`DEFAULT_MESSAGE_PREFIX`] unless the extension says otherwise), which is stripped.
//!
//! Pushpin ignores (and logs) control messages it cannot parse; callers are expected to do the
//! same with a [`ControlError`].

use crate::instruct::{KeepAliveMode, MAX_FILTERS_PER_CHANNEL, MIN_KEEP_ALIVE_SECS};
use crate::jsonutil::{self, Obj};
use crate::publish::{WsMessageType, parse_ws_type};
use bytes::Bytes;
use serde_json::Value;

/// Prefix of control messages from the origin.
pub const CONTROL_PREFIX: &[u8] = b"c:";
/// Default prefix of data messages from the origin (stripped before delivery).
pub const DEFAULT_MESSAGE_PREFIX: &[u8] = b"m:";
/// Default `keep-alive` period in seconds.
pub const DEFAULT_WS_KEEP_ALIVE_SECS: u64 = 55;
/// Default `send-delayed` delay in seconds.
pub const DEFAULT_SEND_DELAYED_SECS: u64 = 1;

/// One parsed control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Subscribe the connection to a channel (route prefix applied by the edge).
    Subscribe {
        /// Channel name (non-empty).
        channel: String,
        /// Filters (at most [`MAX_FILTERS_PER_CHANNEL`]).
        filters: Vec<String>,
        /// gripmesh's extension: the id of the last item the client has; later items are
        /// replayed from the channel's history before live ones (docs/protocol.md, "History").
        prev_id: Option<String>,
    },
    /// Unsubscribe the connection from a channel.
    Unsubscribe {
        /// Channel name (non-empty).
        channel: String,
    },
    /// Stop forwarding client messages to the origin; keep delivering publishes to the client.
    Detach,
    /// Set (or with `content: None`, disable) a periodic message to the client.
    KeepAlive {
        /// Message type and payload; `None` disables keep-alives.
        content: Option<(WsMessageType, Bytes)>,
        /// Period in seconds (default 55, at least 1).
        timeout_secs: u64,
        /// Idle (timer restarts on every message sent) or interval.
        mode: KeepAliveMode,
    },
    /// Set or delete one subscription meta value.
    SetMeta {
        /// Meta name (non-empty).
        name: String,
        /// New value; `None` deletes the name.
        value: Option<String>,
    },
    /// Bind a session id (obscure; empty when the message had no `id`).
    Session {
        /// Session id.
        id: String,
    },
    /// Send a message to the client after a delay unless superseded or flushed.
    SendDelayed {
        /// Message type.
        kind: WsMessageType,
        /// Payload.
        content: Bytes,
        /// Delay in seconds (default 1).
        timeout_secs: u64,
    },
    /// Send the pending delayed message now.
    FlushDelayed,
}

/// Why a control message was rejected (the text follows Pushpin's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The payload is not JSON.
    #[error("grip control packet is not valid JSON")]
    NotJson,
    /// The JSON is not an acceptable control object.
    #[error("{0}")]
    Invalid(String),
}

/// Splits an origin message into its control payload: `Some(json)` when `message` starts with
/// [`CONTROL_PREFIX`].
pub fn strip_control_prefix(message: &[u8]) -> Option<&[u8]> {
    message.strip_prefix(CONTROL_PREFIX)
}

const PN: &str = "grip control object";

/// Parses the JSON of one control message (the bytes after `c:`).
///
/// Choices where Pushpin is silent or quirky:
/// * `content-bin` without `message-type` gives a binary message (Pushpin's code means to, but
///   ends up with text); `content` defaults to text.
/// * `keep-alive`/`send-delayed` `timeout` must be a non-negative integer; a keep-alive period
///   of 0 is raised to 1. `timeout` is only read when content is given (as in Pushpin).
/// * an unknown `keep-alive` `mode` is an error (Pushpin treats it as idle).
/// * `send-delayed` without `content`/`content-bin` is an error.
/// * more than [`MAX_FILTERS_PER_CHANNEL`] filters on `subscribe` is an error.
/// * bad base64 in `content-bin` is an error.
pub fn parse(payload: &[u8]) -> Result<ControlMessage, ControlError> {
    let v: Value = serde_json::from_slice(payload).map_err(|_| ControlError::NotJson)?;
    parse_value(&v).map_err(ControlError::Invalid)
}

fn parse_value(v: &Value) -> Result<ControlMessage, String> {
    let Value::Object(obj) = v else {
        return Err("grip control packet is not an object".to_owned());
    };
    let kind = jsonutil::req_str(obj, PN, "type")?;
    match kind {
        "subscribe" | "unsubscribe" => parse_subscription(obj, kind),
        "detach" => Ok(ControlMessage::Detach),
        "session" => Ok(ControlMessage::Session {
            id: jsonutil::opt_str(obj, PN, "id")?.unwrap_or("").to_owned(),
        }),
        "set-meta" => {
            let name = jsonutil::req_str(obj, PN, "name")?;
            if name.is_empty() {
                return Err(jsonutil::invalid_value(PN, "name"));
            }
            let value = jsonutil::opt_str(obj, PN, "value")?.map(str::to_owned);
            Ok(ControlMessage::SetMeta {
                name: name.to_owned(),
                value,
            })
        }
        "keep-alive" => parse_keep_alive(obj),
        "send-delayed" => parse_send_delayed(obj),
        "flush-delayed" => Ok(ControlMessage::FlushDelayed),
        other => Err(format!("'type' contains unknown value: {other}")),
    }
}

/// `subscribe` (channel, filters, prev-id) or `unsubscribe` (channel).
fn parse_subscription(obj: &Obj, kind: &str) -> Result<ControlMessage, String> {
    let channel = jsonutil::req_str(obj, PN, "channel")?;
    if channel.is_empty() {
        return Err(jsonutil::invalid_value(PN, "channel"));
    }
    let channel = channel.to_owned();
    if kind == "unsubscribe" {
        return Ok(ControlMessage::Unsubscribe { channel });
    }
    let filters = match jsonutil::opt_list(obj, PN, "filters")? {
        None => Vec::new(),
        Some(list) => jsonutil::string_list(list, "filters contains value with wrong type")?,
    };
    if filters.len() > MAX_FILTERS_PER_CHANNEL {
        return Err(format!("too many filters for channel '{channel}'"));
    }
    let prev_id = jsonutil::opt_str(obj, PN, "prev-id")?.map(str::to_owned);
    Ok(ControlMessage::Subscribe {
        channel,
        filters,
        prev_id,
    })
}

/// `keep-alive`: optional content (none disables keep-alives), period and mode.
fn parse_keep_alive(obj: &Obj) -> Result<ControlMessage, String> {
    let (content, timeout) = parse_timed_content(obj)?;
    let mode = match jsonutil::opt_str(obj, PN, "mode")? {
        None | Some("idle") => KeepAliveMode::Idle,
        Some("interval") => KeepAliveMode::Interval,
        Some(_) => return Err(format!("{PN} contains 'mode' with unknown value")),
    };
    Ok(ControlMessage::KeepAlive {
        content,
        timeout_secs: timeout
            .unwrap_or(DEFAULT_WS_KEEP_ALIVE_SECS)
            .clamp(MIN_KEEP_ALIVE_SECS, crate::MAX_DURATION_SECS),
        mode,
    })
}

/// `send-delayed`: content (required) and delay.
fn parse_send_delayed(obj: &Obj) -> Result<ControlMessage, String> {
    let (content, timeout) = parse_timed_content(obj)?;
    let Some((kind, content)) = content else {
        return Err(format!("{PN} does not contain 'content' or 'content-bin'"));
    };
    Ok(ControlMessage::SendDelayed {
        kind,
        content,
        timeout_secs: timeout
            .unwrap_or(DEFAULT_SEND_DELAYED_SECS)
            .min(crate::MAX_DURATION_SECS),
    })
}

/// Message content of `keep-alive`/`send-delayed`, with its `timeout` (only read when content
/// is given, as in Pushpin).
type TimedContent = (Option<(WsMessageType, Bytes)>, Option<u64>);

/// The `message-type`, `content-bin`/`content` and `timeout` fields of `keep-alive` and
/// `send-delayed`.
fn parse_timed_content(obj: &Obj) -> Result<TimedContent, String> {
    let explicit_type = match jsonutil::opt_str(obj, PN, "message-type")? {
        None => None,
        Some(t) => Some(
            parse_ws_type(t)
                .ok_or_else(|| format!("{PN} contains 'message-type' with unknown value"))?,
        ),
    };
    let content = if let Some(b64) = jsonutil::opt_str(obj, PN, "content-bin")? {
        let bytes = jsonutil::decode_base64(b64)
            .ok_or_else(|| format!("{PN} contains 'content-bin' with invalid base64"))?;
        Some((
            explicit_type.unwrap_or(WsMessageType::Binary),
            Bytes::from(bytes),
        ))
    } else {
        jsonutil::opt_str(obj, PN, "content")?.map(|s| {
            (
                explicit_type.unwrap_or(WsMessageType::Text),
                Bytes::copy_from_slice(s.as_bytes()),
            )
        })
    };
    let timeout = match content {
        Some(_) => jsonutil::opt_uint(obj, PN, "timeout")?,
        None => None,
    };
    Ok((content, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_clamped() {
        let huge = u64::MAX;
        let ka = ok(&format!(
            r#"{{"type":"keep-alive","content":"k","timeout":{huge}}}"#
        ));
        assert!(
            matches!(ka, ControlMessage::KeepAlive { timeout_secs, .. } if timeout_secs == crate::MAX_DURATION_SECS)
        );
        let sd = ok(&format!(
            r#"{{"type":"send-delayed","content":"k","timeout":{huge}}}"#
        ));
        assert!(
            matches!(sd, ControlMessage::SendDelayed { timeout_secs, .. } if timeout_secs == crate::MAX_DURATION_SECS)
        );
    }

    fn ok(json: &str) -> ControlMessage {
        parse(json.as_bytes()).expect("should parse")
    }

    fn err(json: &str) -> String {
        parse(json.as_bytes()).expect_err("should fail").to_string()
    }

    #[test]
    fn conformance_33_subscribe() {
        let msg = br#"c:{"type":"subscribe","channel":"wstest"}"#;
        let json = strip_control_prefix(msg).expect("prefixed");
        assert_eq!(
            parse(json),
            Ok(ControlMessage::Subscribe {
                channel: "wstest".into(),
                filters: vec![],
                prev_id: None,
            })
        );
        assert_eq!(
            ok(r#"{"type":"subscribe","channel":"c","prev-id":"41"}"#),
            ControlMessage::Subscribe {
                channel: "c".into(),
                filters: vec![],
                prev_id: Some("41".into()),
            }
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":"c","prev-id":41}"#),
            "grip control object contains 'prev-id' with wrong type"
        );
        assert_eq!(strip_control_prefix(b"m:hello"), None);
    }

    #[test]
    fn subscribe_with_filters() {
        assert_eq!(
            ok(r#"{"type":"subscribe","channel":"c","filters":["skip-self","build-id"]}"#),
            ControlMessage::Subscribe {
                channel: "c".into(),
                filters: vec!["skip-self".into(), "build-id".into()],
                prev_id: None,
            }
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":"c","filters":["1","2","3","4","5","6"]}"#),
            "too many filters for channel 'c'"
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":"c","filters":[1]}"#),
            "filters contains value with wrong type"
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":"c","filters":"x"}"#),
            "grip control object contains 'filters' with wrong type"
        );
    }

    #[test]
    fn subscribe_unsubscribe_channel_required() {
        assert_eq!(
            err(r#"{"type":"subscribe"}"#),
            "grip control object does not contain 'channel'"
        );
        assert_eq!(
            err(r#"{"type":"subscribe","channel":""}"#),
            "grip control object contains 'channel' with invalid value"
        );
        assert_eq!(
            err(r#"{"type":"unsubscribe","channel":1}"#),
            "grip control object contains 'channel' with wrong type"
        );
        assert_eq!(
            ok(r#"{"type":"unsubscribe","channel":"c"}"#),
            ControlMessage::Unsubscribe {
                channel: "c".into()
            }
        );
    }

    #[test]
    fn simple_types() {
        assert_eq!(ok(r#"{"type":"detach"}"#), ControlMessage::Detach);
        assert_eq!(
            ok(r#"{"type":"flush-delayed"}"#),
            ControlMessage::FlushDelayed
        );
        assert_eq!(
            ok(r#"{"type":"session","id":"s1"}"#),
            ControlMessage::Session { id: "s1".into() }
        );
        assert_eq!(
            ok(r#"{"type":"session"}"#),
            ControlMessage::Session { id: String::new() }
        );
    }

    #[test]
    fn set_meta() {
        assert_eq!(
            ok(r#"{"type":"set-meta","name":"user","value":"alice"}"#),
            ControlMessage::SetMeta {
                name: "user".into(),
                value: Some("alice".into()),
            }
        );
        assert_eq!(
            ok(r#"{"type":"set-meta","name":"user"}"#),
            ControlMessage::SetMeta {
                name: "user".into(),
                value: None,
            }
        );
        assert_eq!(
            err(r#"{"type":"set-meta","name":""}"#),
            "grip control object contains 'name' with invalid value"
        );
        assert_eq!(
            err(r#"{"type":"set-meta"}"#),
            "grip control object does not contain 'name'"
        );
        assert_eq!(
            err(r#"{"type":"set-meta","name":"a","value":1}"#),
            "grip control object contains 'value' with wrong type"
        );
    }

    #[test]
    fn keep_alive() {
        assert_eq!(
            ok(r#"{"type":"keep-alive","content":"ka"}"#),
            ControlMessage::KeepAlive {
                content: Some((WsMessageType::Text, Bytes::from_static(b"ka"))),
                timeout_secs: 55,
                mode: KeepAliveMode::Idle,
            }
        );
        assert_eq!(
            ok(r#"{"type":"keep-alive","content-bin":"AAE=","timeout":20,"mode":"interval"}"#),
            ControlMessage::KeepAlive {
                content: Some((WsMessageType::Binary, Bytes::from_static(&[0, 1]))),
                timeout_secs: 20,
                mode: KeepAliveMode::Interval,
            }
        );
        assert_eq!(
            ok(r#"{"type":"keep-alive","content":"","message-type":"ping","timeout":0}"#),
            ControlMessage::KeepAlive {
                content: Some((WsMessageType::Ping, Bytes::new())),
                timeout_secs: 1,
                mode: KeepAliveMode::Idle,
            }
        );
        // No content: disables keep-alives (timeout not even read).
        assert_eq!(
            ok(r#"{"type":"keep-alive","timeout":"junk"}"#),
            ControlMessage::KeepAlive {
                content: None,
                timeout_secs: 55,
                mode: KeepAliveMode::Idle,
            }
        );
    }

    #[test]
    fn keep_alive_errors() {
        assert_eq!(
            err(r#"{"type":"keep-alive","content":"x","message-type":"blob"}"#),
            "grip control object contains 'message-type' with unknown value"
        );
        assert_eq!(
            err(r#"{"type":"keep-alive","content":"x","timeout":-1}"#),
            "grip control object contains 'timeout' with invalid value"
        );
        assert_eq!(
            err(r#"{"type":"keep-alive","content":"x","timeout":"5"}"#),
            "grip control object contains 'timeout' with wrong type"
        );
        assert_eq!(
            err(r#"{"type":"keep-alive","content":"x","mode":"often"}"#),
            "grip control object contains 'mode' with unknown value"
        );
        assert_eq!(
            err(r#"{"type":"keep-alive","content":5}"#),
            "grip control object contains 'content' with wrong type"
        );
        assert_eq!(
            err(r#"{"type":"keep-alive","content-bin":"@@"}"#),
            "grip control object contains 'content-bin' with invalid base64"
        );
    }

    #[test]
    fn send_delayed() {
        assert_eq!(
            ok(r#"{"type":"send-delayed","content":"later"}"#),
            ControlMessage::SendDelayed {
                kind: WsMessageType::Text,
                content: Bytes::from_static(b"later"),
                timeout_secs: 1,
            }
        );
        assert_eq!(
            ok(r#"{"type":"send-delayed","content-bin":"aGk=","message-type":"text","timeout":3}"#),
            ControlMessage::SendDelayed {
                kind: WsMessageType::Text,
                content: Bytes::from_static(b"hi"),
                timeout_secs: 3,
            }
        );
        assert_eq!(
            err(r#"{"type":"send-delayed"}"#),
            "grip control object does not contain 'content' or 'content-bin'"
        );
    }

    #[test]
    fn bad_packets() {
        assert_eq!(err("nope"), "grip control packet is not valid JSON");
        assert_eq!(parse(b"nope"), Err(ControlError::NotJson));
        assert_eq!(err("[]"), "grip control packet is not an object");
        assert_eq!(err("{}"), "grip control object does not contain 'type'");
        assert_eq!(
            err(r#"{"type":5}"#),
            "grip control object contains 'type' with wrong type"
        );
        assert_eq!(
            err(r#"{"type":"explode"}"#),
            "'type' contains unknown value: explode"
        );
    }
}
