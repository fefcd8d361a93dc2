//! `POST /publish/` and friends, with Pushpin 1.36's status codes and bodies.

use crate::Inner;
use crate::error::ApiError;
use bytes::Bytes;
use grip::publish::PublishItem;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use runtime::server::{Body, text};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the publish endpoint answers with when it accepts a request (refusals are
/// [`ApiError`]s).
enum Reply {
    Text(String),
    Json(String),
    Published {
        json: bool,
        receipts: Option<String>,
    },
}

impl Reply {
    fn into_response(self) -> Response<Body> {
        match self {
            Reply::Text(body) => text(StatusCode::OK, body),
            Reply::Json(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Reply::Published { json: false, .. } => {
                Reply::Text("Published\n".into()).into_response()
            }
            Reply::Published {
                json: true,
                receipts,
            } => Reply::Json(match receipts {
                Some(items) => format!("{{\"message\":\"Published\",\"items\":{items}}}\n"),
                None => "{\"message\":\"Published\"}\n".to_owned(),
            })
            .into_response(),
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
        match dispatch(&inner, req, loopback_only).await {
            Ok(reply) => reply.into_response(),
            Err(err) => err.into_response(),
        }
    })
}

async fn dispatch(
    inner: &Inner,
    req: Request<Incoming>,
    loopback_only: bool,
) -> Result<Reply, ApiError> {
    crate::browser::check(req.headers(), req.uri(), loopback_only)?;
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/" => Ok(Reply::Text("Pushpin API\n".into())),
        "/publish" | "/publish/" => publish(inner, req, None).await,
        "/routes" | "/routes/" => routes(inner, req).await,
        "/recover" | "/recover/" => recover(inner, req).await,
        "/refresh" | "/refresh/" => refresh(inner, req).await,
        "/authz/revoke" => revoke(inner, req).await,
        _ => match channel_path(&path) {
            Some(Some(channel)) => publish(inner, req, Some(channel)).await,
            Some(None) => Err(ApiError::InvalidChannel { item: None }),
            None => Err(ApiError::NotFound),
        },
    }
}

/// Channel of `/publish/<channel>/` (percent-decoded): `None` if not that path,
/// `Some(None)` if the channel is unusable.
fn channel_path(path: &str) -> Option<Option<String>> {
    let rest = path.strip_prefix("/publish/")?;
    let raw = rest.strip_suffix('/').unwrap_or(rest);
    if raw.is_empty() || raw.contains('/') {
        return Some(None);
    }
    Some(runtime::server::percent_decode(raw).filter(|c| !c.is_empty()))
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
fn require_post(req: &Request<Incoming>) -> Result<(), ApiError> {
    if req.method() == Method::POST {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().clone(),
        allow: "POST",
    })
}

/// `401` unless the request carries the publish credentials.
fn require_auth(inner: &Inner, req: &Request<Incoming>) -> Result<(), ApiError> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if inner.config.auth.allows(authorization) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// `406` unless `Accept` allows text or JSON; `Ok(true)` for JSON.
fn require_acceptable(req: &Request<Incoming>) -> Result<bool, ApiError> {
    negotiate(req.headers().get(header::ACCEPT)).ok_or(ApiError::NotAcceptable)
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
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = runtime::body::client_body(req).into_body();
    let faults = body.faults();
    if declared.is_some_and(|n| n > max as u64) {
        runtime::body::drain(&mut body, DRAIN_OVER_LIMIT, DRAIN_TIME).await;
        return Err(ApiError::TooLarge);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let fault = faults.get().unwrap_or(runtime::body::BodyFault::Malformed);
            return Err(ApiError::Body(fault));
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                runtime::body::drain(&mut body, DRAIN_OVER_LIMIT, DRAIN_TIME).await;
                return Err(ApiError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A small JSON body (revoke, refresh): at most 64 KiB, and JSON.
async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
    let body = read_body(req, 64 * 1024).await?;
    serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)
}

async fn publish(
    inner: &Inner,
    req: Request<Incoming>,
    channel: Option<String>,
) -> Result<Reply, ApiError> {
    require_post(&req)?;
    require_auth(inner, &req)?;
    let json = require_acceptable(&req)?;
    let body = read_body(req, inner.config.max_body).await?;
    let items = match channel {
        Some(channel) => vec![crate::items::raw_item(channel, body)],
        None => grip::publish::parse_publish_body(&body)?,
    };
    if overlong_channel(inner, &items).is_some() {
        return Err(ApiError::InvalidChannel { item: None });
    }
    let seqs = publish_items(inner, &items).await?;
    inner.metrics.items_http.increment(items.len() as u64);
    // Per-item receipts once any item was stored (docs/protocol.md, "History").
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
    Ok(Reply::Published { json, receipts })
}

/// `POST /authz/revoke` with `{"credential": "..."}` (or `{"credential_hash": "<hex sha-256>"}`):
/// broadcasts the revocation to every sidecar and edge. Same auth as publishing.
async fn revoke(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
    require_post(&req)?;
    require_auth(inner, &req)?;
    let json = read_json(req).await?;
    let hash = crate::revoke::requested_hash(
        json.get("credential").and_then(|v| v.as_str()),
        json.get("credential_hash").and_then(|v| v.as_str()),
    )
    .ok_or(ApiError::InvalidRevocation)?;
    inner.revocations.revoke(&hash).await?;
    Ok(Reply::Json(format!(
        "{}\n",
        serde_json::json!({"credential_hash": hash})
    )))
}

/// `POST /recover` (Pushpin's): every edge of the cluster forgets its last ids, re-requests
/// its response holds and fetches its streams' next links. Answers like Pushpin: `Updated`.
async fn recover(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
    require_post(&req)?;
    require_auth(inner, &req)?;
    let json = require_acceptable(&req)?;
    let cmd = bus::payload::EdgeCommand {
        recover: true,
        ..Default::default()
    };
    send_command(inner, cmd, json).await
}

/// `POST /refresh` with `{"cid": "<Connection-Id>"}` or `{"channel": "..."}` (the arguments of
/// Pushpin's `refresh` command): every edge sends the origin a WebSocket-over-HTTP request now
/// for that connection, or for every WebSocket connection subscribed to the channel.
async fn refresh(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
    require_post(&req)?;
    require_auth(inner, &req)?;
    let json = require_acceptable(&req)?;
    let doc = read_json(req).await?;
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
            return Err(ApiError::InvalidFormat(
                "{\"cid\": \"...\"} or {\"channel\": \"...\"}",
            ));
        }
    };
    send_command(inner, cmd, json).await
}

