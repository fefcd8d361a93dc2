//! Per-key limits (docs/protocol.md, "Key limits and usage") on a standalone edge: concurrent connections per key,
//! message quotas and credential expiry, from flags or from the gateway's allow answer
//! (`Gripmesh-Max-Connections`, `Gripmesh-Message-Quota`, `Gripmesh-Expires`, a Bearer JWT's
//! `exp`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use testkit::ws::{Recv, WsConn};
use testkit::{
    Origin, OriginResponse, RecordedRequest, StreamClient, StreamEnd, http_get, metric_value,
    query_param, wait_until,
};

use crate::common::{WAIT, publish_items, start};
use crate::jwt::{now_unix, sign_hs256};

const TOO_MANY: &str = "Too many connections for this key.\n";
const QUOTA: &str = "Message quota exceeded for this key.\n";

/// Extra answer headers per key.
type KeyHeaders = HashMap<String, Vec<(String, String)>>;

/// A gateway allowing the keys it knows (`?apikey=`, `X-Api-Key`, or any `Authorization`
/// bearer), answering each with that key's extra headers.
pub(crate) struct Gateway {
    origin: Origin,
}

impl Gateway {
    pub(crate) async fn start(keys: &[(&str, Vec<(&str, String)>)]) -> Gateway {
        let keys: Arc<Mutex<KeyHeaders>> = Arc::new(Mutex::new(
            keys.iter()
                .map(|(k, h)| {
                    (
                        (*k).to_owned(),
                        h.iter()
                            .map(|(n, v)| ((*n).to_owned(), v.clone()))
                            .collect(),
                    )
                })
                .collect(),
        ));
        let origin = Origin::start(move |req: RecordedRequest| {
            let key = query_param(&req.uri, "apikey")
                .or_else(|| req.header("x-api-key"))
                .or_else(|| req.header("authorization").map(|_| "bearer".to_owned()));
            let known = key.and_then(|k| keys.lock().expect("keys").get(&k).cloned());
            match known {
                Some(headers) => {
                    let mut resp = OriginResponse::new(200);
                    for (n, v) in &headers {
                        resp = resp.header(n, v);
                    }
                    resp
                }
                None => OriginResponse::new(401).body("denied\n"),
            }
        })
        .await;
        Gateway { origin }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.origin.addr())
    }
}

