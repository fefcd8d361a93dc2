//! Bus payloads: a published item as prost bytes, stamped with the time control accepted it,
//! and the commands control sends every edge.
//!
//! The types are generated from `proto/gripmesh/v1/bus.proto` ([`crate::wire`]); this module is
//! the one place a [`PublishItem`] becomes a [`BusItem`] and back. `version` lets a newer
//! control plane talk to older edges during a rollout.

use bytes::Bytes;
use grip::publish::{
    ContentFilters, Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction,
    WsMessageFormat, WsMessageType,
};
use prost::Message;

/// The payload version this build writes and reads.
pub const PAYLOAD_VERSION: u32 = 1;

pub use crate::wire::{
    BusHttpResponse, BusHttpStream, BusItem, BusWsMessage, EdgeCommand, NameList, Pair,
};

fn names(v: &Option<Vec<String>>) -> Option<NameList> {
    v.as_ref().map(|n| NameList { names: n.clone() })
}

/// A payload that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not a valid protobuf message.
    #[error("undecodable bus payload: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Written by a newer, incompatible version.
    #[error("unsupported bus payload version {0}")]
    Version(u32),
    /// A field holds a value this version does not know.
    #[error("invalid bus payload: {0}")]
    Invalid(&'static str),
}

/// Encodes an item for the bus.
pub fn encode(item: &PublishItem, accepted_unix_nanos: u64) -> Bytes {
    let pairs = |v: &[(String, String)]| -> Vec<Pair> {
        v.iter()
            .map(|(name, value)| Pair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    let msg = BusItem {
        version: PAYLOAD_VERSION,
        accepted_unix_nanos,
        channel: item.channel.clone(),
        id: item.id.clone(),
        prev_id: item.prev_id.clone(),
        meta: item
            .meta
            .iter()
            .map(|(name, value)| Pair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        no_seq: item.no_seq,
        http_response: item
            .formats
            .http_response
            .as_ref()
            .map(|r| BusHttpResponse {
                action: match r.action {
                    ResponseAction::Send => 0,
                    ResponseAction::Hint => 1,
                    ResponseAction::Close => 2,
                },
                code: u32::from(r.code),
                reason: r.reason.clone(),
                headers: pairs(&r.headers),
                body: r.body.clone(),
                content_filters: names(&item.formats.content_filters.http_response),
            }),
        http_stream: item.formats.http_stream.as_ref().map(|s| {
            let (action, content) = match s {
                HttpStreamFormat::Send(content) => (0, content.clone()),
                HttpStreamFormat::Close => (1, Bytes::new()),
                HttpStreamFormat::Hint => (2, Bytes::new()),
            };
            BusHttpStream {
                action,
                content,
                content_filters: names(&item.formats.content_filters.http_stream),
            }
        }),
        seq: 0,
        ws_message: item.formats.ws_message.as_ref().map(|w| match w {
            WsMessageFormat::Send { kind, content } => BusWsMessage {
                action: 0,
                kind: match kind {
                    WsMessageType::Text => 0,
                    WsMessageType::Binary => 1,
                    WsMessageType::Ping => 2,
                    WsMessageType::Pong => 3,
                },
                content: content.clone(),
                close_code: None,
                close_reason: String::new(),
                content_filters: names(&item.formats.content_filters.ws_message),
            },
            WsMessageFormat::Close { code, reason } => BusWsMessage {
                action: 1,
                kind: 0,
                content: Bytes::new(),
                close_code: code.map(u32::from),
                close_reason: reason.clone(),
                content_filters: None,
            },
            WsMessageFormat::Refresh => BusWsMessage {
                action: 2,
                kind: 0,
                content: Bytes::new(),
                close_code: None,
                close_reason: String::new(),
                content_filters: None,
            },
        }),
    };
    Bytes::from(msg.encode_to_vec())
}

/// The live copy of a stored payload: `payload` with its history position appended. A
/// protobuf field appended to a message is read as part of it, so nothing is re-encoded.
pub fn with_seq(payload: &Bytes, seq: u64) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(payload.len() + 11);
    out.extend_from_slice(payload);
    prost::encoding::uint64::encode(11, &seq, &mut out);
    out.freeze()
}

/// A decoded bus payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The item.
    pub item: PublishItem,
    /// When control accepted it (ns since the epoch).
    pub accepted_unix_nanos: u64,
    /// Its position in the channel's history (0: none).
    pub seq: u64,
}

/// Decodes a bus payload into the item and its accept time (ns since the epoch).
pub fn decode(payload: Bytes) -> Result<(PublishItem, u64), PayloadError> {
    decode_full(payload).map(|d| (d.item, d.accepted_unix_nanos))
}

/// Decodes a bus payload with its history position.
pub fn decode_full(payload: Bytes) -> Result<Decoded, PayloadError> {
    let mut msg = BusItem::decode(payload)?;
    let seq = msg.seq;
    if msg.version != PAYLOAD_VERSION {
        return Err(PayloadError::Version(msg.version));
    }
    let code = |c: u32| u16::try_from(c).map_err(|_| PayloadError::Invalid("status code"));
    let list = |l: Option<NameList>| l.map(|l| l.names);
    let content_filters = ContentFilters {
        http_response: list(
            msg.http_response
                .as_mut()
                .and_then(|r| r.content_filters.take()),
        ),
        http_stream: list(
            msg.http_stream
                .as_mut()
                .and_then(|r| r.content_filters.take()),
        ),
        ws_message: list(
            msg.ws_message
                .as_mut()
                .and_then(|r| r.content_filters.take()),
        ),
    };
    let http_response = match msg.http_response {
        None => None,
        Some(r) => Some(HttpResponseFormat {
            action: match r.action {
                0 => ResponseAction::Send,
                1 => ResponseAction::Hint,
                2 => ResponseAction::Close,
                _ => return Err(PayloadError::Invalid("http-response action")),
            },
            code: code(r.code)?,
            reason: r.reason,
            headers: r.headers.into_iter().map(|p| (p.name, p.value)).collect(),
            body: r.body,
        }),
    };
    let http_stream = match msg.http_stream {
        None => None,
        Some(s) => Some(match s.action {
            0 => HttpStreamFormat::Send(s.content),
            1 => HttpStreamFormat::Close,
            2 => HttpStreamFormat::Hint,
            _ => return Err(PayloadError::Invalid("http-stream action")),
        }),
    };
    let ws_message = match msg.ws_message {
        None => None,
        Some(w) => Some(match w.action {
            0 => WsMessageFormat::Send {
                kind: match w.kind {
                    0 => WsMessageType::Text,
                    1 => WsMessageType::Binary,
                    2 => WsMessageType::Ping,
                    3 => WsMessageType::Pong,
                    _ => return Err(PayloadError::Invalid("ws-message type")),
                },
                content: w.content,
            },
            1 => WsMessageFormat::Close {
                code: match w.close_code {
                    None => None,
                    Some(c) => Some(code(c)?),
                },
                reason: w.close_reason,
            },
            2 => WsMessageFormat::Refresh,
            _ => return Err(PayloadError::Invalid("ws-message action")),
        }),
    };
    let item = PublishItem {
        channel: msg.channel,
        id: msg.id,
        prev_id: msg.prev_id,
        meta: msg.meta.into_iter().map(|p| (p.name, p.value)).collect(),
        no_seq: msg.no_seq,
        formats: Formats {
            http_response,
            http_stream,
            ws_message,
            content_filters,
        },
    };
    Ok(Decoded {
        item,
        accepted_unix_nanos: msg.accepted_unix_nanos,
        seq,
    })
}

/// Subject on which control sends commands to every edge ([`EdgeCommand`]).
pub const COMMAND_SUBJECT: &str = "gripmesh.cmd";

impl EdgeCommand {
    /// Encodes the command (with the current payload version).
    pub fn encode(mut self) -> Bytes {
        self.payload_version = PAYLOAD_VERSION;
        Bytes::from(self.encode_to_vec())
    }

    /// Decodes a command.
    pub fn decode_payload(payload: Bytes) -> Result<EdgeCommand, PayloadError> {
        let msg = EdgeCommand::decode(payload)?;
        if msg.payload_version != PAYLOAD_VERSION {
            return Err(PayloadError::Version(msg.payload_version));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> PublishItem {
        PublishItem {
            channel: "a.b c".into(),
            id: Some("2".into()),
            prev_id: Some("1".into()),
            meta: [("sender".to_owned(), "alice".to_owned())]
                .into_iter()
                .collect(),
            no_seq: true,
            formats: Formats {
                http_response: Some(HttpResponseFormat {
                    action: ResponseAction::Send,
                    code: 201,
                    reason: Some("Made".into()),
                    headers: vec![("X-A".into(), "1".into()), ("X-A".into(), "2".into())],
                    body: Bytes::from_static(b"pushed\n"),
                }),
                http_stream: Some(HttpStreamFormat::Close),
                ws_message: Some(WsMessageFormat::Close {
                    code: Some(4001),
                    reason: "bye".into(),
                }),
                content_filters: ContentFilters {
                    http_response: Some(vec!["var-subst".into()]),
                    http_stream: Some(Vec::new()),
                    ws_message: None,
                },
            },
        }
    }

    #[test]
    fn round_trip() {
        let it = item();
        let (back, at) = decode(encode(&it, 42)).expect("decode");
        assert_eq!(back, it);
        assert_eq!(at, 42);
    }

    #[test]
    fn seq_is_appended_without_reencoding() {
        let it = item();
        let stored = encode(&it, 42);
        assert_eq!(decode_full(stored.clone()).expect("decode").seq, 0);
        let live = decode_full(with_seq(&stored, 1234)).expect("decode");
        assert_eq!(
            (live.item, live.accepted_unix_nanos, live.seq),
            (it, 42, 1234)
        );
    }

    #[test]
    fn rejects_garbage_and_other_versions() {
        assert!(matches!(
            decode(Bytes::from_static(b"\xff\xff\xff")),
            Err(PayloadError::Decode(_))
        ));
        let mut msg = BusItem::decode(encode(&item(), 1)).expect("decode");
        msg.version = 99;
        assert!(matches!(
            decode(Bytes::from(msg.encode_to_vec())),
            Err(PayloadError::Version(99))
        ));
        msg.version = PAYLOAD_VERSION;
        msg.http_stream = Some(BusHttpStream {
            action: 7,
            content: Bytes::new(),
            content_filters: None,
        });
        assert!(matches!(
            decode(Bytes::from(msg.encode_to_vec())),
            Err(PayloadError::Invalid(_))
        ));
    }
}
