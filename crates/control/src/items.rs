//! Publish items from the control API's requests: the one place a gRPC `Item` or a raw
//! `POST /publish/<channel>/` body becomes a [`PublishItem`] (JSON bodies are parsed by
//! [`grip::publish::parse_publish_body`]). The gRPC rules are the JSON API's: a batch is
//! converted and validated whole, and the first bad item refuses it.

use bytes::Bytes;
use grip::publish::{
    Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction, WsMessageFormat,
    WsMessageType,
};
use proto::v1 as pb;

/// Why one item of a batch was refused. `Display` is the problem as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ItemError {
    /// `channel` is empty.
    #[error("channel is empty")]
    EmptyChannel,
    /// None of the three formats is set.
    #[error("no formats specified")]
    NoFormats,
    /// `http_response.code` is neither 0 (⇒ 200) nor in 100..=999.
    #[error("http_response code {0} is out of range (0 for 200, or 100..=999)")]
    ResponseCode(u32),
    /// `http_stream` with empty content and no close.
    #[error("http_stream has neither content nor close")]
    StreamEmpty,
    /// `http_stream` with content and close.
    #[error("http_stream sets both content and close")]
    StreamContentAndClose,
    /// `ws_message` with no payload and no close.
    #[error("ws_message has neither a payload nor close")]
    WsEmpty,
    /// `ws_message` with a payload and close.
    #[error("ws_message sets both a payload and close")]
    WsPayloadAndClose,
    /// `ws_message.close_code` does not fit a close frame's 16 bits.
    #[error("ws_message close_code {0} is out of range (at most 65535)")]
    WsCloseCode(u32),
    /// `close_code` or `close_reason` on a `ws_message` that does not close.
    #[error("ws_message sets close_code or close_reason without close")]
    WsCloseFieldsWithoutClose,
}

/// A refused batch: the 0-based index of the first bad item and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {index}: {error}")]
pub(crate) struct BatchError {
    /// Position of the item in `PublishRequest.items`.
    pub(crate) index: usize,
    /// The problem.
    pub(crate) error: ItemError,
}

/// Converts and validates a whole batch; the first bad item rejects it.
pub(crate) fn convert_batch(items: Vec<pb::Item>) -> Result<Vec<PublishItem>, BatchError> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| convert_item(item).map_err(|error| BatchError { index, error }))
        .collect()
}

/// Converts one item with the JSON API's rules. Empty `id`/`prev_id` mean absent (proto3
/// strings cannot tell "empty" from "unset").
pub(crate) fn convert_item(item: pb::Item) -> Result<PublishItem, ItemError> {
    if item.channel.is_empty() {
        return Err(ItemError::EmptyChannel);
    }
    if item.http_response.is_none() && item.http_stream.is_none() && item.ws_message.is_none() {
        return Err(ItemError::NoFormats);
    }
    let formats = Formats {
        http_response: item.http_response.map(convert_response).transpose()?,
        http_stream: item.http_stream.map(convert_stream).transpose()?,
        ws_message: item.ws_message.map(convert_ws).transpose()?,
        content_filters: Default::default(),
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(PublishItem {
        channel: item.channel,
        id: non_empty(item.id),
        prev_id: non_empty(item.prev_id),
        meta: item.meta,
        no_seq: item.no_seq,
        formats,
    })
}

fn convert_response(r: pb::HttpResponseFormat) -> Result<HttpResponseFormat, ItemError> {
    let code = match r.code {
        0 => 200,
        c @ 100..=999 => u16::try_from(c).map_err(|_| ItemError::ResponseCode(c))?,
        c => return Err(ItemError::ResponseCode(c)),
    };
    Ok(HttpResponseFormat {
        action: ResponseAction::Send,
        code,
        reason: (!r.reason.is_empty()).then_some(r.reason),
        headers: r.headers.into_iter().collect(),
        body: r.body,
    })
}

fn convert_stream(s: pb::HttpStreamFormat) -> Result<HttpStreamFormat, ItemError> {
    match (s.close, s.content.is_empty()) {
        (true, true) => Ok(HttpStreamFormat::Close),
        (true, false) => Err(ItemError::StreamContentAndClose),
        (false, false) => Ok(HttpStreamFormat::Send(s.content)),
        (false, true) => Err(ItemError::StreamEmpty),
    }
}

fn convert_ws(w: pb::WsMessageFormat) -> Result<WsMessageFormat, ItemError> {
    use pb::ws_message_format::Payload;
    if w.close {
        if w.payload.is_some() {
            return Err(ItemError::WsPayloadAndClose);
        }
        let code = match w.close_code {
            0 => None,
            c => Some(u16::try_from(c).map_err(|_| ItemError::WsCloseCode(c))?),
        };
        return Ok(WsMessageFormat::Close {
            code,
            reason: w.close_reason,
        });
    }
    if w.close_code != 0 || !w.close_reason.is_empty() {
        return Err(ItemError::WsCloseFieldsWithoutClose);
    }
    match w.payload {
        Some(Payload::Text(text)) => Ok(WsMessageFormat::Send {
            kind: WsMessageType::Text,
            content: text.into(),
        }),
        Some(Payload::Binary(bin)) => Ok(WsMessageFormat::Send {
            kind: WsMessageType::Binary,
            content: bin,
        }),
        None => Err(ItemError::WsEmpty),
    }
}

/// `POST /publish/<channel>/`: the raw body as every format (like `pushpin-publish`).
pub(crate) fn raw_item(channel: String, body: Bytes) -> PublishItem {
    PublishItem {
        channel,
        id: None,
        prev_id: None,
        meta: Default::default(),
        no_seq: false,
        formats: Formats {
            http_response: Some(HttpResponseFormat {
                action: ResponseAction::Send,
                code: 200,
                reason: None,
                headers: Vec::new(),
                body: body.clone(),
            }),
            http_stream: Some(HttpStreamFormat::Send(body.clone())),
            ws_message: Some(WsMessageFormat::Send {
                kind: if std::str::from_utf8(&body).is_ok() {
                    WsMessageType::Text
                } else {
                    WsMessageType::Binary
                },
                content: body,
            }),
            content_filters: Default::default(),
        },
    }
}
