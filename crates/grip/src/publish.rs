//! Publish items: the Pushpin-compatible JSON (`{"items":[...]}`) and its validation.
//!
//! Error texts are Pushpin 1.36's, byte for byte; the HTTP layer appends `\n`.

use crate::jsonutil::{self, Obj};
use bytes::Bytes;
use serde_json::Value;
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
    /// Each format's `content-filters` list (`None`: not given, reaches every subscription).
    pub content_filters: ContentFilters,
}

/// The `content-filters` of each format: a format that names them only reaches subscriptions
/// whose content-changing filters are exactly that list (Pushpin's rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentFilters {
    /// Of `http-response`.
    pub http_response: Option<Vec<String>>,
    /// Of `http-stream`.
    pub http_stream: Option<Vec<String>>,
    /// Of `ws-message`.
    pub ws_message: Option<Vec<String>>,
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
///
/// Items whose only format is a `ws-message` with `"action":"hint"` are accepted (as Pushpin
/// does) but left out of the result, since they deliver nothing anywhere; so every returned item
/// has at least one format. An empty `items` list is valid and yields an empty batch.
pub fn parse_publish_body(body: &[u8]) -> Result<Vec<PublishItem>, PublishError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| PublishError::NotJson)?;
    let Value::Object(root) = doc else {
        return Err(PublishError::NotObject);
    };
    let items = match root.get("items") {
        None | Some(Value::Null) => return Err(invalid("object does not contain 'items'")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("object contains 'items' with wrong type")),
    };
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        let item = parse_item(v)?;
        if item.formats.http_response.is_some()
            || item.formats.http_stream.is_some()
            || item.formats.ws_message.is_some()
        {
            out.push(item);
        }
    }
    Ok(out)
}

/// Parses one item given as a JSON value (used by the batch parser and by other front ends).
///
/// Checks run in Pushpin's order (channel, id, prev-id, formats, meta, size, no-seq) so the first
/// error reported is the one Pushpin reports. Choices where Pushpin is lax or quirky:
/// * `"channel": ""` is rejected (`... contains 'channel' with invalid value`).
/// * a `formats` object (or legacy item) without any of the three known format keys is
///   rejected with `no formats specified` (Pushpin only rejects an empty object).
/// * JSON `null` counts as absent for optional fields.
/// * bad base64 in `content-bin`/`body-bin` is rejected (Pushpin decodes garbage silently).
/// * `body-patch` without `body`/`body-bin` is rejected as unsupported.
/// * `refresh` is a valid action only for `ws-message` (1.36 knows it nowhere; later versions
///   only act on it for WebSockets); elsewhere it is an unknown action (`Invalid("")`).
/// * `ws-message` with `"action":"hint"` is accepted and ignored, as Pushpin does: that format
///   is left out (`formats.ws_message` is `None`). This is the only way this function returns an
///   item whose formats are all `None`.
/// * `size` is validated (non-negative integer) and ignored.
pub fn parse_item(value: &serde_json::Value) -> Result<PublishItem, PublishError> {
    parse_item_inner(value).map_err(PublishError::Invalid)
}

fn invalid(text: &str) -> PublishError {
    PublishError::Invalid(text.to_owned())
}

const ITEM: &str = "publish item object";
const HTTP_RESPONSE: &str = "'http-response'";
const HTTP_STREAM: &str = "'http-stream'";
const WS_MESSAGE: &str = "'ws-message'";

