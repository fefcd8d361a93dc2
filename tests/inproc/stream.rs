//! Stream holds (cases 3–9, 18–20, 24, 26 stream half, 29), fan-out to many clients,
//! Grip-Expose-Headers and the route channel prefix.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Origin, OriginResponse, StreamClient, publish, publish_stream};
use tokio::task::JoinSet;

use crate::common::{
    WAIT, count, open_stream, publish_items, start_standard, start_with_origin, stream_item,
};

/// Case 3: stream hold — initial body first, chunked, no Content-Length, no Grip-* headers;
/// a publish is appended and the connection stays open.
#[tokio::test]
async fn stream_hold_basic() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = StreamClient::open(env.edge(), "/stream", &[]).await;
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(client.header("content-length"), None);
    assert!(client.is_chunked(), "headers: {:?}", client.headers);
    assert_eq!(
        client.header_names_with_prefix("grip-"),
        Vec::<String>::new()
    );
    client.read_until("hello\n", WAIT).await;

    publish_stream(env.publish(), "test", "x\n").await;
    client.read_until("x\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nx\n");
    assert!(client.end().is_none(), "stream ended: {:?}", client.end());
    // Still open: a second publish arrives too.
    publish_stream(env.publish(), "test", "y\n").await;
    client.read_until("y\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nx\ny\n");
}

/// Case 4: sequential publishes without ids arrive in order.
#[tokio::test]
async fn stream_ordering() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    for content in ["A\n", "B\n", "C\n"] {
        publish_stream(env.publish(), "test", content).await;
    }
    client.read_until("C\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nA\nB\nC\n");
}

/// Case 5: one connection on two channels; one publish with an item for each reaches it
/// with both. Order is guaranteed per channel only (docs/protocol.md, "Publishing"): channels fan out in parallel,
/// so items of one batch on different channels may arrive in either order.
#[tokio::test]
async fn multi_channel() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "m1,%20m2").await;
    publish_items(
        env.publish(),
        json!([stream_item("m1", "one\n"), stream_item("m2", "two\n")]),
    )
    .await;
    client.read_until("two\n", WAIT).await;
    if count(client.received(), b"one\n") == 0 {
        client.read_until("one\n", WAIT).await;
    }
    let text = client.received_text();
    assert!(
        text == "hello\none\ntwo\n" || text == "hello\ntwo\none\n",
        "each item exactly once after the initial body: {text:?}"
    );
}

/// Case 6: the `close` action ends the chunked response cleanly.
#[tokio::test]
async fn close_action_ends_stream_cleanly() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    publish_stream(env.publish(), "test", "last\n").await;
    publish_items(
        env.publish(),
        json!([{"channel": "test", "formats": {"http-stream": {"action": "close"}}}]),
    )
    .await;
    let rest = client.expect_eof(WAIT).await;
    assert_eq!(&rest[..], b"last\n");
}

/// Case 7: `content-bin` is base64-decoded.
#[tokio::test]
async fn content_bin_is_decoded() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    publish_items(
        env.publish(),
        json!([{"channel": "test", "formats": {"http-stream": {"content-bin": "QklOCg=="}}}]),
    )
    .await;
    client.read_until("BIN\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nBIN\n");
}

/// Case 8: http-response and ws-message formats never reach a stream hold.
#[tokio::test]
async fn format_isolation() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    publish_items(
        env.publish(),
        json!([{"channel": "test", "formats": {"http-response": {"body": "as-response\n"}}}]),
    )
    .await;
    publish_items(
        env.publish(),
        json!([{"channel": "test", "formats": {"ws-message": {"content": "as-ws\n"}}}]),
    )
    .await;
    publish_stream(env.publish(), "test", "marker\n").await;
    client.read_until("marker\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nmarker\n");
}

