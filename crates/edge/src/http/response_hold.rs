//! The response hold (long-poll): the request waits, subscribed to its channels, for one
//! published `http-response` item or its timeout. With history, a `prev-id` found there
//! answers at once with the next item; one that is not (on the first request only, so an
//! origin that keeps answering with the same id cannot loop) re-requests the origin with
//! `Grip-Last`, as Pushpin does.

use super::filters::{filter_body, hold_filters};
use super::initial::{build_response, initial_response};
use crate::EdgeInner;
use crate::conn::{CloseReason, ConnQueue, Transport};
use crate::delivery::Delivery;
use crate::error::ProxyError;
use crate::filtering::ConnFilters;
use crate::headers;
use crate::hold::HoldGuard;
use crate::metrics::EdgeMetrics;
use crate::resume::Resumed;
use bytes::Bytes;
use grip::instruct::{Instruct, StatusOverride};
use http::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use routes::Route;
use runtime::server::{Body, full};
use std::sync::Arc;
use std::time::Duration;

/// How a response hold ended.
pub(super) enum HoldOutcome {
    /// Answer the client with this.
    Done(Response<Body>),
    /// Ask the origin again, with these `Grip-Last` (channel, last id) pairs.
    ReRequest(Vec<(String, String)>),
}

/// The origin's view of each channel it named with a `prev-id`: (full channel name, the
/// origin's name, prev-id).
struct Expected<'a>(Vec<(String, &'a str, &'a str)>);

impl<'a> Expected<'a> {
    fn new(instruct: &'a Instruct, prefix: &str) -> Expected<'a> {
        Expected(
            instruct
                .channels
                .iter()
                .filter_map(|c| {
                    Some((
                        format!("{prefix}{}", c.name),
                        c.name.as_str(),
                        c.prev_id.as_deref()?,
                    ))
                })
                .collect(),
        )
    }

    /// The `Grip-Last` pairs of a re-request.
    fn grip_last(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(_, name, prev)| ((*name).to_owned(), (*prev).to_owned()))
            .collect()
    }

    /// Resumes every channel from history; `false` when one has a gap and a re-request
    /// should fill it (first request only).
    async fn resume(&self, edge: &Arc<EdgeInner>, rx: &mut ConnQueue, first_attempt: bool) -> bool {
        let mut recovered: Vec<&str> = Vec::new();
        for (full, _, prev) in &self.0 {
            match crate::resume::resume(edge, rx, full, prev).await {
                Resumed::Recovered => recovered.push(full),
                Resumed::Gap if first_attempt => return false,
                Resumed::Gap | Resumed::Off => {}
            }
        }
        // The origin answered from an older state than this edge has seen: ask again now
        // (unless history answers for the channel).
        !self.0.iter().any(|(full, _, prev)| {
            !recovered.contains(&full.as_str())
                && edge
                    .registry
                    .last_id(full)
                    .is_some_and(|last| last != *prev)
        })
    }

    /// A publish that does not follow what the origin knew means the origin's answer is
    /// out of date (Pushpin's reliability model).
    fn gap(&self, delivery: &Delivery) -> bool {
        self.0.iter().any(|(full, _, prev)| {
            *full == *delivery.channel && delivery.prev_id.as_deref().is_some_and(|p| p != *prev)
        })
    }
}

/// How waiting for a publish ended.
enum Waited {
    /// A `send` item, and the body this subscriber gets.
    Published(Arc<Delivery>, Bytes),
    /// The timeout, a drain or a slow-consumer cut-off: the initial response.
    TimedOut,
    /// The connection was closed for its credential or key.
    Closed(ProxyError),
    /// Out of date or hinted: ask the origin again.
    ReRequest,
}

