//! Origin connection reuse for proxied requests: keep-alive connections are pooled, a pooled
//! connection the origin closed is replaced without the client noticing, and a request that
//! may have reached the origin is never sent twice.

use testkit::{Origin, ScriptedOrigin, Step, StreamClient, http_request, publish_stream};

use crate::common::{WAIT, open_stream, standard_origin, start, start_with_origin};

/// The origin answer of a stream hold on channel `test` with body `hello\n`.
fn stream_hold_answer() -> bytes::Bytes {
    Step::ok(
        &[
            ("Content-Type", "text/plain"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "test"),
        ],
        "hello\n",
    )
}

/// Holds opened one after another take their initial request over one origin connection
/// (and proxied plain requests share it too); the holds all work.
#[tokio::test]
async fn sequential_holds_reuse_one_origin_connection() {
    let origin = Origin::start(standard_origin).await;
    let env = start_with_origin(&origin, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(open_stream(env.edge(), "test").await);
    }
    for _ in 0..3 {
        let resp = http_request(env.edge(), "GET", "/plain", &[], "").await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "plain\n");
    }
    assert_eq!(origin.request_count(), 9);
    assert_eq!(
        origin.connection_count(),
        1,
        "every proxied request must reuse the one keep-alive origin connection"
    );
    publish_stream(env.publish(), "test", "x\n").await;
    for client in &mut clients {
        client.read_until("x\n", WAIT).await;
    }
}

/// A pooled connection the origin closed after answering is replaced: the next hold opens
/// normally on a new connection.
#[tokio::test]
async fn pooled_connection_closed_by_origin_is_replaced() {
    // Every connection serves two requests, then the origin closes it (as an origin whose
    // keep-alive timeout fires) without announcing it.
    let origin = ScriptedOrigin::start(|req| {
        if req.nth >= 2 {
            Step::AnswerAndClose(stream_hold_answer())
        } else {
            Step::Answer(stream_hold_answer())
        }
    })
    .await;
    let env = start(&format!("* {}\n", origin.target()), &[]).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = StreamClient::open(env.edge(), "/stream", &[]).await;
        assert_eq!(client.status, 200, "hold {i}: {}", client.received_text());
        client.read_until("hello\n", WAIT).await;
        clients.push(client);
    }
    let conns: Vec<(usize, usize)> = origin.requests().iter().map(|r| (r.conn, r.nth)).collect();
    assert_eq!(
        conns,
        vec![(0, 1), (0, 2), (1, 1), (1, 2), (2, 1)],
        "two requests per origin connection, then a new one"
    );
    assert_eq!(origin.connection_count(), 3);
    publish_stream(env.publish(), "test", "x\n").await;
    for client in &mut clients {
        client.read_until("x\n", WAIT).await;
    }
}

/// A POST whose pooled connection breaks after the origin received it is answered 502 and not
/// sent again (on another connection or target): the origin sees the body once.
#[tokio::test]
async fn request_body_is_never_replayed() {
    let origin = ScriptedOrigin::start(|req| match req.body.as_ref() {
        b"two" => Step::Close,
        _ => Step::Answer(Step::ok(&[("Content-Type", "text/plain")], "ok\n")),
    })
    .await;
    // A second target: a replay would go there if the edge failed over after sending.
    let spare = ScriptedOrigin::start(|_| Step::Answer(Step::ok(&[], "spare\n"))).await;
    let env = start(&format!("* {} {}\n", origin.target(), spare.target()), &[]).await;
    let one = http_request(env.edge(), "POST", "/a", &[], "one").await;
    assert_eq!((one.status, one.text().as_str()), (200, "ok\n"));
    let two = http_request(env.edge(), "POST", "/b", &[], "two").await;
    assert_eq!(two.status, 502, "body: {}", two.text());
    let three = http_request(env.edge(), "POST", "/c", &[], "three").await;
    assert_eq!((three.status, three.text().as_str()), (200, "ok\n"));

    let seen: Vec<(usize, String)> = origin
        .requests()
        .iter()
        .map(|r| (r.conn, String::from_utf8_lossy(&r.body).into_owned()))
        .collect();
    assert_eq!(
        seen,
        vec![(0, "one".into()), (0, "two".into()), (1, "three".into())],
        "the second POST went out on the pooled connection, once"
    );
    assert!(
        spare.requests().is_empty(),
        "nothing may fail over after sending"
    );
}