fn parse_item_inner(value: &Value) -> Result<PublishItem, String> {
    let Value::Object(item) = value else {
        return Err(format!("{ITEM} is not an object"));
    };
    let channel = jsonutil::req_str(item, ITEM, "channel")?;
    if channel.is_empty() {
        return Err(jsonutil::invalid_value(ITEM, "channel"));
    }
    let id = jsonutil::opt_str(item, ITEM, "id")?.map(str::to_owned);
    let prev_id = jsonutil::opt_str(item, ITEM, "prev-id")?.map(str::to_owned);

    // Legacy shape: without `formats`, the format keys sit directly on the item.
    let formats_obj: &Obj = jsonutil::opt_obj(item, ITEM, "formats")?.unwrap_or(item);
    let vresponse = jsonutil::get(formats_obj, "http-response");
    let vstream = jsonutil::get(formats_obj, "http-stream");
    let vws = jsonutil::get(formats_obj, "ws-message");
    if vresponse.is_none() && vstream.is_none() && vws.is_none() {
        return Err("no formats specified".to_owned());
    }
    let mut content_filters = ContentFilters::default();
    let formats = Formats {
        http_response: vresponse
            .map(|v| parse_http_response(v, &mut content_filters.http_response))
            .transpose()?,
        http_stream: vstream
            .map(|v| parse_http_stream(v, &mut content_filters.http_stream))
            .transpose()?,
        ws_message: vws
            .map(|v| parse_ws_message(v, &mut content_filters.ws_message))
            .transpose()?
            .flatten(),
        content_filters,
    };

    let meta = match jsonutil::opt_obj(item, ITEM, "meta")? {
        None => BTreeMap::new(),
        Some(m) => jsonutil::string_map(m, "meta")?,
    };
    // `size` only overrides stats accounting in Pushpin; validated and ignored.
    jsonutil::opt_uint(item, ITEM, "size")?;
    let no_seq = jsonutil::opt_bool(item, ITEM, "no-seq")?.unwrap_or(false);

    Ok(PublishItem {
        channel: channel.to_owned(),
        id,
        prev_id,
        meta,
        no_seq,
        formats,
    })
}

/// Publish actions as Pushpin parses them (before per-format validation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Send,
    Hint,
    Close,
    Refresh,
}

fn format_obj<'a>(v: &'a Value, pn: &str) -> Result<&'a Obj, String> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(format!("{pn} is not an object")),
    }
}

fn parse_action(obj: &Obj, pn: &str) -> Result<Action, String> {
    match jsonutil::opt_str(obj, pn, "action")? {
        None | Some("send") => Ok(Action::Send),
        Some("hint") => Ok(Action::Hint),
        Some("close") => Ok(Action::Close),
        Some("refresh") => Ok(Action::Refresh),
        // Pushpin's quirk: an unknown action yields an empty error text.
        Some(_) => Err(String::new()),
    }
}

fn content_filters(obj: &Obj, pn: &str, out: &mut Option<Vec<String>>) -> Result<(), String> {
    if let Some(list) = jsonutil::opt_list(obj, pn, "content-filters")? {
        *out = Some(jsonutil::string_list(
            list,
            "content-filters contains element with wrong type",
        )?);
    }
    Ok(())
}

fn decode_bin(b64: &str, pn: &str, key: &str) -> Result<Bytes, String> {
    jsonutil::decode_base64(b64)
        .map(Bytes::from)
        .ok_or_else(|| format!("{pn} contains '{key}' with invalid base64"))
}

fn parse_http_response(
    v: &Value,
    filters: &mut Option<Vec<String>>,
) -> Result<HttpResponseFormat, String> {
    let pn = HTTP_RESPONSE;
    let obj = format_obj(v, pn)?;
    let action = match parse_action(obj, pn)? {
        Action::Send => ResponseAction::Send,
        Action::Hint => ResponseAction::Hint,
        Action::Close => ResponseAction::Close,
        Action::Refresh => return Err(String::new()),
    };
    if action != ResponseAction::Send {
        // Pushpin does not look at the other fields for hint/close.
        return Ok(HttpResponseFormat {
            action,
            code: 200,
            reason: None,
            headers: Vec::new(),
            body: Bytes::new(),
        });
    }
    let code = match jsonutil::opt_int(obj, pn, "code")? {
        None => 200,
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| *c <= 999)
            .ok_or_else(|| jsonutil::invalid_value(pn, "code"))?,
    };
    let reason = jsonutil::opt_str(obj, pn, "reason")?
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let headers = match jsonutil::get(obj, "headers") {
        None => Vec::new(),
        Some(h) => jsonutil::headers(h, pn)?,
    };
    content_filters(obj, pn, filters)?;
    let body = if let Some(b64) = jsonutil::opt_str(obj, pn, "body-bin")? {
        decode_bin(b64, pn, "body-bin")?
    } else if let Some(body) = jsonutil::opt_str(obj, pn, "body")? {
        Bytes::copy_from_slice(body.as_bytes())
    } else if jsonutil::has(obj, "body-patch") {
        return Err(format!("{pn} body-patch is not supported"));
    } else {
        return Err(format!(
            "{pn} does not contain 'body', 'body-bin', or 'body-patch'"
        ));
    };
    Ok(HttpResponseFormat {
        action,
        code,
        reason,
        headers,
        body,
    })
}

