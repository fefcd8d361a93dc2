//! A published item rendered once for every transport, shared by all local subscribers.

use bytes::Bytes;
use grip::publish::{HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction};

/// What a stream hold does with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOut {
    /// Append these bytes.
    Data(Bytes),
    /// End the stream cleanly.
    Close,
}

/// An item ready to hand to connections. Built once per item per edge; every subscriber gets
/// an `Arc` of it, so fan-out costs one refcount bump per subscriber.
#[derive(Debug)]
pub struct Delivery {
    /// For stream holds.
    pub stream: Option<StreamOut>,
    /// For response holds (`send` only; hint/close are not deliveries).
    pub response: Option<HttpResponseFormat>,
    /// When control accepted the publish (ns since the epoch), for the latency histogram.
    pub accepted_unix_nanos: u64,
}

impl Delivery {
    /// Renders an item. `None` when it has nothing for any hold this edge serves.
    pub fn render(item: PublishItem, accepted_unix_nanos: u64) -> Option<Delivery> {
        let stream = match item.formats.http_stream {
            Some(HttpStreamFormat::Send(data)) => Some(StreamOut::Data(data)),
            Some(HttpStreamFormat::Close) => Some(StreamOut::Close),
            // Hint needs next links, which holds here do not follow yet.
            Some(HttpStreamFormat::Hint) | None => None,
        };
        let response = item
            .formats
            .http_response
            .filter(|r| r.action == ResponseAction::Send);
        if stream.is_none() && response.is_none() {
            return None;
        }
        Some(Delivery {
            stream,
            response,
            accepted_unix_nanos,
        })
    }
}
