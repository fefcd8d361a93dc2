//! WebSocket-over-HTTP (route target `over_http`): what Pushpin does (docs/protocol.md,
//! "Pushpin compatibility"), GRIP control messages, ordering, batching, fan-out to many
//! clients, and the built-in `test` target.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use testkit::ws::{
    WohOrigin, WsConn, WsConnectError, WsEvent, echo_events, echo_reply, events_response,
    grip_events_response,
};
use testkit::{OriginResponse, http_request};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::common::{WAIT, publish_items, start};
use crate::jwt::{now_unix, verify_hs256};
use crate::ws_common::{
    SIG_KEY, publish_ws_text, start_woh, ws_binary_item, ws_close_item, ws_text_item,
};

/// Case 30: the OPEN request — `POST` to the client's path and query, body exactly
/// `OPEN\r\n`, events content type both ways, a `Connection-Id`, only the `grip` extension, a
/// valid `Grip-Sig`, the client's handshake headers (but no `Upgrade`/`Connection`); the
/// handshake headers are replayed on later requests with the same `Connection-Id`, and another
/// connection gets another id.
#[tokio::test]
async fn woh_open_request_format_and_replayed_headers() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &["--sig-key", SIG_KEY]).await;
    let uri = "/ws/open?x=1&y=two";
    let mut client = WsConn::connect(
        env.edge(),
        uri,
        &[
            ("User-Agent", "e2e-agent/1.0"),
            ("X-Foo", "bar"),
            (
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ],
    )
    .await;

    let open = origin.wait_open(uri, WAIT).await;
    let req = &open.request;
    assert_eq!(req.method, "POST");
    assert_eq!(req.body.as_ref(), b"OPEN\r\n", "OPEN body");
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/websocket-events")
    );
    assert_eq!(
        req.header("accept").as_deref(),
        Some("application/websocket-events")
    );
    let cid = open.connection_id().expect("Connection-Id on OPEN");
    assert!(!cid.trim().is_empty(), "empty Connection-Id");
    assert_eq!(
        req.header_all("sec-websocket-extensions"),
        vec!["grip".to_string()],
        "the edge offers only the grip extension (the client's permessage-deflate is dropped)"
    );
    let sig = req.header("grip-sig").expect("Grip-Sig on OPEN");
    let claims = verify_hs256(&sig, SIG_KEY.as_bytes()).expect("Grip-Sig verifies");
    assert_eq!(claims["iss"], "pushpin");
    assert!(
        claims["exp"].as_u64().is_some_and(|exp| exp > now_unix()),
        "Grip-Sig exp in the future: {claims}"
    );
    assert_eq!(
        req.header("sec-websocket-key").as_deref(),
        Some(client.key.as_str()),
        "client's Sec-WebSocket-Key replayed"
    );
    assert_eq!(req.header("user-agent").as_deref(), Some("e2e-agent/1.0"));
    assert_eq!(req.header("x-foo").as_deref(), Some("bar"));
    assert_eq!(
        req.header("host").as_deref(),
        Some(env.edge().to_string().as_str()),
        "Host is the client's Host"
    );
    assert_eq!(req.header("upgrade"), None, "Upgrade reached the origin");
    assert_eq!(
        req.header("connection"),
        None,
        "Connection reached the origin"
    );

    // A later request of the same connection replays the handshake headers.
    client.send_text("second").await;
    assert_eq!(client.expect_text(WAIT).await, "second");
    let later = origin
        .wait_request(WAIT, "request carrying TEXT second", |r| {
            r.events.contains(&WsEvent::text("second"))
        })
        .await;
    assert_eq!(later.connection_id().as_deref(), Some(cid.as_str()));
    assert_eq!(later.request.method, "POST");
    assert_eq!(later.request.uri, uri);
    assert_eq!(
        later.header("sec-websocket-key").as_deref(),
        Some(client.key.as_str())
    );
    assert_eq!(later.header("user-agent").as_deref(), Some("e2e-agent/1.0"));
    assert_eq!(later.header("x-foo").as_deref(), Some("bar"));
    assert_eq!(
        later.request.header_all("sec-websocket-extensions"),
        vec!["grip".to_string()]
    );
    assert_eq!(
        later.header("content-type").as_deref(),
        Some("application/websocket-events")
    );
    let sig = later
        .header("grip-sig")
        .expect("Grip-Sig on later requests");
    verify_hs256(&sig, SIG_KEY.as_bytes()).expect("later Grip-Sig verifies");
    assert_eq!(later.header("upgrade"), None);

    // Another connection, another id.
    let other_uri = "/ws/open?x=2";
    let _other = WsConn::connect(env.edge(), other_uri, &[]).await;
    let other_cid = origin.connection_id(other_uri, WAIT).await;
    assert_ne!(other_cid, cid, "two connections share a Connection-Id");
}

