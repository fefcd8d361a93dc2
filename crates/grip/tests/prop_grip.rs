//! Property tests for the GRIP parsers (docs/architecture.md, "Testing ladder", step 2): round trips for the
//! websocket-events codec, publish JSON and Grip-Sig, and "never panics" for every parser that
//! reads bytes from the network, over arbitrary bytes and over structured near-valid input.
//!
//! The deep search is the fuzz targets' job (`fuzz/`); these run in the normal test suite, so
//! the case counts stay modest.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use grip::instruct::{self, MAX_FILTERS_PER_CHANNEL, MIN_HOLD_TIMEOUT_SECS};
use grip::publish::{
    self, Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction,
    WsMessageFormat, WsMessageType,
};
use grip::sig::{self, SigError, SigKey};
use grip::wscontrol;
use grip::wsevents::{self, WsEvent};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Failures print the minimal input; no regression files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

// ---------------------------------------------------------------------------------------------
// websocket-events

fn ws_event() -> impl Strategy<Value = WsEvent> {
    prop_oneof![
        Just(WsEvent::Open),
        Just(WsEvent::Disconnect),
        bytes_up_to(300).prop_map(WsEvent::Text),
        bytes_up_to(300).prop_map(WsEvent::Binary),
        bytes_up_to(40).prop_map(WsEvent::Ping),
        bytes_up_to(40).prop_map(WsEvent::Pong),
        bytes_up_to(40).prop_map(WsEvent::Close),
        (any::<u16>(), "\\PC{0,20}").prop_map(|(code, reason)| WsEvent::close(code, &reason)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Publish items, and their rendering as Pushpin publish JSON

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including quotes, backslashes and control characters (JSON escapes them).
    "(?s).{0,16}"
}

fn non_empty_text() -> impl Strategy<Value = String> {
    "(?s).{1,16}"
}

fn http_response() -> impl Strategy<Value = HttpResponseFormat> {
    let send = (
        0u16..=999,
        proptest::option::of(non_empty_text()),
        prop::collection::vec((text(), text()), 0..4),
        bytes_up_to(64),
    )
        .prop_map(|(code, reason, headers, body)| HttpResponseFormat {
            action: ResponseAction::Send,
            code,
            reason,
            headers,
            body,
        });
    let bare = |action| HttpResponseFormat {
        action,
        code: 200,
        reason: None,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    prop_oneof![
        4 => send,
        1 => Just(bare(ResponseAction::Hint)),
        1 => Just(bare(ResponseAction::Close)),
    ]
}

fn http_stream() -> impl Strategy<Value = HttpStreamFormat> {
    prop_oneof![
        4 => bytes_up_to(64).prop_map(HttpStreamFormat::Send),
        1 => Just(HttpStreamFormat::Close),
        1 => Just(HttpStreamFormat::Hint),
    ]
}

fn ws_type() -> impl Strategy<Value = WsMessageType> {
    prop_oneof![
        Just(WsMessageType::Text),
        Just(WsMessageType::Binary),
        Just(WsMessageType::Ping),
        Just(WsMessageType::Pong),
    ]
}

fn ws_message() -> impl Strategy<Value = WsMessageFormat> {
    prop_oneof![
        4 => (ws_type(), bytes_up_to(64))
            .prop_map(|(kind, content)| WsMessageFormat::Send { kind, content }),
        1 => (proptest::option::of(any::<u16>()), text())
            .prop_map(|(code, reason)| WsMessageFormat::Close { code, reason }),
        1 => Just(WsMessageFormat::Refresh),
    ]
}

fn formats() -> impl Strategy<Value = Formats> {
    (
        proptest::option::of(http_response()),
        proptest::option::of(http_stream()),
        proptest::option::of(ws_message()),
    )
        .prop_map(|(http_response, http_stream, ws_message)| Formats {
            http_response,
            http_stream,
            ws_message,
            content_filters: Default::default(),
        })
        .prop_filter("at least one format", |f| {
            f.http_response.is_some() || f.http_stream.is_some() || f.ws_message.is_some()
        })
}

fn publish_item() -> impl Strategy<Value = PublishItem> {
    (
        non_empty_text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        prop::collection::btree_map(text(), text(), 0..3),
        any::<bool>(),
        formats(),
    )
        .prop_map(
            |(channel, id, prev_id, meta, no_seq, formats)| PublishItem {
                channel,
                id,
                prev_id,
                meta,
                no_seq,
                formats,
            },
        )
}

/// How an item is rendered: which of the equivalent JSON spellings to use.
#[derive(Debug, Clone, Copy)]
struct Spelling {
    /// Format keys at the top level of the item instead of under `formats` (legacy shape).
    legacy: bool,
    /// Text as `body`/`content` when it is UTF-8 (else always base64 `-bin`).
    prefer_text: bool,
    /// Headers as an object when the names are unique (else always a list of pairs).
    headers_as_object: bool,
    /// Write defaults explicitly (`"action":"send"`, `"code":200`, `"no-seq":false`).
    explicit_defaults: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(legacy, prefer_text, headers_as_object, explicit_defaults)| Spelling {
            legacy,
            prefer_text,
            headers_as_object,
            explicit_defaults,
        },
    )
}

/// Puts `data` under `text_key` (UTF-8, when preferred) or base64 under `bin_key`.
fn put_data(obj: &mut Map<String, Value>, s: Spelling, text_key: &str, bin_key: &str, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(t) if s.prefer_text => obj.insert(text_key.into(), json!(t)),
        _ => obj.insert(bin_key.into(), json!(STANDARD.encode(data))),
    };
}

fn render_http_response(r: &HttpResponseFormat, s: Spelling) -> Value {
    let mut o = Map::new();
    match r.action {
        ResponseAction::Hint => return json!({"action": "hint"}),
        ResponseAction::Close => return json!({"action": "close"}),
        ResponseAction::Send => {}
    }
    if s.explicit_defaults {
        o.insert("action".into(), json!("send"));
    }
    if r.code != 200 || s.explicit_defaults {
        o.insert("code".into(), json!(r.code));
    }
    if let Some(reason) = &r.reason {
        o.insert("reason".into(), json!(reason));
    }
    let unique_names = {
        let mut names: Vec<&String> = r.headers.iter().map(|(n, _)| n).collect();
        names.sort();
        names.windows(2).all(|w| w[0] != w[1])
    };
    if s.headers_as_object && unique_names {
        // Inserted in name order, so the parsed order is name order whether serde_json's map
        // keeps insertion order or sorts (`expected` sorts the same way).
        let mut sorted = r.headers.clone();
        sorted.sort();
        let map: Map<String, Value> = sorted.into_iter().map(|(n, v)| (n, json!(v))).collect();
        o.insert("headers".into(), Value::Object(map));
    } else if !r.headers.is_empty() || s.explicit_defaults {
        let pairs: Vec<Value> = r.headers.iter().map(|(n, v)| json!([n, v])).collect();
        o.insert("headers".into(), Value::Array(pairs));
    }
    put_data(&mut o, s, "body", "body-bin", &r.body);
    Value::Object(o)
}

fn render_http_stream(f: &HttpStreamFormat, s: Spelling) -> Value {
    match f {
        HttpStreamFormat::Close => json!({"action": "close"}),
        HttpStreamFormat::Hint => json!({"action": "hint"}),
        HttpStreamFormat::Send(content) => {
            let mut o = Map::new();
            if s.explicit_defaults {
                o.insert("action".into(), json!("send"));
            }
            put_data(&mut o, s, "content", "content-bin", content);
            Value::Object(o)
        }
    }
}

fn type_name(kind: WsMessageType) -> &'static str {
    match kind {
        WsMessageType::Text => "text",
        WsMessageType::Binary => "binary",
        WsMessageType::Ping => "ping",
        WsMessageType::Pong => "pong",
    }
}

