//! Production edge, end to end with the real binary: metrics that move with traffic on
//! every transport, JSON logs without secrets and with the connection's span, the paced drain
//! with readiness, and the connection and channel limits. TLS is in `client_tls.rs`, slow
//! consumers in `slow_consumers.rs`, the dashboard and alert rules in `dashboards_alerts.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::ws::{WsConn, WsConnectError};
use testkit::{
    Gripmesh, Origin, OriginResponse, Signal, StreamClient, http_get, metric_value, parse_metric,
    scrape_metrics, try_http_request, wait_metric, wait_metric_at_least,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::{
    BIN, WAIT, open_stream, publish_items, start, start_standard_origin, stream_item,
};
use crate::ws_common::ws_text_item;

/// `gripmesh_edge_connections{transport="..."}`.
fn gauge(transport: &str) -> String {
    format!("gripmesh_edge_connections{{transport=\"{transport}\"}}")
}

/// `gripmesh_edge_messages_sent_total{transport="..."}`.
fn sent(transport: &str) -> String {
    format!("gripmesh_edge_messages_sent_total{{transport=\"{transport}\"}}")
}

/// An `http-response` item.
fn response_item(channel: &str, body: &str) -> Value {
    json!({"channel": channel, "formats": {"http-response": {"body": body}}})
}

/// Lines of a histogram's buckets in a scrape.
fn bucket_lines<'a>(scrape: &'a str, histogram: &str) -> Vec<&'a str> {
    let prefix = format!("{histogram}_bucket{{");
    scrape.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// Metrics move with activity on every transport: the connection gauges go up and back down,
