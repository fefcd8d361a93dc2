//! Bad WebSocket input — invalid client frames, oversized messages, malformed
//! websocket-events from an origin, an origin that hangs on OPEN — closes only the connection
//! concerned: every test keeps an unrelated WebSocket client open and checks afterwards that
//! the process is up and that client still gets publishes and echoes.

use std::time::Duration;

use testkit::OriginResponse;
use testkit::ws::{
    EVENTS_CONTENT_TYPE, RawRead, RawWs, WohOrigin, WsConn, WsConnectError, echo_reply,
    encode_frame, grip_events_response, opcode,
};

use crate::common::{Env, WAIT, start};
use crate::ws_common::WsSurvivor;

const MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

/// Starts gripmesh with `extra_routes` first and a GRIP echo origin as the fallback
/// (`over_http`), and opens a survivor client through it.
async fn start_with_survivor(extra_routes: &str, flags: &[&str]) -> (Env, WohOrigin, WsSurvivor) {
    let echo = WohOrigin::echo().await;
    let env = start(
        &format!("{extra_routes}* {},over_http\n", echo.target()),
        flags,
    )
    .await;
    let survivor = WsSurvivor::open(&env).await;
    (env, echo, survivor)
}

/// A raw client through the echo origin, checked to be live (a valid masked text frame comes
/// back echoed).
async fn live_raw_client(env: &Env, path: &str) -> RawWs {
    let mut raw = RawWs::connect(env.edge(), path, &[]).await;
    raw.send_frame(true, opcode::TEXT, true, b"valid")
        .await
        .expect("writing a valid frame");
    match raw.read_frame(WAIT).await {
        RawRead::Frame {
            opcode: opcode::TEXT,
            payload,
            ..
        } => assert_eq!(payload, b"valid"),
        other => panic!("expected the echo of a valid frame, got {other:?}"),
    }
    raw
}

/// Sends `frame` on a live connection and expects the edge to end that connection.
async fn expect_frame_closes_connection(env: &Env, tag: &str, frame: &[u8]) {
    let mut raw = live_raw_client(env, &format!("/raw/{tag}")).await;
    // The edge may close before reading everything; a write error is fine.
    let _ = raw.send_raw(frame).await;
    let _code = raw.expect_closed(WAIT).await;
}

/// An unmasked frame from a client is a protocol error: that connection is closed.
#[tokio::test]
async fn ws_unmasked_client_frame_closes_only_that_connection() {
    let (mut env, _echo, mut survivor) = start_with_survivor("", &[]).await;
    let frame = encode_frame(true, opcode::TEXT, None, b"unmasked");
    expect_frame_closes_connection(&env, "unmasked", &frame).await;
    survivor.check(&mut env, "unmasked frame").await;
}

/// A frame with a reserved opcode closes that connection.
#[tokio::test]
async fn ws_reserved_opcode_closes_only_that_connection() {
    let (mut env, _echo, mut survivor) = start_with_survivor("", &[]).await;
    let frame = encode_frame(true, opcode::RESERVED_DATA, Some(MASK), b"x");
    expect_frame_closes_connection(&env, "reserved", &frame).await;
    survivor.check(&mut env, "reserved opcode").await;
}

/// A text message that is not UTF-8 closes that connection.
#[tokio::test]
async fn ws_invalid_utf8_text_closes_only_that_connection() {
    let (mut env, echo, mut survivor) = start_with_survivor("", &[]).await;
    let frame = encode_frame(
        true,
        opcode::TEXT,
        Some(MASK),
        &[b'o', b'k', 0xff, 0xfe, 0xc3],
    );
    expect_frame_closes_connection(&env, "utf8", &frame).await;
    // The invalid text was not passed on to the origin.
    let invalid =
        testkit::ws::WsEvent::Text(bytes::Bytes::from_static(&[b'o', b'k', 0xff, 0xfe, 0xc3]));
    assert!(
        echo.requests().iter().all(|r| !r.events.contains(&invalid)),
        "invalid UTF-8 text reached the origin"
    );
    survivor.check(&mut env, "invalid UTF-8").await;
}

/// Other protocol violations: RSV1 without a negotiated extension, a 126-byte ping, a
/// fragmented ping, a continuation frame without a message to continue.
#[tokio::test]
async fn ws_other_protocol_violations_close_only_that_connection() {
    let (mut env, _echo, mut survivor) = start_with_survivor("", &[]).await;
    let mut rsv1 = encode_frame(true, opcode::TEXT, Some(MASK), b"rsv");
    rsv1[0] |= 0x40;
    let cases = [
        ("rsv1", rsv1),
        (
            "long-ping",
            encode_frame(true, opcode::PING, Some(MASK), &[b'p'; 126]),
        ),
        (
            "fragmented-ping",
            encode_frame(false, opcode::PING, Some(MASK), b"p"),
        ),
        (
            "orphan-continuation",
            encode_frame(true, opcode::CONTINUATION, Some(MASK), b"c"),
        ),
    ];
    for (tag, frame) in cases {
        expect_frame_closes_connection(&env, tag, &frame).await;
        survivor.check(&mut env, tag).await;
    }
}