fn render_ws_message(f: &WsMessageFormat, s: Spelling) -> Value {
    match f {
        WsMessageFormat::Refresh => json!({"action": "refresh"}),
        WsMessageFormat::Close { code, reason } => {
            let mut o = Map::new();
            o.insert("action".into(), json!("close"));
            if let Some(code) = code {
                o.insert("code".into(), json!(code));
            }
            if !reason.is_empty() || s.explicit_defaults {
                o.insert("reason".into(), json!(reason));
            }
            Value::Object(o)
        }
        WsMessageFormat::Send { kind, content } => {
            let mut o = Map::new();
            // `type` is always given: the default depends on content vs content-bin.
            o.insert("type".into(), json!(type_name(*kind)));
            put_data(&mut o, s, "content", "content-bin", content);
            Value::Object(o)
        }
    }
}

fn render_item(item: &PublishItem, s: Spelling) -> Value {
    let mut o = Map::new();
    o.insert("channel".into(), json!(item.channel));
    if let Some(id) = &item.id {
        o.insert("id".into(), json!(id));
    }
    if let Some(prev) = &item.prev_id {
        o.insert("prev-id".into(), json!(prev));
    }
    if !item.meta.is_empty() || s.explicit_defaults {
        o.insert("meta".into(), json!(item.meta));
    }
    if item.no_seq || s.explicit_defaults {
        o.insert("no-seq".into(), json!(item.no_seq));
    }
    let mut f = Map::new();
    if let Some(r) = &item.formats.http_response {
        f.insert("http-response".into(), render_http_response(r, s));
    }
    if let Some(st) = &item.formats.http_stream {
        f.insert("http-stream".into(), render_http_stream(st, s));
    }
    if let Some(w) = &item.formats.ws_message {
        f.insert("ws-message".into(), render_ws_message(w, s));
    }
    if s.legacy {
        o.extend(f);
    } else {
        o.insert("formats".into(), Value::Object(f));
    }
    Value::Object(o)
}