/// messages are counted per transport, HTTP publish items are counted, the delivery-latency
/// and origin-duration histograms export buckets and their counts grow, the bus is connected
/// and the build is announced.
#[tokio::test]
async fn metrics_move_with_activity_on_every_transport() {
    let origin = start_standard_origin().await;
    let env = start(
        &format!("*,path_beg=/ws test\n* {}\n", origin.target()),
        &[],
    )
    .await;
    let admin = env.admin();

    let first = scrape_metrics(admin).await;
    assert_eq!(
        parse_metric(&first, "gripmesh_bus_connected"),
        Some(1.0),
        "gripmesh_bus_connected in:\n{first}"
    );
    let build = format!(
        "gripmesh_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        parse_metric(&first, &build),
        Some(1.0),
        "{build} in:\n{first}"
    );
    for transport in ["ws", "http-stream", "http-response"] {
        assert_eq!(
            parse_metric(&first, &gauge(transport)).unwrap_or(0.0),
            0.0,
            "no {transport} connection yet"
        );
    }
    const LATENCY: &str = "gripmesh_edge_delivery_latency_seconds";
    const ORIGIN: &str = "gripmesh_edge_origin_duration_seconds";
    const ITEMS: &str = "gripmesh_control_publish_items_total{api=\"http\"}";
    let latency_count = format!("{LATENCY}_count");
    let origin_count = format!("{ORIGIN}_count");
    let value = |q: &str| parse_metric(&first, q).unwrap_or(0.0);
    let (latency_before, origin_before, items_before) =
        (value(&latency_count), value(&origin_count), value(ITEMS));
    let sent_before: Vec<f64> = ["ws", "http-stream", "http-response"]
        .iter()
        .map(|t| value(&sent(t)))
        .collect();

    // One held connection of each transport.
    let mut stream = open_stream(env.edge(), "pm-stream").await;
    let edge = env.edge();
    let long_poll =
        tokio::spawn(async move { http_get(edge, "/response?channel=pm-resp", &[]).await });
    let mut ws = WsConn::connect(env.edge(), "/ws?channel=pm-ws", &[]).await;
    for transport in ["ws", "http-stream", "http-response"] {
        wait_metric(admin, &gauge(transport), WAIT, "== 1 while held", |v| {
            v == 1.0
        })
        .await;
    }
    wait_metric_at_least(admin, "gripmesh_edge_subscriptions", 3.0, WAIT).await;
    wait_metric_at_least(admin, "gripmesh_edge_channels", 3.0, WAIT).await;
    wait_metric_at_least(admin, &origin_count, origin_before + 2.0, WAIT).await;

    publish_items(
        env.publish(),
        json!([
            stream_item("pm-stream", "to-the-stream\n"),
            response_item("pm-resp", "to-the-long-poll\n"),
            ws_text_item("pm-ws", "to-the-websocket"),
        ]),
    )
    .await;
    stream.read_until("to-the-stream\n", WAIT).await;
    let answered = tokio::time::timeout(WAIT, long_poll)
        .await
        .expect("long-poll answered by the publish")
        .expect("long-poll task");
    assert_eq!(
        (answered.status, answered.text().as_str()),
        (200, "to-the-long-poll\n")
    );
    assert_eq!(ws.expect_text(WAIT).await, "to-the-websocket");

    for (transport, before) in ["ws", "http-stream", "http-response"]
        .iter()
        .zip(&sent_before)
    {
        wait_metric_at_least(admin, &sent(transport), before + 1.0, WAIT).await;
    }
    wait_metric_at_least(admin, ITEMS, items_before + 3.0, WAIT).await;
    wait_metric_at_least(admin, &latency_count, latency_before + 3.0, WAIT).await;
    for transport in ["ws", "http-stream", "http-response"] {
        wait_metric_at_least(
            admin,
            &format!("gripmesh_edge_connections_opened_total{{transport=\"{transport}\"}}"),
            1.0,
            WAIT,
        )
        .await;
    }

    // Both histograms export their buckets, up to +Inf, consistent with their counts.
    let scrape = scrape_metrics(admin).await;
    for (histogram, min_count) in [(LATENCY, 3.0), (ORIGIN, 2.0)] {
        let buckets = bucket_lines(&scrape, histogram);
        assert!(
            buckets.len() >= 5,
            "{histogram}: too few buckets: {buckets:?}"
        );
        let inf = parse_metric(&scrape, &format!("{histogram}_bucket{{le=\"+Inf\"}}"))
            .unwrap_or_else(|| panic!("{histogram}: no +Inf bucket in:\n{scrape}"));
        let count = parse_metric(&scrape, &format!("{histogram}_count")).unwrap_or(0.0);
        assert!(count >= min_count, "{histogram}_count {count}");
        assert_eq!(inf, count, "{histogram}: +Inf bucket equals _count");
        assert!(
            parse_metric(&scrape, &format!("{histogram}_sum")).is_some(),
            "{histogram}_sum missing"
        );
    }

    // The long-poll was answered: its gauge is back to 0; the others go when their clients go.
    wait_metric(
        admin,
        &gauge("http-response"),
        WAIT,
        "== 0 after the answer",
        |v| v == 0.0,
    )
    .await;
    stream.close();
    ws.close(1000, "bye").await;
    ws.expect_close(WAIT).await;
    for transport in ["ws", "http-stream"] {
        wait_metric(
            admin,
            &gauge(transport),
            WAIT,
            "== 0 after the client left",
            |v| v == 0.0,
        )
        .await;
    }
    wait_metric(admin, "gripmesh_edge_subscriptions", WAIT, "== 0", |v| {
        v == 0.0
    })
    .await;
}

/// Secrets a client (and a publisher) send, which must never reach the logs.
const SECRETS: [&str; 4] = [
    "bearer-secret-8f2c1d",
    "apikey-secret-5b9e7a",
    "gripsig-secret-3d6f0c",
    "publish-token-secret-1a4b",
];

