//! Subscription filters, each assertion run against gripmesh and Pushpin 1.36:
//! `skip-self` with a `gripcontrol` chat origin and two WebSocket clients, `skip-users`,
//! `require-sub`, `var-subst` and publish `content-filters` on stream holds, and filters across
//! two edges over NATS.

use std::time::Duration;

use serde_json::json;
use testkit::ws::{Recv, WsConn};
use testkit::{Origin, OriginResponse, RecordedRequest, StreamClient};

use crate::common::WAIT;
use crate::parity_common::{Kind, Proxy, PyProcess, free_port, publish};

/// How long a message that must not arrive is waited for (after a later message proved the
/// connection live, this only guards against reordering).
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// skip-self: a chat room written with gripcontrol

async fn skip_self_chat(kind: Kind) {
    let port = free_port();
    let proxy = Proxy::start(kind, &format!("* 127.0.0.1:{port},over_http\n")).await;
    let control = format!("http://{}", proxy.control());
    let _origin = PyProcess::start(
        "chat_origin_gripcontrol.py",
        &[&control, "--port", &port.to_string()],
    )
    .await;
    let mut alice = WsConn::connect(proxy.edge(), "/chat?user=alice", &[]).await;
    let mut bob = WsConn::connect(proxy.edge(), "/chat?user=bob", &[]).await;
    // Both subscriptions are live before the 101 on gripmesh; Pushpin subscribes after
    // forwarding the OPEN answer, so give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    alice.send_text("hi bob").await;
    assert_eq!(bob.expect_text(WAIT).await, "alice: hi bob", "{kind:?}");
    bob.send_text("hi alice").await;
    // Alice's next message is bob's: her own was skipped.
    assert_eq!(alice.expect_text(WAIT).await, "bob: hi alice", "{kind:?}");
    assert_eq!(
        bob.recv(QUIET).await,
        Recv::Timeout,
        "{kind:?}: bob got his own"
    );
    assert_eq!(alice.recv(QUIET).await, Recv::Timeout, "{kind:?}");
}

#[tokio::test]
async fn parity_skip_self_gripcontrol_chat_gripmesh() {
    skip_self_chat(Kind::Gripmesh).await;
}

#[tokio::test]
async fn parity_skip_self_gripcontrol_chat_pushpin() {
    skip_self_chat(Kind::Pushpin).await;
}

// ---------------------------------------------------------------------------------------------
// Stream holds: skip-users, require-sub, var-subst, content-filters

/// `/s?ch=A,B&f=FILTER&user=U`: a stream hold on the channels, FILTER on the first one, sub
/// meta `user=U`.
fn filter_origin(req: RecordedRequest) -> OriginResponse {
    if req.path() == "/ping" {
        return OriginResponse::text("pong\n");
    }
    let channels = req.query("ch").unwrap_or_else(|| "c".into());
    let mut names = channels.split("%2C").flat_map(|c| c.split(','));
    let first = names.next().unwrap_or("c").to_owned();
    let mut value = match req.query("f") {
        Some(f) => format!("{first}; filter={f}"),
        None => first,
    };
    for other in names {
        value.push_str(", ");
        value.push_str(other);
    }
    let mut resp = OriginResponse::text("start\n")
        .header("Grip-Hold", "stream")
        .header("Grip-Channel", &value);
    if let Some(user) = req.query("user") {
        resp = resp.header("Grip-Set-Meta", &format!("user={user}"));
    }
    resp
}

async fn open(proxy: &Proxy, query: &str) -> StreamClient {
    let mut c = StreamClient::open(proxy.edge(), &format!("/s?{query}"), &[]).await;
    assert_eq!(c.status, 200, "{:?} /s?{query}", proxy.kind());
    c.read_until("start\n", WAIT).await;
    c
}

fn item(channel: &str, content: &str, meta: serde_json::Value) -> serde_json::Value {
    json!({"channel": channel, "meta": meta, "formats": {"http-stream": {"content": content}}})
}

async fn stream_filters(kind: Kind) {
    let origin = Origin::start(filter_origin).await;
    let proxy = Proxy::start(kind, &format!("* {}\n", origin.target())).await;
    let mut alice = open(&proxy, "ch=c&f=skip-users&user=alice").await;
    let mut bob = open(&proxy, "ch=c&f=skip-users&user=bob").await;
    let mut carol = open(&proxy, "ch=c&f=var-subst&user=carol").await;
    let mut both = open(&proxy, "ch=r,d&f=require-sub").await;
    let mut only = open(&proxy, "ch=r&f=require-sub").await;
    // Pushpin subscribes once the initial response is out; let it settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // skip-users: alice is skipped.
    publish(
        &proxy,
        json!([item("c", "one\n", json!({"skip_users": "x, alice"}))]),
    )
    .await;
    bob.read_until("one\n", WAIT).await;
    // var-subst: carol's copy is rendered for her; the others share the raw content.
    publish(&proxy, json!([item("c", "hi %(user)s\n", json!({}))])).await;
    carol.read_until("one\nhi carol\n", WAIT).await;
    bob.read_until("hi %(user)s\n", WAIT).await;
    alice.read_until("hi %(user)s\n", WAIT).await;
    // content-filters: only subscriptions whose content filters are exactly the list. Pushpin
    // 1.41 drops the item for the others (what gripmesh follows); 1.36 ended their streams, so
    // this part runs against gripmesh only.
    if kind == Kind::Gripmesh {
        publish(
            &proxy,
            json!([{"channel": "c", "formats": {"http-stream": {
                "content": "for var-subst %(user)s\n", "content-filters": ["var-subst"]}}}]),
        )
        .await;
        carol.read_until("for var-subst carol\n", WAIT).await;
    }
    publish(&proxy, json!([item("c", "end\n", json!({}))])).await;
    for c in [&mut alice, &mut bob] {
        c.read_until("end\n", WAIT).await;
        assert!(
            !c.received_text().contains("for var-subst"),
            "{kind:?}: {}",
            c.received_text()
        );
    }
    assert_eq!(
        alice.received_text(),
        "start\nhi %(user)s\nend\n",
        "{kind:?}"
    );

    // require-sub: only the connection also subscribed to `d` gets it.
    publish(
        &proxy,
        json!([item("r", "needs d\n", json!({"require_sub": "d"}))]),
    )
    .await;
    publish(&proxy, json!([item("r", "free\n", json!({}))])).await;
    both.read_until("needs d\nfree\n", WAIT).await;
    only.read_until("free\n", WAIT).await;
    assert_eq!(only.received_text(), "start\nfree\n", "{kind:?}");
}