/// Case 9: Grip-Status sets the status line of the stream response.
#[tokio::test]
async fn grip_status_overrides_status_line() {
    let origin = Origin::start(|_| {
        OriginResponse::stream_hold("test", "").header("Grip-Status", "202 Accepted Stream")
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/status", &[]).await;
    assert_eq!(
        (client.status, client.reason.as_str()),
        (202, "Accepted Stream")
    );
    assert_eq!(
        client.header_names_with_prefix("grip-"),
        Vec::<String>::new()
    );
    publish_stream(env.publish(), "test", "after-status\n").await;
    client.read_until("after-status\n", WAIT).await;
}

/// Grip-Expose-Headers: only the named origin headers reach the client.
#[tokio::test]
async fn grip_expose_headers_filters_origin_headers() {
    let origin = Origin::start(|_| {
        OriginResponse::stream_hold("test", "hello\n")
            .header("X-Shown", "1")
            .header("X-Hidden", "2")
            .header("Grip-Expose-Headers", "X-Shown")
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/expose", &[]).await;
    assert_eq!(client.status, 200);
    assert_eq!(client.header("x-shown").as_deref(), Some("1"));
    assert_eq!(client.header("x-hidden"), None);
    assert_eq!(
        client.header_names_with_prefix("grip-"),
        Vec::<String>::new()
    );
    client.read_until("hello\n", WAIT).await;
}

/// Case 18: prev-id sequencing — a, then c (prev b), then b (prev a) ⇒ A, B, C; C waits for B.
#[tokio::test]
async fn prev_id_sequencing() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    let item = |id: &str, prev: Option<&str>, content: &str| {
        let mut item = stream_item("test", content);
        item["id"] = json!(id);
        if let Some(prev) = prev {
            item["prev-id"] = json!(prev);
        }
        json!([item])
    };
    publish_items(env.publish(), item("a", None, "A\n")).await;
    client.read_until("A\n", WAIT).await;
    publish_items(env.publish(), item("c", Some("b"), "C\n")).await;
    let early = client.read_for(Duration::from_millis(700)).await;
    assert_eq!(&early[..], b"", "C was delivered before its predecessor B");
    publish_items(env.publish(), item("b", Some("a"), "B\n")).await;
    // Well under the 5 s orphan timeout: C must be released by B, not by the timer.
    client.read_until("C\n", Duration::from_secs(3)).await;
    assert_eq!(client.received_text(), "hello\nA\nB\nC\n");
}

/// Case 19: an item whose prev-id never arrives is released after the 5 s sequencing wait.
#[tokio::test]
async fn orphan_released_after_message_wait() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    let mut first = stream_item("test", "X\n");
    first["id"] = json!("x");
    publish_items(env.publish(), json!([first])).await;
    client.read_until("X\n", WAIT).await;

    let mut orphan = stream_item("test", "E\n");
    orphan["id"] = json!("e");
    orphan["prev-id"] = json!("d");
    let published = Instant::now();
    publish_items(env.publish(), json!([orphan])).await;
    assert!(
        client
            .try_read_until("E\n", Duration::from_secs(4))
            .await
            .is_none(),
        "orphan delivered within 4 s (after {:?})",
        published.elapsed()
    );
    client.read_until("E\n", Duration::from_secs(5)).await;
    let waited = published.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited <= Duration::from_secs(9),
        "orphan released after {waited:?}, expected 5–6 s"
    );
}

/// Case 20: the same (channel, id) published twice within 60 s is delivered once.
#[tokio::test]
async fn duplicate_ids_delivered_once() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    let mut dup = stream_item("test", "dup\n");
    dup["id"] = json!("b");
    publish_items(env.publish(), json!([dup.clone()])).await;
    publish_items(env.publish(), json!([dup])).await;
    publish_stream(env.publish(), "test", "end\n").await;
    client.read_until("end\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\ndup\nend\n");
}

/// Case 29: the legacy item shape (format keys at the top level) is delivered.
#[tokio::test]
async fn legacy_item_shape_is_delivered() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    publish_items(
        env.publish(),
        json!([{"channel": "test", "http-stream": {"content": "legacy\n"}}]),
    )
    .await;
    client.read_until("legacy\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nlegacy\n");
}

