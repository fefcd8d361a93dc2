//! Property tests for what travels on the bus (docs/architecture.md, "Testing ladder", step 2): payloads
//! round-trip for arbitrary publish items, route snapshots round-trip, decoding arbitrary bytes
//! never panics, and the channel ⇒ subject encoding is injective and subject-safe for arbitrary
//! channel names.

use bus::payload;
use bus::subject::{CHANNEL_PREFIX, channel_subject, subject_channel};
use bytes::Bytes;
use grip::publish::{
    Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction, WsMessageFormat,
    WsMessageType,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn text() -> impl Strategy<Value = String> {
    "(?s).{0,16}"
}

fn http_response() -> impl Strategy<Value = HttpResponseFormat> {
    (
        prop_oneof![
            Just(ResponseAction::Send),
            Just(ResponseAction::Hint),
            Just(ResponseAction::Close)
        ],
        any::<u16>(),
        proptest::option::of(text()),
        prop::collection::vec((text(), text()), 0..4),
        bytes_up_to(64),
    )
        .prop_map(|(action, code, reason, headers, body)| HttpResponseFormat {
            action,
            code,
            reason,
            headers,
            body,
        })
}

fn http_stream() -> impl Strategy<Value = HttpStreamFormat> {
    prop_oneof![
        bytes_up_to(64).prop_map(HttpStreamFormat::Send),
        Just(HttpStreamFormat::Close),
        Just(HttpStreamFormat::Hint),
    ]
}

fn ws_message() -> impl Strategy<Value = WsMessageFormat> {
    let kind = prop_oneof![
        Just(WsMessageType::Text),
        Just(WsMessageType::Binary),
        Just(WsMessageType::Ping),
        Just(WsMessageType::Pong),
    ];
    prop_oneof![
        (kind, bytes_up_to(64)).prop_map(|(kind, content)| WsMessageFormat::Send { kind, content }),
        (proptest::option::of(any::<u16>()), text())
            .prop_map(|(code, reason)| WsMessageFormat::Close { code, reason }),
        Just(WsMessageFormat::Refresh),
    ]
}

/// Any item the type can hold (the bus does not re-validate what control accepted, so this
/// includes an empty channel and no formats).
fn publish_item() -> impl Strategy<Value = PublishItem> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        prop::collection::btree_map(text(), text(), 0..4),
        any::<bool>(),
        proptest::option::of(http_response()),
        proptest::option::of(http_stream()),
        proptest::option::of(ws_message()),
    )
        .prop_map(
            |(channel, id, prev_id, meta, no_seq, http_response, http_stream, ws_message)| {
                PublishItem {
                    channel,
                    id,
                    prev_id,
                    meta,
                    no_seq,
                    formats: Formats {
                        http_response,
                        http_stream,
                        ws_message,
                        content_filters: Default::default(),
                    },
                }
            },
        )
}

/// Fragments that look like the encoding's own escapes, or that a subject must not contain.
const LOOKALIKES: &[&str] = &["_", "5F", "2E", "a", ".", "_2E", "-", "*", ">", " "];

/// A NATS subject token made by `channel_subject` may hold only these bytes.
fn subject_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn payload_encode_decode_round_trip(item in publish_item(), at in any::<u64>()) {
        let decoded = payload::decode(payload::encode(&item, at))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded, (item, at));
    }

    #[test]
    fn routes_record_round_trip(seq in any::<u64>(), text in "(?s).{0,200}") {
        let codec = bus::records::RecordCodec::new(Some(
            bus::records::ClusterKey::parse("0123456789abcdef").map_err(TestCaseError::fail)?,
        ));
        let rec = bus::records::RoutesRecord { text, seq };
        let opened: bus::records::RoutesRecord = codec
            .open("b", "k", codec.seal("b", "k", &rec))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(opened, rec);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let data = Bytes::from(data);
        if let Ok((item, at)) = payload::decode(data.clone()) {
            // Whatever decodes re-encodes to something that decodes the same.
            let again = payload::decode(payload::encode(&item, at))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, (item, at));
        }
        let _ = bus::records::RecordCodec::default()
            .open::<bus::records::RoutesRecord>("b", "k", data);
    }

    #[test]
    fn decoding_corrupted_payloads_never_panics(
        item in publish_item(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        // Real payloads with a few bytes changed, then truncated: near-valid protobuf.
        let mut wire = payload::encode(&item, 1).to_vec();
        for (at, byte) in flips {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        wire.truncate(cut.index(wire.len() + 1));
        let _ = payload::decode(Bytes::from(wire));
    }

    #[test]
    fn channel_subject_is_subject_safe_and_reversible(channel in "(?s).{1,24}") {
        let subject = channel_subject(&channel);
        let token = subject.strip_prefix(CHANNEL_PREFIX);
        prop_assert!(token.is_some(), "{:?}", subject);
        let token = token.unwrap_or_default();
        prop_assert!(!token.is_empty());
        prop_assert!(token.bytes().all(subject_safe), "{:?} -> {:?}", channel, subject);
        prop_assert_eq!(subject_channel(&subject), Some(channel));
    }

    #[test]
    fn channel_subject_is_injective(a in "(?s).{1,12}", b in "(?s).{1,12}") {
        prop_assume!(a != b);
        prop_assert_ne!(channel_subject(&a), channel_subject(&b));
    }

    #[test]
    fn channel_subject_is_injective_on_escape_lookalikes(
        pieces in prop::collection::vec(
            prop::sample::select(LOOKALIKES),
            1..8,
        ),
        other in prop::collection::vec(
            prop::sample::select(LOOKALIKES),
            1..8,
        ),
    ) {
        // Channels made of escape-like fragments are where a careless encoding collides.
        let (a, b) = (pieces.concat(), other.concat());
        prop_assume!(a != b);
        prop_assert_ne!(channel_subject(&a), channel_subject(&b));
        prop_assert_eq!(subject_channel(&channel_subject(&a)), Some(a));
    }

    #[test]
    fn subject_channel_never_panics(s in "(?s).{0,40}") {
        let _ = subject_channel(&s);
        let _ = subject_channel(&format!("{CHANNEL_PREFIX}{s}"));
    }
}
