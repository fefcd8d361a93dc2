//! Durable channels (docs/protocol.md, "History"): resume by `prev-id` on every transport, the fallbacks when
//! history cannot serve, and the `gripmesh_edge_recoveries_total` metric — against standalone
//! (history in memory) and a cluster (`gripmesh control` + `gripmesh edge` on a real
//! `nats-server -js`, history in JetStream).
//!
//! Items carry their number as id and as content, so a client's last id is the last number it
//! saw and "exactly once, in order" is a comparison of lists.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::cluster::{ControlNode, start_edge, wait_ready};
use testkit::ws::{WohOrigin, WsConn, WsEvent, WsOrigin, WsOriginMode, grip_events_response};
use testkit::{
    Gripmesh, NatsServer, Origin, OriginResponse, StreamClient, TempDir, http_get, metric_value,
    publish, wait_metric,
};

const BIN: &str = env!("CARGO_BIN_EXE_gripmesh");
const WAIT: Duration = Duration::from_secs(20);
const HISTORY: &str = "h*=1000/1h,old*=3";

/// Where clients connect, where items are published, and the edge's admin listener.
pub(crate) struct Stack {
    pub edge: SocketAddr,
    pub publish: SocketAddr,
    pub admin: SocketAddr,
    _procs: Vec<Gripmesh>,
    _control: Option<ControlNode>,
    _nats: Option<NatsServer>,
    _dir: TempDir,
}

/// `gripmesh standalone --history ...` (history in memory).
pub(crate) async fn standalone(routes: &str) -> Stack {
    let dir = TempDir::new();
    let file = dir.write("routes", routes);
    let gm = Gripmesh::standalone(
        BIN,
        &[
            "--routes",
            file.to_str().expect("utf-8 path"),
            "--history",
            HISTORY,
        ],
    )
    .await;
    Stack {
        edge: gm.edge_addr(),
        publish: gm.publish_addr(),
        admin: gm.admin_addr(),
        _procs: vec![gm],
        _control: None,
        _nats: None,
        _dir: dir,
    }
}

/// `nats-server -js`, `gripmesh control --history ...`, one `gripmesh edge` (history in
/// JetStream, read by the edge directly).
pub(crate) async fn cluster(routes: &str) -> Stack {
    let nats = NatsServer::start_jetstream();
    let url = nats.url();
    let dir = TempDir::new();
    let file = dir.write("routes", routes);
    let file = file.to_str().expect("utf-8 path").to_owned();
    let control = ControlNode::start(BIN, &url, routes, &["--history", HISTORY]).await;
    let edge = start_edge(BIN, &url, &["--routes", &file]).await;
    wait_ready(
        control.admin_addr(),
        WAIT,
        "control (history stream created)",
    )
    .await;
    wait_ready(edge.admin_addr(), WAIT, "edge").await;
    Stack {
        edge: edge.edge_addr(),
        publish: control.publish_addr(),
        admin: edge.admin_addr(),
        _procs: vec![edge],
        _control: Some(control),
        _nats: Some(nats),
        _dir: dir,
    }
}

/// Item `n` of `channel`: id `n`; `n\n` for streams, `n` for WebSockets and long-polls.
pub(crate) fn item(channel: &str, n: u64) -> Value {
    json!({
        "channel": channel,
        "id": n.to_string(),
        "formats": {
            "http-stream": {"content": format!("{n}\n")},
            "ws-message": {"content": n.to_string()},
            "http-response": {"body": n.to_string()},
        }
    })
}

/// Item `n` as an SSE event naming its id (the recipe of docs/protocol.md, "History").
fn sse_item(channel: &str, n: u64) -> Value {
    json!({
        "channel": channel,
        "id": n.to_string(),
        "formats": {"http-stream": {"content": format!("id: {n}\ndata: {n}\n\n")}}
    })
}

/// Publishes `items` (in batches of 10) and checks every answer.
pub(crate) async fn publish_all(addr: SocketAddr, items: Vec<Value>) {
    for batch in items.chunks(10) {
        let resp = publish(addr, &json!({"items": batch})).await;
        assert_eq!(resp.status, 200, "publish: {}", resp.text());
    }
}

fn range(channel: &str, r: std::ops::RangeInclusive<u64>) -> Vec<Value> {
    r.map(|n| item(channel, n)).collect()
}

/// The numbers on the lines of a plain stream (the origin's first line is not a number).
pub(crate) fn numbers_of(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The `data:` numbers of an SSE stream.
fn sse_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| d.trim().parse().ok())
        .collect()
}

