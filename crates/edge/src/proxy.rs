//! One client request: route it, proxy it to the origin, and act on the GRIP instructions in
//! the answer (relay, response hold or stream hold).

use crate::EdgeInner;
use crate::conn::{CloseReason, Transport};
use crate::headers;
use crate::hold::{HoldGuard, StreamBody};
use crate::metrics::EdgeMetrics;
use crate::origin::{AskError, OriginRequest, ReqBody};
use bytes::Bytes;
use grip::instruct::{HoldMode, Instruct, StatusOverride};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use routes::{Route, RouteRequest, Target};
use runtime::server::{Body, full, text};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, and so what the client gets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no route for host {0}")]
    NoRoute(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("client sent websocket-events")]
    EventsForbidden,
    #[error("bus: {0}")]
    Unavailable(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body too large for a GRIP hold")]
    TooLargeForGrip,
    /// The client's request body failed (timed out or malformed): its fault, not the origin's.
    #[error("client request body: {0:?}")]
    ClientBody(runtime::body::BodyFault),
}

impl ProxyError {
    fn into_response(self) -> Response<Body> {
        match self {
            ProxyError::NoRoute(host) => text(
                StatusCode::BAD_GATEWAY,
                format!("No route for host: {host}\n"),
            ),
            ProxyError::BadGateway(_) => {
                text(StatusCode::BAD_GATEWAY, "Error while proxying to origin.\n")
            }
            ProxyError::EventsForbidden => text(
                StatusCode::FORBIDDEN,
                "Client not allowed to send WebSocket events directly.\n",
            ),
            ProxyError::Unavailable(_) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable.\n")
            }
            ProxyError::BadRequest(_) => text(StatusCode::BAD_REQUEST, "Bad request.\n"),
            ProxyError::TooLargeForGrip => text(
                StatusCode::BAD_REQUEST,
                "Request too large to accept GRIP instruct.\n",
            ),
            ProxyError::ClientBody(fault) => fault.response(),
        }
    }
}

impl From<AskError> for ProxyError {
    fn from(e: AskError) -> ProxyError {
        match e {
            AskError::BadGateway(msg) => ProxyError::BadGateway(msg),
            AskError::ClientBody(fault) => ProxyError::ClientBody(fault),
        }
    }
}

impl From<crate::registry::SubscribeError> for ProxyError {
    fn from(e: crate::registry::SubscribeError) -> ProxyError {
        if e.invalid_channel {
            ProxyError::BadGateway(e.to_string())
        } else {
            ProxyError::Unavailable(e.to_string())
        }
    }
}

/// Handles one client request end to end.
///
/// Boxed so the server loop sees one concrete `Send` future type.
pub fn handle(
    edge: Arc<EdgeInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> futures_util::future::BoxFuture<'static, Response<Body>> {
    use tracing::Instrument;
    // Every event of this connection carries its id and (once known) its route id.
    let id = edge
        .next_conn_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("conn", id, %peer, route = tracing::field::Empty);
    Box::pin(handle_inner(edge, req, peer).instrument(span))
}

async fn handle_inner(
    edge: Arc<EdgeInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match proxy(edge, req, peer).await {
        Ok(resp) => resp,
        Err(err) => {
            match &err {
                ProxyError::NoRoute(_)
                | ProxyError::EventsForbidden
                | ProxyError::BadRequest(_)
                | ProxyError::ClientBody(_) => {
                    tracing::debug!(%peer, %method, %path, error = %err, "request refused");
                }
                _ => tracing::warn!(%peer, %method, %path, error = %err, "request failed"),
            }
            err.into_response()
        }
    }
}

fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    crate::origin::strip_port(&raw).to_ascii_lowercase()
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

