//! `gripmesh demo`: the article's scenario on one machine (docs/protocol.md, "Tiers and subcommands"). The mock API gateway
//! requires the key `demo-key`; with it, WebSocket, HTTP-stream and SSE clients receive a fake
//! trade every second; without it, they get the gateway's 401 JSON fault.

use serde_json::Value;
use testkit::ws::WsConn;
use testkit::{Gripmesh, StreamClient, http_get, http_request, run, wait_until};

use crate::common::{BIN, WAIT};

/// Trades come every second; allow for a slow start.
const TRADE_WAIT: Duration = Duration::from_secs(5);

use std::time::Duration;

/// `gripmesh demo` on free loopback ports.
pub(crate) async fn start_demo() -> Gripmesh {
    Gripmesh::start(
        BIN,
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ],
        &[],
    )
    .await
}

/// Parses a trade and checks its shape; returns its `transaction_id`.
fn trade_id(text: &str) -> u64 {
    let trade: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("a trade is JSON ({e}): {text:?}"));
    assert_eq!(trade["exchange"], "QuadrigaCX", "{trade}");
    for field in ["price", "volume", "value"] {
        assert!(
            trade[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {trade}"
        );
    }
    let date = trade["date"].as_str().unwrap_or_default();
    assert!(
        date.len() == 20 && date.as_bytes()[10] == b'T' && date.ends_with('Z'),
        "RFC 3339 date: {trade}"
    );
    trade["transaction_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("transaction_id: {trade}"))
}

/// The article over WebSocket: refused without the key (the gateway's 401 and JSON fault, as
/// `wscat` shows), connected with it and receiving trades with increasing transaction ids;
/// revoking the key closes the connection (4401). The printed instructions name the real port.
#[tokio::test]
async fn demo_websocket_feed_requires_the_api_key() {
    let gm = start_demo().await;
    let edge = gm.edge_addr();
    let expected = format!(
        "websocat 'ws://localhost:{}/authenticated/trades?apikey=demo-key'",
        edge.port()
    );
    wait_until(WAIT, "the demo prints the commands to try", || async {
        gm.stdout_text().contains(&expected)
    })
    .await;
    assert!(gm.stdout_text().contains("/authz/revoke"));

    for (path, errorcode) in [
        (
            "/authenticated/trades",
            "steps.oauth.v2.FailedToResolveAPIKey",
        ),
        (
            "/authenticated/trades?apikey=wrong-key",
            "oauth.v2.InvalidApiKey",
        ),
    ] {
        let rejection = WsConn::connect_rejected(edge, path, &[]).await;
        assert_eq!(rejection.status, 401, "{path}");
        assert_eq!(
            rejection.header("content-type").as_deref(),
            Some("application/json")
        );
        let fault: Value = serde_json::from_slice(&rejection.body).expect("fault is JSON");
        assert_eq!(fault["fault"]["detail"]["errorcode"], errorcode, "{fault}");
    }

    let mut ws = WsConn::connect(edge, "/authenticated/trades?apikey=demo-key", &[]).await;
    let first = trade_id(&ws.expect_text(TRADE_WAIT).await);
    let second = trade_id(&ws.expect_text(TRADE_WAIT).await);
    assert!(
        second > first,
        "transaction ids increase: {first} then {second}"
    );

    let resp = http_request(
        gm.publish_addr(),
        "POST",
        "/authz/revoke",
        &[("Content-Type", "application/json")],
        r#"{"credential":"demo-key"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(ws.expect_close(Duration::from_secs(3)).await.0, 4401);

    // Usage: the demo names its records file; the revoked connection's final record is there.
    let out = gm.stdout_text();
    let file = out
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(".jsonl") && l.contains("gripmesh-demo-usage-"))
        .unwrap_or_else(|| panic!("the demo names its usage file: {out}"))
        .to_owned();
    assert!(out.contains("gripmesh_app_"), "per-app metrics named");
    wait_until(
        WAIT,
        "a final usage record for the revoked connection",
        || {
            let file = file.clone();
            async move {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let records: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_default())
                    .collect();
                records.iter().any(|r| {
                    let id = &r["connection_id"];
                    let received: u64 = records
                        .iter()
                        .filter(|x| x["connection_id"] == *id)
                        .map(|x| x["messages"].as_u64().unwrap_or(0))
                        .sum();
                    r["final"] == true
                        && r["close_reason"] == "revoked"
                        && r["app"] == "demo-app"
                        && r["transport"] == "ws"
                        && received >= 2
                })
            }
        },
    )
    .await;
    let _ = std::fs::remove_file(&file);
}

/// The same feed over HTTP streaming (a JSON trade per line, key in a header) and SSE (key in
/// the query); refused without the key; the rest of the site goes to the built-in test origin.
#[tokio::test]
async fn demo_http_stream_and_sse_feeds() {
    let gm = start_demo().await;
    let edge = gm.edge_addr();

    let refused = http_get(edge, "/authenticated/trades", &[]).await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.text().contains("FailedToResolveAPIKey"),
        "{}",
        refused.text()
    );

    let mut stream =
        StreamClient::open(edge, "/authenticated/trades", &[("X-Api-Key", "demo-key")]).await;
    assert_eq!(stream.status, 200, "{}", stream.received_text());
    assert_eq!(stream.header("content-type").as_deref(), Some("text/plain"));
    let first = trade_id(&String::from_utf8_lossy(
        &stream.read_until("\n", TRADE_WAIT).await,
    ));
    let second = trade_id(&String::from_utf8_lossy(
        &stream.read_until("\n", TRADE_WAIT).await,
    ));
    assert!(
        second > first,
        "transaction ids increase: {first} then {second}"
    );

    let mut sse = StreamClient::open(
        edge,
        "/authenticated/trades?apikey=demo-key",
        &[("Accept", "text/event-stream")],
    )
    .await;
    assert_eq!(sse.status, 200, "{}", sse.received_text());
    assert_eq!(
        sse.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let event = String::from_utf8_lossy(&sse.read_until("\n\n", TRADE_WAIT).await).into_owned();
        if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
            ids.push(trade_id(data));
        }
    }
    assert!(ids[1] > ids[0], "{ids:?}");

    // The SSE recipe: events carry `id:`, and an EventSource coming back with `Last-Event-ID`
    // resumes from the trades channel's history — the next trade, not the next live one.
    drop(sse);
    let last = ids[0].to_string();
    let mut back = StreamClient::open(
        edge,
        "/authenticated/trades?apikey=demo-key",
        &[
            ("Accept", "text/event-stream"),
            ("Last-Event-ID", last.as_str()),
        ],
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.received_text());
    loop {
        let event =
            String::from_utf8_lossy(&back.read_until("\n\n", TRADE_WAIT).await).into_owned();
        if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
            let id = trade_id(data);
            assert_eq!(id, ids[0] + 1, "replayed from history: {event:?}");
            let event_id = event.lines().find_map(|l| l.strip_prefix("id: "));
            assert_eq!(event_id, Some(id.to_string().as_str()), "{event:?}");
            break;
        }
    }

    let other = http_get(edge, "/", &[]).await;
    assert_eq!(
        other.status,
        200,
        "`* test` serves the rest: {}",
        other.text()
    );
}

/// The demo's publish API is unauthenticated, so it refuses a non-loopback address (exit 64).
#[tokio::test]
async fn demo_refuses_public_publish_listener() {
    let (status, _, stderr) = run(BIN, &["demo", "--publish-listen", "0.0.0.0:0"]).await;
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--publish-listen"), "{stderr}");
}