async fn limited(admin: std::net::SocketAddr, limit: &str) -> f64 {
    metric_value(
        admin,
        &format!(r#"gripmesh_edge_key_limited_total{{limit="{limit}"}}"#),
    )
    .await
    .unwrap_or(0.0)
}

/// `--key-max-connections 1` for keys the gateway says nothing about; `Gripmesh-Max-Connections:
/// 2` overrides it for `big`. The connection past the limit gets 429 over HTTP streaming, SSE
/// and the WebSocket handshake; closing one frees a slot; other keys are not affected.
#[tokio::test]
async fn connections_per_key_are_limited_and_freed_on_close() {
    let gw = Gateway::start(&[
        ("big", vec![("Gripmesh-Max-Connections", "2".into())]),
        ("small", vec![]),
    ])
    .await;
    let env = start(
        "*,authz test\n",
        &["--authz-gateway", &gw.url(), "--key-max-connections", "1"],
    )
    .await;
    let edge = env.edge();
    let mut a = StreamClient::open(edge, "/stream?channel=c&apikey=big", &[]).await;
    assert_eq!(a.status, 200);
    a.read_until("stream open", WAIT).await;
    let mut b = WsConn::connect(edge, "/ws?channel=c&apikey=big", &[]).await;
    let over = http_get(edge, "/stream?channel=c&apikey=big", &[]).await;
    assert_eq!((over.status, over.text().as_str()), (429, TOO_MANY));
    let sse = http_get(
        edge,
        "/stream?channel=c&apikey=big",
        &[("Accept", "text/event-stream")],
    )
    .await;
    assert_eq!(sse.status, 429, "SSE too");
    let ws_over = WsConn::connect_rejected(edge, "/ws?channel=c&apikey=big", &[]).await;
    assert_eq!(
        (ws_over.status, ws_over.text().as_str()),
        (429, TOO_MANY),
        "the WebSocket handshake gets 429"
    );

    // The flag's limit for a key the gateway gave none.
    let mut s1 = StreamClient::open(edge, "/stream?channel=c&apikey=small", &[]).await;
    assert_eq!(s1.status, 200);
    s1.read_until("stream open", WAIT).await;
    let s2 = http_get(edge, "/stream?channel=c&apikey=small", &[]).await;
    assert_eq!(s2.status, 429);

    // Closing a connection frees its slot.
    a.close();
    b.close(1000, "bye").await;
    wait_until(WAIT, "a freed slot", || async {
        let c = StreamClient::open(edge, "/stream?channel=c&apikey=big", &[]).await;
        c.status == 200
    })
    .await;
    assert!(limited(env.admin(), "connections").await >= 4.0);
}

/// `Gripmesh-Message-Quota: 4/1m` for `q`, whose two connections share it: after four
/// deliveries the next one closes both (WebSocket 4429, stream ended), a new connection gets
/// 429 until the period ends, and another key on the same channel gets everything.
#[tokio::test]
async fn message_quota_closes_the_keys_connections() {
    let gw = Gateway::start(&[
        ("q", vec![("Gripmesh-Message-Quota", "4/1m".into())]),
        ("free", vec![]),
    ])
    .await;
    let env = start("*,authz test\n", &["--authz-gateway", &gw.url()]).await;
    let edge = env.edge();
    let mut ws = WsConn::connect(edge, "/ws?channel=mq&apikey=q", &[]).await;
    let mut stream = StreamClient::open(edge, "/stream?channel=mq&apikey=q", &[]).await;
    assert_eq!(stream.status, 200);
    stream.read_until("stream open", WAIT).await;
    let mut other = StreamClient::open(edge, "/stream?channel=mq&apikey=free", &[]).await;
    other.read_until("stream open", WAIT).await;
    for i in 1..=3 {
        let item = json!({"channel": "mq", "formats": {
            "ws-message": {"content": format!("m{i}")},
            "http-stream": {"content": format!("m{i}\n")},
        }});
        publish_items(env.publish(), json!([item])).await;
        other.read_until(format!("m{i}\n"), WAIT).await;
    }
    // m1 and m2 are the key's four admitted deliveries; m3 is refused and closes both
    // connections. A delivery admitted to one connection can still be queued when the close
    // from the other arrives (the close goes first), so 3 or 4 of them are seen, never m3.
    let mut on_ws = Vec::new();
    let code = loop {
        match ws.recv(WAIT).await {
            Recv::Text(t) => on_ws.push(t),
            Recv::Ping(_) | Recv::Pong(_) => {}
            Recv::Close(frame) => break frame.map_or(1005, |(code, _)| code),
            other => panic!("WebSocket: {other:?} after {on_ws:?}"),
        }
    };
    assert_eq!(code, 4429, "WebSocket closed for the quota after {on_ws:?}");
    assert_eq!(stream.wait_end(WAIT).await, StreamEnd::Clean);
    let on_stream: Vec<String> = stream
        .received_text()
        .lines()
        .filter(|l| l.starts_with('m'))
        .map(str::to_owned)
        .collect();
    for got in [&on_ws, &on_stream] {
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        assert!(
            ["m1", "m2"].starts_with(&got),
            "in order, never m3: {got:?}"
        );
    }
    let total = on_ws.len() + on_stream.len();
    assert!((3..=4).contains(&total), "{on_ws:?} + {on_stream:?}");
    let refused = http_get(edge, "/stream?channel=mq&apikey=q", &[]).await;
    assert_eq!((refused.status, refused.text().as_str()), (429, QUOTA));
    let ws_refused = WsConn::connect_rejected(edge, "/ws?channel=mq&apikey=q", &[]).await;
    assert_eq!(ws_refused.status, 429);
    assert!(limited(env.admin(), "quota").await >= 1.0);
}

/// A credential with `Gripmesh-Expires` two seconds ahead is closed then (WebSocket 4401,
/// stream ended); a Bearer JWT's `exp` does the same without any gateway header; an expiry
/// already past is refused with 401; and the cached allow does not outlive the expiry.
#[tokio::test]
async fn expired_credentials_are_closed_on_time() {
    let soon = (now_unix() + 2).to_string();
    let past = (now_unix() - 5).to_string();
    let gw = Gateway::start(&[
        ("soon", vec![("Gripmesh-Expires", soon)]),
        ("past", vec![("Gripmesh-Expires", past)]),
        ("bearer", vec![]),
    ])
    .await;
    let env = start("*,authz test\n", &["--authz-gateway", &gw.url()]).await;
    let edge = env.edge();
    let mut ws = WsConn::connect(edge, "/ws?channel=ex&apikey=soon", &[]).await;
    let mut stream = StreamClient::open(edge, "/stream?channel=ex&apikey=soon", &[]).await;
    assert_eq!(stream.status, 200);
    let jwt = sign_hs256(&json!({"sub": "u", "exp": now_unix() + 2}), b"gateway-key");
    let bearer = format!("Bearer {jwt}");
    let mut jwt_stream = StreamClient::open(
        edge,
        "/stream?channel=ex",
        &[("Authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(jwt_stream.status, 200);

    let deadline = Duration::from_secs(8);
    assert_eq!(ws.expect_close(deadline).await.0, 4401);
    assert_eq!(stream.wait_end(deadline).await, StreamEnd::Clean);
    assert_eq!(jwt_stream.wait_end(deadline).await, StreamEnd::Clean);

    let refused = http_get(edge, "/stream?channel=ex&apikey=past", &[]).await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (401, "Credential expired.\n")
    );
    // The allow for `soon` was cached for at most its two seconds: asking again reaches the
    // gateway, whose answer is now in the past.
    let again = http_get(edge, "/stream?channel=ex&apikey=soon", &[]).await;
    assert_eq!(again.status, 401, "{}", again.text());
    assert!(limited(env.admin(), "expired").await >= 4.0);
}

/// Unusable limit headers from the gateway (negative, garbage) are ignored with a log line,
/// never a crash: the client connects.
#[tokio::test]
async fn bad_limit_headers_from_the_gateway_are_ignored() {
    let gw = Gateway::start(&[(
        "odd",
        vec![
            ("Gripmesh-Max-Connections", "-1".into()),
            ("Gripmesh-Message-Quota", "lots/often".into()),
            ("Gripmesh-Expires", "tomorrow".into()),
        ],
    )])
    .await;
    let env = start("*,authz test\n", &["--authz-gateway", &gw.url()]).await;
    let mut s = StreamClient::open(env.edge(), "/stream?channel=b&apikey=odd", &[]).await;
    assert_eq!(s.status, 200);
    s.read_until("stream open", WAIT).await;
    let logs = env.gm.stderr_text();
    assert!(
        logs.matches("ignored").count() >= 3,
        "each unusable value is logged: {logs}"
    );
}
