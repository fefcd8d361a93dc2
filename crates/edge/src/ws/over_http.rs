//! WebSocket-over-HTTP toward the origin: every batch of WebSocket events becomes one
//! `POST` with an `application/websocket-events` body (docs/protocol.md, "GRIP at the edge").

use crate::EdgeInner;
use crate::metrics::EdgeMetrics;
use crate::origin::RequestError;
use crate::test_origin;
use bytes::Bytes;
use grip::wsevents::{self, WsEvent, WsEventsError};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use routes::{Route, TargetAddr};
use runtime::client::Endpoint;
use runtime::server::{Body, full};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Applies an answer's `Set-Meta-<Name>` headers to `meta` (an empty value deletes the name).
pub(crate) fn apply_set_meta(headers: &HeaderMap, meta: &mut BTreeMap<String, String>) {
    for (name, value) in headers {
        let Some(name) = name.as_str().strip_prefix("set-meta-") else {
            continue;
        };
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if value.is_empty() {
            meta.remove(name);
        } else {
            meta.insert(name.to_owned(), value);
        }
    }
}

/// Largest events body accepted from an origin.
const MAX_REPLY_BODY: usize = 1_000_000;
/// Retries of a later request whose connection could not be made.
const MAX_RETRIES: u32 = 5;
/// Smallest `Keep-Alive-Interval` honoured.
const MIN_KEEP_ALIVE_INTERVAL: u64 = 20;

/// An origin's answer to one request.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Response headers (for `Set-Meta-*`, `Keep-Alive-Interval`, and the 101 on OPEN).
    pub headers: HeaderMap,
    /// Decoded events.
    pub events: Vec<WsEvent>,
}

