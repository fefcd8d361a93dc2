//! The `application/websocket-events` encoding of WebSocket-over-HTTP ([`WsEvent`],
//! [`encode_events`], [`decode_events`]), written independently of the code under test, and
//! origin responses that carry events.

use bytes::Bytes;

use super::{EVENTS_CONTENT_TYPE, lossy};
use crate::origin::OriginResponse;

/// One WebSocket-over-HTTP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// `OPEN`.
    Open,
    /// `TEXT` with its bytes.
    Text(Bytes),
    /// `BINARY` with its bytes.
    Binary(Bytes),
    /// `PING` (payload possibly empty).
    Ping(Bytes),
    /// `PONG` (payload possibly empty).
    Pong(Bytes),
    /// `CLOSE`: raw payload (2-byte big-endian code + UTF-8 reason, or empty).
    Close(Bytes),
    /// `DISCONNECT`.
    Disconnect,
}

impl WsEvent {
    /// A `TEXT` event.
    pub fn text(text: impl AsRef<str>) -> WsEvent {
        WsEvent::Text(Bytes::copy_from_slice(text.as_ref().as_bytes()))
    }

    /// A `BINARY` event.
    pub fn binary(data: impl AsRef<[u8]>) -> WsEvent {
        WsEvent::Binary(Bytes::copy_from_slice(data.as_ref()))
    }

    /// A GRIP data message: `TEXT` with the default `m:` prefix.
    pub fn message(text: impl AsRef<str>) -> WsEvent {
        WsEvent::text(format!("m:{}", text.as_ref()))
    }

    /// A GRIP control message: `TEXT` `c:` + the JSON.
    pub fn control(json: &serde_json::Value) -> WsEvent {
        WsEvent::text(format!("c:{json}"))
    }

    /// The GRIP control message subscribing the connection to `channel`.
    pub fn subscribe(channel: &str) -> WsEvent {
        WsEvent::control(&serde_json::json!({"type": "subscribe", "channel": channel}))
    }

    /// A `CLOSE` event with `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> WsEvent {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        WsEvent::Close(Bytes::from(payload))
    }

    /// The code and reason of a `CLOSE` event with a code.
    pub fn close_code_reason(&self) -> Option<(u16, String)> {
        match self {
            WsEvent::Close(p) if p.len() >= 2 => Some((
                u16::from_be_bytes([p[0], p[1]]),
                String::from_utf8_lossy(&p[2..]).into_owned(),
            )),
            _ => None,
        }
    }

    /// The text of a `TEXT` event (lossy UTF-8).
    pub fn as_text(&self) -> Option<String> {
        match self {
            WsEvent::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        }
    }

    /// The wire name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            WsEvent::Open => "OPEN",
            WsEvent::Text(_) => "TEXT",
            WsEvent::Binary(_) => "BINARY",
            WsEvent::Ping(_) => "PING",
            WsEvent::Pong(_) => "PONG",
            WsEvent::Close(_) => "CLOSE",
            WsEvent::Disconnect => "DISCONNECT",
        }
    }

    fn content(&self) -> Option<&Bytes> {
        match self {
            WsEvent::Open | WsEvent::Disconnect => None,
            WsEvent::Text(b) | WsEvent::Binary(b) => Some(b),
            // Pushpin writes these without content when the payload is empty.
            WsEvent::Ping(b) | WsEvent::Pong(b) | WsEvent::Close(b) => (!b.is_empty()).then_some(b),
        }
    }
}

/// Encodes events: `TYPE SP hex(len) CRLF content CRLF`, or `TYPE CRLF` without content.
pub fn encode_events(events: &[WsEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        out.extend_from_slice(event.type_name().as_bytes());
        match event.content() {
            Some(content) => {
                out.extend_from_slice(format!(" {:x}\r\n", content.len()).as_bytes());
                out.extend_from_slice(content);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"\r\n"),
        }
    }
    out
}

