//! The `application/websocket-events` codec (WebSocket-over-HTTP).
//!
//! A body is a concatenation of events. One event is `TYPE SP hex(len) CRLF content CRLF`, or
//! `TYPE CRLF` when it has no content. Types: `OPEN`, `TEXT`, `BINARY`, `PING`, `PONG`, `CLOSE`,
//! `DISCONNECT`. `CLOSE` content is a 2-byte big-endian close code followed by the UTF-8 reason.
//!
//! [`encode`] writes lowercase hex like Pushpin; [`decode`] accepts either case, ignores content
//! on `OPEN`/`DISCONNECT`, and never panics or allocates in proportion to a claimed length:
//! contents are zero-copy [`Bytes::slice`]s of the input body.

use bytes::{BufMut, Bytes, BytesMut};

/// Content-Type (and Accept) of WebSocket-over-HTTP requests and responses.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// One WebSocket-over-HTTP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// Connection opened (first request) / accepted (first response).
    Open,
    /// A text message (the bytes are expected, not checked, to be UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (payload may be empty).
    Ping(Bytes),
    /// A pong (payload may be empty).
    Pong(Bytes),
    /// A close: raw close-frame payload, i.e. 2-byte big-endian code + UTF-8 reason, or empty
    /// for a close without a code. Build one with [`WsEvent::close`], read it with
    /// [`close_code_reason`].
    Close(Bytes),
    /// The connection was lost without a close handshake (or must be dropped, from the origin).
    Disconnect,
}

impl WsEvent {
    /// A `CLOSE` event carrying `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> WsEvent {
        let mut buf = BytesMut::with_capacity(2 + reason.len());
        buf.put_u16(code);
        buf.put_slice(reason.as_bytes());
        WsEvent::Close(buf.freeze())
    }

    /// The wire name of the event type (`"OPEN"`, `"TEXT"`, ...).
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

    /// The event's content (`None` for `OPEN` and `DISCONNECT`).
    pub fn content(&self) -> Option<&Bytes> {
        match self {
            WsEvent::Text(b)
            | WsEvent::Binary(b)
            | WsEvent::Ping(b)
            | WsEvent::Pong(b)
            | WsEvent::Close(b) => Some(b),
            WsEvent::Open | WsEvent::Disconnect => None,
        }
    }

    /// Number of bytes [`encode`] writes for this event.
    pub fn encoded_len(&self) -> usize {
        let name = self.type_name().len();
        match self.wire_content() {
            None => name + 2,
            Some(c) => name + 1 + hex_digits(c.len()) + 2 + c.len() + 2,
        }
    }

    /// Content as written on the wire: `TEXT`/`BINARY` always carry a length (even 0, so an
    /// empty message stays a message); `PING`/`PONG`/`CLOSE` only when non-empty (Pushpin
    /// sends a bare `CLOSE\r\n` for a close without code).
    fn wire_content(&self) -> Option<&Bytes> {
        match self {
            WsEvent::Text(b) | WsEvent::Binary(b) => Some(b),
            WsEvent::Ping(b) | WsEvent::Pong(b) | WsEvent::Close(b) if !b.is_empty() => Some(b),
            _ => None,
        }
    }
}

