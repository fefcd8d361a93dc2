//! A small GRIP origin with the same behaviour as gripmesh's built-in `test` target, so that
//! gripmesh and Pushpin are measured against the very same origin:
//!
//! * `GET /stream?channel=C` ⇒ stream hold on `C` (default `test`).
//! * `GET /sse?channel=C` ⇒ SSE stream hold on `C`, 20 s comment keep-alive.
//! * `GET /response?channel=C` ⇒ response hold on `C`.
//! * `POST /ws?channel=C` (WebSocket-over-HTTP): `OPEN` ⇒ `OPEN` + `c:{"type":"subscribe",
//!   "channel":"C"}`; text/binary echoed with `m:`; `CLOSE` echoed; `DISCONNECT` acknowledged.
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

fn channel(query: Option<&str>) -> String {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("channel="))
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() && b != b','))
        .unwrap_or("test")
        .to_owned()
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

/// The answer to a plain (non-WebSocket) request.
pub fn respond_http(path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
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
    let ch = channel(query);
    match path {
        "/stream" => {
            let mut r = text(StatusCode::OK, format!("[stream open on channel {ch}]\n"));
            set(&mut r, "grip-hold", "stream");
            set(&mut r, "grip-channel", &ch);
            r
        }
        "/sse" => {
            let mut r = text(StatusCode::OK, format!(": stream open on channel {ch}\n\n"));
            set(&mut r, "content-type", "text/event-stream");
            set(&mut r, "grip-hold", "stream");
            set(&mut r, "grip-channel", &ch);
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
            set(&mut r, "grip-channel", &ch);
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

/// The answer to a WebSocket-over-HTTP request carrying `events`.
pub fn respond_ws(query: Option<&str>, events: &[WsEvent]) -> Response<Full<Bytes>> {
    let out = wsevents::echo_answer(events, &channel(query));
    let mut r = Response::new(Full::new(wsevents::encode_to_bytes(&out)));
    set(&mut r, "content-type", wsevents::CONTENT_TYPE);
    set(&mut r, "sec-websocket-extensions", "grip");
    r
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
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
    Ok(respond_http(&path, query.as_deref()))
}

/// Serves the origin on `listener` forever.
pub async fn serve(listener: TcpListener) -> Result<()> {
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
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
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
        let r = respond_http("/stream", Some("channel=abc&x=1"));
        assert_eq!(r.headers()["grip-hold"], "stream");
        assert_eq!(r.headers()["grip-channel"], "abc");
        let r = respond_http("/response", None);
        assert_eq!(r.headers()["grip-hold"], "response");
        assert_eq!(r.headers()["grip-channel"], "test");
        let r = respond_http("/sse", Some("channel=s"));
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        assert_eq!(respond_http("/nope", None).status(), StatusCode::NOT_FOUND);
        let allow = respond_http("/auth/ws", Some("channel=c&apikey=k7"));
        assert_eq!(allow.status(), StatusCode::OK);
        assert_eq!(allow.headers()["x-developer-app"], "app-k7");
        assert_eq!(
            respond_http("/auth/ws", Some("channel=c")).status(),
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
}