fn parse_http_stream(
    v: &Value,
    filters: &mut Option<Vec<String>>,
) -> Result<HttpStreamFormat, String> {
    let pn = HTTP_STREAM;
    let obj = format_obj(v, pn)?;
    match parse_action(obj, pn)? {
        Action::Close => Ok(HttpStreamFormat::Close),
        Action::Hint => Ok(HttpStreamFormat::Hint),
        Action::Refresh => Err(String::new()),
        Action::Send => {
            content_filters(obj, pn, filters)?;
            if let Some(b64) = jsonutil::opt_str(obj, pn, "content-bin")? {
                Ok(HttpStreamFormat::Send(decode_bin(b64, pn, "content-bin")?))
            } else if let Some(content) = jsonutil::opt_str(obj, pn, "content")? {
                Ok(HttpStreamFormat::Send(Bytes::copy_from_slice(
                    content.as_bytes(),
                )))
            } else {
                Err(format!("{pn} does not contain 'content' or 'content-bin'"))
            }
        }
    }
}

/// `Ok(None)` for `"action":"hint"`, which Pushpin accepts and ignores for WebSockets.
fn parse_ws_message(
    v: &Value,
    filters: &mut Option<Vec<String>>,
) -> Result<Option<WsMessageFormat>, String> {
    let pn = WS_MESSAGE;
    let obj = format_obj(v, pn)?;
    match parse_action(obj, pn)? {
        Action::Hint => Ok(None),
        Action::Refresh => Ok(Some(WsMessageFormat::Refresh)),
        Action::Close => {
            let code = match jsonutil::opt_int(obj, pn, "code")? {
                None => None,
                Some(c) => Some(u16::try_from(c).map_err(|_| jsonutil::invalid_value(pn, "code"))?),
            };
            let reason = jsonutil::opt_str(obj, pn, "reason")?
                .unwrap_or("")
                .to_owned();
            Ok(Some(WsMessageFormat::Close { code, reason }))
        }
        Action::Send => {
            let kind = match jsonutil::opt_str(obj, pn, "type")? {
                None => None,
                Some(t) => Some(
                    parse_ws_type(t)
                        .ok_or_else(|| format!("{pn} contains 'type' with unknown value"))?,
                ),
            };
            content_filters(obj, pn, filters)?;
            let (kind, content) = if let Some(b64) = jsonutil::opt_str(obj, pn, "content-bin")? {
                (
                    kind.unwrap_or(WsMessageType::Binary),
                    decode_bin(b64, pn, "content-bin")?,
                )
            } else if let Some(content) = jsonutil::opt_str(obj, pn, "content")? {
                (
                    kind.unwrap_or(WsMessageType::Text),
                    Bytes::copy_from_slice(content.as_bytes()),
                )
            } else {
                match kind {
                    Some(k @ (WsMessageType::Ping | WsMessageType::Pong)) => (k, Bytes::new()),
                    _ => {
                        return Err(format!("{pn} does not contain 'content' or 'content-bin'"));
                    }
                }
            };
            Ok(Some(WsMessageFormat::Send { kind, content }))
        }
    }
}

