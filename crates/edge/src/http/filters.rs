//! What a subscriber's filters make of a delivery on the HTTP holds: the filter state a hold
//! starts with, and the bytes a response or stream hold sends (or drops) after them.

use crate::delivery::Delivery;
use crate::filtering::{ConnFilters, Verdict};
use bytes::Bytes;
use grip::instruct::Instruct;

/// The filter state of an HTTP hold: `None` unless some channel has filters.
pub(super) fn hold_filters(
    instruct: &Instruct,
    prefix: &str,
    channels: &[String],
) -> Option<Box<ConnFilters>> {
    if instruct.channels.iter().all(|c| c.filters.is_empty()) {
        return None;
    }
    let mut f = ConnFilters::default();
    f.meta = instruct.meta.clone();
    for full in channels {
        let spec = instruct
            .channels
            .iter()
            .find(|c| format!("{prefix}{}", c.name) == *full);
        match spec {
            Some(c) => f.subscribe(full, &c.filters, c.prev_id.clone()),
            None => f.subscribe(full, &[], None),
        }
    }
    Some(Box::new(f))
}

/// A response hold's body for this subscriber after its filters (`None`: dropped).
pub(super) fn filter_body(
    filters: Option<&ConnFilters>,
    d: &Delivery,
    body: &Bytes,
) -> Option<Bytes> {
    let wanted = d.content_filters.http_response.as_deref();
    let Some(f) = filters else {
        return match wanted {
            Some(list) if !list.is_empty() => None,
            _ => Some(body.clone()),
        };
    };
    match f.judge(d, wanted, body) {
        Verdict::Shared => Some(body.clone()),
        Verdict::Own(b) => Some(b),
        Verdict::Drop => None,
    }
}

/// The bytes a stream subscriber gets from a data delivery after its filters (`None`:
/// dropped). Without filters, the shared bytes.
pub(super) fn filter_stream(
    filters: &mut Option<Box<ConnFilters>>,
    d: &Delivery,
    data: &Bytes,
) -> Option<Bytes> {
    let Some(f) = filters else {
        return match d.content_filters.http_stream {
            // Content filters named by the publisher need the subscription to have exactly
            // those: a stream without filters only takes an empty list.
            Some(ref list) if !list.is_empty() => None,
            _ => Some(data.clone()),
        };
    };
    let out = match f.judge(d, d.content_filters.http_stream.as_deref(), data) {
        Verdict::Shared => data.clone(),
        Verdict::Own(b) => b,
        Verdict::Drop => return None,
    };
    f.delivered(&d.channel, d.id.as_deref());
    Some(out)
}
