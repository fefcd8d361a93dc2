//! The trades backend behind the gateway, speaking GRIP:
//!
//! - WebSocket-over-HTTP (`POST`, `application/websocket-events`): `OPEN` is accepted in GRIP
//!   mode (`Sec-WebSocket-Extensions: grip`) with `OPEN` + `c:{"type":"subscribe",
//!   "channel":"trades"}`; `CLOSE` is answered with the same `CLOSE`; anything else gets no
//!   events (client messages are not echoed).
//! - `GET`: a stream hold on `trades` (`text/plain`, one JSON trade per line), or with
//!   `Accept: text/event-stream` an SSE stream hold on `trades-sse` with a comment keep-alive.
//!
//! Only [`FEED_PATH`](crate::FEED_PATH) exists; anything else is `404`.

use bytes::Bytes;
use grip::wsevents::{self, WsEvent};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use runtime::server::{Body, ServerOptions, full, text};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest WebSocket-over-HTTP request body read.
const MAX_BODY: usize = 1 << 20;

/// Serves the trades origin on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    runtime::server::serve(
        listener,
        ServerOptions::default(),
        shutdown,
        |req: Request<hyper::body::Incoming>, _peer| handle(req),
    )
    .await;
}

async fn handle(req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.uri().path() != crate::FEED_PATH {
        return text(StatusCode::NOT_FOUND, "Not Found\n");
    }
    let app = req
        .headers()
        .get("x-developer-app")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if wsevents::is_events_body(req.headers()) {
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(err) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Cannot read body: {err}\n"),
                );
            }
        };
        return match wsevents::decode(body) {
            Ok(events) => {
                if events.contains(&WsEvent::Open) {
                    tracing::info!(developer_app = %app, "trades WebSocket opened");
                }
                events_response(&reply_events(&events))
            }
            Err(err) => text(StatusCode::BAD_REQUEST, format!("Bad events: {err}\n")),
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    let sse = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // The SSE recipe (docs/protocol.md, "History"): a reconnecting EventSource sends the id of the last event it
    // saw; as `prev-id` it makes the edge replay what was missed from the channel's history.
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned);
    tracing::info!(developer_app = %app, sse, ?last_event_id, "trades stream opened");
    stream_hold(sse, last_event_id.as_deref())
}

/// The events answering one WebSocket-over-HTTP request.
pub fn reply_events(events: &[WsEvent]) -> Vec<WsEvent> {
    let mut out = Vec::new();
    for ev in events {
        match ev {
            WsEvent::Open => {
                out.push(WsEvent::Open);
                out.push(WsEvent::Text(Bytes::from(format!(
                    r#"c:{{"type":"subscribe","channel":"{}"}}"#,
                    crate::CHANNEL
                ))));
            }
            WsEvent::Close(payload) => out.push(WsEvent::Close(payload.clone())),
            _ => {}
        }
    }
    out
}

fn events_response(events: &[WsEvent]) -> Response<Body> {
    let mut resp = Response::new(full(wsevents::encode_to_bytes(events)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wsevents::CONTENT_TYPE),
    );
    h.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
    resp
}

fn stream_hold(sse: bool, last_event_id: Option<&str>) -> Response<Body> {
    let mut resp = Response::new(full(if sse {
        ": subscribed to trades\n\n"
    } else {
        ""
    }));
    let h = resp.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("stream"));
    if sse {
        let channel = match last_event_id {
            Some(id) => format!("{}; prev-id={id}", crate::SSE_CHANNEL),
            None => crate::SSE_CHANNEL.to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&channel) {
            h.insert("grip-channel", v);
        }
        h.insert(
            "grip-keep-alive",
            HeaderValue::from_static(":\\n\\n; format=cstring; timeout=20"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
    } else {
        h.insert("grip-channel", HeaderValue::from_static(crate::CHANNEL));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_subscribes_close_is_echoed_text_is_not() {
        let out = reply_events(&[WsEvent::Open]);
        assert_eq!(out[0], WsEvent::Open);
        assert_eq!(
            out[1],
            WsEvent::Text(Bytes::from_static(
                br#"c:{"type":"subscribe","channel":"trades"}"#
            ))
        );
        assert!(reply_events(&[WsEvent::Text(Bytes::from_static(b"hi"))]).is_empty());
        let close = WsEvent::close(1000, "bye");
        assert_eq!(reply_events(std::slice::from_ref(&close)), vec![close]);
    }
}