/// Publishes an edge command and answers `Updated`.
async fn send_command(
    inner: &Inner,
    cmd: bus::payload::EdgeCommand,
    json: bool,
) -> Result<Reply, ApiError> {
    inner
        .bus
        .publish(bus::payload::COMMAND_SUBJECT.into(), cmd.encode())
        .await?;
    Ok(if json {
        Reply::Json("{\"message\":\"Updated\"}\n".into())
    } else {
        Reply::Text("Updated\n".into())
    })
}

/// `GET /routes` (JSON) and `PUT /routes` (routes-file syntax), with the publish auth.
async fn routes(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
    require_auth(inner, &req)?;
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
            Ok(Reply::Json(format!("{body}\n")))
        }
        // PUT only: a POST is what a cross-site HTML form can send.
        Method::PUT => {
            let body = read_body(req, inner.config.max_body).await?;
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::InvalidRoutes("not UTF-8.".into()))?;
            let v = inner.routes.put(text).await?;
            tracing::info!(version = v.version, "route table replaced through the API");
            Ok(Reply::Json(format!(
                "{}\n",
                serde_json::json!({"version": v.version})
            )))
        }
        _ => Err(ApiError::MethodNotAllowed {
            method: req.method().clone(),
            allow: "GET, PUT",
        }),
    }
}

/// Index of the first item whose channel is longer than `--max-channel-length` (the batch is
/// refused whole: such a name could make a bus subject the bus refuses; docs/protocol.md, "Limits").
pub(crate) fn overlong_channel(inner: &Inner, items: &[PublishItem]) -> Option<usize> {
    items
        .iter()
        .position(|i| i.channel.len() > inner.config.max_channel_length)
}

/// Publishes a validated batch in order and returns each item's history position (`None`
/// for channels without history).
///
/// The batch is handed to the publish queue ([`crate::outbox`]) and the call returns: it
/// never waits on the bus or on delivery. Items of channels with history are stored first
/// (the whole batch, pipelined), and such a batch waits until it is on the bus and flushed,
/// so "stored" also means "sent live"; a stored item's live copy carries its `seq`, so edges
/// can close the seam between a replay and live delivery. An item the store already had
/// (same `id` within the de-dup window, through any replica) is published live again with the
/// first copy's `seq`: edges drop it as a duplicate, and an acknowledged item is never left
/// unpublished.
pub(crate) async fn publish_items(
    inner: &Inner,
    items: &[PublishItem],
) -> Result<Vec<Option<u64>>, ApiError> {
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
    let stored = seqs.iter().any(Option::is_some);
    let live: Vec<(String, Bytes)> = items
        .iter()
        .zip(payloads)
        .zip(&seqs)
        .map(|((item, payload), seq)| {
            let payload = match seq {
                Some(seq) => bus::payload::with_seq(&payload, *seq),
                None => payload,
            };
            (bus::subject::channel_subject(&item.channel), payload)
        })
        .collect();
    let sent = inner.outbox.push(live, stored)?;
    if let Some(sent) = sent {
        // "Stored" must also mean "sent live": a control killed right after answering must
        // not leave connected clients without an item they will never resume for.
        sent.wait().await?;
        inner.bus.flush().await?;
    }
    Ok(seqs)
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