/// Case 31: a non-200 answer to OPEN refuses the handshake with the origin's status, headers
/// and body.
#[tokio::test]
async fn woh_open_refused_with_origin_status_headers_and_body() {
    let origin = WohOrigin::start(|_| {
        OriginResponse::new(403)
            .header("Content-Type", "text/plain")
            .header("X-Reason", "not-on-the-list")
            .body("denied\n")
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let rejection = WsConn::connect_rejected(env.edge(), "/ws/reject", &[]).await;
    assert_eq!(rejection.status, 403);
    assert_eq!(rejection.text(), "denied\n");
    assert_eq!(
        rejection.header("x-reason").as_deref(),
        Some("not-on-the-list")
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "exactly the OPEN request: {reqs:?}");
    assert!(reqs[0].is_open());
}

/// A 200 answer to OPEN that is not `application/websocket-events`, or whose events do not
/// start with `OPEN`, does not open the client's WebSocket.
#[tokio::test]
async fn woh_open_answer_without_open_event_fails_handshake() {
    let origin = WohOrigin::start(|req| match req.request.path() {
        "/plain" => OriginResponse::text("hello\n"),
        "/noopen" => grip_events_response(&[WsEvent::message("too early")]),
        _ => echo_reply(req),
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    for path in ["/plain", "/noopen"] {
        match WsConn::try_connect(env.edge(), path, &[]).await {
            Ok(conn) => panic!("{path}: handshake succeeded: {:?}", conn.headers),
            Err(WsConnectError::Rejected(r)) => {
                assert_ne!(r.status, 101, "{path}");
            }
            Err(WsConnectError::Failed(_)) => {}
        }
    }
    // The edge is fine afterwards.
    let mut ok = WsConn::connect(env.edge(), "/fine", &[]).await;
    ok.send_text("fine").await;
    assert_eq!(ok.expect_text(WAIT).await, "fine");
}

/// Pushpin passes the origin's OPEN response headers on in the 101, minus `Content-Type`,
/// `Content-Length`, `Keep-Alive-Interval` and `Set-Meta-*`; the `grip` extension is not
/// forwarded to the client.
#[tokio::test]
async fn woh_open_response_headers_reach_the_101() {
    let origin = WohOrigin::start(|req| {
        echo_reply(req)
            .header("X-Origin-Header", "from-origin")
            .header("Set-Meta-User", "alice")
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let client = WsConn::connect(env.edge(), "/ws/headers", &[]).await;
    assert_eq!(
        client.header("x-origin-header").as_deref(),
        Some("from-origin")
    );
    assert!(
        client
            .header_all("sec-websocket-extensions")
            .iter()
            .all(|v| !v.contains("grip")),
        "grip extension forwarded to the client: {:?}",
        client.headers
    );
    assert_eq!(
        client.header("content-type"),
        None,
        "origin Content-Type in the 101"
    );
}

/// Case 32: a client TEXT becomes `TEXT 2\r\nhi\r\n` on the same connection id; in GRIP mode
/// `m:` is stripped from replies and replies without the prefix are dropped.
#[tokio::test]
async fn woh_echo_strips_prefix_and_drops_unprefixed() {
    let origin = WohOrigin::start(|req| {
        let mut out = Vec::new();
        for event in &req.events {
            match event {
                WsEvent::Open => out.push(WsEvent::Open),
                WsEvent::Text(t) => {
                    out.push(WsEvent::text("raw:x"));
                    out.push(WsEvent::message(format!(
                        "echo:{}",
                        String::from_utf8_lossy(t)
                    )));
                }
                _ => {}
            }
        }
        grip_events_response(&out)
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/echo", &[]).await;
    let cid = origin.connection_id("/ws/echo", WAIT).await;

    client.send_text("hi").await;
    assert_eq!(client.expect_text(WAIT).await, "echo:hi");
    let req = origin
        .wait_request(WAIT, "request with TEXT hi", |r| {
            r.events.contains(&WsEvent::text("hi"))
        })
        .await;
    assert_eq!(req.request.body.as_ref(), b"TEXT 2\r\nhi\r\n");
    assert_eq!(req.connection_id().as_deref(), Some(cid.as_str()));

    // The unprefixed `raw:x` was dropped, not merely delayed.
    client.send_text("again").await;
    assert_eq!(client.expect_text(WAIT).await, "echo:again");
}

/// Case 33: a `subscribe` control message in the OPEN answer subscribes the connection before
/// the client gets its 101: a publish right after connecting is delivered; `content` arrives as
/// TEXT, `content-bin` as BINARY.
#[tokio::test]
async fn woh_subscribe_in_open_then_publish_text_and_binary() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws?channel=wstest", &[]).await;
    publish_ws_text(env.publish(), "wstest", "pushed-ws").await;
    assert_eq!(client.expect_text(WAIT).await, "pushed-ws");
    let data = [0u8, 1, 2, 0xfe, 0xff, b'\r', b'\n'];
    publish_items(env.publish(), json!([ws_binary_item("wstest", &data)])).await;
    assert_eq!(client.expect_binary(WAIT).await, data.to_vec());
}

/// Case 34: `Set-Meta-User` on the OPEN answer ⇒ `Meta-User` on every later request; the
/// client's own `Meta-User` never reaches the origin; the 101 has no `Set-Meta-*`.
#[tokio::test]
async fn woh_meta_round_trip() {
    let origin = WohOrigin::start(|req| {
        let resp = echo_reply(req);
        if req.is_open() {
            resp.header("Set-Meta-User", "alice")
        } else {
            resp
        }
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/meta", &[("Meta-User", "evil")]).await;
    assert!(
        client
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("set-meta-")),
        "Set-Meta-* in the 101: {:?}",
        client.headers
    );
    for text in ["one", "two"] {
        client.send_text(text).await;
        assert_eq!(client.expect_text(WAIT).await, text);
    }
    let reqs = origin.requests();
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert!(reqs[0].is_open());
    assert_eq!(
        reqs[0].header("meta-user"),
        None,
        "client-sent Meta-User reached the origin"
    );
    for later in &reqs[1..] {
        assert_eq!(
            later.request.header_all("meta-user"),
            vec!["alice".to_string()],
            "Meta-User on {:?}",
            later.events
        );
    }
}

/// Case 35: publishing a ws-message `close` closes the client with that code and reason, and
/// the origin then receives a `CLOSE` event.
#[tokio::test]
async fn woh_close_by_publish() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws?channel=closeme", &[]).await;
    let cid = origin.connection_id("/ws?channel=closeme", WAIT).await;
    publish_items(
        env.publish(),
        json!([ws_close_item("closeme", 4001, "bye")]),
    )
    .await;
    assert_eq!(client.expect_close(WAIT).await, (4001, "bye".to_string()));
    origin
        .wait_events(&cid, WAIT, "a CLOSE event", |evs| {
            evs.iter().any(|e| matches!(e, WsEvent::Close(_)))
        })
        .await;
}

/// Case 36 (close): the client's close 4000 `client-bye` reaches the origin as
/// `CLOSE c\r\n\x0f\xa0client-bye\r\n`; the origin's echoed CLOSE completes a clean close.
#[tokio::test]
async fn woh_client_close_becomes_close_event() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/close", &[]).await;
    client.close(4000, "client-bye").await;
    let req = origin
        .wait_request(WAIT, "a CLOSE event", |r| {
            r.events.iter().any(|e| matches!(e, WsEvent::Close(_)))
        })
        .await;
    assert_eq!(
        req.request.body.as_ref(),
        b"CLOSE c\r\n\x0f\xa0client-bye\r\n",
        "CLOSE body"
    );
    assert_eq!(
        client.expect_close(WAIT).await,
        (4000, "client-bye".to_string())
    );
}

/// Case 36 (disconnect): a client that drops its TCP connection (FIN or reset) without a
/// close frame ⇒ the origin receives `DISCONNECT`.
#[tokio::test]
async fn woh_client_drop_becomes_disconnect_event() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let mut fin = WsConn::connect(env.edge(), "/ws/fin", &[]).await;
    let mut rst = WsConn::connect(env.edge(), "/ws/rst", &[]).await;
    // Make sure both sessions are fully up before dropping them.
    for (conn, text) in [(&mut fin, "f"), (&mut rst, "r")] {
        conn.send_text(text).await;
        assert_eq!(conn.expect_text(WAIT).await, text);
    }
    let fin_id = origin.connection_id("/ws/fin", WAIT).await;
    let rst_id = origin.connection_id("/ws/rst", WAIT).await;
    fin.drop_tcp().await;
    rst.abort();
    for cid in [fin_id, rst_id] {
        let events = origin.wait_event(&cid, &WsEvent::Disconnect, WAIT).await;
        assert!(
            !events.iter().any(|e| matches!(e, WsEvent::Close(_))),
            "a dropped client is a DISCONNECT, not a CLOSE: {events:?}"
        );
    }
    let disconnect = origin
        .wait_request(WAIT, "DISCONNECT request", |r| {
            r.events == [WsEvent::Disconnect]
        })
        .await;
    assert_eq!(disconnect.request.body.as_ref(), b"DISCONNECT\r\n");
}

/// Case 37: a plain HTTP POST of websocket-events to an `over_http` route is refused with 403
/// and never reaches the origin.
#[tokio::test]
async fn woh_direct_events_post_is_forbidden() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let resp = http_request(
        env.edge(),
        "POST",
        "/ws",
        &[("Content-Type", "application/websocket-events")],
        "OPEN\r\n",
    )
    .await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (
            403,
            "Client not allowed to send WebSocket events directly.\n"
        )
    );
    assert_eq!(origin.origin().request_count(), 0, "origin was contacted");
}

/// When a request (of which connection) reached the origin.
type Arrival = (Option<String>, Instant);

/// Client messages reach the origin in order, with at most one outstanding request per
/// connection (the next request only after the previous answer; queued messages may be
/// batched), and the replies come back in order.
#[tokio::test]
async fn woh_messages_in_order_one_request_at_a_time() {
    const ANSWER_DELAY: Duration = Duration::from_millis(100);
    let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let seen = arrivals.clone();
    let origin = WohOrigin::start(move |req| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((req.connection_id(), Instant::now()));
        echo_reply(req).delay(ANSWER_DELAY)
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/order", &[]).await;
    let sent: Vec<String> = (0..30).map(|i| format!("msg-{i:02}")).collect();
    for text in &sent {
        client.send_text(text.clone()).await;
    }
    assert_eq!(client.expect_texts(sent.len(), WAIT).await, sent);

    let cid = origin.connection_id("/ws/order", WAIT).await;
    let texts: Vec<String> = origin
        .events_of(&cid)
        .iter()
        .filter_map(|e| e.as_text())
        .collect();
    assert_eq!(texts, sent, "origin got the messages out of order");

    let times: Vec<Instant> = arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(id, _)| id.as_deref() == Some(cid.as_str()))
        .map(|(_, t)| *t)
        .collect();
    for pair in times.windows(2) {
        assert!(
            pair[1].duration_since(pair[0]) >= ANSWER_DELAY,
            "a request arrived {:?} after the previous one, before its answer was sent",
            pair[1].duration_since(pair[0])
        );
    }
}

/// WebSocket-over-HTTP requests reuse idle keep-alive connections to the origin instead of
/// opening one per event; a connection the origin closed is replaced, not reported.
#[tokio::test]
async fn woh_requests_reuse_origin_connections() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/reuse", &[]).await;
    for i in 0..20 {
        let text = format!("reuse-{i:02}");
        client.send_text(text.clone()).await;
        assert_eq!(client.expect_text(WAIT).await, text);
    }
    let requests = origin.origin().request_count();
    let connections = origin.origin().connection_count();
    assert!(
        requests >= 21,
        "OPEN and 20 messages reached the origin ({requests})"
    );
    assert!(
        connections <= 2,
        "{requests} requests took {connections} origin connections"
    );

    // Idle connections are dropped after a while (and the origin may close them any time):
    // the next message still goes through, on a new connection when needed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.send_text("after-idle").await;
    assert_eq!(client.expect_text(WAIT).await, "after-idle");
}

/// Binary messages both ways, and text whose byte length differs from its character count
/// and contains CRLF (the event length is a byte count).
#[tokio::test]
async fn woh_binary_and_multibyte_text_both_ways() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/bin", &[]).await;
    let cid = origin.connection_id("/ws/bin", WAIT).await;

    let data = vec![0u8, 1, 2, b'\r', b'\n', 0x80, 0xff];
    client.send_binary(data.clone()).await;
    assert_eq!(client.expect_binary(WAIT).await, data);
    origin.wait_event(&cid, &WsEvent::binary(&data), WAIT).await;

    let text = "héllo\r\nwörld ✓ 🚀";
    client.send_text(text).await;
    assert_eq!(client.expect_text(WAIT).await, text);
    origin.wait_event(&cid, &WsEvent::text(text), WAIT).await;
}

/// Without the `grip` extension on the OPEN answer the edge is a plain relay: `c:` and `m:`
/// messages from the origin reach the client verbatim.
#[tokio::test]
async fn woh_without_grip_extension_relays_verbatim() {
    let origin = WohOrigin::start(|req| {
        let mut out = Vec::new();
        for event in &req.events {
            match event {
                WsEvent::Open => out.push(WsEvent::Open),
                WsEvent::Text(t) => {
                    out.push(WsEvent::text(format!(
                        "plain:{}",
                        String::from_utf8_lossy(t)
                    )));
                    out.push(WsEvent::subscribe("nogrip"));
                    out.push(WsEvent::message("kept"));
                }
                WsEvent::Binary(b) => out.push(WsEvent::Binary(b.clone())),
                _ => {}
            }
        }
        events_response(&out)
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/nogrip", &[]).await;
    client.send_text("x").await;
    let got = client.expect_texts(3, WAIT).await;
    assert_eq!(got[0], "plain:x");
    assert!(
        got[1].starts_with("c:{") && got[1].contains("subscribe"),
        "control message not relayed verbatim: {got:?}"
    );
    assert_eq!(got[2], "m:kept");
    client.send_binary(vec![9u8, 8, 7]).await;
    assert_eq!(client.expect_binary(WAIT).await, vec![9u8, 8, 7]);
}

/// An origin `CLOSE` event closes the client with that code and reason.
#[tokio::test]
async fn woh_origin_close_event_closes_client() {
    let origin = WohOrigin::start(|req| {
        if req.events.contains(&WsEvent::text("bye-please")) {
            grip_events_response(&[WsEvent::close(4100, "origin-bye")])
        } else {
            echo_reply(req)
        }
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/originclose", &[]).await;
    client.send_text("bye-please").await;
    assert_eq!(
        client.expect_close(WAIT).await,
        (4100, "origin-bye".to_string())
    );
}

/// `keep-alive` control message: the edge sends the content to an idle client every
/// `timeout` seconds.
#[tokio::test]
async fn woh_keep_alive_control_message() {
    let origin = WohOrigin::start(|req| {
        if req.is_open() {
            grip_events_response(&[
                WsEvent::Open,
                WsEvent::control(&json!({"type": "keep-alive", "content": "ka", "timeout": 1})),
            ])
        } else {
            echo_reply(req)
        }
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/ka", &[]).await;
    assert_eq!(
        client.expect_texts(2, Duration::from_secs(8)).await,
        vec!["ka", "ka"]
    );
}

/// `detach`: the client stays connected for publishes but its messages no longer reach the
/// origin.
#[tokio::test]
async fn woh_detach_keeps_client_for_publishes() {
    let origin = WohOrigin::start(|req| {
        if req.is_open() {
            grip_events_response(&[
                WsEvent::Open,
                WsEvent::subscribe("det"),
                WsEvent::control(&json!({"type": "detach"})),
            ])
        } else {
            echo_reply(req)
        }
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws/detach", &[]).await;
    let cid = origin.connection_id("/ws/detach", WAIT).await;
    client.send_text("after-detach").await;
    publish_ws_text(env.publish(), "det", "pub-after-detach").await;
    assert_eq!(client.expect_text(WAIT).await, "pub-after-detach");
    // Give a (wrongly) forwarded message time to arrive before checking it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !origin
            .events_of(&cid)
            .contains(&WsEvent::text("after-detach")),
        "a client message reached the origin after detach"
    );
}

/// `unsubscribe`: after it, publishes to that channel no longer reach the connection.
#[tokio::test]
async fn woh_unsubscribe_control_message() {
    let origin = WohOrigin::start(|req| {
        if req.events.contains(&WsEvent::text("unsub-a")) {
            grip_events_response(&[
                WsEvent::control(&json!({"type": "unsubscribe", "channel": "us-a"})),
                WsEvent::message("unsubscribed"),
            ])
        } else {
            echo_reply(req)
        }
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws?channel=us-a,us-b", &[]).await;
    publish_items(
        env.publish(),
        json!([ws_text_item("us-a", "A1"), ws_text_item("us-b", "B1")]),
    )
    .await;
    let mut first = client.expect_texts(2, WAIT).await;
    first.sort();
    assert_eq!(first, vec!["A1", "B1"]);
    client.send_text("unsub-a").await;
    assert_eq!(client.expect_text(WAIT).await, "unsubscribed");
    publish_items(
        env.publish(),
        json!([ws_text_item("us-a", "A2"), ws_text_item("us-b", "B2")]),
    )
    .await;
    assert_eq!(client.expect_text(WAIT).await, "B2");
}

/// `--max-channels-per-connection`: subscriptions beyond the limit are ignored, the first ones
/// stay.
#[tokio::test]
async fn woh_channel_limit_per_connection() {
    let origin = WohOrigin::echo().await;
    let env = start_woh(&origin, &["--max-channels-per-connection", "3"]).await;
    let mut client = WsConn::connect(env.edge(), "/ws?channel=l1,l2,l3,l4,l5", &[]).await;
    for i in 1..=5 {
        publish_ws_text(env.publish(), &format!("l{i}"), &i.to_string()).await;
    }
    // Order holds per channel, not across channels: each subscribed channel gets its own end
    // marker, published after its item.
    for i in 1..=3 {
        publish_ws_text(env.publish(), &format!("l{i}"), "end").await;
    }
    let mut got = Vec::new();
    let mut ends = 0;
    while ends < 3 {
        let text = client.expect_text(WAIT).await;
        if text == "end" {
            ends += 1;
        } else {
            got.push(text);
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec!["1", "2", "3"],
        "channels beyond the limit delivered"
    );
}

/// Fan-out: 500 WebSocket clients on one channel each receive 20 published messages, in
/// order (built-in `test` target, so only the edge is involved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_500_clients_each_receive_20_messages_in_order() {
    const CLIENTS: usize = 500;
    const MESSAGES: usize = 20;
    let env = start("* test\n", &[]).await;
    let edge = env.edge();
    let mut connecting = JoinSet::new();
    for _ in 0..CLIENTS {
        connecting.spawn(async move { WsConn::connect(edge, "/ws?channel=fanout", &[]).await });
    }
    let mut clients = Vec::with_capacity(CLIENTS);
    while let Some(conn) = connecting.join_next().await {
        clients.push(conn.expect("connect task"));
    }

    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("fan-{i:02}")).collect();
    let mut receiving = JoinSet::new();
    for mut client in clients {
        receiving
            .spawn(async move { client.expect_texts(MESSAGES, Duration::from_secs(20)).await });
    }
    for text in &expected {
        publish_ws_text(env.publish(), "fanout", text).await;
    }
    let mut done = 0;
    while let Some(got) = receiving.join_next().await {
        assert_eq!(got.expect("receive task"), expected);
        done += 1;
    }
    assert_eq!(done, CLIENTS);
}

/// The built-in `test` target: `/ws?channel=X` subscribes to X and echoes client text.
#[tokio::test]
async fn ws_test_target_echoes_and_subscribes() {
    let env = start("* test\n", &[]).await;
    let mut client = WsConn::connect(env.edge(), "/ws?channel=tt", &[]).await;
    client.send_text("hello-test").await;
    assert_eq!(client.expect_text(WAIT).await, "hello-test");
    publish_ws_text(env.publish(), "tt", "pub-tt").await;
    assert_eq!(client.expect_text(WAIT).await, "pub-tt");
    // Default channel `test`.
    let mut default = WsConn::connect(env.edge(), "/ws", &[]).await;
    publish_ws_text(env.publish(), "test", "pub-default").await;
    assert_eq!(default.expect_text(WAIT).await, "pub-default");
}

/// The echo helper used as an origin answers exactly what [`echo_events`] says (guards the
/// harness itself).
#[test]
fn echo_helper_answers_open_with_subscriptions() {
    let req = testkit::ws::WohRequest::new(testkit::RecordedRequest {
        method: "POST".into(),
        uri: "/ws?channel=a,b".into(),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::from_static(b"OPEN\r\nTEXT 1\r\nx\r\n"),
    });
    assert_eq!(
        echo_events(&req),
        vec![
            WsEvent::Open,
            WsEvent::subscribe("a"),
            WsEvent::subscribe("b"),
            WsEvent::message("x"),
        ]
    );
}

/// A burst of WebSocket opens (a drained edge's clients arriving at once) does not open one
/// origin connection per OPEN: at most 256 WebSocket-over-HTTP requests are in flight per edge,
/// the rest wait their turn, and every client is connected in the end.
#[tokio::test]
async fn woh_requests_in_flight_are_bounded() {
    const CLIENTS: usize = 320;
    const BOUND: usize = 256;
    const SLOW: Duration = Duration::from_millis(600);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let origin = WohOrigin::start(move |req| {
        if req.is_open() {
            seen.lock().expect("lock").push(Instant::now());
        }
        echo_reply(req).delay(SLOW)
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let edge = env.edge();
    let mut opens = JoinSet::new();
    for i in 0..CLIENTS {
        opens.spawn(async move { WsConn::connect(edge, &format!("/ws/burst-{i}"), &[]).await });
    }
    let mut clients = Vec::new();
    while let Some(client) = opens.join_next().await {
        clients.push(client.expect("client task"));
    }
    assert_eq!(clients.len(), CLIENTS);
    // Each OPEN is held `SLOW` by the origin, so the ones that arrived within a window
    // shorter than that were in flight together.
    let most = testkit::most_within(
        &arrivals.lock().expect("lock"),
        SLOW - Duration::from_millis(100),
    );
    assert!(
        most <= BOUND,
        "{most} OPEN requests in flight at once (bound {BOUND})"
    );
    assert!(most >= BOUND / 2, "they do run concurrently: {most}");
    assert!(
        origin.origin().connection_count() <= BOUND + 8,
        "{} origin connections for {CLIENTS} opens",
        origin.origin().connection_count()
    );
}

/// The bound is per origin: while one origin holds 256 OPENs unanswered, a client routed to
/// another origin is connected and served.
#[tokio::test]
async fn woh_a_stalled_origin_does_not_hold_up_another() {
    const HELD: usize = 256;
    const SLOW: Duration = Duration::from_secs(3);
    let slow = WohOrigin::start(move |req| echo_reply(req).delay(SLOW)).await;
    let fast = WohOrigin::echo().await;
    let routes = format!(
        "*,path_beg=/slow {},over_http\n* {},over_http\n",
        slow.target(),
        fast.target()
    );
    let env = start(&routes, &[]).await;
    let edge = env.edge();
    let mut opens = JoinSet::new();
    for i in 0..HELD {
        opens.spawn(async move { WsConn::connect(edge, &format!("/slow/{i}"), &[]).await });
    }
    testkit::wait_until(WAIT, "every slow OPEN reached its origin", || {
        let n = slow.origin().request_count();
        async move { n >= HELD }
    })
    .await;
    let mut client = WsConn::connect(edge, "/fast", &[]).await;
    client.send_text("through").await;
    assert_eq!(client.expect_text(WAIT).await, "through");
    assert!(
        opens.try_join_next().is_none(),
        "the other origin's client was served while every slow OPEN was still held"
    );
    while let Some(slow_client) = opens.join_next().await {
        slow_client.expect("slow client task");
    }
}