/// Holds the request on `channels` until a publish, its timeout, or a reason to re-request.
#[allow(clippy::too_many_arguments)]
pub(super) async fn response_hold(
    edge: &Arc<EdgeInner>,
    parts: http::response::Parts,
    instruct: &Instruct,
    origin_body: Bytes,
    channels: Vec<String>,
    authorized: Option<Arc<crate::authz::Authorized>>,
    route: &Route,
    first_attempt: bool,
) -> Result<HoldOutcome, ProxyError> {
    let prefix = route.prefix.as_deref().unwrap_or("");
    let (code, hdrs, body) = initial_response(&parts, instruct, origin_body);
    let expected = Expected::new(instruct, prefix);
    let filters = hold_filters(instruct, prefix, &channels);
    let (mut guard, mut rx) = HoldGuard::new(edge.clone(), Transport::HttpResponse);
    guard.authorize(authorized, &route.id);
    guard
        .subscribe_all(channels)
        .await
        .map_err(ProxyError::from)?;
    if !expected.resume(edge, &mut rx, first_attempt).await {
        return Ok(HoldOutcome::ReRequest(expected.grip_last()));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(instruct.timeout_secs);
    let waited = wait(&guard, &mut rx, deadline, &expected, filters.as_deref()).await;
    let (delivery, out_body) = match waited {
        Waited::Published(delivery, out_body) => (delivery, out_body),
        Waited::TimedOut => {
            if let Some(u) = guard.usage() {
                u.ended(crate::usage::EndReason::Origin);
            }
            return build_response(code, &instruct.status, hdrs, full(body)).map(HoldOutcome::Done);
        }
        Waited::Closed(err) => return Err(err),
        Waited::ReRequest => return Ok(HoldOutcome::ReRequest(expected.grip_last())),
    };
    let Some(r) = &delivery.response else {
        return build_response(code, &instruct.status, hdrs, full(body)).map(HoldOutcome::Done);
    };
    let m = edge.metrics.transport(Transport::HttpResponse);
    m.sent.increment(1);
    if let Some(u) = guard.usage() {
        // The delivered body (the response head is hyper's and not counted).
        u.add(1, r.body.len() as u64);
        u.ended(crate::usage::EndReason::Origin);
    }
    edge.metrics.record_latency(delivery.accepted_unix_nanos);
    let status = Some(StatusOverride {
        code: r.code,
        reason: r.reason.clone(),
    });
    let merged = merge_headers(hdrs, &r.headers);
    build_response(r.code, &status, merged, full(out_body)).map(HoldOutcome::Done)
}

/// Waits until `deadline` for a published item this subscriber takes.
async fn wait(
    guard: &HoldGuard,
    rx: &mut ConnQueue,
    deadline: tokio::time::Instant,
    expected: &Expected<'_>,
    filters: Option<&ConnFilters>,
) -> Waited {
    loop {
        let published = tokio::select! {
            d = rx.recv() => d,
            _ = tokio::time::sleep_until(deadline) => None,
            reason = guard.conn.closed() => {
                if let Some(err) = closed_error(reason) {
                    return Waited::Closed(err);
                }
                None
            }
        };
        let Some(delivery) = published else {
            return Waited::TimedOut;
        };
        let Some(r) = &delivery.response else {
            continue;
        };
        // Out of date, or a hint: the origin's answer is to be asked for again.
        if expected.gap(&delivery) || r.action == grip::publish::ResponseAction::Hint {
            return Waited::ReRequest;
        }
        if r.action == grip::publish::ResponseAction::Send {
            let Some(out) = filter_body(filters, &delivery, &r.body) else {
                continue;
            };
            return Waited::Published(delivery, out);
        }
    }
}

/// Why a hold closed by the edge for `reason` fails; `None`: the timeout response (a
/// drain, or a slow consumer, counted here).
fn closed_error(reason: CloseReason) -> Option<ProxyError> {
    match reason {
        CloseReason::SlowConsumer => {
            EdgeMetrics::dropped("slow_consumer");
            None
        }
        CloseReason::Revoked => Some(ProxyError::Revoked),
        CloseReason::Expired => Some(ProxyError::Expired),
        CloseReason::QuotaExceeded => Some(ProxyError::QuotaExceeded),
        CloseReason::Drain => None,
    }
}

/// Origin's (timeout) headers, overlaid by the published ones; Content-Length recomputed.
fn merge_headers(mut merged: HeaderMap, published: &[(String, String)]) -> HeaderMap {
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (k, v) in published {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            continue;
        };
        if headers::is_grip(&name) || name == header::CONTENT_LENGTH {
            continue;
        }
        if !replaced.contains(&name) {
            merged.remove(&name);
            replaced.push(name.clone());
        }
        merged.append(name, value);
    }
    merged
}
