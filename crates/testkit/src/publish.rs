//! The HTTP publish API (`POST /publish/` on the publish listener).

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;

use crate::client::{HttpResponse, http_request};

/// `POST /publish/` with `body` as JSON (`Content-Type: application/json`).
pub async fn publish(addr: SocketAddr, body: &Value) -> HttpResponse {
    publish_raw(
        addr,
        "POST",
        "/publish/",
        &[("Content-Type", "application/json")],
        body.to_string(),
    )
    .await
}

/// `POST /publish/` with JSON and `Authorization: <authorization>`.
pub async fn publish_with_auth(
    addr: SocketAddr,
    body: &Value,
    authorization: &str,
) -> HttpResponse {
    publish_raw(
        addr,
        "POST",
        "/publish/",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", authorization),
        ],
        body.to_string(),
    )
    .await
}

/// Any request to the publish listener.
pub async fn publish_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    http_request(addr, method, path, headers, body).await
}

/// Publishes one `http-stream` item (`content`) to `channel` and asserts `200 Published\n`.
pub async fn publish_stream(addr: SocketAddr, channel: &str, content: &str) {
    let body = serde_json::json!({
        "items": [{"channel": channel, "formats": {"http-stream": {"content": content}}}]
    });
    let resp = publish(addr, &body).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "Published\n"),
        "publishing {content:?} to {channel:?}"
    );
}