/// Case 26 (stream half): a 150,000-byte initial body on a stream hold is streamed in full.
#[tokio::test]
async fn large_initial_body_on_stream_hold() {
    let mut big = "x".repeat(150_000 - 10);
    big.push_str("END-OF-BIG");
    let body = big.clone();
    let origin = Origin::start(move |_| OriginResponse::stream_hold("test", body.clone())).await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/large", &[]).await;
    assert_eq!(client.status, 200);
    client.read_until("END-OF-BIG", WAIT).await;
    assert!(client.received() == big.as_bytes(), "initial body differs");
    publish_stream(env.publish(), "test", "after-large\n").await;
    client.read_until("after-large\n", WAIT).await;
}

/// Route `prefix=` is prepended to every channel the origin subscribes.
#[tokio::test]
async fn route_prefix_is_prepended_to_channels() {
    let origin = crate::common::start_standard_origin().await;
    let env = crate::common::start(&format!("*,prefix=pre- {}\n", origin.target()), &[]).await;
    let mut client = open_stream(env.edge(), "chan").await;
    publish_stream(env.publish(), "chan", "unprefixed\n").await;
    publish_stream(env.publish(), "pre-chan", "prefixed\n").await;
    client.read_until("prefixed\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nprefixed\n");
}

/// 200 clients on one channel all receive several messages, complete and in order.
#[tokio::test]
async fn two_hundred_clients_receive_all_messages_in_order() {
    const CLIENTS: usize = 200;
    const MESSAGES: usize = 5;
    let (env, _origin) = start_standard(&[]).await;
    let edge = env.edge();
    let mut opening = JoinSet::new();
    for _ in 0..CLIENTS {
        opening.spawn(async move { open_stream(edge, "fan").await });
    }
    let mut clients = Vec::with_capacity(CLIENTS);
    while let Some(client) = opening.join_next().await {
        clients.push(client.expect("opening a stream client"));
    }
    let mut expected = String::from("hello\n");
    for i in 0..MESSAGES {
        let msg = format!("message-{i}\n");
        publish_stream(env.publish(), "fan", &msg).await;
        expected.push_str(&msg);
    }
    let last = format!("message-{}\n", MESSAGES - 1);
    let mut reading = JoinSet::new();
    for mut client in clients {
        let last = last.clone();
        reading.spawn(async move {
            client.read_until(last.as_bytes(), WAIT).await;
            client.received_text()
        });
    }
    let mut done = 0;
    while let Some(received) = reading.join_next().await {
        assert_eq!(received.expect("reading task"), expected);
        done += 1;
    }
    assert_eq!(done, CLIENTS);
}

/// Case 24 (Pushpin next links): Grip-Link rel=next is fetched on channel inactivity and
/// appended to the stream.
#[tokio::test]
async fn next_link_is_fetched_and_appended() {
    let origin = Origin::start(|req| match req.path() {
        "/next" => OriginResponse::stream_hold("nx", "next-chunk\n")
            .header("Grip-Link", "</next>; rel=next; timeout=5"),
        _ => OriginResponse::stream_hold("nx", "first-chunk\n")
            .header("Grip-Link", "</next>; rel=next; timeout=5"),
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/first", &[]).await;
    client.read_until("first-chunk\n", WAIT).await;
    client
        .read_until("next-chunk\n", Duration::from_secs(12))
        .await;
    let requests = origin.requests();
    assert!(requests.iter().any(|r| r.path() == "/next"));
    // Still a live stream on the channel.
    let resp = publish(
        env.publish(),
        &json!({"items": [stream_item("nx", "pub\n")]}),
    )
    .await;
    assert_eq!(resp.status, 200);
    client.read_until("pub\n", WAIT).await;
    assert!(count(client.received(), b"next-chunk\n") >= 1);
}
