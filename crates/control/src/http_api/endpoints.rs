//! The endpoints of the HTTP listener: publish, revoke, recover, refresh and the route table.

use super::Reply;
use super::request::{read_body, read_json, require_acceptable, require_auth, require_post};
use crate::Inner;
use crate::error::ApiError;
use crate::publish::{overlong_channel, publish_items};
use http::{Method, Request};
use hyper::body::Incoming;

/// `POST /publish/` (a batch) and `POST /publish/<channel>/` (the body is the content).
pub(super) async fn publish(
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
pub(super) async fn revoke(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
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
pub(super) async fn recover(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
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
pub(super) async fn refresh(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
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
pub(super) async fn routes(inner: &Inner, req: Request<Incoming>) -> Result<Reply, ApiError> {
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