/// What the parser is expected to return for `item` rendered with `s` (header objects come
/// back in key order).
fn expected(item: &PublishItem, s: Spelling) -> PublishItem {
    let mut item = item.clone();
    if let Some(r) = &mut item.formats.http_response {
        let mut names: Vec<&String> = r.headers.iter().map(|(n, _)| n).collect();
        names.sort();
        if s.headers_as_object && names.windows(2).all(|w| w[0] != w[1]) {
            r.headers.sort();
        }
    }
    item
}

// ---------------------------------------------------------------------------------------------
// Near-valid JSON for the "never panics" properties: objects built from the parsers' own keys
// and values, nested, with values of every JSON type.

const KEYS: &[&str] = &[
    "items",
    "channel",
    "id",
    "prev-id",
    "meta",
    "no-seq",
    "size",
    "formats",
    "http-response",
    "http-stream",
    "ws-message",
    "action",
    "code",
    "reason",
    "headers",
    "body",
    "body-bin",
    "body-patch",
    "content",
    "content-bin",
    "content-filters",
    "type",
    "hold",
    "mode",
    "channels",
    "name",
    "filters",
    "timeout",
    "keep-alive",
    "response",
    "value",
    "message-type",
];

const WORDS: &[&str] = &[
    "send",
    "hint",
    "close",
    "refresh",
    "stream",
    "response",
    "text",
    "binary",
    "ping",
    "pong",
    "idle",
    "interval",
    "subscribe",
    "unsubscribe",
    "detach",
    "session",
    "set-meta",
    "keep-alive",
    "send-delayed",
    "flush-delayed",
    "aGk=",
    "***",
    "",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(WORDS).prop_map(|w| json!(w)),
        text().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Header maps for parse_headers

const GRIP_HEADERS: &[&str] = &[
    "grip-hold",
    "grip-channel",
    "grip-timeout",
    "grip-keep-alive",
    "grip-status",
    "grip-link",
    "grip-set-meta",
    "grip-expose-headers",
    "content-type",
    "x-other",
];

const HEADER_PIECES: &[&str] = &[
    "stream",
    "response",
    ";",
    ",",
    "=",
    "\"",
    "\\",
    " ",
    "prev-id",
    "filter",
    "format",
    "cstring",
    "base64",
    "raw",
    "timeout",
    "mode",
    "interval",
    "<",
    ">",
    "rel",
    "next",
    "\\x4",
    "-",
    "+",
    "0",
    "999",
    "18446744073709551616",
];

/// Header values built from GRIP syntax pieces, plus arbitrary bytes.
fn header_value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(HEADER_PIECES).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

fn header_map() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec(
        (prop::sample::select(GRIP_HEADERS), header_value_bytes()),
        0..8,
    )
    .prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            // Values hyper would refuse (CR, LF, NUL) never reach the parser.
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        map
    })
}