async fn proxy(
    edge: Arc<EdgeInner>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ProxyError> {
    let host = request_host(&req);
    let ws = is_websocket_upgrade(req.headers());
    let tls = req
        .extensions()
        .get::<runtime::server::ConnInfo>()
        .is_some_and(|c| c.tls);
    // The client's own claim is not trusted; the edge says what it saw (Pushpin's default).
    let forwarded_proto = HeaderName::from_static("x-forwarded-proto");
    req.headers_mut().remove(&forwarded_proto);
    if tls {
        req.headers_mut()
            .insert(forwarded_proto, HeaderValue::from_static("https"));
    }
    // Route, authorize and proxy one spelling of the path (docs/protocol.md, "Limits and bad input").
    if let Some(uri) = normalized_uri(req.uri())? {
        *req.uri_mut() = uri;
    }
    let table = edge.routes.load();
    let route = table
        .resolve(&RouteRequest {
            host: &host,
            path: req.uri().path(),
            ws,
            tls,
        })
        .ok_or_else(|| ProxyError::NoRoute(host.clone()))?
        .clone();
    drop(table);
    tracing::Span::current().record("route", route.id.as_str());
    if ws {
        return Ok(crate::ws::handle(edge, req, route, peer).await);
    }
    if route.targets.iter().any(|t| t.over_http)
        && content_type_is(req.headers(), grip::wsevents::CONTENT_TYPE)
    {
        return Err(ProxyError::EventsForbidden);
    }

    // JSON-P (routes with `aco`, as in Pushpin) replaces CORS for the request it applies to.
    let jsonp = if route.aco {
        match crate::jsonp::apply_request(&route.jsonp, &mut req) {
            Ok(j) => j,
            Err(msg) => return Ok(text(StatusCode::BAD_REQUEST, format!("{msg}\n"))),
        }
    } else {
        None
    };
    let (jsonp, body_override) = match jsonp {
        Some((j, body)) => (Some(j), body),
        None => (None, None),
    };
    let cors =
        (route.aco && jsonp.is_none()).then(|| crate::cors::Cors::from_request(req.headers()));
    let mut resp = proxy_http(edge, req, peer, route, body_override).await?;
    if let Some(cors) = cors {
        cors.apply(resp.headers_mut());
    }
    if let Some(jsonp) = jsonp {
        resp = jsonp.wrap(resp).await;
    }
    Ok(resp)
}

/// The request URI with its path in canonical form ([`routes::path::normalize`]), or `None`
/// when it already is; a path that cannot be made canonical is the client's error.
fn normalized_uri(uri: &Uri) -> Result<Option<Uri>, ProxyError> {
    let path = uri.path();
    let canonical =
        routes::path::normalize(path).map_err(|e| ProxyError::BadRequest(format!("path: {e}")))?;
    if canonical == path {
        return Ok(None);
    }
    let pq = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(pq)
            .map_err(|e| ProxyError::BadRequest(format!("path: {e}")))?,
    );
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|e| ProxyError::BadRequest(format!("path: {e}")))
}