/// The origin's answer to the OPEN request.
pub(crate) enum OpenReply {
    /// Not accepted: the client's handshake gets this response.
    Rejected(Response<Body>),
    /// Accepted; `events` are those after the leading `OPEN`.
    Accepted(Reply),
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OverHttpError {
    #[error(transparent)]
    Origin(#[from] RequestError),
    #[error("origin answered {0}")]
    Status(StatusCode),
    #[error("origin answer is not application/websocket-events")]
    ContentType,
    #[error("origin body: {0}")]
    Body(String),
    #[error("malformed websocket-events from origin: {0}")]
    Events(#[from] WsEventsError),
    #[error("origin's first answer does not start with OPEN")]
    NoOpen,
    #[error("cannot build the origin request: {0}")]
    Build(#[from] http::Error),
}

impl OverHttpError {
    /// True when nothing was sent (another target may be tried / the request retried).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, OverHttpError::Origin(e) if e.is_connect())
    }
}

/// One connection's WebSocket-over-HTTP state.
pub(crate) struct OverHttp {
    edge: Arc<EdgeInner>,
    route: Arc<Route>,
    target: usize,
    path: String,
    replay: HeaderMap,
    /// Stable id of this connection, sent as `Connection-Id`.
    pub connection_id: String,
    /// Meta set by the origin (`Set-Meta-*`, `c:set-meta`), sent back as `Meta-*`; a copy of
    /// the session's subscription meta, refreshed before each request.
    meta: BTreeMap<String, String>,
    /// `Keep-Alive-Interval` asked for by the origin.
    pub keep_alive_interval: Option<Duration>,
}

impl OverHttp {
    /// State for a connection routed to `route.targets[target]`.
    pub(crate) fn new(
        edge: Arc<EdgeInner>,
        route: Arc<Route>,
        target: usize,
        path: String,
        replay: HeaderMap,
    ) -> OverHttp {
        OverHttp {
            edge,
            route,
            target,
            path,
            replay,
            connection_id: format!("{:032x}", fastrand::u128(..)),
            meta: BTreeMap::new(),
            keep_alive_interval: None,
        }
    }

    /// At most one event per request (target option `one_event`).
    pub(crate) fn one_event(&self) -> bool {
        self.route
            .targets
            .get(self.target)
            .is_some_and(|t| t.one_event)
    }

    /// Sends `OPEN` and interprets the answer.
    pub(crate) async fn open(&mut self) -> Result<OpenReply, OverHttpError> {
        let body = wsevents::encode_to_bytes(&[WsEvent::Open]);
        // The turn is held until the answer is read.
        let (resp, _turn) = self.send(body, &[]).await?;
        let (parts, body) = resp.into_parts();
        let events_ok = parts.status == StatusCode::OK && wsevents::is_events_body(&parts.headers);
        if !events_ok {
            return Ok(OpenReply::Rejected(super::reject_with(parts, body).await));
        }
        let body = read_limited(body).await?;
        let mut events = wsevents::decode(body)?;
        if events.first() != Some(&WsEvent::Open) {
            return Err(OverHttpError::NoOpen);
        }
        events.remove(0);
        self.apply_keep_alive(&parts.headers);
        Ok(OpenReply::Accepted(Reply {
            headers: parts.headers,
            events,
        }))
    }

    /// Uses `meta` (the session's subscription meta) for the `Meta-*` headers from now on.
    pub(crate) fn set_meta(&mut self, meta: &BTreeMap<String, String>) {
        if self.meta != *meta {
            self.meta = meta.clone();
        }
    }

    /// Applies `Keep-Alive-Interval` from an answer.
    pub(crate) fn apply_keep_alive(&mut self, headers: &HeaderMap) {
        if let Some(secs) = headers
            .get("keep-alive-interval")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            self.keep_alive_interval = Some(Duration::from_secs(
                secs.clamp(MIN_KEEP_ALIVE_INTERVAL, grip::MAX_DURATION_SECS),
            ));
        }
    }

    /// A request carrying `events` (empty: a keep-alive), as an owned future so the session
    /// can keep reading the client while it is in flight. Connect failures are retried with
    /// backoff (1 s·2ⁿ + up to 1 s), up to five times.
    pub(crate) fn request(
        &self,
        events: Vec<WsEvent>,
    ) -> impl Future<Output = Result<Reply, OverHttpError>> + Send + 'static {
        self.request_with_last(events, Vec::new())
    }

    /// [`OverHttp::request`] with `Grip-Last: <channel>; last-id=<id>` headers: a resume
    /// history could not serve, so the origin can re-sync the client (docs/protocol.md, "History").
    pub(crate) fn request_with_last(
        &self,
        events: Vec<WsEvent>,
        grip_last: Vec<(String, String)>,
    ) -> impl Future<Output = Result<Reply, OverHttpError>> + Send + 'static {
        let this = self.snapshot();
        let body = if events.is_empty() {
            Bytes::new()
        } else {
            wsevents::encode_to_bytes(&events)
        };
        async move {
            let mut attempt = 0;
            loop {
                match this.send(body.clone(), &grip_last).await {
                    // The turn is held until the answer is read, and not during a backoff.
                    Ok((answer, _turn)) => return read_reply(answer).await,
                    Err(err) if err.is_connect() && attempt < MAX_RETRIES => {
                        let backoff = Duration::from_secs(1 << attempt)
                            + Duration::from_millis(fastrand::u64(0..1000));
                        tracing::debug!(error = %err, attempt, "websocket-over-http request failed; retrying");
                        tokio::time::sleep(backoff).await;
                        attempt += 1;
                    }
                    Err(err) => return Err(err),
                }
            }
        }
    }

    /// A copy of what a request needs, detached from the session.
    fn snapshot(&self) -> OverHttp {
        OverHttp {
            edge: self.edge.clone(),
            route: self.route.clone(),
            target: self.target,
            path: self.path.clone(),
            replay: self.replay.clone(),
            connection_id: self.connection_id.clone(),
            meta: self.meta.clone(),
            keep_alive_interval: self.keep_alive_interval,
        }
    }

