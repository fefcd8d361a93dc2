//! `POST /publish/` and friends, with Pushpin 1.36's status codes and bodies.

use crate::Inner;
use crate::metrics::ControlMetrics;
use bytes::Bytes;
use grip::publish::{
    Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction, WsMessageFormat,
    WsMessageType,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use runtime::server::{Body, text};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the publish endpoint answers with.
enum Reply {
    Text(StatusCode, String),
    Json(StatusCode, String),
    Published {
        json: bool,
        receipts: Option<String>,
    },
    /// 413; the connection is closed after it.
    TooLarge,
    /// The body timed out (408) or was malformed (400).
    BodyFault(runtime::body::BodyFault),
}

impl Reply {
    fn into_response(self) -> Response<Body> {
        match self {
            Reply::Text(status, body) => text(status, body),
            Reply::Json(status, body) => {
                let mut r = text(status, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Reply::TooLarge => {
                let mut r = text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.\n");
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Reply::BodyFault(fault) => fault.response(),
            Reply::Published { json: false, .. } => text(StatusCode::OK, "Published\n"),
            Reply::Published {
                json: true,
                receipts,
            } => {
                let body = match receipts {
                    Some(items) => format!("{{\"message\":\"Published\",\"items\":{items}}}\n"),
                    None => "{\"message\":\"Published\"}\n".to_owned(),
                };
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    }
}

/// Handles one request on the publish listener. Boxed so the server sees one `Send` type.
/// `loopback_only`: the API is unauthenticated on a loopback address (see [`crate::browser`]).
pub fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    loopback_only: bool,
) -> futures_util::future::BoxFuture<'static, Response<Body>> {
    Box::pin(async move {
        let path = req.uri().path().to_owned();
        let reply =
            if let Err(refusal) = crate::browser::check(req.headers(), req.uri(), loopback_only) {
                ControlMetrics::rejected(refusal.reason());
                Reply::Text(StatusCode::FORBIDDEN, refusal.body().into())
            } else if path == "/" {
                Reply::Text(StatusCode::OK, "Pushpin API\n".into())
            } else if path == "/publish" || path == "/publish/" {
                publish(&inner, req, None).await
            } else if path == "/routes" || path == "/routes/" {
                routes(&inner, req).await
            } else if path == "/recover" || path == "/recover/" {
                recover(&inner, req).await
            } else if path == "/refresh" || path == "/refresh/" {
                refresh(&inner, req).await
            } else if path == "/authz/revoke" {
                revoke(&inner, req).await
            } else if let Some(channel) = channel_path(&path) {
                match channel {
                    Some(ch) => publish(&inner, req, Some(ch)).await,
                    None => Reply::Text(StatusCode::BAD_REQUEST, "Invalid channel.\n".into()),
                }
            } else {
                Reply::Text(StatusCode::NOT_FOUND, "Not Found\n".into())
            };
        let mut resp = reply.into_response();
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            let allow = if path.starts_with("/routes") {
                "GET, PUT"
            } else {
                "POST"
            };
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    })
}

/// Channel of `/publish/<channel>/` (percent-decoded): `None` if not that path,
/// `Some(None)` if the channel is unusable.
fn channel_path(path: &str) -> Option<Option<String>> {
    let rest = path.strip_prefix("/publish/")?;
    let raw = rest.strip_suffix('/').unwrap_or(rest);
    if raw.is_empty() || raw.contains('/') {
        return Some(None);
    }
    Some(percent_decode(raw).filter(|c| !c.is_empty()))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Accept` values Pushpin answers (text/plain, application/json and their wildcards).
/// Returns `Some(json)` when acceptable.
fn negotiate(accept: Option<&HeaderValue>) -> Option<bool> {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Some(false);
    };
    let types: Vec<String> = accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect();
    if types.is_empty() {
        return Some(false);
    }
    for t in &types {
        match t.as_str() {
            "text/plain" | "text/*" | "*/*" => return Some(false),
            "application/json" | "application/*" => return Some(true),
            _ => {}
        }
    }
    None
}

/// `405` unless the method is POST.
fn require_post(req: &Request<Incoming>) -> Result<(), Reply> {
    if req.method() == Method::POST {
        return Ok(());
    }
    Err(Reply::Text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method not allowed: {}.\n", req.method()),
    ))
}

/// `401` unless the request carries the publish credentials.
fn require_auth(inner: &Inner, req: &Request<Incoming>) -> Result<(), Reply> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if inner.config.auth.allows(authorization) {
        return Ok(());
    }
    ControlMetrics::rejected("unauthorized");
    Err(Reply::Text(
        StatusCode::UNAUTHORIZED,
        "Unauthorized.\n".into(),
    ))
}

/// Most of an over-limit body read (and dropped) before its 413 is sent, so a client still
/// sending can read the answer instead of losing it to the reset that closing a socket with
/// unread data causes (nginx's lingering close). Beyond it, or after [`DRAIN_TIME`], the
/// connection is just closed.
const DRAIN_OVER_LIMIT: usize = 32 << 20;
/// Longest time spent draining an over-limit body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The whole body, at most `max` bytes (`413` beyond, declared or actual; `408` when it
/// stalls for `--client-body-timeout`; `400` when malformed or cut short).
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Reply> {
    let too_large = || {
        ControlMetrics::rejected("too_large");
        Reply::TooLarge
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = runtime::body::client_body(req).into_body();
    let faults = body.faults();
    if declared.is_some_and(|n| n > max as u64) {
        runtime::body::drain(&mut body, DRAIN_OVER_LIMIT, DRAIN_TIME).await;
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let fault = faults.get().unwrap_or(runtime::body::BodyFault::Malformed);
            ControlMetrics::rejected(match fault {
                runtime::body::BodyFault::Timeout => "body_timeout",
                runtime::body::BodyFault::Malformed => "bad_request",
            });
            return Err(Reply::BodyFault(fault));
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                runtime::body::drain(&mut body, DRAIN_OVER_LIMIT, DRAIN_TIME).await;
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn publish(inner: &Inner, req: Request<Incoming>, channel: Option<String>) -> Reply {
    if let Err(reply) = require_post(&req).and_then(|()| require_auth(inner, &req)) {
        return reply;
    }
    let Some(json) = negotiate(req.headers().get(header::ACCEPT)) else {
        ControlMetrics::rejected("not_acceptable");
        return Reply::Text(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable. Supported formats are text/plain and application/json.\n".into(),
        );
    };
    let body = match read_body(req, inner.config.max_body).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let items = match channel {
        Some(channel) => Ok(vec![raw_item(channel, body)]),
        None => grip::publish::parse_publish_body(&body),
    };
    let items = match items {
        Ok(items) => items,
        Err(err) => {
            ControlMetrics::rejected(err.kind());
            return Reply::Text(StatusCode::BAD_REQUEST, format!("{err}\n"));
        }
    };
    if overlong_channel(inner, &items).is_some() {
        ControlMetrics::rejected("invalid_channel");
        return Reply::Text(StatusCode::BAD_REQUEST, "Invalid channel.\n".into());
    }
    match publish_items(inner, &items).await {
        Ok(seqs) => {
            inner.metrics.items_http.increment(items.len() as u64);
            // Per-item receipts once any item was stored (SPEC §11).
            let receipts = seqs.iter().any(Option::is_some).then(|| {
                let list: Vec<serde_json::Value> = items
                    .iter()
                    .zip(&seqs)
                    .map(|(item, seq)| {
                        let mut o = serde_json::Map::new();
                        o.insert("channel".into(), item.channel.clone().into());
                        if let Some(id) = &item.id {
                            o.insert("id".into(), id.clone().into());
                        }
                        if let Some(seq) = seq {
                            o.insert("seq".into(), (*seq).into());
                        }
                        serde_json::Value::Object(o)
                    })
                    .collect();
                serde_json::Value::Array(list).to_string()
            });
            Reply::Published { json, receipts }
        }
        Err(err) => {
            ControlMetrics::rejected(err.reason());
            tracing::warn!(error = %err, "publish failed");
            Reply::Text(StatusCode::SERVICE_UNAVAILABLE, err.client_text().into())
        }
    }
}

/// `POST /authz/revoke` with `{"credential": "..."}` (or `{"credential_hash": "<hex sha-256>"}`):
/// broadcasts the revocation to every sidecar and edge. Same auth as publishing.
async fn revoke(inner: &Inner, req: Request<Incoming>) -> Reply {
    if let Err(reply) = require_post(&req).and_then(|()| require_auth(inner, &req)) {
        return reply;
    }
    let body = match read_body(req, 64 * 1024).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Reply::Text(StatusCode::BAD_REQUEST, "Body is not valid JSON.\n".into());
    };
    let hash = match (
        json.get("credential").and_then(|v| v.as_str()),
        json.get("credential_hash").and_then(|v| v.as_str()),
    ) {
        (Some(c), _) if !c.is_empty() => crate::revoke::hash(c),
        (_, Some(h)) if crate::revoke::is_hash(h) => h.to_ascii_lowercase(),
        _ => {
            return Reply::Text(
                StatusCode::BAD_REQUEST,
                "Invalid format: expected {\"credential\": \"...\"} or {\"credential_hash\": \"<sha-256 hex>\"}\n".into(),
            );
        }
    };
    match inner.revocations.revoke(&hash).await {
        Ok(()) => Reply::Json(
            StatusCode::OK,
            format!("{}\n", serde_json::json!({"credential_hash": hash})),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "revocation not recorded");
            Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "Bus unavailable.\n".into())
        }
    }
}

/// `POST /recover` (Pushpin's): every edge of the cluster forgets its last ids, re-requests
/// its response holds and fetches its streams' next links. Answers like Pushpin: `Updated`.
async fn recover(inner: &Inner, req: Request<Incoming>) -> Reply {
    if let Err(reply) = require_post(&req).and_then(|()| require_auth(inner, &req)) {
        return reply;
    }
    let Some(json) = negotiate(req.headers().get(header::ACCEPT)) else {
        return not_acceptable();
    };
    let cmd = bus::payload::EdgeCommand {
        recover: true,
        ..Default::default()
    };
    send_command(inner, cmd, json).await
}

/// `POST /refresh` with `{"cid": "<Connection-Id>"}` or `{"channel": "..."}` (the arguments of
/// Pushpin's `refresh` command): every edge sends the origin a WebSocket-over-HTTP request now
/// for that connection, or for every WebSocket connection subscribed to the channel.
async fn refresh(inner: &Inner, req: Request<Incoming>) -> Reply {
    if let Err(reply) = require_post(&req).and_then(|()| require_auth(inner, &req)) {
        return reply;
    }
    let Some(json) = negotiate(req.headers().get(header::ACCEPT)) else {
        return not_acceptable();
    };
    let body = match read_body(req, 64 * 1024).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Reply::Text(StatusCode::BAD_REQUEST, "Body is not valid JSON.\n".into());
    };
    let text = |key: &str| {
        doc.get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let cmd = match (text("cid"), text("channel")) {
        (Some(cid), _) => bus::payload::EdgeCommand {
            refresh_cid: Some(cid),
            ..Default::default()
        },
        (None, Some(channel)) => bus::payload::EdgeCommand {
            refresh_channel: Some(channel),
            ..Default::default()
        },
        (None, None) => {
            return Reply::Text(
                StatusCode::BAD_REQUEST,
                "Invalid format: expected {\"cid\": \"...\"} or {\"channel\": \"...\"}\n".into(),
            );
        }
    };
    send_command(inner, cmd, json).await
}

fn not_acceptable() -> Reply {
    ControlMetrics::rejected("not_acceptable");
    Reply::Text(
        StatusCode::NOT_ACCEPTABLE,
        "Not Acceptable. Supported formats are text/plain and application/json.\n".into(),
    )
}

/// Publishes an edge command and answers `Updated`.
async fn send_command(inner: &Inner, cmd: bus::payload::EdgeCommand, json: bool) -> Reply {
    match inner
        .bus
        .publish(bus::payload::COMMAND_SUBJECT.into(), cmd.encode())
        .await
    {
        Ok(()) if json => Reply::Json(StatusCode::OK, "{\"message\":\"Updated\"}\n".into()),
        Ok(()) => Reply::Text(StatusCode::OK, "Updated\n".into()),
        Err(err) => {
            tracing::warn!(error = %err, "edge command failed: bus unavailable");
            Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "Bus unavailable.\n".into())
        }
    }
}

/// `GET /routes` (JSON) and `PUT /routes` (routes-file syntax), with the publish auth.
async fn routes(inner: &Inner, req: Request<Incoming>) -> Reply {
    if let Err(reply) = require_auth(inner, &req) {
        return reply;
    }
    match *req.method() {
        Method::GET | Method::HEAD => {
            let cur = inner.routes.current().await;
            let ids: Vec<serde_json::Value> = routes::RouteTable::parse(&cur.text)
                .map(|t| {
                    t.routes()
                        .iter()
                        .map(|r| serde_json::json!({"id": r.id, "line": r.line}))
                        .collect()
                })
                .unwrap_or_default();
            let body = serde_json::json!({"version": cur.version, "text": cur.text, "routes": ids});
            Reply::Json(StatusCode::OK, format!("{body}\n"))
        }
        // PUT only: a POST is what a cross-site HTML form can send.
        Method::PUT => {
            let body = match read_body(req, inner.config.max_body).await {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            let Ok(text) = String::from_utf8(body.to_vec()) else {
                return Reply::Text(
                    StatusCode::BAD_REQUEST,
                    "Invalid routes: not UTF-8.\n".into(),
                );
            };
            match inner.routes.put(text).await {
                Ok(v) => {
                    tracing::info!(version = v.version, "route table replaced through the API");
                    Reply::Json(
                        StatusCode::OK,
                        format!("{}\n", serde_json::json!({"version": v.version})),
                    )
                }
                Err(crate::PutError::Invalid(err)) => {
                    Reply::Text(StatusCode::BAD_REQUEST, format!("Invalid routes: {err}\n"))
                }
                Err(crate::PutError::FileManaged) => Reply::Text(
                    StatusCode::CONFLICT,
                    "Routes are managed by a file.\n".into(),
                ),
                Err(crate::PutError::Unavailable(err)) => {
                    tracing::warn!(error = %err, "route table not written");
                    Reply::Text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Route store unavailable.\n".into(),
                    )
                }
            }
        }
        _ => Reply::Text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method not allowed: {}.\n", req.method()),
        ),
    }
}

/// Index of the first item whose channel is longer than `--max-channel-length` (the batch is
/// refused whole: such a name could make a bus subject the bus refuses, SPEC §9).
pub(crate) fn overlong_channel(inner: &Inner, items: &[PublishItem]) -> Option<usize> {
    items
        .iter()
        .position(|i| i.channel.len() > inner.config.max_channel_length)
}

/// Why a batch could not be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("bus unavailable: {0}")]
    Bus(#[from] bus::BusError),
    #[error("{0}")]
    History(#[from] bus::history::HistoryError),
}

impl PublishError {
    /// The `reason` label of `gripmesh_control_publish_rejected_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PublishError::Bus(_) => "bus_unavailable",
            PublishError::History(_) => "history_unavailable",
        }
    }

    /// The 503 body.
    pub(crate) fn client_text(&self) -> &'static str {
        match self {
            PublishError::Bus(_) => "Bus unavailable.\n",
            PublishError::History(_) => "History unavailable.\n",
        }
    }
}

/// Publishes a validated batch in order and returns each item's history position (`None`
/// for channels without history).
///
/// Items of channels with history are stored first (the whole batch, pipelined), then every
/// item is published live; a stored item's live copy carries its `seq`, so edges can close the
/// seam between a replay and live delivery. An item the store already had (same `id` within
/// the de-dup window, through any replica) is published live again with the first copy's
/// `seq`: edges drop it as a duplicate, and an acknowledged item is never left unpublished.
pub(crate) async fn publish_items(
    inner: &Inner,
    items: &[PublishItem],
) -> Result<Vec<Option<u64>>, PublishError> {
    let accepted = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let payloads: Vec<Bytes> = items
        .iter()
        .map(|item| bus::payload::encode(item, accepted))
        .collect();
    let mut seqs: Vec<Option<u64>> = vec![None; items.len()];
    if let Some(history) = &inner.config.history {
        let mut stored_at = Vec::new();
        let mut batch = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(limits) = history.policy.lookup(&item.channel) {
                stored_at.push(i);
                batch.push(bus::history::StoreItem {
                    channel: item.channel.clone(),
                    id: item.id.clone(),
                    limits,
                    payload: payloads[i].clone(),
                });
            }
        }
        if !batch.is_empty() {
            let receipts = history.store.store(batch).await?;
            for (i, receipt) in stored_at.into_iter().zip(receipts) {
                seqs[i] = Some(receipt.seq);
            }
        }
    }
    for ((item, payload), seq) in items.iter().zip(payloads).zip(&seqs) {
        let payload = match seq {
            Some(seq) => bus::payload::with_seq(&payload, *seq),
            None => payload,
        };
        let subject = bus::subject::channel_subject(&item.channel);
        inner.bus.publish(subject, payload).await?;
    }
    if seqs.iter().any(Option::is_some) {
        // "Stored" must also mean "sent live": a control killed right after answering must
        // not leave connected clients without an item they will never resume for.
        inner.bus.flush().await?;
    }
    Ok(seqs)
}

/// `POST /publish/<channel>/`: the raw body as every format (like `pushpin-publish`).
fn raw_item(channel: String, body: Bytes) -> PublishItem {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(negotiate(None), Some(false));
        assert_eq!(negotiate(Some(&v("application/json"))), Some(true));
        assert_eq!(negotiate(Some(&v("text/html, */*;q=0.1"))), Some(false));
        assert_eq!(negotiate(Some(&v("text/html"))), None);
    }

    #[test]
    fn channel_paths() {
        assert_eq!(channel_path("/publish/a%20b/"), Some(Some("a b".into())));
        assert_eq!(channel_path("/publish/abc"), Some(Some("abc".into())));
        assert_eq!(channel_path("/publish/a/b/"), Some(None));
        assert_eq!(channel_path("/other"), None);
    }
}