async fn recoveries(admin: SocketAddr, result: &str) -> f64 {
    metric_value(
        admin,
        &format!("gripmesh_edge_recoveries_total{{result=\"{result}\"}}"),
    )
    .await
    .unwrap_or(0.0)
}

async fn stream_resume(stack: Stack, sse: bool) {
    let ch = if sse { "h-sse" } else { "h-stream" };
    let path = format!("/{}?channel={ch}", if sse { "sse" } else { "stream" });
    let make = |n| if sse { sse_item(ch, n) } else { item(ch, n) };
    let parse = |t: &str| if sse { sse_numbers(t) } else { numbers_of(t) };
    let end = |n: u64| {
        if sse {
            format!("data: {n}\n")
        } else {
            format!("\n{n}\n")
        }
    };

    let mut first = StreamClient::open(stack.edge, &path, &[]).await;
    publish_all(stack.publish, (1..=5).map(make).collect()).await;
    let seen = parse(&String::from_utf8_lossy(
        &first.read_until(end(5), WAIT).await,
    ));
    assert_eq!(seen, (1..=5).collect::<Vec<_>>());
    first.close();

    publish_all(stack.publish, (6..=55).map(make).collect()).await;
    let mut back = StreamClient::open(stack.edge, &path, &[("Last-Event-ID", "5")]).await;
    assert_eq!(back.status, 200);
    back.read_until(end(55), WAIT).await;
    publish_all(stack.publish, (56..=60).map(make).collect()).await;
    back.read_until(end(60), WAIT).await;
    assert_eq!(
        parse(&back.received_text()),
        (6..=60).collect::<Vec<_>>(),
        "the 50 missed items exactly once, in order, then live ones"
    );
    assert!(recoveries(stack.admin, "recovered").await >= 1.0);
    assert_eq!(recoveries(stack.admin, "gap").await, 0.0);
}