#[tokio::test]
async fn parity_stream_filters_gripmesh() {
    stream_filters(Kind::Gripmesh).await;
}

#[tokio::test]
async fn parity_stream_filters_pushpin() {
    stream_filters(Kind::Pushpin).await;
}

// ---------------------------------------------------------------------------------------------
// Response holds: skip-self keeps the hold waiting; the next publish answers it.

async fn response_hold_skip_self(kind: Kind) {
    let origin = Origin::start(|_req| {
        OriginResponse::text("timeout\n")
            .header("Grip-Hold", "response")
            .header("Grip-Channel", "rc; filter=skip-self")
            .header("Grip-Set-Meta", "user=alice")
    })
    .await;
    let proxy = Proxy::start(kind, &format!("* {}\n", origin.target())).await;
    let edge = proxy.edge();
    let held = tokio::spawn(async move { testkit::http_get(edge, "/poll", &[]).await });
    origin.wait_for_requests(1, WAIT).await;
    // Pushpin may re-request a response hold ~1 s after a channel's first subscription
    // (`update_on_first_subscription`); publish after that window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp_item = |body: &str, sender: &str| {
        json!({"channel": "rc", "meta": {"sender": sender},
               "formats": {"http-response": {"body": body}}})
    };
    publish(&proxy, json!([resp_item("mine\n", "alice")])).await;
    publish(&proxy, json!([resp_item("theirs\n", "bob")])).await;
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("the hold is answered")
        .expect("request task");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "theirs\n"),
        "{kind:?}"
    );
}

#[tokio::test]
async fn parity_response_hold_skip_self_gripmesh() {
    response_hold_skip_self(Kind::Gripmesh).await;
}

#[tokio::test]
async fn parity_response_hold_skip_self_pushpin() {
    response_hold_skip_self(Kind::Pushpin).await;
}

// ---------------------------------------------------------------------------------------------
// Filters across two edges over NATS

#[tokio::test]
async fn parity_filters_across_two_edges_over_nats() {
    use testkit::NatsServer;
    use testkit::cluster::{ControlNode, start_edges, wait_ready};
    let origin = Origin::start(filter_origin).await;
    let routes = format!("* {}\n", origin.target());
    let nats = NatsServer::start();
    let url = nats.url();
    let (control, edges) = tokio::join!(
        ControlNode::start(crate::common::BIN, &url, &routes, &[]),
        start_edges(crate::common::BIN, &url, 2, &[])
    );
    wait_ready(control.admin_addr(), WAIT, "control").await;
    for (i, e) in edges.iter().enumerate() {
        wait_ready(e.admin_addr(), WAIT, &format!("edge {i}")).await;
    }
    // Edges get their routes from control; wait until both proxy to the origin.
    for e in &edges {
        testkit::wait_until(WAIT, "edge has routes", || async {
            testkit::try_http_request(e.edge_addr(), "GET", "/ping", &[], "")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
    }
    let open_on = |i: usize, q: &'static str| {
        let addr = edges[i].edge_addr();
        async move {
            let mut c = StreamClient::open(addr, &format!("/s?{q}"), &[]).await;
            c.read_until("start\n", WAIT).await;
            c
        }
    };
    let mut alice0 = open_on(0, "ch=n&f=skip-self&user=alice").await;
    let mut bob1 = open_on(1, "ch=n&f=skip-self&user=bob").await;
    let mut carol1 = open_on(1, "ch=n&f=var-subst&user=carol").await;
    let publish_n = |content: &'static str, sender: &'static str| {
        let addr = control.publish_addr();
        async move {
            let resp = testkit::publish(
                addr,
                &json!({"items": [item("n", content, json!({"sender": sender}))]}),
            )
            .await;
            assert_eq!(resp.status, 200);
        }
    };
    publish_n("from alice %(user)s\n", "alice").await;
    publish_n("from bob\n", "bob").await;
    alice0.read_until("from bob\n", WAIT).await;
    assert_eq!(alice0.received_text(), "start\nfrom bob\n");
    bob1.read_until("from alice %(user)s\n", WAIT).await;
    assert_eq!(bob1.received_text(), "start\nfrom alice %(user)s\n");
    carol1
        .read_until("from alice carol\nfrom bob\n", WAIT)
        .await;
}