/// `--max-ws-message-size`: a message within the limit passes; one over it (whole or
/// fragmented) closes that connection with 1009.
#[tokio::test]
async fn ws_oversized_message_closes_with_1009() {
    let (mut env, _echo, mut survivor) =
        start_with_survivor("", &["--max-ws-message-size", "1024"]).await;
    let mut client = WsConn::connect(env.edge(), "/big", &[]).await;
    let fits = "a".repeat(1000);
    client.send_text(fits.clone()).await;
    assert_eq!(client.expect_text(WAIT).await, fits);
    client.send_text("b".repeat(2000)).await;
    assert_eq!(client.expect_close(WAIT).await.0, 1009);

    let mut raw = live_raw_client(&env, "/big/fragmented").await;
    let _ = raw
        .send_frame(false, opcode::TEXT, true, &[b'c'; 700])
        .await;
    let _ = raw
        .send_frame(true, opcode::CONTINUATION, true, &[b'd'; 700])
        .await;
    assert_eq!(raw.expect_closed(WAIT).await, Some(1009), "fragmented");

    survivor.check(&mut env, "oversized message").await;
}

/// Malformed websocket-events (or an error status) from the origin close only that client;
/// a malformed answer to OPEN fails that handshake.
#[tokio::test]
async fn ws_malformed_origin_events_close_only_that_client() {
    let bad = WohOrigin::start(|req| {
        let garbage = || {
            OriginResponse::new(200)
                .header("Content-Type", EVENTS_CONTENT_TYPE)
                .header("Sec-WebSocket-Extensions", "grip")
                .body("TEXT zz\r\n")
        };
        match (req.request.path(), req.is_open()) {
            ("/bad/open", true) => garbage(),
            (_, true) => echo_reply(req),
            ("/bad/text", false) => garbage(),
            ("/bad/status", false) => OriginResponse::new(500)
                .header("Content-Type", "text/plain")
                .body("boom\n"),
            ("/bad/truncated", false) => OriginResponse::new(200)
                .header("Content-Type", EVENTS_CONTENT_TYPE)
                .header("Sec-WebSocket-Extensions", "grip")
                .body("TEXT 50\r\nm:short\r\n"),
            _ => grip_events_response(&[]),
        }
    })
    .await;
    let (mut env, _echo, mut survivor) = start_with_survivor(
        &format!("*,path_beg=/bad {},over_http\n", bad.target()),
        &[],
    )
    .await;

    for path in ["/bad/text", "/bad/status", "/bad/truncated"] {
        let mut client = WsConn::connect(env.edge(), path, &[]).await;
        client.send_text("trigger").await;
        client.expect_end(WAIT).await;
        survivor.check(&mut env, path).await;
    }

    match WsConn::try_connect(env.edge(), "/bad/open", &[]).await {
        Ok(conn) => panic!(
            "handshake succeeded on a malformed OPEN answer: {:?}",
            conn.headers
        ),
        Err(WsConnectError::Rejected(r)) => assert_ne!(r.status, 101),
        Err(WsConnectError::Failed(_)) => {}
    }
    survivor.check(&mut env, "malformed OPEN answer").await;
}

/// An origin that never answers the OPEN request: that client's handshake fails with 502
/// (here after `--origin-response-timeout 2`), while other connections keep working and new
/// ones can open meanwhile.
#[tokio::test]
async fn ws_origin_hanging_on_open_fails_handshake_with_502() {
    let hang = WohOrigin::start(|req| echo_reply(req).delay(Duration::from_secs(120))).await;
    let (mut env, _echo, mut survivor) = start_with_survivor(
        &format!("*,path_beg=/hang {},over_http\n", hang.target()),
        &["--origin-response-timeout", "2"],
    )
    .await;
    let edge = env.edge();
    let pending = tokio::spawn(async move { WsConn::try_connect(edge, "/hang", &[]).await });
    hang.origin().wait_for_requests(1, WAIT).await;

    // While that handshake hangs, a new connection opens and works.
    let mut other = WsConn::connect(env.edge(), "/meanwhile", &[]).await;
    other.send_text("meanwhile").await;
    assert_eq!(other.expect_text(WAIT).await, "meanwhile");
    survivor.check(&mut env, "hanging OPEN (pending)").await;

    let result = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the hanging handshake ends eventually")
        .expect("connect task");
    match result {
        Ok(conn) => panic!("handshake succeeded: {:?}", conn.headers),
        Err(WsConnectError::Rejected(r)) => assert_eq!(r.status, 502, "{}", r.text()),
        Err(WsConnectError::Failed(e)) => panic!("expected a 502 answer, got {e}"),
    }
    survivor.check(&mut env, "hanging OPEN").await;
}