/// Parses a WebSocket message type name: `text`, `binary`, `ping` or `pong`.
pub fn parse_ws_type(name: &str) -> Option<WsMessageType> {
    match name {
        "text" => Some(WsMessageType::Text),
        "binary" => Some(WsMessageType::Binary),
        "ping" => Some(WsMessageType::Ping),
        "pong" => Some(WsMessageType::Pong),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body_err(body: &str) -> String {
        parse_publish_body(body.as_bytes())
            .expect_err("should fail")
            .to_string()
    }

    fn item_err(item: Value) -> String {
        let body = json!({ "items": [item] }).to_string();
        body_err(&body)
    }

    fn one(item: Value) -> PublishItem {
        let body = json!({ "items": [item] }).to_string();
        let mut items = parse_publish_body(body.as_bytes()).expect("should parse");
        assert_eq!(items.len(), 1);
        items.remove(0)
    }

    // ---- body-level errors (conformance 27)

    #[test]
    fn conformance_27_body_errors() {
        assert_eq!(body_err("not json"), "Body is not valid JSON.");
        assert_eq!(body_err(""), "Body is not valid JSON.");
        assert_eq!(body_err("[]"), "Invalid format.");
        assert_eq!(body_err("\"x\""), "Invalid format.");
        assert_eq!(
            body_err("{}"),
            "Invalid format: object does not contain 'items'"
        );
        assert_eq!(
            body_err(r#"{"items":{}}"#),
            "Invalid format: object contains 'items' with wrong type"
        );
        assert_eq!(
            item_err(json!({"formats": {"http-stream": {"content": "x"}}})),
            "Invalid format: publish item object does not contain 'channel'"
        );
        assert_eq!(
            item_err(json!({"channel": "test"})),
            "Invalid format: no formats specified"
        );
    }

    #[test]
    fn error_kinds() {
        assert_eq!(PublishError::NotJson.kind(), "not_json");
        assert_eq!(PublishError::NotObject.kind(), "invalid_format");
        assert_eq!(PublishError::Invalid(String::new()).kind(), "invalid_item");
    }

    #[test]
    fn empty_items_is_ok() {
        assert_eq!(parse_publish_body(br#"{"items":[]}"#), Ok(vec![]));
    }

    #[test]
    fn item_errors_exact_texts() {
        let cases: Vec<(Value, &str)> = vec![
            (json!("x"), "publish item object is not an object"),
            (
                json!({"channel": 5, "formats": {"http-stream": {"content": "x"}}}),
                "publish item object contains 'channel' with wrong type",
            ),
            (
                json!({"channel": "", "formats": {"http-stream": {"content": "x"}}}),
                "publish item object contains 'channel' with invalid value",
            ),
            (
                json!({"channel": "c", "id": 1, "formats": {"http-stream": {"content": "x"}}}),
                "publish item object contains 'id' with wrong type",
            ),
            (
                json!({"channel": "c", "prev-id": [], "formats": {"http-stream": {"content": "x"}}}),
                "publish item object contains 'prev-id' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": "http-stream"}),
                "publish item object contains 'formats' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {}}),
                "no formats specified",
            ),
            (
                json!({"channel": "c", "formats": {"sse": {}}}),
                "no formats specified",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {}}}),
                "'http-stream' does not contain 'content' or 'content-bin'",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": "x"}}),
                "'http-stream' is not an object",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": 1}}}),
                "'http-stream' contains 'content' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content-bin": "***"}}}),
                "'http-stream' contains 'content-bin' with invalid base64",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {}}}),
                "'http-response' does not contain 'body', 'body-bin', or 'body-patch'",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body-patch": []}}}),
                "'http-response' body-patch is not supported",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": "x", "code": 1000}}}),
                "'http-response' contains 'code' with invalid value",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": "x", "code": -1}}}),
                "'http-response' contains 'code' with invalid value",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": "x", "code": "200"}}}),
                "'http-response' contains 'code' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": "x", "reason": 1}}}),
                "'http-response' contains 'reason' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": "x", "headers": 1}}}),
                "'http-response' contains 'headers' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": "x", "headers": [["a", 1]]}}}),
                "header contains value element with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body": 5}}}),
                "'http-response' contains 'body' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-response": {"body-bin": "a*b"}}}),
                "'http-response' contains 'body-bin' with invalid base64",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {}}}),
                "'ws-message' does not contain 'content' or 'content-bin'",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {"type": "text"}}}),
                "'ws-message' does not contain 'content' or 'content-bin'",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {"content": "x", "type": "blob"}}}),
                "'ws-message' contains 'type' with unknown value",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {"content-bin": 5}}}),
                "'ws-message' contains 'content-bin' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {"action": "close", "code": 70000}}}),
                "'ws-message' contains 'code' with invalid value",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {"action": "close", "code": "x"}}}),
                "'ws-message' contains 'code' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"ws-message": {"action": "close", "reason": 1}}}),
                "'ws-message' contains 'reason' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"action": 1}}}),
                "'http-stream' contains 'action' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": "x", "content-filters": "f"}}}),
                "'http-stream' contains 'content-filters' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": "x", "content-filters": [1]}}}),
                "content-filters contains element with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": "x"}}, "meta": []}),
                "publish item object contains 'meta' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": "x"}}, "meta": {"sender": 1}}),
                "'meta' contains 'sender' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": "x"}}, "no-seq": "yes"}),
                "publish item object contains 'no-seq' with wrong type",
            ),
            (
                json!({"channel": "c", "formats": {"http-stream": {"content": "x"}}, "size": -1}),
                "publish item object contains 'size' with invalid value",
            ),
        ];
        for (item, expect) in cases {
            assert_eq!(
                item_err(item.clone()),
                format!("Invalid format: {expect}"),
                "item {item}"
            );
        }
    }

    #[test]
    fn unknown_action_has_empty_text() {
        for f in ["http-response", "http-stream", "ws-message"] {
            let e = item_err(json!({"channel": "c", "formats": {f: {"action": "explode"}}}));
            assert_eq!(e, "Invalid format: ", "{f}");
            assert_eq!(format!("{e}\n"), "Invalid format: \n");
        }
        // `refresh` is only a ws-message action.
        for f in ["http-response", "http-stream"] {
            let e = item_err(json!({"channel": "c", "formats": {f: {"action": "refresh"}}}));
            assert_eq!(e, "Invalid format: ", "{f}");
        }
    }

    // ---- http-stream

    #[test]
    fn conformance_3_stream_publish() {
        let it = one(json!({"channel": "test", "formats": {"http-stream": {"content": "x\n"}}}));
        assert_eq!(
            it,
            PublishItem {
                channel: "test".into(),
                id: None,
                prev_id: None,
                meta: BTreeMap::new(),
                no_seq: false,
                formats: Formats {
                    http_stream: Some(HttpStreamFormat::Send(Bytes::from_static(b"x\n"))),
                    ..Formats::default()
                },
            }
        );
    }

    #[test]
    fn conformance_5_multi_item_order() {
        let items = parse_publish_body(
            br#"{"items":[{"channel":"m1","formats":{"http-stream":{"content":"one\n"}}},
                         {"channel":"m2","formats":{"http-stream":{"content":"two\n"}}}]}"#,
        )
        .expect("ok");
        let chans: Vec<_> = items.iter().map(|i| i.channel.as_str()).collect();
        assert_eq!(chans, ["m1", "m2"]);
        assert_eq!(
            items[1].formats.http_stream,
            Some(HttpStreamFormat::Send(Bytes::from_static(b"two\n")))
        );
    }

    #[test]
    fn conformance_6_stream_close_and_hint() {
        let it = one(json!({"channel": "test", "formats": {"http-stream": {"action": "close"}}}));
        assert_eq!(it.formats.http_stream, Some(HttpStreamFormat::Close));
        let it = one(json!({"channel": "test", "formats": {"http-stream": {"action": "hint"}}}));
        assert_eq!(it.formats.http_stream, Some(HttpStreamFormat::Hint));
    }

    #[test]
    fn conformance_7_content_bin() {
        let it = one(
            json!({"channel": "test", "formats": {"http-stream": {"content-bin": "QklOCg=="}}}),
        );
        assert_eq!(
            it.formats.http_stream,
            Some(HttpStreamFormat::Send(Bytes::from_static(b"BIN\n")))
        );
        // content-bin wins over content, as in Pushpin.
        let it = one(
            json!({"channel": "t", "formats": {"http-stream": {"content-bin": "aGk=", "content": "no"}}}),
        );
        assert_eq!(
            it.formats.http_stream,
            Some(HttpStreamFormat::Send(Bytes::from_static(b"hi")))
        );
    }

    #[test]
    fn conformance_28_atomic_batch() {
        let body = json!({"items": [
            {"channel": "ok", "formats": {"http-stream": {"content": "x"}}},
            {"channel": "bad"}
        ]})
        .to_string();
        assert_eq!(
            parse_publish_body(body.as_bytes()),
            Err(PublishError::Invalid("no formats specified".into()))
        );
    }

    #[test]
    fn conformance_29_legacy_shape() {
        let items =
            parse_publish_body(br#"{"items":[{"channel":"test","http-stream":{"content":"x"}}]}"#)
                .expect("ok");
        assert_eq!(
            items[0].formats.http_stream,
            Some(HttpStreamFormat::Send(Bytes::from_static(b"x")))
        );
        // All three legacy keys.
        let it = one(json!({
            "channel": "c",
            "http-response": {"body": "r"},
            "http-stream": {"content": "s"},
            "ws-message": {"content": "w"}
        }));
        assert!(it.formats.http_response.is_some());
        assert!(it.formats.http_stream.is_some());
        assert!(it.formats.ws_message.is_some());
        // When `formats` is present, top-level format keys are ignored.
        let it = one(json!({
            "channel": "c",
            "formats": {"ws-message": {"content": "w"}},
            "http-stream": {"content": "s"}
        }));
        assert!(it.formats.http_stream.is_none());
        assert!(it.formats.ws_message.is_some());
    }

    #[test]
    fn item_fields() {
        let it = one(json!({
            "channel": "c", "id": "2", "prev-id": "1", "no-seq": true, "size": 10,
            "meta": {"sender": "alice", "skip_users": "a,b"},
            "formats": {"http-stream": {"content": "x", "content-filters": ["build-id"]}}
        }));
        assert_eq!(it.id.as_deref(), Some("2"));
        assert_eq!(it.prev_id.as_deref(), Some("1"));
        assert!(it.no_seq);
        assert_eq!(it.meta.get("sender").map(String::as_str), Some("alice"));
        assert_eq!(it.meta.len(), 2);
        assert_eq!(
            it.formats.content_filters,
            ContentFilters {
                http_stream: Some(vec!["build-id".to_owned()]),
                ..ContentFilters::default()
            }
        );
        // null counts as absent.
        let it =
            one(json!({"channel": "c", "id": null, "formats": {"http-stream": {"content": "x"}}}));
        assert_eq!(it.id, None);
    }

    // ---- http-response

    #[test]
    fn http_response_full() {
        let it = one(json!({"channel": "resp", "formats": {"http-response": {
            "code": 201, "reason": "Made", "headers": {"X-Pub": "1"}, "body": "pushed\n"
        }}}));
        assert_eq!(
            it.formats.http_response,
            Some(HttpResponseFormat {
                action: ResponseAction::Send,
                code: 201,
                reason: Some("Made".into()),
                headers: vec![("X-Pub".into(), "1".into())],
                body: Bytes::from_static(b"pushed\n"),
            })
        );
    }

    #[test]
    fn http_response_defaults_body_bin_and_pair_headers() {
        let it = one(json!({"channel": "r", "formats": {"http-response": {"body-bin": "aGk="}}}));
        assert_eq!(
            it.formats.http_response,
            Some(HttpResponseFormat {
                action: ResponseAction::Send,
                code: 200,
                reason: None,
                headers: vec![],
                body: Bytes::from_static(b"hi"),
            })
        );
        let it = one(json!({"channel": "r", "formats": {"http-response": {
            "body": "", "headers": [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]], "code": 0
        }}}));
        let f = it.formats.http_response.expect("fmt");
        assert_eq!(f.code, 0);
        assert_eq!(
            f.headers,
            vec![
                ("Set-Cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into())
            ]
        );
        assert!(f.body.is_empty());
    }

    #[test]
    fn http_response_hint_and_close() {
        for (a, expect) in [
            ("hint", ResponseAction::Hint),
            ("close", ResponseAction::Close),
        ] {
            let it = one(json!({"channel": "r", "formats": {"http-response": {"action": a}}}));
            let f = it.formats.http_response.expect("fmt");
            assert_eq!(f.action, expect);
            assert!(f.body.is_empty());
            assert_eq!(f.code, 200);
        }
    }

    // ---- ws-message

    #[test]
    fn conformance_33_ws_publish() {
        let it =
            one(json!({"channel": "wstest", "formats": {"ws-message": {"content": "pushed-ws"}}}));
        assert_eq!(
            it.formats.ws_message,
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Text,
                content: Bytes::from_static(b"pushed-ws"),
            })
        );
        let it =
            one(json!({"channel": "wstest", "formats": {"ws-message": {"content-bin": "AAEC"}}}));
        assert_eq!(
            it.formats.ws_message,
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Binary,
                content: Bytes::from_static(&[0, 1, 2]),
            })
        );
    }

    #[test]
    fn ws_types() {
        let send = |v: Value| {
            one(json!({"channel": "c", "formats": {"ws-message": v}}))
                .formats
                .ws_message
        };
        assert_eq!(
            send(json!({"content": "x", "type": "binary"})),
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Binary,
                content: Bytes::from_static(b"x"),
            })
        );
        assert_eq!(
            send(json!({"content-bin": "eA==", "type": "text"})),
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Text,
                content: Bytes::from_static(b"x"),
            })
        );
        assert_eq!(
            send(json!({"type": "ping"})),
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Ping,
                content: Bytes::new(),
            })
        );
        assert_eq!(
            send(json!({"type": "pong", "content": "p"})),
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Pong,
                content: Bytes::from_static(b"p"),
            })
        );
        assert_eq!(
            send(json!({"action": "refresh"})),
            Some(WsMessageFormat::Refresh)
        );
    }

    #[test]
    fn conformance_35_ws_close() {
        let it = one(
            json!({"channel": "c", "formats": {"ws-message": {"action": "close", "code": 4001, "reason": "bye"}}}),
        );
        assert_eq!(
            it.formats.ws_message,
            Some(WsMessageFormat::Close {
                code: Some(4001),
                reason: "bye".into(),
            })
        );
        let it = one(json!({"channel": "c", "formats": {"ws-message": {"action": "close"}}}));
        assert_eq!(
            it.formats.ws_message,
            Some(WsMessageFormat::Close {
                code: None,
                reason: String::new(),
            })
        );
    }

    #[test]
    fn ws_hint_is_ignored() {
        // Alongside another format: the ws-message format is dropped.
        let it = one(json!({"channel": "c", "formats": {
            "ws-message": {"action": "hint"}, "http-stream": {"content": "x"}}}));
        assert_eq!(it.formats.ws_message, None);
        assert!(it.formats.http_stream.is_some());
        // Alone: accepted, but nothing to publish.
        let body =
            json!({"items": [{"channel": "c", "formats": {"ws-message": {"action": "hint"}}}]});
        assert_eq!(parse_publish_body(body.to_string().as_bytes()), Ok(vec![]));
        let it =
            parse_item(&json!({"channel": "c", "formats": {"ws-message": {"action": "hint"}}}))
                .expect("ok");
        assert_eq!(it.formats, Formats::default());
    }

    #[test]
    fn parse_item_direct() {
        let it = parse_item(&json!({"channel": "c", "http-stream": {"content": "x"}})).expect("ok");
        assert_eq!(it.channel, "c");
        assert_eq!(
            parse_item(&json!({"channel": "c"})),
            Err(PublishError::Invalid("no formats specified".into()))
        );
    }
}