/// `--log-format json`: every stderr line is a JSON object; requests carrying credentials
/// (`Authorization: Bearer`, `?apikey=`, `Grip-Sig`, the publish token) never put them in the
/// logs, even at debug level; events of a client connection carry the connection's span with
/// its id and route id.
#[tokio::test]
async fn json_logs_parse_carry_the_span_and_hide_secrets() {
    let origin = Origin::start(|_| OriginResponse::text("fine\n")).await;
    let dead = Origin::refusing_addr();
    let dir = testkit::TempDir::new();
    let routes = dir.write(
        "routes",
        &format!(
            "*,path_beg=/dead,id=dead-route {dead}\n*,id=live-route {}\n",
            origin.target()
        ),
    );
    let gm = Gripmesh::standalone_with_env(
        BIN,
        &[
            "--routes",
            routes.to_str().expect("utf-8 path"),
            "--log-format",
            "json",
            "--publish-token",
            SECRETS[3],
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let auth = format!("Bearer {}", SECRETS[0]);
    let headers = [("Authorization", auth.as_str()), ("Grip-Sig", SECRETS[2])];
    for path in ["/dead/x", "/live/x"] {
        let uri = format!("{path}?apikey={}&other=1", SECRETS[1]);
        let resp = try_http_request(gm.edge_addr(), "GET", &uri, &headers, "")
            .await
            .expect("an answer");
        let expected = if path == "/dead/x" { 502 } else { 200 };
        assert_eq!(resp.status, expected, "GET {path}: {}", resp.text());
    }
    // A WebSocket handshake failure and a route miss log too.
    let _ = WsConn::try_connect(
        gm.edge_addr(),
        &format!("/dead/ws?apikey={}", SECRETS[1]),
        &headers,
    )
    .await;
    let publish_auth = format!("Bearer {}", SECRETS[3]);
    let resp = testkit::publish_with_auth(
        gm.publish_addr(),
        &json!({"items": [stream_item("logs", "x\n")]}),
        &publish_auth,
    )
    .await;
    assert_eq!(resp.status, 200);
    let wrong = testkit::publish_with_auth(
        gm.publish_addr(),
        &json!({"items": [stream_item("logs", "x\n")]}),
        &format!("Bearer {}", SECRETS[0]),
    )
    .await;
    assert_eq!(wrong.status, 401);

    // The failed proxy attempt is logged inside the connection's span.
    let deadline = Instant::now() + WAIT;
    let span_event = loop {
        let stderr = gm.stderr_text();
        let found = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|ev| ev["span"]["route"] == "dead-route");
        if let Some(ev) = found {
            break ev;
        }
        assert!(
            Instant::now() < deadline,
            "no log event with span.route = dead-route; stderr:\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("log event in the connection's span: {span_event}");
    let span = &span_event["span"];
    assert!(
        span["id"].is_u64() || span["id"].as_str().is_some_and(|s| !s.is_empty()),
        "span without a connection id: {span_event}"
    );
    assert_eq!(span["name"], "conn", "span name: {span_event}");
    let level = span_event["level"].as_str().unwrap_or_default();
    assert!(
        ["WARN", "DEBUG", "INFO", "ERROR"].contains(&level),
        "event level: {span_event}"
    );

    // Let the last events reach stderr, then check every line.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stderr = gm.stderr_text();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines:\n{stderr}");
    for line in &lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(parsed.is_object(), "not a JSON object: {line}");
        assert!(
            parsed.get("level").is_some() && parsed.get("timestamp").is_some(),
            "a log line without level/timestamp: {line}"
        );
    }
    for secret in SECRETS {
        assert!(
            !stderr.contains(secret),
            "secret {secret:?} appears in the logs:\n{}",
            stderr
                .lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Different connections get different ids.
    let ids: std::collections::HashSet<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|ev| ev["span"]["name"] == "conn")
        .map(|ev| ev["span"]["id"].to_string())
        .collect();
    assert!(
        ids.len() >= 2,
        "expected several connection ids, got {ids:?}"
    );
}

/// Whether `/readyz` answers, and with what.
enum Readiness {
    Status(u16, String),
    Gone,
}

async fn readiness(admin: SocketAddr) -> Readiness {
    match tokio::time::timeout(
        Duration::from_secs(2),
        try_http_request(admin, "GET", "/readyz", &[], ""),
    )
    .await
    {
        Ok(Ok(resp)) => Readiness::Status(resp.status, resp.text()),
        _ => Readiness::Gone,
    }
}

/// SIGTERM with 20 WebSockets, 5 long-polls and 5 streams held on the built-in `test` target:
/// `/readyz` turns 503 (draining) right away while the process is still up, every WebSocket
/// gets close 1012, every long-poll its timeout response, every stream a clean end, and the
/// process exits 0 well within `--drain-timeout`.
#[tokio::test]
async fn sigterm_drain_turns_readiness_off_and_closes_everyone() {
    let mut env = start("* test\n", &["--drain-timeout", "10"]).await;
    let (edge, admin) = (env.edge(), env.admin());
    // Ready once the revocations are loaded, which happens just after `ready` is printed.
    testkit::cluster::wait_ready(admin, WAIT, "before SIGTERM").await;
    let mut sockets = Vec::new();
    for i in 0..20 {
        sockets.push(WsConn::connect(edge, &format!("/ws?channel=drain-{}", i % 3), &[]).await);
    }
    let mut polls = Vec::new();
    for _ in 0..5 {
        polls.push(tokio::spawn(async move {
            try_http_request(edge, "GET", "/response?channel=drain-poll", &[], "").await
        }));
    }
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = StreamClient::open(edge, "/stream?channel=drain-stream", &[]).await;
        s.read_until("]\n", WAIT).await;
        streams.push(s);
    }
    wait_metric(admin, &gauge("ws"), WAIT, "== 20", |v| v == 20.0).await;
    wait_metric(admin, &gauge("http-response"), WAIT, "== 5", |v| v == 5.0).await;
    wait_metric(admin, &gauge("http-stream"), WAIT, "== 5", |v| v == 5.0).await;
    // Everyone works before the signal.
    sockets[0].send_text("before").await;
    assert_eq!(sockets[0].expect_text(WAIT).await, "before");

    let signalled = Instant::now();
    env.gm.signal(Signal::Term);
    // Readiness first: poll it right away, while clients are being closed.
    let mut seen = Vec::new();
    let readiness_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match readiness(admin).await {
            Readiness::Status(200, _) if Instant::now() < readiness_deadline => {
                seen.push(200);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Readiness::Status(status, body) => {
                seen.push(status);
                assert_eq!(status, 503, "/readyz after SIGTERM: {body}");
                assert!(body.contains("draining"), "/readyz reason: {body:?}");
                break;
            }
            Readiness::Gone => {
                seen.push(0);
                break;
            }
        }
    }
    eprintln!(
        "MEASURE: /readyz after SIGTERM: {seen:?} (0 = admin listener gone) after {:?}",
        signalled.elapsed()
    );
    assert!(
        seen.contains(&503),
        "readiness never reported 503 while draining (saw {seen:?})"
    );

    for (i, ws) in sockets.iter_mut().enumerate() {
        let (code, reason) = ws.expect_close(WAIT).await;
        assert_eq!(code, 1012, "WebSocket {i}: close code (reason {reason:?})");
    }
    for (i, poll) in polls.into_iter().enumerate() {
        let resp = tokio::time::timeout(WAIT, poll)
            .await
            .expect("long-poll answered during the drain")
            .expect("long-poll task")
            .unwrap_or_else(|e| panic!("long-poll {i}: {e}"));
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "[timeout]\n"),
            "long-poll {i} gets its timeout response"
        );
    }
    for stream in &mut streams {
        stream.expect_eof(WAIT).await;
    }
    let status = env.gm.wait_exit(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    eprintln!("MEASURE: drain of 30 held connections exited {status:?} after {took:?}");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
}

/// Sends one request on a fresh TCP connection, right after connecting, and reads the raw
/// answer until the server closes (or 5 s pass).
async fn raw_request(addr: SocketAddr, path: &str) -> String {
    raw_request_with(addr, path, "").await
}

/// Like [`raw_request`], with extra header lines (each ending in CRLF).
async fn raw_request_with(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    // The server may already have answered and closed: the answer is what matters.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_too_many(answer: &str, context: &str) {
    let lower = answer.to_ascii_lowercase();
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "{context}: expected 503, got {answer:?}"
    );
    assert!(
        answer.ends_with("\r\n\r\nToo many connections.\n"),
        "{context}: body: {answer:?}"
    );
    assert!(
        lower.contains("\r\nconnection: close\r\n"),
        "{context}: Connection: close missing: {answer:?}"
    );
}