const WS_PIECES: &[&str] = &[
    "OPEN",
    "TEXT",
    "BINARY",
    "PING",
    "PONG",
    "CLOSE",
    "DISCONNECT",
    " ",
    "\r\n",
    "\r",
    "0",
    "f",
    "FFFFFFFFFFFFFFFF",
    "10",
    "hi",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wsevents_encode_decode_round_trip(events in prop::collection::vec(ws_event(), 0..12)) {
        let encoded = wsevents::encode_to_bytes(&events);
        let expected_len: usize = events.iter().map(WsEvent::encoded_len).sum();
        prop_assert_eq!(encoded.len(), expected_len);
        let decoded = wsevents::decode(encoded);
        prop_assert_eq!(decoded, Ok(events));
    }

    #[test]
    fn wsevents_close_code_reason_round_trip(code in any::<u16>(), reason in "\\PC{0,30}") {
        let ev = WsEvent::close(code, &reason);
        let payload = ev.content().cloned().unwrap_or_default();
        prop_assert_eq!(wsevents::close_code_reason(&payload), Some((code, reason)));
    }

    #[test]
    fn publish_json_round_trip(
        items in prop::collection::vec(publish_item(), 0..4),
        s in spelling(),
    ) {
        let body = json!({"items": items.iter().map(|i| render_item(i, s)).collect::<Vec<_>>()});
        let parsed = publish::parse_publish_body(body.to_string().as_bytes());
        let want: Vec<PublishItem> = items.iter().map(|i| expected(i, s)).collect();
        prop_assert_eq!(parsed, Ok(want), "body: {}", body);
    }

    #[test]
    fn sig_sign_then_verify(
        iss in "\\PC{0,24}",
        key in prop::collection::vec(any::<u8>(), 1..48),
        other in prop::collection::vec(any::<u8>(), 1..48),
        now in 0u64..4_000_000_000,
        ttl in 1u64..100_000,
    ) {
        let key = SigKey::parse(&format!("base64:{}", STANDARD.encode(&key)))
            .map_err(|e| TestCaseError::fail(format!("key: {e}")))?;
        let token = sig::sign(&iss, &key, now, ttl);
        prop_assert_eq!(sig::verify(&token, &key, Some(&iss), now), Ok(iss.clone()));
        prop_assert_eq!(sig::verify(&token, &key, None, now + ttl - 1), Ok(iss.clone()));
        prop_assert_eq!(sig::verify(&token, &key, None, now + ttl), Err(SigError::Expired));
        prop_assert_eq!(
            sig::verify(&token, &key, Some(&format!("{iss}x")), now),
            Err(SigError::Issuer)
        );
        let other = SigKey::parse(&format!("base64:{}", STANDARD.encode(&other)))
            .map_err(|e| TestCaseError::fail(format!("key: {e}")))?;
        if other != key {
            prop_assert_eq!(sig::verify(&token, &other, None, now), Err(SigError::Signature));
        }
    }

    #[test]
    fn sig_literal_keys_round_trip(iss in "\\PC{0,24}", key in "[^\\x00]{1,32}") {
        // Literal keys (not `base64:`): the bytes of the text are the key.
        prop_assume!(!key.starts_with("base64:"));
        let key = SigKey::parse(&key).map_err(|e| TestCaseError::fail(format!("key: {e}")))?;
        let token = sig::sign(&iss, &key, 1_700_000_000, 3600);
        prop_assert_eq!(sig::verify(&token, &key, Some(&iss), 1_700_000_000), Ok(iss));
    }

    // --- never panics, arbitrary bytes ------------------------------------------------------

    #[test]
    fn parsers_never_panic_on_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = instruct::parse_json(&data);
        let _ = publish::parse_publish_body(&data);
        let _ = wscontrol::parse(&data);
        let _ = wsevents::decode(Bytes::from(data.clone()));
        let text = String::from_utf8_lossy(&data);
        if let Ok(key) = SigKey::parse(&text) {
            let _ = sig::verify(&text, &key, Some("pushpin"), 1_700_000_000);
        }
    }

    #[test]
    fn wsevents_decode_never_panics_on_near_valid(
        pieces in prop::collection::vec(prop_oneof![
            prop::sample::select(WS_PIECES).prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ], 0..16),
    ) {
        let body = Bytes::from(pieces.concat());
        if let Ok(events) = wsevents::decode(body) {
            prop_assert_eq!(wsevents::decode(wsevents::encode_to_bytes(&events)), Ok(events));
        }
    }

    #[test]
    fn sig_verify_never_panics(
        parts in prop::collection::vec("[A-Za-z0-9_=+/-]{0,40}", 0..5),
        key in "[a-z]{1,8}",
    ) {
        let token = parts.join(".");
        let key = SigKey::parse(&key).map_err(|e| TestCaseError::fail(format!("key: {e}")))?;
        prop_assert!(sig::verify(&token, &key, None, 0).is_err());
    }

    // --- never panics, structured near-valid input -------------------------------------------

    #[test]
    fn json_parsers_never_panic_on_near_valid(v in json_value()) {
        let body = v.to_string();
        let _ = instruct::parse_json(body.as_bytes());
        let _ = wscontrol::parse(body.as_bytes());
        let _ = publish::parse_item(&v);
        let batch = json!({"items": [v.clone()]}).to_string();
        if let Ok(items) = publish::parse_publish_body(batch.as_bytes()) {
            for item in items {
                prop_assert!(!item.channel.is_empty());
            }
        }
        let hold = json!({"hold": v}).to_string();
        if let Ok(ins) = instruct::parse_json(hold.as_bytes()) {
            prop_assert!(ins.timeout_secs >= MIN_HOLD_TIMEOUT_SECS);
            prop_assert!(ins.channels.iter().all(|c| c.filters.len() <= MAX_FILTERS_PER_CHANNEL));
        }
    }

    #[test]
    fn wscontrol_never_panics_on_typed_objects(
        kind in prop::sample::select(WORDS),
        rest in prop::collection::btree_map(prop::sample::select(KEYS), json_leaf(), 0..5),
    ) {
        let mut obj: Map<String, Value> =
            rest.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        obj.insert("type".into(), json!(kind));
        let _ = wscontrol::parse(Value::Object(obj).to_string().as_bytes());
    }

    #[test]
    fn parse_headers_never_panics(headers in header_map()) {
        let _ = instruct::is_grip_response(&headers);
        if let Ok(ins) = instruct::parse_headers(&headers) {
            prop_assert!(ins.timeout_secs >= MIN_HOLD_TIMEOUT_SECS);
            prop_assert!(ins.channels.iter().all(|c| !c.name.is_empty()));
            if let Some(ka) = &ins.keep_alive {
                prop_assert!(!ka.content.is_empty() && ka.timeout_secs >= 1);
            }
        }
    }
}

/// The generators above must reach the interesting paths, not just errors: a fixed sample of
/// items must parse (guards against a renderer that silently produces only rejected JSON).
#[test]
fn rendered_items_parse() {
    let item = PublishItem {
        channel: "c".into(),
        id: Some("1".into()),
        prev_id: None,
        meta: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        no_seq: true,
        formats: Formats {
            http_response: Some(HttpResponseFormat {
                action: ResponseAction::Send,
                code: 201,
                reason: Some("Made".into()),
                headers: vec![("X-B".into(), "2".into()), ("X-A".into(), "1".into())],
                body: Bytes::from_static(b"\xff\x00"),
            }),
            http_stream: Some(HttpStreamFormat::Send(Bytes::from_static(b"x\n"))),
            ws_message: Some(WsMessageFormat::Send {
                kind: WsMessageType::Ping,
                content: Bytes::new(),
            }),
            content_filters: Default::default(),
        },
    };
    let s = Spelling {
        legacy: true,
        prefer_text: true,
        headers_as_object: true,
        explicit_defaults: true,
    };
    let body = json!({"items": [render_item(&item, s)]}).to_string();
    assert_eq!(
        publish::parse_publish_body(body.as_bytes()),
        Ok(vec![expected(&item, s)])
    );
}