/// Splits a `CLOSE` payload into code and reason. `None` when the payload has no code (empty,
/// or a malformed single byte). Invalid UTF-8 in the reason is replaced (lossy).
pub fn close_code_reason(payload: &[u8]) -> Option<(u16, String)> {
    let (code, reason) = payload.split_first_chunk::<2>()?;
    Some((
        u16::from_be_bytes(*code),
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

fn hex_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 16 {
        n >>= 4;
        d += 1;
    }
    d
}

/// Appends the encoding of `events` to `out`.
pub fn encode(events: &[WsEvent], out: &mut BytesMut) {
    out.reserve(events.iter().map(WsEvent::encoded_len).sum());
    for ev in events {
        out.put_slice(ev.type_name().as_bytes());
        match ev.wire_content() {
            None => out.put_slice(b"\r\n"),
            Some(c) => {
                out.put_u8(b' ');
                write_hex(c.len(), out);
                out.put_slice(b"\r\n");
                out.put_slice(c);
                out.put_slice(b"\r\n");
            }
        }
    }
}

/// True when `headers` declare an `application/websocket-events` body (parameters ignored).
pub fn is_events_body(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// The answer of a GRIP echo origin (gripmesh's built-in `test` target, the load tool's
/// origin): `OPEN` ⇒ `OPEN` and a `c:` message subscribing the connection to `channel`;
/// `TEXT`/`BINARY` ⇒ echoed with the `m:` prefix; `CLOSE` ⇒ echoed; the rest ⇒ nothing.
pub fn echo_answer(events: &[WsEvent], channel: &str) -> Vec<WsEvent> {
    use crate::wscontrol::{CONTROL_PREFIX, DEFAULT_MESSAGE_PREFIX};
    let prefixed = |prefix: &[u8], data: &[u8]| {
        let mut m = BytesMut::with_capacity(prefix.len() + data.len());
        m.put_slice(prefix);
        m.put_slice(data);
        m.freeze()
    };
    let mut out = Vec::new();
    for ev in events {
        match ev {
            WsEvent::Open => {
                out.push(WsEvent::Open);
                let sub = serde_json::json!({"type": "subscribe", "channel": channel});
                out.push(WsEvent::Text(prefixed(
                    CONTROL_PREFIX,
                    sub.to_string().as_bytes(),
                )));
            }
            WsEvent::Text(t) => out.push(WsEvent::Text(prefixed(DEFAULT_MESSAGE_PREFIX, t))),
            WsEvent::Binary(b) => out.push(WsEvent::Binary(prefixed(DEFAULT_MESSAGE_PREFIX, b))),
            WsEvent::Close(p) => out.push(WsEvent::Close(p.clone())),
            WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Disconnect => {}
        }
    }
    out
}

/// Encodes `events` into a fresh buffer.
pub fn encode_to_bytes(events: &[WsEvent]) -> Bytes {
    let mut out = BytesMut::new();
    encode(events, &mut out);
    out.freeze()
}

fn write_hex(n: usize, out: &mut BytesMut) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = hex_digits(n);
    for i in (0..digits).rev() {
        out.put_u8(DIGITS[(n >> (4 * i)) & 0xf]);
    }
}

/// Why a websocket-events body was rejected. `offset` is the byte offset in the body where the
/// offending event starts (or where the problem was found).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsEventsError {
    /// The event type is not one of the seven known types.
    #[error("unknown event type at offset {offset}")]
    UnknownType {
        /// Byte offset of the event.
        offset: usize,
    },
    /// The hex length is empty, not hex, or larger than the body.
    #[error("bad content length at offset {offset}")]
    BadLength {
        /// Byte offset of the length.
        offset: usize,
    },
    /// The body ends in the middle of an event.
    #[error("truncated event at offset {offset}")]
    Truncated {
        /// Byte offset of the event.
        offset: usize,
    },
    /// A CRLF was expected but something else was found.
    #[error("expected CRLF at offset {offset}")]
    MissingCrlf {
        /// Byte offset where the CRLF was expected.
        offset: usize,
    },
}

/// Longest type name (`DISCONNECT`).
const MAX_TYPE_LEN: usize = 10;
/// More hex digits than this cannot describe a length that fits in a body we would accept.
const MAX_HEX_DIGITS: usize = 15;

/// Decodes a whole body. An empty body decodes to no events.
pub fn decode(body: Bytes) -> Result<Vec<WsEvent>, WsEventsError> {
    let b: &[u8] = &body;
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        // Type name, up to SP or CR.
        let window = &b[pos..b.len().min(pos + MAX_TYPE_LEN + 1)];
        let Some(name_len) = window.iter().position(|&c| c == b' ' || c == b'\r') else {
            return Err(if window.len() <= MAX_TYPE_LEN {
                WsEventsError::Truncated { offset: start }
            } else {
                WsEventsError::UnknownType { offset: start }
            });
        };
        let name = &b[pos..pos + name_len];
        pos += name_len;

        let content = if b[pos] == b' ' {
            pos += 1;
            let len_at = pos;
            let digits_end = b[pos..]
                .iter()
                .position(|&c| !c.is_ascii_hexdigit())
                .map_or(b.len(), |i| pos + i);
            let digits = &b[pos..digits_end];
            if digits.is_empty() || digits.len() > MAX_HEX_DIGITS {
                return Err(if digits_end == b.len() && digits.is_empty() {
                    WsEventsError::Truncated { offset: start }
                } else {
                    WsEventsError::BadLength { offset: len_at }
                });
            }
            // At most 15 digits: fits in a u64 without overflow.
            let len = digits
                .iter()
                .fold(0u64, |acc, &c| (acc << 4) | u64::from(hex_val(c)));
            pos = digits_end;
            expect_crlf(b, &mut pos, start)?;
            let len = match usize::try_from(len) {
                Ok(len) if len <= b.len() - pos => len,
                _ => return Err(WsEventsError::Truncated { offset: start }),
            };
            let content = body.slice(pos..pos + len);
            pos += len;
            expect_crlf(b, &mut pos, start)?;
            Some(content)
        } else {
            expect_crlf(b, &mut pos, start)?;
            None
        };

        let content = || content.clone().unwrap_or_default();
        let ev = match name {
            b"OPEN" => WsEvent::Open,
            b"TEXT" => WsEvent::Text(content()),
            b"BINARY" => WsEvent::Binary(content()),
            b"PING" => WsEvent::Ping(content()),
            b"PONG" => WsEvent::Pong(content()),
            b"CLOSE" => WsEvent::Close(content()),
            b"DISCONNECT" => WsEvent::Disconnect,
            _ => return Err(WsEventsError::UnknownType { offset: start }),
        };
        events.push(ev);
    }
    Ok(events)
}