/// `--max-connections 5`: with five held streams open, a sixth connection gets 503 `Too many
/// connections.` with `Connection: close` (and is counted), while the five keep receiving;
/// once one leaves, a new connection is served again.
#[tokio::test]
async fn max_connections_refuses_the_sixth_stream_client() {
    let origin = start_standard_origin().await;
    let env = start(
        &format!("* {}\n", origin.target()),
        &["--max-connections", "5"],
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(open_stream(env.edge(), "limit").await);
    }
    for attempt in 0..3 {
        let answer = raw_request(env.edge(), "/stream?channel=limit").await;
        assert_too_many(&answer, &format!("connection 6 (attempt {attempt})"));
    }
    wait_metric_at_least(env.admin(), "gripmesh_connections_refused_total", 3.0, WAIT).await;
    publish_items(
        env.publish(),
        json!([stream_item("limit", "still-served\n")]),
    )
    .await;
    for client in &mut clients {
        client.read_until("still-served\n", WAIT).await;
    }
    // A freed slot is usable again.
    clients.pop().expect("five clients").close();
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = try_http_request(env.edge(), "GET", "/plain", &[], "").await;
        match resp {
            Ok(r) if r.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no slot after a client left: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--max-connections 5` counts WebSocket sessions too: with five open, a sixth handshake
/// gets 503 `Too many connections.`, and the five keep working.
#[tokio::test]
async fn max_connections_counts_websockets() {
    let env = start("* test\n", &["--max-connections", "5"]).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(WsConn::connect(env.edge(), "/ws?channel=wslimit", &[]).await);
    }
    wait_metric(env.admin(), &gauge("ws"), WAIT, "== 5", |v| v == 5.0).await;
    // The sixth handshake, sent at once on a raw connection: a clear 503.
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let answer = raw_request_with(env.edge(), "/ws?channel=wslimit", upgrade).await;
    assert_too_many(&answer, "sixth WebSocket handshake");
    // A WebSocket client library never gets a 101. (The refusal is written as soon as the
    // connection is accepted, before the request is read, so a client that has not sent its
    // handshake yet may see an unsolicited answer and a closed connection instead.)
    match WsConn::try_connect(env.edge(), "/ws?channel=wslimit", &[]).await {
        Ok(conn) => panic!(
            "a sixth WebSocket was accepted over --max-connections 5: {:?}",
            conn.headers
        ),
        Err(WsConnectError::Rejected(r)) => assert_eq!(
            (
                r.status,
                r.text().as_str(),
                r.header("connection").as_deref()
            ),
            (503, "Too many connections.\n", Some("close")),
        ),
        Err(WsConnectError::Failed(e)) => {
            eprintln!("MEASURE: sixth WebSocket (tungstenite client) saw no 503: {e}")
        }
    }
    let answer = raw_request(env.edge(), "/").await;
    assert_too_many(&answer, "plain request with five WebSockets open");
    wait_metric_at_least(env.admin(), "gripmesh_connections_refused_total", 3.0, WAIT).await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        let text = format!("alive-{i}");
        ws.send_text(text.clone()).await;
        assert_eq!(ws.expect_text(WAIT).await, text, "WebSocket {i} echo");
    }
    publish_items(
        env.publish(),
        json!([ws_text_item("wslimit", "to-all-five")]),
    )
    .await;
    for ws in &mut sockets {
        assert_eq!(ws.expect_text(WAIT).await, "to-all-five");
    }
}

/// `--max-channels-per-connection 2`: a stream hold on three channels subscribes only two;
/// a publish to the third is not delivered.
#[tokio::test]
async fn max_channels_per_connection_ignores_extra_channels() {
    let origin =
        Origin::start(|_| OriginResponse::stream_hold("chan-a, chan-b, chan-c", "hold\n")).await;
    let env = start(
        &format!("* {}\n", origin.target()),
        &["--max-channels-per-connection", "2"],
    )
    .await;
    let mut client = StreamClient::open(env.edge(), "/three", &[]).await;
    assert_eq!(client.status, 200);
    client.read_until("hold\n", WAIT).await;
    wait_metric(
        env.admin(),
        "gripmesh_edge_subscriptions",
        WAIT,
        "== 2",
        |v| v == 2.0,
    )
    .await;
    assert_eq!(
        metric_value(env.admin(), "gripmesh_edge_subscriptions").await,
        Some(2.0)
    );
    publish_items(
        env.publish(),
        json!([
            stream_item("chan-c", "from-c\n"),
            stream_item("chan-a", "from-a\n"),
            stream_item("chan-b", "from-b\n"),
        ]),
    )
    .await;
    // Channels are independent: the two may arrive in either order.
    let deadline = Instant::now() + WAIT;
    while !(client.received_text().contains("from-a\n")
        && client.received_text().contains("from-b\n"))
    {
        assert!(
            Instant::now() < deadline,
            "publishes to the first two channels not delivered: {:?}",
            client.received_text()
        );
        client.read_for(Duration::from_millis(50)).await;
    }
    // Give a (wrongly) subscribed third channel every chance to show up.
    publish_items(
        env.publish(),
        json!([stream_item("chan-c", "from-c-again\n")]),
    )
    .await;
    publish_items(env.publish(), json!([stream_item("chan-a", "marker\n")])).await;
    client.read_until("marker\n", WAIT).await;
    let rest = client.read_for(Duration::from_millis(300)).await;
    let all = client.received_text();
    assert!(
        !all.contains("from-c"),
        "the third channel was subscribed: {all:?} (rest {rest:?})"
    );
}