async fn long_poll_resume(stack: Stack) {
    let ch = "h-poll";
    publish_all(stack.publish, range(ch, 1..=5)).await;
    // The client had 5; 50 more are published while it is away.
    publish_all(stack.publish, range(ch, 6..=55)).await;
    let path = format!("/response?channel={ch}");
    let mut last = 5u64;
    for want in 6..=55u64 {
        let id = last.to_string();
        let resp = http_get(stack.edge, &path, &[("Last-Event-ID", id.as_str())]).await;
        assert_eq!((resp.status, resp.text()), (200, want.to_string()));
        last = want;
    }
    // Caught up: the next poll holds until a live item.
    let edge = stack.edge;
    let poll = tokio::spawn(async move {
        http_get(edge, "/response?channel=h-poll", &[("Last-Event-ID", "55")]).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_all(stack.publish, range(ch, 56..=56)).await;
    let resp = tokio::time::timeout(WAIT, poll)
        .await
        .expect("live item in time")
        .expect("poll task");
    assert_eq!(resp.text(), "56");
    assert!(recoveries(stack.admin, "recovered").await >= 50.0);
}

/// A WebSocket-over-HTTP origin subscribing each connection to `?channel=` with the
/// `prev-id` given as `?last=` (the resume a client asks for).
async fn resuming_ws_origin() -> WohOrigin {
    WohOrigin::start(|req| {
        if !req.is_open() {
            return grip_events_response(&[]);
        }
        let channel = req.query("channel").unwrap_or_default();
        let mut sub = json!({"type": "subscribe", "channel": channel});
        if let Some(last) = req.query("last") {
            sub["prev-id"] = Value::String(last);
        }
        grip_events_response(&[WsEvent::Open, WsEvent::control(&sub)])
    })
    .await
}

async fn ws_resume(stack: Stack) {
    let ch = "h-ws";
    let mut first = WsConn::connect(stack.edge, &format!("/ws?channel={ch}"), &[]).await;
    publish_all(stack.publish, range(ch, 1..=5)).await;
    assert_eq!(first.expect_texts(5, WAIT).await, ["1", "2", "3", "4", "5"]);
    first.close(1000, "bye").await;

    publish_all(stack.publish, range(ch, 6..=55)).await;
    let mut back = WsConn::connect(stack.edge, &format!("/ws?channel={ch}&last=5"), &[]).await;
    let replayed = back.expect_texts(50, WAIT).await;
    publish_all(stack.publish, range(ch, 56..=60)).await;
    let live = back.expect_texts(5, WAIT).await;
    let all: Vec<u64> = replayed
        .iter()
        .chain(&live)
        .map(|t| t.parse().expect("number"))
        .collect();
    assert_eq!(all, (6..=60).collect::<Vec<_>>());
    // Nothing more: no duplicate at the seam.
    assert!(
        matches!(
            back.recv(Duration::from_millis(500)).await,
            testkit::ws::Recv::Timeout
        ),
        "no extra message"
    );
}

#[tokio::test]
async fn history_sse_resume_standalone() {
    stream_resume(standalone("* test\n").await, true).await;
}

#[tokio::test]
async fn history_sse_resume_cluster() {
    stream_resume(cluster("* test\n").await, true).await;
}

#[tokio::test]
async fn history_http_stream_resume_standalone() {
    stream_resume(standalone("* test\n").await, false).await;
}

#[tokio::test]
async fn history_http_stream_resume_cluster() {
    stream_resume(cluster("* test\n").await, false).await;
}

#[tokio::test]
async fn history_long_poll_resume_standalone() {
    long_poll_resume(standalone("* test\n").await).await;
}

#[tokio::test]
async fn history_long_poll_resume_cluster() {
    long_poll_resume(cluster("* test\n").await).await;
}

#[tokio::test]
async fn history_ws_resume_standalone() {
    let origin = resuming_ws_origin().await;
    ws_resume(standalone(&format!("* {},over_http\n", origin.target())).await).await;
}

#[tokio::test]
async fn history_ws_resume_cluster() {
    let origin = resuming_ws_origin().await;
    ws_resume(cluster(&format!("* {},over_http\n", origin.target())).await).await;
}

/// Publishing to a channel with history answers with per-item receipts once stored; channels
/// without history keep Pushpin's answer.
#[tokio::test]
async fn history_publish_receipts() {
    let stack = standalone("* test\n").await;
    let body = json!({"items": [item("h-r", 1), item("plain", 2), item("h-r", 3)]});
    let resp = testkit::publish_raw(
        stack.publish,
        "POST",
        "/publish/",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: Value = serde_json::from_slice(&resp.body).expect("JSON answer");
    assert_eq!(v["message"], "Published");
    let items = v["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert_eq!(
        (&items[0]["channel"], &items[0]["id"]),
        (&json!("h-r"), &json!("1"))
    );
    assert_eq!(items[1]["channel"], "plain");
    assert!(items[1].get("seq").is_none(), "no history, no seq: {v}");
    let (a, b) = (items[0]["seq"].as_u64(), items[2]["seq"].as_u64());
    assert!(a.is_some() && a < b, "increasing along the channel: {v}");
    // Without history anywhere in the batch: Pushpin's answer, unchanged.
    let resp = testkit::publish_raw(
        stack.publish,
        "POST",
        "/publish/",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        json!({"items": [item("plain", 9)]}).to_string(),
    )
    .await;
    assert_eq!(resp.text(), "{\"message\":\"Published\"}\n");
}

/// A stream hold whose prev-id is not in history and has no next link: the initial response,
/// then the end of the stream (the client reconnects and the origin decides). Too-old and
/// unknown ids both count as gaps.
#[tokio::test]
async fn history_stream_gap_without_next_link_ends_the_stream() {
    let stack = standalone("* test\n").await;
    // `old*` keeps 3 items: 1..=7 of 10 have fallen out.
    publish_all(stack.publish, range("old-ch", 1..=10)).await;
    for last in ["2", "unknown"] {
        let mut c = StreamClient::open(
            stack.edge,
            "/stream?channel=old-ch",
            &[("Last-Event-ID", last)],
        )
        .await;
        assert_eq!(c.status, 200);
        assert_eq!(
            c.wait_end(WAIT).await,
            testkit::StreamEnd::Clean,
            "stream with last id {last} must end"
        );
        assert_eq!(c.received_text(), "[stream open on channel old-ch]\n");
    }
    wait_metric(
        stack.admin,
        "gripmesh_edge_recoveries_total{result=\"gap\"}",
        WAIT,
        "two gaps counted",
        |v| v == 2.0,
    )
    .await;
    // Still within the channel's three items: recovered.
    let mut c = StreamClient::open(
        stack.edge,
        "/stream?channel=old-ch",
        &[("Last-Event-ID", "8")],
    )
    .await;
    c.read_until("10\n", WAIT).await;
    assert_eq!(numbers_of(&c.received_text()), [9, 10]);
    assert_eq!(recoveries(stack.admin, "recovered").await, 1.0);
}

/// A stream hold with a next link whose prev-id is not in history: the link is fetched at
/// once with `Grip-Last`, so the origin can re-sync the stream.
#[tokio::test]
async fn history_stream_gap_fetches_the_next_link_with_grip_last() {
    let origin = Origin::start(|req| {
        if req.path() == "/next" {
            return OriginResponse::text("resync\n");
        }
        OriginResponse::stream_hold("h-next; prev-id=gone", "open\n")
            .header("Grip-Link", "</next>; rel=next; timeout=120")
    })
    .await;
    let stack = standalone(&format!("* {}\n", origin.target())).await;
    let mut c = StreamClient::open(stack.edge, "/s", &[]).await;
    c.read_until("open\nresync\n", WAIT).await;
    let next = origin
        .requests()
        .into_iter()
        .find(|r| r.path() == "/next")
        .expect("next link fetched");
    assert_eq!(
        next.header("grip-last").as_deref(),
        Some("h-next; last-id=gone")
    );
    assert_eq!(recoveries(stack.admin, "gap").await, 1.0);
    // The stream stays open and live.
    publish_all(stack.publish, vec![item("h-next", 1)]).await;
    c.read_until("1\n", WAIT).await;
}

/// A response hold whose prev-id is not in history re-requests the origin with `Grip-Last`.
#[tokio::test]
async fn history_response_gap_rerequests_with_grip_last() {
    let origin = Origin::start(|req| {
        if let Some(last) = req.header("grip-last") {
            return OriginResponse::text(format!("re-synced from {last}"));
        }
        OriginResponse::response_hold("h-lp; prev-id=gone", "timeout\n")
    })
    .await;
    let stack = standalone(&format!("* {}\n", origin.target())).await;
    let resp = http_get(stack.edge, "/poll", &[]).await;
    assert_eq!(resp.text(), "re-synced from h-lp; last-id=gone");
    assert_eq!(recoveries(stack.admin, "gap").await, 1.0);
}

/// WebSocket-over-HTTP: a subscribe whose prev-id is not in history goes live, and the origin
/// at once gets an event-less request carrying `Grip-Last`.
#[tokio::test]
async fn history_ws_over_http_gap_sends_grip_last() {
    let origin = resuming_ws_origin().await;
    let stack = standalone(&format!("* {},over_http\n", origin.target())).await;
    let mut ws = WsConn::connect(stack.edge, "/ws?channel=h-wg&last=gone", &[]).await;
    testkit::wait_until(WAIT, "event-less request with Grip-Last", || {
        let reqs = origin.requests();
        async move {
            reqs.iter().any(|r| {
                r.events.is_empty()
                    && r.header("grip-last").as_deref() == Some("h-wg; last-id=gone")
            })
        }
    })
    .await;
    assert_eq!(recoveries(stack.admin, "gap").await, 1.0);
    // The subscription is live.
    publish_all(stack.publish, vec![item("h-wg", 7)]).await;
    assert_eq!(ws.expect_text(WAIT).await, "7");
}

/// WebSocket passthrough: a subscribe whose prev-id is not in history closes the client with
/// 4410 — never silence.
#[tokio::test]
async fn history_ws_passthrough_gap_closes_4410() {
    let origin = WsOrigin::start(WsOriginMode::Grip).await;
    let stack = standalone(&format!("* {}\n", origin.target())).await;
    let mut client = WsConn::connect(stack.edge, "/", &[]).await;
    let mut upstream = origin.accept(WAIT).await;
    upstream
        .send_text(r#"c:{"type":"subscribe","channel":"h-pt","prev-id":"gone"}"#)
        .await;
    let (code, reason) = client.expect_close(WAIT).await;
    assert_eq!((code, reason.as_str()), (4410, "history unavailable"));
    assert_eq!(recoveries(stack.admin, "gap").await, 1.0);
}

/// Without `--history`, `prev-id` keeps Pushpin's meaning: nothing is replayed, nothing
/// counted, streams stay open.
#[tokio::test]
async fn history_off_keeps_pushpin_behaviour() {
    let dir = TempDir::new();
    let file = dir.write("routes", "* test\n");
    let gm = Gripmesh::standalone(BIN, &["--routes", file.to_str().expect("utf-8")]).await;
    let mut c = StreamClient::open(
        gm.edge_addr(),
        "/stream?channel=h-off",
        &[("Last-Event-ID", "5")],
    )
    .await;
    publish_all(gm.publish_addr(), vec![item("h-off", 6)]).await;
    c.read_until("6\n", WAIT).await;
    assert_eq!(
        metric_value(gm.admin_addr(), "gripmesh_edge_recoveries_total").await,
        Some(0.0)
    );
}

/// Bad `--history` values exit 64 naming the value.
#[tokio::test]
async fn history_bad_policy_exits_64() {
    for bad in ["trades", "t=0", "t=5/3w", "t=5/0s", "=5"] {
        let (status, _, stderr) = testkit::run(BIN, &["standalone", "--history", bad]).await;
        assert_eq!(status.code(), Some(64), "--history {bad}: {stderr}");
        assert!(stderr.contains("--history"), "{stderr}");
    }
}