/// Decodes a websocket-events body; hex lengths in either case; content on `OPEN` and
/// `DISCONNECT` is tolerated and ignored.
pub fn decode_events(body: &[u8]) -> Result<Vec<WsEvent>, String> {
    let mut events = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| format!("event line without CRLF: {:?}", lossy(rest)))?;
        let line = std::str::from_utf8(&rest[..eol])
            .map_err(|_| format!("event line is not UTF-8: {:?}", lossy(&rest[..eol])))?;
        rest = &rest[eol + 2..];
        let (name, content) = match line.split_once(' ') {
            Some((name, hex)) => {
                let len = usize::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad hex length in {line:?}"))?;
                if rest.len() < len + 2 || &rest[len..len + 2] != b"\r\n" {
                    return Err(format!("content of {line:?} is truncated or lacks CRLF"));
                }
                let content = Bytes::copy_from_slice(&rest[..len]);
                rest = &rest[len + 2..];
                (name, content)
            }
            None => (line, Bytes::new()),
        };
        events.push(match name {
            "OPEN" => WsEvent::Open,
            "TEXT" => WsEvent::Text(content),
            "BINARY" => WsEvent::Binary(content),
            "PING" => WsEvent::Ping(content),
            "PONG" => WsEvent::Pong(content),
            "CLOSE" => WsEvent::Close(content),
            "DISCONNECT" => WsEvent::Disconnect,
            other => return Err(format!("unknown event type {other:?}")),
        });
    }
    Ok(events)
}

/// A `200` websocket-events response carrying `events` (no `grip` extension: plain relay).
pub fn events_response(events: &[WsEvent]) -> OriginResponse {
    OriginResponse::new(200)
        .header("Content-Type", EVENTS_CONTENT_TYPE)
        .body(encode_events(events))
}

/// Like [`events_response`], with `Sec-WebSocket-Extensions: grip` (GRIP mode).
pub fn grip_events_response(events: &[WsEvent]) -> OriginResponse {
    events_response(events).header("Sec-WebSocket-Extensions", "grip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_match_pushpin_bytes() {
        let events = vec![
            WsEvent::Open,
            WsEvent::text("hi"),
            WsEvent::binary([0u8, 13, 10, 255]),
            WsEvent::close(4000, "client-bye"),
            WsEvent::Ping(Bytes::new()),
            WsEvent::Disconnect,
        ];
        let body = encode_events(&events);
        assert_eq!(
            body,
            b"OPEN\r\nTEXT 2\r\nhi\r\nBINARY 4\r\n\x00\r\n\xff\r\nCLOSE c\r\n\x0f\xa0client-bye\r\nPING\r\nDISCONNECT\r\n"
                .to_vec()
        );
        assert_eq!(decode_events(&body), Ok(events));
        assert_eq!(
            decode_events(b"TEXT A\r\n0123456789\r\n"),
            Ok(vec![WsEvent::text("0123456789")])
        );
        assert!(decode_events(b"TEXT zz\r\n").is_err());
        assert!(decode_events(b"TEXT 5\r\nab\r\n").is_err());
        assert_eq!(
            WsEvent::close(4000, "client-bye").close_code_reason(),
            Some((4000, "client-bye".to_string()))
        );
    }

    #[test]
    fn subscribe_event_is_the_case_33_bytes() {
        // 0x29 = 41 bytes, whatever the key order of the JSON object.
        let body = encode_events(&[WsEvent::subscribe("wstest")]);
        assert!(body.starts_with(b"TEXT 29\r\nc:{"), "{:?}", lossy(&body));
        let decoded = decode_events(&body).expect("own encoding decodes");
        let text = decoded[0].as_text().expect("a TEXT event");
        let json: serde_json::Value =
            serde_json::from_str(&text["c:".len()..]).expect("control JSON");
        assert_eq!(
            json,
            serde_json::json!({"type": "subscribe", "channel": "wstest"})
        );
    }
}
