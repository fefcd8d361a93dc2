//! The stream hold: the client gets the initial response at once, then every published
//! `http-stream` chunk of its channels (the body is [`super::stream_body::StreamBody`]);
//! channels with a `prev-id` are resumed from history first, a gap filled by the next link.

use super::initial::{build_response, initial_response};
use super::next_link::NextFetcher;
use super::stream_body::StreamBody;
use crate::EdgeInner;
use crate::conn::Transport;
use crate::error::ProxyError;
use crate::filtering::ConnFilters;
use crate::hold::HoldGuard;
use bytes::Bytes;
use grip::instruct::Instruct;
use http::Response;
use http_body_util::BodyExt;
use runtime::server::{Body, full};
use std::sync::Arc;

/// What a stream hold needs besides the origin's answer.
pub(super) struct StreamExtras {
    pub(super) route_id: String,
    /// The client speaks HTTP/1.1 (chunked body).
    pub(super) chunked: bool,
    pub(super) authorized: Option<Arc<crate::authz::Authorized>>,
    pub(super) fetcher: Option<Arc<NextFetcher>>,
    pub(super) abort: Option<tokio_util::sync::CancellationToken>,
    /// The route's channel prefix (instruction channel names are the origin's).
    pub(super) prefix: String,
    pub(super) filters: Option<Box<ConnFilters>>,
    pub(super) gone: Option<crate::gone::GoneLink>,
}

/// Holds the request as a stream on `channels`.
pub(super) async fn stream_hold(
    edge: Arc<EdgeInner>,
    parts: http::response::Parts,
    instruct: Instruct,
    origin_body: Option<Body>,
    channels: Vec<String>,
    extras: StreamExtras,
) -> Result<Response<Body>, ProxyError> {
    let (code, hdrs, instruct_body) = initial_response(&parts, &instruct, Bytes::new());
    let initial = match (origin_body, instruct.response.is_some()) {
        (Some(b), false) => b,
        _ => full(instruct_body),
    };
    let (mut guard, mut rx) = HoldGuard::new(edge.clone(), Transport::HttpStream);
    if let Some(abort) = extras.abort {
        guard.conn.set_abort(abort);
    }
    guard.authorize(extras.authorized, &extras.route_id);
    guard.set_gone(extras.gone);
    guard
        .subscribe_all(channels)
        .await
        .map_err(ProxyError::from)?;
    // Resume every channel with a prev-id from history (subscribed first: see resume.rs).
    let mut gaps: Vec<(String, String)> = Vec::new();
    for c in &instruct.channels {
        let Some(prev) = c.prev_id.as_deref() else {
            continue;
        };
        let full = format!("{}{}", extras.prefix, c.name);
        if crate::resume::resume(&edge, &mut rx, &full, prev).await == crate::resume::Resumed::Gap {
            gaps.push((c.name.clone(), prev.to_owned()));
        }
    }
    let next = extras.fetcher.zip(instruct.next_link.clone());
    if !gaps.is_empty() && next.is_none() {
        // Nothing can fill the gap: the initial response, then the end of the stream, so the
        // client reconnects and the origin decides (Pushpin's behaviour without a next link).
        drop(guard);
        return build_response(code, &instruct.status, hdrs, initial);
    }
    let mut body = StreamBody::new(
        initial,
        rx,
        instruct.keep_alive.as_ref(),
        guard,
        next,
        extras.chunked,
        extras.filters,
    );
    if !gaps.is_empty() {
        body.fetch_next_now(gaps);
    }
    let mut resp = build_response(code, &instruct.status, hdrs, body.boxed_unsync())?;
    resp.extensions_mut().insert(crate::jsonp::NoWrap);
    Ok(resp)
}
