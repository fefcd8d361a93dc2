//! A small GRIP origin with the same behaviour as gripmesh's built-in `test` target, so that
//! gripmesh and Pushpin are measured against the very same origin:
//!
//! * `GET /stream?channel=C` ⇒ stream hold on `C` (default `test`).
//! * `GET /sse?channel=C` ⇒ SSE stream hold on `C`, 20 s comment keep-alive.
//! * `GET /response?channel=C` ⇒ response hold on `C`.
//! * `POST /ws?channel=C` (WebSocket-over-HTTP): `OPEN` ⇒ `OPEN` + `c:{"type":"subscribe",
//!   "channel":"C"}`; text/binary echoed with `m:`; `CLOSE` echoed; `DISCONNECT` acknowledged.
//! * Every hold also takes `&filter=NAME` (repeatable: subscription filters such as
//!   `skip-self`), `&user=U` (sub meta `user`: `Grip-Set-Meta` on HTTP holds, a `set-meta`
//!   control message before the `subscribe` on WebSockets) and `&prev-id=ID` (resume from
//!   history; on `/stream` and `/sse` a `Last-Event-ID` header does the same, as gripmesh's
//!   built-in `test` target does).
//! * `GET /auth/…?apikey=K` ⇒ a forward-auth gateway's allow: 200 with `X-Developer-App: app-K`
//!   (for `--authz-gateway http://<this>/auth`); no key ⇒ 401.
//! * `/usage` ⇒ 200 (a usage webhook that takes everything: `--usage-webhook http://<this>/usage`).

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use grip::wsevents::{self, WsEvent};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a hold request asks for in its query (and `Last-Event-ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    /// Channel (default `test`).
    pub channel: String,
    /// Subscription filter names (at most 5, as GRIP allows).
    pub filters: Vec<String>,
    /// Sub meta `user`.
    pub user: Option<String>,
    /// Resume after this id.
    pub prev_id: Option<String>,
}

/// A value that can go into a GRIP header parameter and a JSON string unquoted and unescaped.
fn token(v: &str) -> Option<&str> {
    (!v.is_empty()
        && v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b';' | b'"' | b'\\' | b'=')))
    .then_some(v)
}

impl Hold {
    /// Parses `query`; `last_event_id` (a header) stands for `prev-id` when the query has none.
    pub(crate) fn parse(query: Option<&str>, last_event_id: Option<&str>) -> Hold {
        let mut h = Hold {
            channel: "test".to_owned(),
            filters: Vec::new(),
            user: None,
            prev_id: None,
        };
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let Some(v) = token(v) else { continue };
            match k {
                "channel" => h.channel = v.to_owned(),
                "filter" if h.filters.len() < 5 => h.filters.push(v.to_owned()),
                "user" => h.user = Some(v.to_owned()),
                "prev-id" => h.prev_id = Some(v.to_owned()),
                _ => {}
            }
        }
        if h.prev_id.is_none() {
            h.prev_id = last_event_id
                .map(str::trim)
                .and_then(token)
                .map(str::to_owned);
        }
        h
    }

    /// The `Grip-Channel` value: `C; filter=F…; prev-id=ID`.
    fn grip_channel(&self) -> String {
        let mut v = self.channel.clone();
        for f in &self.filters {
            v.push_str("; filter=");
            v.push_str(f);
        }
        if let Some(id) = &self.prev_id {
            v.push_str("; prev-id=");
            v.push_str(id);
        }
        v
    }

    /// Sets `Grip-Channel` and, with a user, `Grip-Set-Meta`.
    fn set_headers(&self, r: &mut Response<Full<Bytes>>) {
        set(r, "grip-channel", &self.grip_channel());
        if let Some(u) = &self.user {
            set(r, "grip-set-meta", &format!("user={u}"));
        }
    }

    /// The control messages a WebSocket gets on `OPEN`: `set-meta` (with a user), then
    /// `subscribe` with the filters and `prev-id`.
    fn ws_control(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push(serde_json::json!({"type": "set-meta", "name": "user", "value": u}));
        }
        let mut sub = serde_json::json!({"type": "subscribe", "channel": self.channel});
        if !self.filters.is_empty() {
            sub["filters"] = serde_json::json!(self.filters);
        }
        if let Some(id) = &self.prev_id {
            sub["prev-id"] = serde_json::json!(id);
        }
        out.push(sub);
        out
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    r
}

fn set(r: &mut Response<Full<Bytes>>, k: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        r.headers_mut().insert(k, v);
    }
}

/// The answer to a plain (non-WebSocket) request; `last_event_id` is the client's
/// `Last-Event-ID` header.
pub(crate) fn respond_http(
    path: &str,
    query: Option<&str>,
    last_event_id: Option<&str>,
) -> Response<Full<Bytes>> {
    if path == "/usage" {
        return text(StatusCode::OK, "");
    }
    if path.starts_with("/auth/") {
        let key = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("apikey="));
        return match key {
            Some(k) if !k.is_empty() => {
                let mut r = text(StatusCode::OK, "");
                set(&mut r, "x-developer-app", &format!("app-{k}"));
                set(&mut r, "x-api-product", "bench");
                r
            }
            _ => text(StatusCode::UNAUTHORIZED, "no key\n"),
        };
    }
    let hold = Hold::parse(query, last_event_id);
    let ch = &hold.channel;
    match path {
        "/stream" => {
            let mut r = text(StatusCode::OK, format!("[stream open on channel {ch}]\n"));
            set(&mut r, "grip-hold", "stream");
            hold.set_headers(&mut r);
            r
        }
        "/sse" => {
            let mut r = text(StatusCode::OK, format!(": stream open on channel {ch}\n\n"));
            set(&mut r, "content-type", "text/event-stream");
            set(&mut r, "grip-hold", "stream");
            hold.set_headers(&mut r);
            set(
                &mut r,
                "grip-keep-alive",
                ":\\n\\n; format=cstring; timeout=20",
            );
            r
        }
        "/response" => {
            let mut r = text(StatusCode::OK, "[timeout]\n");
            set(&mut r, "grip-hold", "response");
            hold.set_headers(&mut r);
            // `timeout=N`: the hold's `Grip-Timeout` (long-poll storms).
            if let Some(t) = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("timeout="))
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            {
                set(&mut r, "grip-timeout", t);
            }
            r
        }
        "/" => text(StatusCode::OK, "gripmesh-loadtest origin\n"),
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}

/// The answer to a WebSocket-over-HTTP request carrying `events`: `OPEN` ⇒ `OPEN` and the
/// hold's control messages; messages echoed with `m:`; `CLOSE` echoed.
pub(crate) fn respond_ws(query: Option<&str>, events: &[WsEvent]) -> Response<Full<Bytes>> {
    let hold = Hold::parse(query, None);
    let mut out = Vec::new();
    for ev in events {
        match ev {
            WsEvent::Open => {
                out.push(WsEvent::Open);
                for c in hold.ws_control() {
                    out.push(WsEvent::Text(Bytes::from(format!("c:{c}"))));
                }
            }
            WsEvent::Text(t) => out.push(WsEvent::Text(prefixed(b"m:", t))),
            WsEvent::Binary(b) => out.push(WsEvent::Binary(prefixed(b"m:", b))),
            WsEvent::Close(p) => out.push(WsEvent::Close(p.clone())),
            WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Disconnect => {}
        }
    }
    let mut r = Response::new(Full::new(wsevents::encode_to_bytes(&out)));
    set(&mut r, "content-type", wsevents::CONTENT_TYPE);
    set(&mut r, "sec-websocket-extensions", "grip");
    r
}

fn prefixed(prefix: &[u8], data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(prefix.len() + data.len());
    v.extend_from_slice(prefix);
    v.extend_from_slice(data);
    Bytes::from(v)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_ws = wsevents::is_events_body(req.headers());
    if req.method() == Method::POST && is_ws {
        if path != "/ws" {
            return Ok(text(StatusCode::NOT_FOUND, "Not Found\n"));
        }
        let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "bad body\n")),
        };
        return Ok(match wsevents::decode(body) {
            Ok(events) => respond_ws(query.as_deref(), &events),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        });
    }
    Ok(respond_http(
        &path,
        query.as_deref(),
        last_event_id.as_deref(),
    ))
}

/// Serves the origin on `listener` forever.
pub(crate) async fn serve(listener: TcpListener) -> Result<()> {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("origin: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service_fn(handle))
                .await;
        });
    }
}

/// Binds `addr` and prints `listening origin <addr>` then `ready` (like gripmesh).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let l = TcpListener::bind(addr).await?;
    println!("listening origin {}", l.local_addr()?);
    println!("ready");
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_ws_subscribe() {
        let r = respond_http("/stream", Some("channel=abc&x=1"), None);
        assert_eq!(r.headers()["grip-hold"], "stream");
        assert_eq!(r.headers()["grip-channel"], "abc");
        let r = respond_http("/response", None, None);
        assert_eq!(r.headers()["grip-hold"], "response");
        assert_eq!(r.headers()["grip-channel"], "test");
        let r = respond_http("/sse", Some("channel=s"), None);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        assert_eq!(
            respond_http("/nope", None, None).status(),
            StatusCode::NOT_FOUND
        );
        let allow = respond_http("/auth/ws", Some("channel=c&apikey=k7"), None);
        assert_eq!(allow.status(), StatusCode::OK);
        assert_eq!(allow.headers()["x-developer-app"], "app-k7");
        assert_eq!(
            respond_http("/auth/ws", Some("channel=c"), None).status(),
            StatusCode::UNAUTHORIZED
        );

        let r = respond_ws(Some("channel=w1"), &[WsEvent::Open]);
        assert_eq!(r.headers()["sec-websocket-extensions"], "grip");
        let body = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let ev = wsevents::decode(body).expect("valid events");
        assert_eq!(ev[0], WsEvent::Open);
        let WsEvent::Text(t) = &ev[1] else {
            panic!("expected a text event, got {:?}", ev[1]);
        };
        let sub: serde_json::Value =
            serde_json::from_slice(t.strip_prefix(b"c:").expect("c: prefix")).expect("JSON");
        assert_eq!(
            sub,
            serde_json::json!({"type": "subscribe", "channel": "w1"})
        );
    }

    fn ws_texts(query: &str) -> Vec<serde_json::Value> {
        let r = respond_ws(Some(query), &[WsEvent::Open]);
        let body = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let ev = wsevents::decode(body).expect("valid events");
        assert_eq!(ev[0], WsEvent::Open);
        ev[1..]
            .iter()
            .map(|e| {
                let WsEvent::Text(t) = e else {
                    panic!("expected a text event, got {e:?}");
                };
                serde_json::from_slice(t.strip_prefix(b"c:").expect("c: prefix")).expect("JSON")
            })
            .collect()
    }

    #[test]
    fn ws_filters_user_and_prev_id() {
        assert_eq!(
            ws_texts("channel=c1&filter=skip-self&user=u-7&prev-id=r-0"),
            vec![
                serde_json::json!({"type": "set-meta", "name": "user", "value": "u-7"}),
                serde_json::json!({"type": "subscribe", "channel": "c1",
                    "filters": ["skip-self"], "prev-id": "r-0"}),
            ]
        );
        // Values that would need quoting are ignored rather than passed on.
        assert_eq!(
            ws_texts("channel=c2&user=a\"b&filter=x;y"),
            vec![serde_json::json!({"type": "subscribe", "channel": "c2"})]
        );
    }

    #[test]
    fn http_holds_carry_filters_meta_and_resume() {
        let r = respond_http(
            "/sse",
            Some("channel=h&filter=skip-self&user=u1"),
            Some(" r-9 "),
        );
        assert_eq!(
            r.headers()["grip-channel"],
            "h; filter=skip-self; prev-id=r-9"
        );
        assert_eq!(r.headers()["grip-set-meta"], "user=u1");
        // The query's prev-id wins over Last-Event-ID; a bad header is ignored.
        let r = respond_http("/stream", Some("channel=h&prev-id=q1"), Some("r-9"));
        assert_eq!(r.headers()["grip-channel"], "h; prev-id=q1");
        let r = respond_http("/stream", Some("channel=h"), Some("a;b"));
        assert_eq!(r.headers()["grip-channel"], "h");
        assert!(r.headers().get("grip-set-meta").is_none());
        let h = Hold::parse(
            Some("filter=a&filter=b&filter=c&filter=d&filter=e&filter=f"),
            None,
        );
        assert_eq!(h.filters.len(), 5);
    }
}
