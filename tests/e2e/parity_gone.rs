//! `Grip-Link: <url>; rel=gone` (Pushpin 1.41; Debian's 1.36 does not have it, so these run
//! against gripmesh only): when a held connection ends — client close, drain, revocation,
//! a WebSocket client leaving — the edge POSTs an empty body to the link through the route's
//! target.

use std::time::Duration;

use testkit::ws::{WohOrigin, WsConn, WsEvent, grip_events_response};
use testkit::{Origin, OriginResponse, RecordedRequest, Signal, StreamClient, http_request};

use crate::common::{WAIT, start};

/// `/s?id=N`: a stream hold on `g` with a relative gone link `/gone?id=N`; `/gone` answers
/// an empty 200.
fn gone_origin(req: RecordedRequest) -> OriginResponse {
    match req.path() {
        "/gone" => OriginResponse::new(200),
        _ => {
            let id = req.query("id").unwrap_or_default();
            OriginResponse::text("start\n")
                .header("Grip-Hold", "stream")
                .header("Grip-Channel", "g")
                .header("Grip-Link", &format!("</gone?id={id}>; rel=gone"))
        }
    }
}

fn gone_posts(origin: &Origin) -> Vec<RecordedRequest> {
    origin
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/gone")
        .collect()
}

async fn wait_gone(origin: &Origin, id: &str) -> RecordedRequest {
    let uri = format!("/gone?id={id}");
    testkit::wait_until(WAIT, &format!("POST {uri}"), || {
        let hit = gone_posts(origin).iter().any(|r| r.uri == uri);
        async move { hit }
    })
    .await;
    gone_posts(origin)
        .into_iter()
        .find(|r| r.uri == uri)
        .expect("found above")
}

#[tokio::test]
async fn parity_gone_link_on_client_close() {
    let origin = Origin::start(gone_origin).await;
    let env = start(
        &format!("* {}\n", origin.target()),
        &["--sig-key", "gone-test-key"],
    )
    .await;
    let mut c = StreamClient::open(env.edge(), "/s?id=1", &[("Host", "example.com")]).await;
    c.read_until("start\n", WAIT).await;
    assert!(
        gone_posts(&origin).is_empty(),
        "nothing while the client stays"
    );
    drop(c);
    let post = wait_gone(&origin, "1").await;
    assert_eq!(post.method, "POST");
    assert!(post.body.is_empty(), "empty body");
    assert_eq!(post.header("host").as_deref(), Some("example.com"));
    assert!(
        post.header("grip-sig").is_some(),
        "signed like every origin request"
    );
}

#[tokio::test]
async fn parity_gone_link_on_close_publish_and_drain() {
    let origin = Origin::start(gone_origin).await;
    let mut env = start(
        &format!("* {}\n", origin.target()),
        &["--drain-timeout", "5"],
    )
    .await;
    let mut closed = StreamClient::open(env.edge(), "/s?id=closed", &[]).await;
    closed.read_until("start\n", WAIT).await;
    let mut drained = StreamClient::open(env.edge(), "/s?id=drained", &[]).await;
    drained.read_until("start\n", WAIT).await;
    // A `close` publish ends one stream: its gone link is called.
    let resp = testkit::publish(
        env.publish(),
        &serde_json::json!({"items": [{"channel": "g", "formats": {"http-stream": {"action": "close"}}}]}),
    )
    .await;
    assert_eq!(resp.status, 200);
    closed.expect_eof(WAIT).await;
    drained.expect_eof(WAIT).await;
    wait_gone(&origin, "closed").await;
    wait_gone(&origin, "drained").await;

    // Drain: SIGTERM ends the held stream, and the gone POST is sent before the exit.
    let mut c = StreamClient::open(env.edge(), "/s?id=drain", &[]).await;
    c.read_until("start\n", WAIT).await;
    env.gm.signal(Signal::Term);
    c.expect_eof(WAIT).await;
    let status = env.gm.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0));
    wait_gone(&origin, "drain").await;
}