    /// Waits for a turn to send to `endpoint` ([`MAX_IN_FLIGHT`] per origin address). The
    /// semaphores are never closed.
    async fn turn(&self, endpoint: &Endpoint) -> Option<OwnedSemaphorePermit> {
        let turns = &self.edge.ws_origin_permits;
        if turns.len() >= MAX_ORIGINS_TRACKED && !turns.contains_key(endpoint) {
            // Origins the route table no longer names: drop those nobody is waiting on.
            turns.retain(|_, origin| Arc::strong_count(origin) > 1);
        }
        let origin = turns
            .entry(endpoint.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)))
            .clone();
        origin.acquire_owned().await.ok()
    }

    /// One POST to the target (or the built-in test origin), on a pooled keep-alive
    /// connection when one is ready; the connection goes back to the pool once the answer
    /// was read to the end. Waits for a turn at the origin first; the turn comes back with
    /// the answer and is to be held until its body is read (the built-in origin takes none).
    async fn send(
        &self,
        body: Bytes,
        grip_last: &[(String, String)],
    ) -> Result<(Response<Body>, Option<OwnedSemaphorePermit>), OverHttpError> {
        let Some(target) = self.route.targets.get(self.target) else {
            return Err(OverHttpError::Body("route changed".into()));
        };
        if target.addr == TargetAddr::Test {
            let events = if body.is_empty() {
                Vec::new()
            } else {
                wsevents::decode(body)?
            };
            return Ok((test_origin::ws_reply(&self.path, &events), None));
        }
        let Some(endpoint) = crate::origin::endpoint(target) else {
            return Err(OverHttpError::Body("target has no address".into()));
        };
        let turn = self.turn(&endpoint).await;
        let mut h = crate::origin::headers(&self.edge, &self.replay, &self.route, target);
        let events_type = HeaderValue::from_static(wsevents::CONTENT_TYPE);
        h.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
        h.insert(header::CONTENT_TYPE, events_type.clone());
        h.insert(header::ACCEPT, events_type);
        if let Ok(id) = HeaderValue::from_str(&self.connection_id) {
            h.insert("connection-id", id);
        }
        crate::origin::append_grip_last(&mut h, grip_last);
        for (name, value) in &self.meta {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(format!("meta-{name}").as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            h.insert(n, v);
        }
        let mut builder = Request::builder()
            .method(http::Method::POST)
            .uri(self.path.as_str());
        if let Some(hm) = builder.headers_mut() {
            *hm = h;
        }
        let req = builder.body(full(body))?;
        let started = std::time::Instant::now();
        let result = self.edge.origin.request(&endpoint, req).await;
        self.edge
            .metrics
            .origin_duration
            .record(started.elapsed().as_secs_f64());
        EdgeMetrics::origin_request(result.as_ref().ok().map(|r| r.status().as_u16()));
        let resp = result.map_err(|failed| failed.error)?;
        Ok((resp.map(crate::origin::boxed), turn))
    }
}

async fn read_limited(body: Body) -> Result<Bytes, OverHttpError> {
    crate::origin::collect_limited(body, MAX_REPLY_BODY)
        .await
        .map_err(OverHttpError::Body)
}

/// WebSocket-over-HTTP requests in flight per edge and origin address: as many as the
/// connection pool keeps per origin, so each connection can go back to it. Per origin, so an
/// origin that stops answering holds up only its own connections. A reconnect storm's
/// OPENs (or a drain's DISCONNECTs) wait here instead of each opening an origin connection,
/// which ran an edge holding 19,000 clients out of file descriptors (BENCHMARKS.md, round 4).
pub(crate) const MAX_IN_FLIGHT: usize = runtime::client::POOL_MAX_IDLE_PER_ENDPOINT;

/// Origin addresses with a [`MAX_IN_FLIGHT`] semaphore kept before idle ones are dropped.
const MAX_ORIGINS_TRACKED: usize = 1024;

/// The origin's answer as events: 200 with `application/websocket-events`, within the size
/// limit.
async fn read_reply(answer: Response<Body>) -> Result<Reply, OverHttpError> {
    let (parts, body) = answer.into_parts();
    if parts.status != StatusCode::OK {
        return Err(OverHttpError::Status(parts.status));
    }
    if !wsevents::is_events_body(&parts.headers) {
        return Err(OverHttpError::ContentType);
    }
    let body = read_limited(body).await?;
    let events = wsevents::decode(body)?;
    Ok(Reply {
        headers: parts.headers,
        events,
    })
}
