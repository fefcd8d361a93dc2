//! WebSocket control messages `send-delayed` / `flush-delayed` (against gripmesh and Pushpin
//! 1.36), and `refresh` as a publish action and as a control command (Pushpin 1.38+; gripmesh
//! only).

use serde_json::json;
use testkit::http_request;
use testkit::ws::{WohOrigin, WohRequest, WsConn, WsEvent, grip_events_response};

use crate::common::WAIT;
use crate::parity_common::{Kind, Proxy, publish};

fn delayed(content: &str, timeout: u64) -> WsEvent {
    WsEvent::control(&json!({"type": "send-delayed", "content": content, "timeout": timeout}))
}

fn delayed_origin(req: &WohRequest) -> testkit::OriginResponse {
    let mut out = Vec::new();
    for ev in &req.events {
        match ev {
            WsEvent::Open => {
                out.push(WsEvent::Open);
                out.push(delayed("first", 30));
            }
            WsEvent::Text(t) => match t.as_ref() {
                // A second delayed message sends the pending one now (Pushpin's sendDelayed).
                b"next" => out.push(delayed("second", 30)),
                b"flush" => out.push(WsEvent::control(&json!({"type": "flush-delayed"}))),
                b"short" => out.push(delayed("third", 1)),
                _ => {}
            },
            _ => {}
        }
    }
    grip_events_response(&out)
}

async fn send_delayed(kind: Kind) {
    let origin = WohOrigin::start(delayed_origin).await;
    let proxy = Proxy::start(kind, &format!("* {},over_http\n", origin.target())).await;
    let mut ws = WsConn::connect(proxy.edge(), "/ws", &[]).await;
    // The 30 s timers cannot fire within WAIT: each message proves a supersede or a flush.
    ws.send_text("next").await;
    assert_eq!(ws.expect_text(WAIT).await, "first", "{kind:?}: superseded");
    ws.send_text("flush").await;
    assert_eq!(ws.expect_text(WAIT).await, "second", "{kind:?}: flushed");
    ws.send_text("short").await;
    assert_eq!(ws.expect_text(WAIT).await, "third", "{kind:?}: timer");
}

#[tokio::test]
async fn parity_send_delayed_and_flush_gripmesh() {
    send_delayed(Kind::Gripmesh).await;
}

#[tokio::test]
async fn parity_send_delayed_and_flush_pushpin() {
    send_delayed(Kind::Pushpin).await;
}

/// `refresh`: the publish action and `POST /refresh` (by Connection-Id and by channel) each
/// make the edge send the origin a request for the connection now (an empty body: nothing
/// was queued).
#[tokio::test]
async fn parity_refresh_action_and_command() {
    let origin = WohOrigin::start(|req| {
        if req.is_open() {
            grip_events_response(&[WsEvent::Open, WsEvent::subscribe("rf")])
        } else {
            grip_events_response(&[])
        }
    })
    .await;
    let proxy = Proxy::start(
        Kind::Gripmesh,
        &format!("* {},over_http\n", origin.target()),
    )
    .await;
    let _ws = WsConn::connect(proxy.edge(), "/ws", &[]).await;
    let cid = origin.connection_id("/ws", WAIT).await;
    let refreshes = |n: usize| {
        let (origin, cid) = (&origin, cid.clone());
        async move {
            testkit::wait_until(WAIT, &format!("{n} refresh requests"), || {
                let got = origin
                    .requests_of(&cid)
                    .iter()
                    .filter(|r| r.request.body.is_empty())
                    .count();
                async move { got >= n }
            })
            .await;
        }
    };
    publish(
        &proxy,
        json!([{"channel": "rf", "formats": {"ws-message": {"action": "refresh"}}}]),
    )
    .await;
    refreshes(1).await;
    for (n, body) in [(2, json!({"cid": cid})), (3, json!({"channel": "rf"}))] {
        let resp = http_request(
            proxy.control(),
            "POST",
            "/refresh",
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "Updated\n"));
        refreshes(n).await;
    }
    let bad = http_request(proxy.control(), "POST", "/refresh", &[], "{}").await;
    assert_eq!(bad.status, 400);
}