/// The plain-HTTP part of [`proxy`]: authz, origin, GRIP.
async fn proxy_http(
    edge: Arc<EdgeInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
    route: Route,
    body_override: Option<Bytes>,
) -> Result<Response<Body>, ProxyError> {
    let abort = req
        .extensions()
        .get::<runtime::server::ConnInfo>()
        .map(|c| c.abort.clone());
    let authorized =
        match crate::authz::gate(&edge, &route, req.method(), req.uri(), req.headers(), peer).await
        {
            crate::authz::Gate::Pass(a) => a,
            crate::authz::Gate::Reject(resp) => return Ok(resp),
        };
    let (parts, body) = runtime::body::client_body(req).into_parts();
    // Stream holds on HTTP/1.1 are chunked: usage bytes count the chunk framing.
    let chunked = parts.version == http::Version::HTTP_11;
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut origin_req = OriginRequest {
        method: parts.method.clone(),
        path: route.rewrite_path(path_and_query),
        headers: parts.headers,
        body: match body_override {
            Some(b) => ReqBody::Buffered(b),
            None => ReqBody::new(body, edge.config.max_instruct_body).await?,
        },
    };
    let mut grip_last: Vec<(String, String)> = Vec::new();
    // The first answer's gone link; re-requests keep it (Pushpin's rule). A response hold
    // sends it when this function ends, whichever way (the client leaving drops the future).
    let mut gone: Option<crate::gone::GoneLink> = None;
    for _attempt in 0..=MAX_REREQUESTS {
        let (resp, target) = crate::origin::ask(
            &edge,
            &route,
            &mut origin_req,
            authorized.as_deref(),
            &grip_last,
        )
        .await?;
        if route.no_grip || !grip::instruct::is_grip_response(resp.headers()) {
            return Ok(relay(resp, false));
        }
        let (rparts, rbody) = resp.into_parts();
        let max = edge.config.max_instruct_body;
        let (instruct, body) = if content_type_is(&rparts.headers, "application/grip-instruct") {
            if rparts.status != StatusCode::OK {
                return Err(ProxyError::BadGateway(format!(
                    "grip-instruct answer with status {}",
                    rparts.status
                )));
            }
            let bytes = read_limited(rbody, max).await?;
            let instruct = grip::instruct::parse_json(&bytes)
                .map_err(|e| ProxyError::BadGateway(e.to_string()))?;
            (instruct, None)
        } else {
            let instruct = grip::instruct::parse_headers(&rparts.headers)
                .map_err(|e| ProxyError::BadGateway(e.to_string()))?;
            (instruct, Some(rbody))
        };
        if instruct.hold.is_some() && origin_req.body.is_streamed() {
            return Err(ProxyError::TooLargeForGrip);
        }
        let channels = channels_for(&edge, &route, target, &instruct);
        if gone.is_none()
            && instruct.hold.is_some()
            && let Some(url) = &instruct.gone_link
        {
            gone = Some(crate::gone::GoneLink::new(
                edge.clone(),
                Arc::new(route.clone()),
                &origin_req.path,
                url,
                &origin_req.headers,
                authorized.clone(),
            ));
        }
        return match instruct.hold {
            None => match body {
                Some(body) => Ok(relay(Response::from_parts(rparts, body), true)),
                None => {
                    let (status, hdrs, body) = initial_response(&rparts, &instruct, Bytes::new());
                    build_response(status, &instruct.status, hdrs, full(body))
                }
            },
            Some(HoldMode::Response) => {
                let origin_body = match body {
                    Some(b) => read_limited(b, max).await?,
                    None => Bytes::new(),
                };
                match response_hold(
                    &edge,
                    rparts,
                    &instruct,
                    origin_body,
                    channels,
                    authorized.clone(),
                    &route,
                    grip_last.is_empty(),
                )
                .await?
                {
                    HoldOutcome::Done(resp) => Ok(resp),
                    HoldOutcome::ReRequest(last) => {
                        tracing::debug!("re-requesting the origin (prev-id conflict or hint)");
                        grip_last = last;
                        continue;
                    }
                }
            }
            Some(HoldMode::Stream) => {
                let fetcher = instruct.next_link.is_some().then(|| {
                    Arc::new(crate::next_link::NextFetcher {
                        edge: edge.clone(),
                        route: Arc::new(route.clone()),
                        headers: origin_req.headers.clone(),
                        base_path: origin_req.path.clone(),
                        authorized: authorized.clone(),
                    })
                });
                let filters =
                    hold_filters(&instruct, route.prefix.as_deref().unwrap_or(""), &channels);
                let extras = StreamExtras {
                    route_id: route.id.clone(),
                    chunked,
                    authorized,
                    fetcher,
                    abort,
                    prefix: route.prefix.clone().unwrap_or_default(),
                    filters,
                    gone: gone.take(),
                };
                stream_hold(edge, rparts, instruct, body, channels, extras).await
            }
        };
    }
    Err(ProxyError::BadGateway("too many re-requests".into()))
}

/// Re-requests of one held request (prev-id conflicts, hints) before giving up with 502.
const MAX_REREQUESTS: usize = 5;

/// Relays an origin response unchanged but for hop-by-hop (and, for GRIP, `Grip-*`) headers.
fn relay(resp: Response<Body>, strip_grip: bool) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts.headers = headers::to_client(&parts.headers, strip_grip);
    Response::from_parts(parts, body)
}

