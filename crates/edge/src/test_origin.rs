//! Pushpin's built-in `test` target: a tiny GRIP origin inside the edge, so a route
//! `* test` gives a working stream and long-poll with no origin running.
//!
//! * `/` ⇒ a hello text.
//! * `/stream?channel=C` ⇒ stream hold on `C` (default `test`).
//! * `/sse?channel=C` ⇒ SSE stream hold on `C` with a 20 s comment keep-alive.
//! * `/response?channel=C` ⇒ response hold on `C`.
//! * `OPTIONS` on any path ⇒ `204` with `Allow`: a CORS preflight is answered, never held
//!   (with `aco` on the route, the edge adds the `Access-Control-*` headers).
//!
//! A `Last-Event-ID` request header becomes `prev-id` on the channel, so a client coming back
//! resumes from the channel's history (the SSE recipe of docs/protocol.md, "History").

use http::{HeaderValue, Response, StatusCode};
use runtime::server::{Body, full};

fn channel(query: Option<&str>) -> String {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("channel="))
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() && b != b','))
        .unwrap_or("test")
        .to_owned()
}

/// The client's `Last-Event-ID` as a `prev-id` parameter (the SSE recipe of docs/protocol.md, "History"), when it is
/// a plain token that needs no quoting.
fn prev_id_param(headers: &http::HeaderMap) -> String {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 256
                && id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
        })
        .map_or_else(String::new, |id| format!("; prev-id={id}"))
}

/// Answers a request (path after route rewriting) the way the built-in origin does. A
/// `Last-Event-ID` header resumes the channel from history (`prev-id`).
pub(crate) fn respond(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
) -> Response<Body> {
    let ch = channel(query);
    let resume = prev_id_param(headers);
    let mut resp = Response::new(full(""));
    if method == http::Method::OPTIONS {
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static("OPTIONS, GET, HEAD, POST"),
        );
        return resp;
    }
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    let set = |h: &mut http::HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    match path {
        "/" => {
            *resp.body_mut() = full("Hello from the gripmesh test origin.\n");
        }
        "/stream" => {
            set(h, "grip-hold", "stream");
            set(h, "grip-channel", &format!("{ch}{resume}"));
            *resp.body_mut() = full(format!("[stream open on channel {ch}]\n"));
        }
        "/sse" => {
            set(h, "grip-hold", "stream");
            set(h, "grip-channel", &format!("{ch}{resume}"));
            set(h, "grip-keep-alive", ":\\n\\n; format=cstring; timeout=20");
            h.insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            *resp.body_mut() = full(format!(": stream open on channel {ch}\n\n"));
        }
        "/response" => {
            set(h, "grip-hold", "response");
            set(h, "grip-channel", &format!("{ch}{resume}"));
            *resp.body_mut() = full("[timeout]\n");
        }
        _ => {
            *resp.status_mut() = StatusCode::NOT_FOUND;
            *resp.body_mut() = full("Not Found\n");
        }
    }
    resp
}

/// The built-in origin's WebSocket-over-HTTP answer (`/ws?channel=C`): `OPEN` subscribes the
/// connection to `C` (default `test`); text and binary messages are echoed back.
pub(crate) fn ws_reply(path_and_query: &str, events: &[grip::wsevents::WsEvent]) -> Response<Body> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if path != "/ws" {
        let mut resp = Response::new(full("Not Found\n"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    let out = grip::wsevents::echo_answer(events, &channel(query));
    let mut resp = Response::new(full(grip::wsevents::encode_to_bytes(&out)));
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static(grip::wsevents::CONTENT_TYPE),
    );
    h.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
    resp
}
