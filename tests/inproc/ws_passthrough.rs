//! GRIP WebSocket passthrough (route target without `over_http`): the edge opens a real
//! WebSocket to the origin; with the `grip` extension in the origin's 101 it applies GRIP
//! (`c:` control, `m:` prefix), otherwise it relays both ways unchanged.

use testkit::Origin;
use testkit::ws::{Recv, WsConn, WsOrigin, WsOriginMode};

use crate::common::{WAIT, start};
use crate::jwt::{now_unix, verify_hs256};
use crate::ws_common::{SIG_KEY, publish_ws_text};

/// A GRIP control message as the origin sends it: `c:` + JSON.
fn control(json: serde_json::Value) -> String {
    format!("c:{json}")
}

/// GRIP mode: the origin handshake carries `Sec-WebSocket-Extensions: grip` (only), a valid
/// `Grip-Sig` and the client's headers; the client's 101 has no `grip` extension; `c:` control
/// messages subscribe, `m:` is stripped, unprefixed messages are dropped; client messages and
/// the client's close reach the origin.
#[tokio::test]
async fn passthrough_grip_mode() {
    let origin = WsOrigin::start(WsOriginMode::Grip).await;
    let env = start(&format!("* {}\n", origin.target()), &["--sig-key", SIG_KEY]).await;
    let mut client = WsConn::connect(
        env.edge(),
        "/pt/room?x=1",
        &[
            ("X-Foo", "bar"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ],
    )
    .await;
    let mut upstream = origin.accept(WAIT).await;

    assert_eq!(upstream.uri, "/pt/room?x=1");
    assert_eq!(
        upstream.header_all("sec-websocket-extensions"),
        vec!["grip".to_string()]
    );
    assert_eq!(upstream.header("x-foo").as_deref(), Some("bar"));
    let sig = upstream
        .header("grip-sig")
        .expect("Grip-Sig on the origin handshake");
    let claims = verify_hs256(&sig, SIG_KEY.as_bytes()).expect("Grip-Sig verifies");
    assert_eq!(claims["iss"], "pushpin");
    assert!(claims["exp"].as_u64().is_some_and(|e| e > now_unix()));
    assert!(
        client
            .header_all("sec-websocket-extensions")
            .iter()
            .all(|v| !v.contains("grip")),
        "grip extension forwarded to the client: {:?}",
        client.headers
    );

    upstream
        .send_text(control(
            serde_json::json!({"type": "subscribe", "channel": "pt"}),
        ))
        .await;
    upstream.send_text("unprefixed-dropped").await;
    upstream.send_text("m:hello").await;
    assert_eq!(client.expect_text(WAIT).await, "hello");

    publish_ws_text(env.publish(), "pt", "pub-pt").await;
    assert_eq!(client.expect_text(WAIT).await, "pub-pt");

    client.send_text("up").await;
    assert_eq!(upstream.expect_text(WAIT).await, "up");
    client.send_binary(vec![1u8, 2, 3]).await;
    assert_eq!(upstream.expect_binary(WAIT).await, vec![1u8, 2, 3]);
    upstream.send_binary(b"m:\x00\xff".to_vec()).await;
    assert_eq!(client.expect_binary(WAIT).await, vec![0u8, 0xff]);

    client.close(4000, "client-bye").await;
    let (code, _) = upstream.expect_close(WAIT).await;
    assert_eq!(code, 4000, "client close code relayed to the origin");
}

/// Without the `grip` extension the edge relays everything unchanged, both ways, including
/// the origin's close.
#[tokio::test]
async fn passthrough_plain_relay() {
    let origin = WsOrigin::start(WsOriginMode::Plain).await;
    let env = start(&format!("* {}\n", origin.target()), &[]).await;
    let mut client = WsConn::connect(env.edge(), "/plain", &[]).await;
    let mut upstream = origin.accept(WAIT).await;

    let subscribe = control(serde_json::json!({"type": "subscribe", "channel": "plain"}));
    upstream.send_text(subscribe.clone()).await;
    upstream.send_text("m:kept").await;
    upstream.send_text("no prefix").await;
    assert_eq!(
        client.expect_texts(3, WAIT).await,
        vec![subscribe, "m:kept".to_string(), "no prefix".to_string()]
    );
    upstream.send_binary(vec![5u8, 6]).await;
    assert_eq!(client.expect_binary(WAIT).await, vec![5u8, 6]);

    client.send_text("from-client").await;
    assert_eq!(upstream.expect_text(WAIT).await, "from-client");
    client.send_binary(vec![7u8]).await;
    assert_eq!(upstream.expect_binary(WAIT).await, vec![7u8]);

    upstream.close(4002, "origin-bye").await;
    let (code, _) = client.expect_close(WAIT).await;
    assert_eq!(code, 4002, "origin close code relayed to the client");
}

/// An origin that refuses the WebSocket handshake ⇒ the client's handshake fails with that
/// status; an unreachable origin ⇒ 502.
#[tokio::test]
async fn passthrough_origin_refusal_and_unreachable() {
    let origin = WsOrigin::start(WsOriginMode::Reject {
        status: 403,
        body: "nope\n".into(),
    })
    .await;
    let dead = Origin::refusing_addr();
    let env = start(
        &format!(
            "*,path_beg=/dead 127.0.0.1:{}\n* {}\n",
            dead.port(),
            origin.target()
        ),
        &[],
    )
    .await;
    let rejection = WsConn::connect_rejected(env.edge(), "/refused", &[]).await;
    assert_eq!(rejection.status, 403);
    assert_eq!(origin.handshakes().len(), 1);

    let rejection = WsConn::connect_rejected(env.edge(), "/dead", &[]).await;
    assert_eq!(rejection.status, 502);
}

/// A passthrough connection whose origin goes away ends the client connection.
#[tokio::test]
async fn passthrough_origin_drop_ends_client() {
    let origin = WsOrigin::start(WsOriginMode::Grip).await;
    let env = start(&format!("* {}\n", origin.target()), &[]).await;
    let mut client = WsConn::connect(env.edge(), "/drop", &[]).await;
    let upstream = origin.accept(WAIT).await;
    upstream.abort();
    match client.recv(WAIT).await {
        Recv::Close(_) | Recv::Ended(_) => {}
        other => panic!("client connection not ended after the origin dropped: {other:?}"),
    }
}