#[tokio::test]
async fn parity_gone_link_on_revocation() {
    let gateway = Origin::start(|req: RecordedRequest| {
        if req.header("x-api-key").as_deref() == Some("key-a") {
            OriginResponse::new(200).header("X-Developer-App", "app-a")
        } else {
            OriginResponse::new(401)
        }
    })
    .await;
    let origin = Origin::start(gone_origin).await;
    let env = start(
        &format!("*,authz {}\n", origin.target()),
        &["--authz-gateway", &format!("http://{}", gateway.addr())],
    )
    .await;
    let mut c = StreamClient::open(env.edge(), "/s?id=revoked", &[("X-Api-Key", "key-a")]).await;
    assert_eq!(c.status, 200);
    c.read_until("start\n", WAIT).await;
    let resp = http_request(
        env.publish(),
        "POST",
        "/authz/revoke",
        &[("Content-Type", "application/json")],
        r#"{"credential":"key-a"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "revoke: {}", resp.text());
    c.expect_eof(WAIT).await;
    let post = wait_gone(&origin, "revoked").await;
    // The gone request carries what the gateway said about the connection, like every
    // origin request of an authorized connection.
    assert_eq!(post.header("x-developer-app").as_deref(), Some("app-a"));
}

#[tokio::test]
async fn parity_gone_link_on_websocket_close() {
    let origin = WohOrigin::start(|req| {
        if req.request.path() == "/gone" {
            return OriginResponse::new(200);
        }
        if req.is_open() {
            grip_events_response(&[WsEvent::Open, WsEvent::subscribe("wg")])
                .header("Grip-Link", "</gone?id=ws>; rel=gone")
        } else {
            grip_events_response(&[])
        }
    })
    .await;
    let env = start(&format!("* {},over_http\n", origin.target()), &[]).await;
    let mut ws = WsConn::connect(env.edge(), "/ws", &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        origin
            .origin()
            .requests()
            .iter()
            .all(|r| r.path() != "/gone"),
        "nothing while connected"
    );
    ws.close(1000, "bye").await;
    let o = origin.origin();
    testkit::wait_until(WAIT, "POST /gone?id=ws", || {
        let hit = o
            .requests()
            .iter()
            .any(|r| r.uri == "/gone?id=ws" && r.method == "POST" && r.body.is_empty());
        async move { hit }
    })
    .await;
}

/// Ending many connections at once (a `close` publish to 200 streams) does not open 200 gone
/// requests at once: at most 64 are in flight per edge, the rest wait their turn, and every
/// one is sent in the end.
#[tokio::test]
async fn gone_requests_in_flight_are_bounded() {
    const CLIENTS: usize = 200;
    const SLOW: Duration = Duration::from_millis(400);
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let origin = Origin::start(move |req: RecordedRequest| {
        if req.path() == "/gone" {
            seen.lock().expect("lock").push(tokio::time::Instant::now());
            OriginResponse::new(200).delay(SLOW)
        } else {
            gone_origin(req)
        }
    })
    .await;
    let env = start(&format!("* {}\n", origin.target()), &[]).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = StreamClient::open(env.edge(), &format!("/s?id={i}"), &[]).await;
        c.read_until("start\n", WAIT).await;
        clients.push(c);
    }
    let resp = testkit::publish(
        env.publish(),
        &serde_json::json!({"items": [{"channel": "g", "formats": {"http-stream": {"action": "close"}}}]}),
    )
    .await;
    assert_eq!(resp.status, 200);
    testkit::wait_until(Duration::from_secs(60), "every gone request sent", || {
        let n = gone_posts(&origin).len();
        async move { n == CLIENTS }
    })
    .await;
    // Each gone request is held `SLOW` by the origin, so the ones that arrived within any
    // window shorter than that were in flight together.
    let most = testkit::most_within(
        &arrivals.lock().expect("lock"),
        SLOW - Duration::from_millis(50),
    );
    assert!(
        most <= 64,
        "{most} gone requests in flight at once (bound 64)"
    );
    assert!(most >= 32, "they do run concurrently: {most}");
    drop(clients);
}