fn channels_for(
    edge: &EdgeInner,
    route: &Route,
    target: &Target,
    instruct: &Instruct,
) -> Vec<String> {
    let prefix = route.prefix.as_deref().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    let names = instruct
        .channels
        .iter()
        .map(|c| c.name.as_str())
        .chain(target.sub.iter().map(String::as_str));
    for name in names {
        let full = format!("{prefix}{name}");
        if !out.contains(&full) {
            out.push(full);
        }
    }
    let max = edge.config.max_channels_per_connection;
    if out.len() > max {
        tracing::debug!(route = %route.id, dropped = out.len() - max, "channels over the per-connection limit ignored");
        out.truncate(max);
    }
    out
}

async fn read_limited(body: Body, max: usize) -> Result<Bytes, ProxyError> {
    crate::origin::collect_limited(body, max)
        .await
        .map_err(|e| ProxyError::BadGateway(format!("origin body: {e}")))
}

/// Status, headers and body the client gets first (stream) or on timeout (response hold).
fn initial_response(
    parts: &http::response::Parts,
    instruct: &Instruct,
    origin_body: Bytes,
) -> (u16, HeaderMap, Bytes) {
    let (status, mut hdrs, body) = match &instruct.response {
        Some(r) => {
            let mut h = HeaderMap::new();
            for (k, v) in &r.headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    h.append(k, v);
                }
            }
            (r.code, h, r.body.clone())
        }
        None => (parts.status.as_u16(), parts.headers.clone(), origin_body),
    };
    hdrs = headers::to_client(&hdrs, true);
    for name in [header::CONTENT_LENGTH, header::CONTENT_ENCODING] {
        hdrs.remove(name);
    }
    if let Some(expose) = &instruct.expose_headers {
        let keep: Vec<String> = expose.iter().map(|n| n.to_ascii_lowercase()).collect();
        let names: Vec<HeaderName> = hdrs.keys().cloned().collect();
        for name in names {
            if !keep.iter().any(|k| k == name.as_str()) {
                hdrs.remove(&name);
            }
        }
    }
    (status, hdrs, body)
}

fn build_response(
    code: u16,
    status_override: &Option<StatusOverride>,
    hdrs: HeaderMap,
    body: Body,
) -> Result<Response<Body>, ProxyError> {
    let (code, reason) = match status_override {
        Some(o) => (o.code, o.reason.clone()),
        None => (code, None),
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| ProxyError::BadGateway(format!("status code {code} cannot be sent")))?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = hdrs;
    if let Some(reason) = reason
        && let Ok(r) = hyper::ext::ReasonPhrase::try_from(Bytes::from(reason))
    {
        resp.extensions_mut().insert(r);
    }
    Ok(resp)
}

/// How a response hold ended.
enum HoldOutcome {
    /// Answer the client with this.
    Done(Response<Body>),
    /// Ask the origin again, with these `Grip-Last` (channel, last id) pairs.
    ReRequest(Vec<(String, String)>),
}