fn expect_crlf(b: &[u8], pos: &mut usize, start: usize) -> Result<(), WsEventsError> {
    match b.get(*pos..*pos + 2) {
        Some(b"\r\n") => {
            *pos += 2;
            Ok(())
        }
        // `\r` at the very end, or nothing left: the body was cut short.
        None => Err(WsEventsError::Truncated { offset: start }),
        Some(_) => Err(WsEventsError::MissingCrlf { offset: *pos }),
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(events: &[WsEvent]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(events, &mut out);
        out.to_vec()
    }

    fn dec(body: &[u8]) -> Result<Vec<WsEvent>, WsEventsError> {
        decode(Bytes::copy_from_slice(body))
    }

    #[test]
    fn conformance_30_open() {
        assert_eq!(enc(&[WsEvent::Open]), b"OPEN\r\n");
        assert_eq!(dec(b"OPEN\r\n"), Ok(vec![WsEvent::Open]));
    }

    #[test]
    fn conformance_32_text() {
        assert_eq!(
            enc(&[WsEvent::Text(Bytes::from_static(b"hi"))]),
            b"TEXT 2\r\nhi\r\n"
        );
        assert_eq!(
            dec(b"TEXT 9\r\nm:echo:hi\r\n"),
            Ok(vec![WsEvent::Text(Bytes::from_static(b"m:echo:hi"))])
        );
    }

    #[test]
    fn conformance_33_open_plus_subscribe() {
        let c = br#"c:{"type":"subscribe","channel":"wstest"}"#;
        assert_eq!(c.len(), 0x29);
        let mut body = b"OPEN\r\nTEXT 29\r\n".to_vec();
        body.extend_from_slice(c);
        body.extend_from_slice(b"\r\n");
        assert_eq!(
            dec(&body),
            Ok(vec![WsEvent::Open, WsEvent::Text(Bytes::from_static(c))])
        );
        assert_eq!(
            enc(&[WsEvent::Open, WsEvent::Text(Bytes::from_static(c))]),
            body
        );
    }

    #[test]
    fn conformance_36_client_close_and_disconnect() {
        let ev = WsEvent::close(4000, "client-bye");
        assert_eq!(
            enc(std::slice::from_ref(&ev)),
            b"CLOSE c\r\n\x0f\xa0client-bye\r\n"
        );
        assert_eq!(
            dec(b"CLOSE c\r\n\x0f\xa0client-bye\r\n"),
            Ok(vec![ev.clone()])
        );
        let WsEvent::Close(payload) = &ev else {
            panic!("not a close")
        };
        assert_eq!(
            close_code_reason(payload),
            Some((4000, "client-bye".to_owned()))
        );
        assert_eq!(enc(&[WsEvent::Disconnect]), b"DISCONNECT\r\n");
        assert_eq!(dec(b"DISCONNECT\r\n"), Ok(vec![WsEvent::Disconnect]));
    }

    #[test]
    fn conformance_35_bare_close() {
        assert_eq!(enc(&[WsEvent::Close(Bytes::new())]), b"CLOSE\r\n");
        assert_eq!(dec(b"CLOSE\r\n"), Ok(vec![WsEvent::Close(Bytes::new())]));
    }

    #[test]
    fn close_helpers() {
        assert_eq!(close_code_reason(b""), None);
        assert_eq!(close_code_reason(b"\x03"), None);
        assert_eq!(close_code_reason(b"\x03\xe8"), Some((1000, String::new())));
        assert_eq!(
            close_code_reason(b"\x03\xe8a\xffb"),
            Some((1000, "a\u{fffd}b".to_owned()))
        );
        assert_eq!(
            WsEvent::close(1012, "service restart"),
            WsEvent::Close(Bytes::from_static(b"\x03\xf4service restart"))
        );
    }

    #[test]
    fn empty_payload_forms() {
        // TEXT/BINARY always carry a length; PING/PONG only when non-empty.
        assert_eq!(enc(&[WsEvent::Text(Bytes::new())]), b"TEXT 0\r\n\r\n");
        assert_eq!(enc(&[WsEvent::Binary(Bytes::new())]), b"BINARY 0\r\n\r\n");
        assert_eq!(enc(&[WsEvent::Ping(Bytes::new())]), b"PING\r\n");
        assert_eq!(enc(&[WsEvent::Pong(Bytes::new())]), b"PONG\r\n");
        assert_eq!(
            enc(&[WsEvent::Ping(Bytes::from_static(b"p"))]),
            b"PING 1\r\np\r\n"
        );
        assert_eq!(dec(b"TEXT\r\n"), Ok(vec![WsEvent::Text(Bytes::new())]));
        assert_eq!(dec(b"PING\r\n"), Ok(vec![WsEvent::Ping(Bytes::new())]));
        assert_eq!(
            dec(b"PONG 0\r\n\r\n"),
            Ok(vec![WsEvent::Pong(Bytes::new())])
        );
    }

    #[test]
    fn lowercase_hex_out_any_case_in() {
        let content = Bytes::from(vec![b'x'; 0xab]);
        let out = enc(&[WsEvent::Binary(content.clone())]);
        assert!(out.starts_with(b"BINARY ab\r\n"));
        let mut upper = b"BINARY AB\r\n".to_vec();
        upper.extend_from_slice(&content);
        upper.extend_from_slice(b"\r\n");
        assert_eq!(dec(&upper), Ok(vec![WsEvent::Binary(content.clone())]));
        let mut mixed = b"BINARY 0aB\r\n".to_vec();
        mixed.extend_from_slice(&content);
        mixed.extend_from_slice(b"\r\n");
        assert_eq!(dec(&mixed), Ok(vec![WsEvent::Binary(content)]));
    }

    #[test]
    fn content_on_open_and_disconnect_is_ignored() {
        assert_eq!(
            dec(b"OPEN 3\r\nabc\r\nDISCONNECT 1\r\nx\r\n"),
            Ok(vec![WsEvent::Open, WsEvent::Disconnect])
        );
    }

    #[test]
    fn round_trip_all_types() {
        let events = vec![
            WsEvent::Open,
            WsEvent::Text(Bytes::from_static(b"hello\r\nworld")),
            WsEvent::Binary(Bytes::from(
                (0..=255u8).cycle().take(5000).collect::<Vec<u8>>(),
            )),
            WsEvent::Ping(Bytes::from_static(b"p")),
            WsEvent::Pong(Bytes::from_static(b"q")),
            WsEvent::Ping(Bytes::new()),
            WsEvent::Text(Bytes::new()),
            WsEvent::close(1000, ""),
            WsEvent::Close(Bytes::new()),
            WsEvent::Disconnect,
        ];
        let mut out = BytesMut::new();
        encode(&events, &mut out);
        assert_eq!(
            out.len(),
            events.iter().map(WsEvent::encoded_len).sum::<usize>()
        );
        assert_eq!(decode(out.freeze()), Ok(events.clone()));
        assert_eq!(decode(encode_to_bytes(&events)), Ok(events));
    }

    #[test]
    fn encode_appends() {
        let mut out = BytesMut::from(&b"PREFIX"[..]);
        encode(&[WsEvent::Open], &mut out);
        assert_eq!(&out[..], b"PREFIXOPEN\r\n");
    }

    #[test]
    fn decoded_content_is_zero_copy() {
        let body = Bytes::from_static(b"TEXT 3\r\nabc\r\n");
        let events = decode(body.clone()).expect("ok");
        let WsEvent::Text(t) = &events[0] else {
            panic!("not text")
        };
        assert_eq!(t.as_ptr(), body[8..].as_ptr());
    }

    #[test]
    fn empty_body() {
        assert_eq!(dec(b""), Ok(vec![]));
    }

    #[test]
    fn type_names_and_content() {
        assert_eq!(WsEvent::Open.type_name(), "OPEN");
        assert_eq!(WsEvent::Disconnect.content(), None);
        assert_eq!(
            WsEvent::Pong(Bytes::from_static(b"z")).content(),
            Some(&Bytes::from_static(b"z"))
        );
    }

    #[test]
    fn errors() {
        use WsEventsError::*;
        let cases: &[(&[u8], WsEventsError)] = &[
            (b"FOO\r\n", UnknownType { offset: 0 }),
            (b"open\r\n", UnknownType { offset: 0 }),
            (b"OPEN\r\nWHATEVER 1\r\nx\r\n", UnknownType { offset: 6 }),
            (b"AVERYLONGTYPENAME\r\n", UnknownType { offset: 0 }),
            (b"OPEN", Truncated { offset: 0 }),
            (b"OPEN\r", Truncated { offset: 0 }),
            (b"OPEN\n", Truncated { offset: 0 }),
            (b"OPEN\rX", MissingCrlf { offset: 4 }),
            (b"OPEN\r\nOP", Truncated { offset: 6 }),
            (b"TEXT \r\n", BadLength { offset: 5 }),
            (b"TEXT ", Truncated { offset: 0 }),
            (b"TEXT xyz\r\n", BadLength { offset: 5 }),
            (b"TEXT -1\r\n", BadLength { offset: 5 }),
            (b"TEXT 2 \r\nhi\r\n", MissingCrlf { offset: 6 }),
            (b"TEXT 2\nhi\r\n", MissingCrlf { offset: 6 }),
            (b"TEXT 2\r\nh", Truncated { offset: 0 }),
            (b"TEXT 2\r\nhi", Truncated { offset: 0 }),
            (b"TEXT 2\r\nhi\r", Truncated { offset: 0 }),
            (b"TEXT 2\r\nhiXY", MissingCrlf { offset: 10 }),
            (b"TEXT 1\r\nhi\r\n", MissingCrlf { offset: 9 }),
            (b"TEXT ffffffffffffffff\r\n", BadLength { offset: 5 }),
            (b"TEXT fffffffffffffff\r\nx\r\n", Truncated { offset: 0 }),
            (b"TEXT 7fffffff\r\nx\r\n", Truncated { offset: 0 }),
            (b"TEXT 2\r\n", Truncated { offset: 0 }),
            (b"\r\n", UnknownType { offset: 0 }),
            (b" 2\r\nhi\r\n", UnknownType { offset: 0 }),
        ];
        for (body, expect) in cases {
            assert_eq!(
                dec(body).as_ref(),
                Err(expect),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            UnknownType { offset: 3 }.to_string(),
            "unknown event type at offset 3"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random bodies, plus every prefix of a valid body.
        let valid = enc(&[
            WsEvent::Open,
            WsEvent::Text(Bytes::from_static(b"hi")),
            WsEvent::close(4000, "bye"),
            WsEvent::Disconnect,
        ]);
        for n in 0..valid.len() {
            let r = dec(&valid[..n]);
            // Prefixes that end on an event boundary decode; others must fail cleanly.
            if let Ok(evs) = r {
                assert!(evs.len() <= 4);
            }
        }
        assert!(dec(&valid).is_ok());
        let mut seed: u32 = 0x1234_5678;
        let alphabet = b"OPENTXBIYGCLSDAR 0123456789abcdefF\r\n\xff";
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 40) as usize;
            let mut body = Vec::with_capacity(len);
            let mut s = seed;
            for _ in 0..len {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                body.push(alphabet[(s >> 16) as usize % alphabet.len()]);
            }
            let _ = dec(&body);
        }
    }

    #[test]
    fn events_body_detection_ignores_case_and_parameters() {
        let mut h = http::HeaderMap::new();
        assert!(!is_events_body(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("Application/WebSocket-Events; charset=utf-8"),
        );
        assert!(is_events_body(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/websocket-eventsX"),
        );
        assert!(!is_events_body(&h));
    }

    #[test]
    fn echo_answer_subscribes_on_open_and_prefixes_messages() {
        let out = echo_answer(
            &[
                WsEvent::Open,
                WsEvent::Text(Bytes::from_static(b"hi")),
                WsEvent::Binary(Bytes::from_static(b"\x00\x01")),
                WsEvent::Ping(Bytes::new()),
                WsEvent::close(1000, "bye"),
            ],
            "ch",
        );
        assert_eq!(out[0], WsEvent::Open);
        let WsEvent::Text(sub) = &out[1] else {
            panic!("expected the subscribe message, got {:?}", out[1]);
        };
        let json: serde_json::Value =
            serde_json::from_slice(sub.strip_prefix(b"c:").unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"type": "subscribe", "channel": "ch"})
        );
        assert_eq!(out[2], WsEvent::Text(Bytes::from_static(b"m:hi")));
        assert_eq!(out[3], WsEvent::Binary(Bytes::from_static(b"m:\x00\x01")));
        assert_eq!(out[4], WsEvent::close(1000, "bye"));
        assert_eq!(out.len(), 5);
    }
}