/// A response hold. With history, a `prev-id` found there answers at once with the next item;
/// one that is not (on the first request only, so an origin that keeps answering with the same
/// id cannot loop) re-requests the origin with `Grip-Last`, as Pushpin does.
#[allow(clippy::too_many_arguments)]
async fn response_hold(
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
    let timeout_response = |hdrs: HeaderMap, body: Bytes| {
        build_response(code, &instruct.status, hdrs, full(body)).map(HoldOutcome::Done)
    };
    // The origin's view of each channel: (full channel name, origin's name, prev-id).
    let expected: Vec<(String, &str, &str)> = instruct
        .channels
        .iter()
        .filter_map(|c| {
            Some((
                format!("{prefix}{}", c.name),
                c.name.as_str(),
                c.prev_id.as_deref()?,
            ))
        })
        .collect();
    let grip_last = || -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(_, name, prev)| ((*name).to_owned(), (*prev).to_owned()))
            .collect()
    };
    let filters = hold_filters(instruct, prefix, &channels);
    let (mut guard, mut rx) = HoldGuard::new(edge.clone(), Transport::HttpResponse);
    guard.authorize(authorized, &route.id);
    guard
        .subscribe_all(channels)
        .await
        .map_err(ProxyError::from)?;
    let mut recovered: Vec<&str> = Vec::new();
    for (full, _, prev) in &expected {
        match crate::resume::resume(edge, &mut rx, full, prev).await {
            crate::resume::Resumed::Recovered => recovered.push(full),
            crate::resume::Resumed::Gap if first_attempt => {
                return Ok(HoldOutcome::ReRequest(grip_last()));
            }
            crate::resume::Resumed::Gap | crate::resume::Resumed::Off => {}
        }
    }
    // The origin answered from an older state than this edge has seen: ask again now
    // (unless history answers for the channel).
    let stale = expected.iter().any(|(full, _, prev)| {
        !recovered.contains(&full.as_str())
            && edge
                .registry
                .last_id(full)
                .is_some_and(|last| last != *prev)
    });
    if stale {
        return Ok(HoldOutcome::ReRequest(grip_last()));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(instruct.timeout_secs);
    let delivery = loop {
        let published = tokio::select! {
            d = rx.recv() => d,
            _ = tokio::time::sleep_until(deadline) => None,
            reason = guard.conn.closed() => {
                match reason {
                    CloseReason::SlowConsumer => EdgeMetrics::dropped("slow_consumer"),
                    CloseReason::Revoked => {
                        return Ok(HoldOutcome::Done(text(StatusCode::FORBIDDEN, "Credential revoked.\n")));
                    }
                    CloseReason::Expired => {
                        return Ok(HoldOutcome::Done(text(StatusCode::UNAUTHORIZED, "Credential expired.\n")));
                    }
                    CloseReason::QuotaExceeded => {
                        return Ok(HoldOutcome::Done(text(StatusCode::TOO_MANY_REQUESTS, crate::authz::QUOTA_EXCEEDED)));
                    }
                    CloseReason::Drain => {}
                }
                None
            }
        };
        let Some(delivery) = published else {
            if let Some(u) = guard.usage() {
                u.ended(crate::usage::EndReason::Origin);
            }
            return timeout_response(hdrs, body);
        };
        let Some(r) = &delivery.response else {
            continue;
        };
        // A publish that does not follow what the origin knew means the origin's answer is
        // out of date: ask again (Pushpin's reliability model). So does a hint.
        let gap = expected.iter().any(|(full, _, prev)| {
            *full == *delivery.channel && delivery.prev_id.as_deref().is_some_and(|p| p != *prev)
        });
        if gap || r.action == grip::publish::ResponseAction::Hint {
            return Ok(HoldOutcome::ReRequest(grip_last()));
        }
        if r.action == grip::publish::ResponseAction::Send {
            let Some(out) = filter_body(filters.as_deref(), &delivery, &r.body) else {
                continue;
            };
            break (delivery, out);
        }
    };
    let (delivery, out_body) = delivery;
    let Some(r) = &delivery.response else {
        return timeout_response(hdrs, body);
    };
    // Origin's (timeout) headers, overlaid by the published ones; Content-Length recomputed.
    let mut merged = hdrs;
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (k, v) in &r.headers {
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
    build_response(r.code, &status, merged, full(out_body)).map(HoldOutcome::Done)
}

/// A response hold's body for this subscriber after its filters (`None`: dropped).
fn filter_body(
    filters: Option<&crate::filtering::ConnFilters>,
    d: &crate::delivery::Delivery,
    body: &Bytes,
) -> Option<Bytes> {
    use crate::filtering::Verdict;
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

/// The filter state of an HTTP hold: `None` unless some channel has filters.
pub(crate) fn hold_filters(
    instruct: &Instruct,
    prefix: &str,
    channels: &[String],
) -> Option<Box<crate::filtering::ConnFilters>> {
    if instruct.channels.iter().all(|c| c.filters.is_empty()) {
        return None;
    }
    let mut f = crate::filtering::ConnFilters::default();
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

/// What a stream hold needs besides the origin's answer.
struct StreamExtras {
    route_id: String,
    /// The client speaks HTTP/1.1 (chunked body).
    chunked: bool,
    authorized: Option<Arc<crate::authz::Authorized>>,
    fetcher: Option<Arc<crate::next_link::NextFetcher>>,
    abort: Option<tokio_util::sync::CancellationToken>,
    /// The route's channel prefix (instruction channel names are the origin's).
    prefix: String,
    filters: Option<Box<crate::filtering::ConnFilters>>,
    gone: Option<crate::gone::GoneLink>,
}

async fn stream_hold(
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
