//! The gRPC API of the control tier (`proto/gripmesh/v1/publish.proto`, `routes.proto`),
//! driven by a non-Rust client: `tests/py/grpc_publish.py` (grpcio, stubs generated from the
//! repository's proto files at run time).
//!
//! The interpreter comes from `GRIPMESH_TEST_PYTHON`, default
//! `<workspace>/target/e2e-venv/bin/python` (created by `tests/py/setup-venv.sh`). A missing
//! interpreter fails the test: it is never silently skipped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::cluster::{ControlNode, start_edge, wait_ready};
use testkit::ws::{WohOrigin, WsConn};
use testkit::{NatsServer, StreamClient, TempDir, http_get, run, wait_until};

use crate::common::{BIN, Env, WAIT, start, workspace_root};

fn python() -> String {
    let python = std::env::var("GRIPMESH_TEST_PYTHON").unwrap_or_else(|_| {
        workspace_root()
            .join("target/e2e-venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    assert!(
        PathBuf::from(&python).exists(),
        "Python interpreter {python} not found. Run tests/py/setup-venv.sh (creates \
         target/e2e-venv with grpcio and grpcio-tools), or set GRIPMESH_TEST_PYTHON to an \
         interpreter that has tests/py/requirements.txt installed."
    );
    python
}

/// One run of the gRPC client script.
struct Call {
    ok: bool,
    /// Every stdout line, parsed as JSON.
    lines: Vec<Value>,
    /// stdout + stderr, for assertion messages.
    output: String,
}

impl Call {
    /// The status code name of a failed RPC (`"INVALID_ARGUMENT"`, ...).
    fn error_code(&self) -> Option<&str> {
        self.lines.last()?.get("error")?.as_str()
    }

    fn error_message(&self) -> &str {
        self.lines
            .last()
            .and_then(|l| l.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The only result line of a successful unary call.
    fn single(&self) -> &Value {
        assert!(self.ok, "gRPC call failed:\n{}", self.output);
        assert_eq!(
            self.lines.len(),
            1,
            "one result line expected:\n{}",
            self.output
        );
        &self.lines[0]
    }
}

/// Runs `tests/py/grpc_publish.py ARGS...`.
async fn grpc(args: &[&str]) -> Call {
    let script = workspace_root().join("tests/py/grpc_publish.py");
    let script = script.to_string_lossy().into_owned();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run(&python(), &all).await;
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("non-JSON line {l:?} ({e}):\n{stdout}{stderr}"))
        })
        .collect();
    Call {
        ok: status.success(),
        lines,
        output: format!("exit {status}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"),
    }
}

fn grpc_addr(env: &Env) -> String {
    let addr: SocketAddr = env
        .gm
        .listener_addr("grpc")
        .expect("gripmesh printed no `listening grpc ADDR` line (is --grpc-listen wired?)");
    addr.to_string()
}

/// Opens a stream hold on `channel` through the built-in `test` origin and reads its banner.
async fn open_test_stream(env: &Env, channel: &str) -> (StreamClient, String) {
    let mut client =
        StreamClient::open(env.edge(), &format!("/stream?channel={channel}"), &[]).await;
    assert_eq!(
        client.status,
        200,
        "stream hold: {}",
        client.received_text()
    );
    let banner = format!("[stream open on channel {channel}]\n");
    client.read_until(banner.as_bytes(), WAIT).await;
    (client, banner)
}

fn as_u64(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer {key:?} in {v}"))
}

/// A unary `Publish` (http-stream content + ws text) reaches a held HTTP stream and a
/// WebSocket subscriber.
#[tokio::test]
async fn grpc_publish_reaches_stream_and_websocket() {
    let woh = WohOrigin::echo().await;
    let env = start(
        &format!("*,proto=ws {},over_http\n* test\n", woh.target()),
        &[],
    )
    .await;
    let addr = grpc_addr(&env);
    let (mut stream, banner) = open_test_stream(&env, "grpc-unary").await;
    let mut ws = WsConn::connect(env.edge(), "/ws?channel=grpc-unary", &[]).await;

    let call = grpc(&["publish", &addr, "grpc-unary", "from-grpc\n"]).await;
    let reply = call.single();
    assert_eq!(
        (as_u64(reply, "accepted"), reply["error"].as_str()),
        (1, Some("")),
        "{}",
        call.output
    );

    stream.read_until("from-grpc\n", WAIT).await;
    assert_eq!(stream.received_text(), format!("{banner}from-grpc\n"));
    assert_eq!(ws.expect_text(WAIT).await, "from-grpc\n");
}

/// A unary `Publish` touching a channel with history answers once stored, with one receipt per
/// item in request order: the history channel's items carry increasing `seq`s, the plain
/// channel's item `seq` 0; a batch without history has no receipts (Pushpin's answer).
#[tokio::test]
async fn grpc_publish_receipts_for_history_channels() {
    let env = start("* test\n", &["--history", "h*=100"]).await;
    let addr = grpc_addr(&env);
    let item = |channel: &str, id: &str| {
        json!({"channel": channel, "id": id,
               "httpStream": {"content": BASE64_HELLO}})
    };
    let batch = json!({"items": [item("h-g", "1"), item("plain", "2"), item("h-g", "3")]});
    let call = grpc(&["publish-json", &addr, &batch.to_string()]).await;
    let reply = call.single();
    assert_eq!(as_u64(reply, "accepted"), 3, "{}", call.output);
    let receipts = reply["items"].as_array().expect("receipts");
    let summary: Vec<(&str, &str)> = receipts
        .iter()
        .map(|r| {
            (
                r["channel"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(summary, [("h-g", "1"), ("plain", "2"), ("h-g", "3")]);
    let seq = |i: usize| receipts[i]["seq"].as_u64().unwrap_or(0);
    assert_eq!(seq(1), 0, "no history, no seq: {reply}");
    assert!(
        seq(0) > 0 && seq(0) < seq(2),
        "increasing along the channel: {reply}"
    );

    let plain = json!({"items": [item("plain", "4")]});
    let call = grpc(&["publish-json", &addr, &plain.to_string()]).await;
    assert_eq!(call.single()["items"], json!([]), "{}", call.output);
}

/// `hello\n`, base64 (bytes in the protobuf JSON mapping).
const BASE64_HELLO: &str = "aGVsbG8K";

/// `PublishStream` of 200 requests: 200 replies in request order, and the items arrive on
/// the channel in the same order.
#[tokio::test]
async fn grpc_publish_stream_keeps_order() {
    const N: usize = 200;
    let env = start("* test\n", &[]).await;
    let addr = grpc_addr(&env);
    let (mut stream, banner) = open_test_stream(&env, "grpc-seq").await;

    let call = grpc(&["stream", &addr, "grpc-seq", &N.to_string()]).await;
    assert!(call.ok, "PublishStream failed:\n{}", call.output);
    assert_eq!(
        call.lines.len(),
        N,
        "one reply per request:\n{}",
        call.output
    );
    for (i, reply) in call.lines.iter().enumerate() {
        assert_eq!(
            as_u64(reply, "request_index"),
            i as u64,
            "reply {i}: {reply}"
        );
        assert_eq!(as_u64(reply, "accepted"), 1, "reply {i}: {reply}");
        assert_eq!(reply["error"].as_str(), Some(""), "reply {i}: {reply}");
    }

    stream.read_until(format!("msg-{}\n", N - 1), WAIT).await;
    let expected: String = (0..N).map(|i| format!("msg-{i}\n")).collect();
    assert_eq!(stream.received_text(), format!("{banner}{expected}"));
}

/// One invalid item fails the whole batch with INVALID_ARGUMENT naming the item, and nothing
/// of the batch is delivered.
#[tokio::test]
async fn grpc_invalid_item_rejects_the_batch() {
    let env = start("* test\n", &[]).await;
    let addr = grpc_addr(&env);
    let (mut stream, banner) = open_test_stream(&env, "grpc-bad").await;

    // Item 0 is valid ("bad-batch\n" in base64); item 1 sets a close code without close.
    let batch = r#"{"items": [
        {"channel": "grpc-bad", "httpStream": {"content": "YmFkLWJhdGNoCg=="}},
        {"channel": "grpc-bad", "wsMessage": {"text": "x", "closeCode": 1000}}
    ]}"#;
    let call = grpc(&["publish-json", &addr, batch]).await;
    assert!(!call.ok, "invalid batch accepted:\n{}", call.output);
    assert_eq!(
        call.error_code(),
        Some("INVALID_ARGUMENT"),
        "{}",
        call.output
    );
    assert!(
        call.error_message().contains("item 1"),
        "the message should name the item:\n{}",
        call.output
    );

    let empty_channel = r#"{"items": [{"httpStream": {"content": "eA=="}}]}"#;
    let call = grpc(&["publish-json", &addr, empty_channel]).await;
    assert_eq!(
        call.error_code(),
        Some("INVALID_ARGUMENT"),
        "{}",
        call.output
    );

    // A marker proves the rejected item was not merely delayed.
    grpc(&["publish", &addr, "grpc-bad", "marker\n"])
        .await
        .single();
    stream.read_until("marker\n", WAIT).await;
    assert_eq!(stream.received_text(), format!("{banner}marker\n"));
}

/// With `--publish-token`, calls without the token (or with another one) are UNAUTHENTICATED
/// and deliver nothing; the right token works, for publishing and for the route API.
#[tokio::test]
async fn grpc_publish_token() {
    let env = start("* test\n", &["--publish-token", "grpc-secret"]).await;
    let addr = grpc_addr(&env);
    let (mut stream, banner) = open_test_stream(&env, "grpc-auth").await;

    let denied = [
        grpc(&["publish", &addr, "grpc-auth", "no-token\n"]).await,
        grpc(&["publish", &addr, "grpc-auth", "wrong\n", "--token", "other"]).await,
        grpc(&["stream", &addr, "grpc-auth", "3"]).await,
        grpc(&["routes-list", &addr]).await,
    ];
    for call in &denied {
        assert!(
            !call.ok,
            "call without the token succeeded:\n{}",
            call.output
        );
        assert_eq!(
            call.error_code(),
            Some("UNAUTHENTICATED"),
            "{}",
            call.output
        );
    }

    let call = grpc(&[
        "publish",
        &addr,
        "grpc-auth",
        "with-token\n",
        "--token",
        "grpc-secret",
    ])
    .await;
    assert_eq!(as_u64(call.single(), "accepted"), 1);
    let call = grpc(&["stream", &addr, "grpc-auth", "2", "--token", "grpc-secret"]).await;
    assert!(call.ok && call.lines.len() == 2, "{}", call.output);
    stream.read_until("msg-1\n", WAIT).await;
    assert_eq!(
        stream.received_text(),
        format!("{banner}with-token\nmsg-0\nmsg-1\n")
    );
    let call = grpc(&["routes-list", &addr, "--token", "grpc-secret"]).await;
    assert_eq!(call.single()["text"].as_str(), Some("* test\n"));
}

/// `RouteService.Put` of a bad table is INVALID_ARGUMENT (naming the line) and `List` is
/// unchanged; a good table gets a newer version, which `List` then returns.
#[tokio::test]
async fn grpc_routes_put_and_list() {
    let env = start("* test\n", &[]).await;
    let addr = grpc_addr(&env);
    let dir = TempDir::new();

    let before = grpc(&["routes-list", &addr]).await.single().clone();
    assert_eq!(before["text"].as_str(), Some("* test\n"), "{before}");
    let v0 = as_u64(&before, "version");

    let bad = dir.write("bad-routes", "* test\n* 127.0.0.1:notaport\n");
    let call = grpc(&["routes-put", &addr, bad.to_str().expect("utf-8 path")]).await;
    assert!(!call.ok, "bad table accepted:\n{}", call.output);
    assert_eq!(
        call.error_code(),
        Some("INVALID_ARGUMENT"),
        "{}",
        call.output
    );
    assert!(call.error_message().contains("line 2"), "{}", call.output);
    let after_bad = grpc(&["routes-list", &addr]).await.single().clone();
    assert_eq!(after_bad, before, "a rejected table must change nothing");

    let good_text = "# replaced over gRPC\n*,id=grpc-route test\n";
    let good = dir.write("good-routes", good_text);
    let put = grpc(&["routes-put", &addr, good.to_str().expect("utf-8 path")])
        .await
        .single()
        .clone();
    let v1 = as_u64(&put, "version");
    assert!(v1 > v0, "version {v1} should be newer than {v0}");
    assert_eq!(put["text"].as_str(), Some(good_text));
    assert_eq!(put["routes"][0]["id"].as_str(), Some("grpc-route"), "{put}");
    assert_eq!(put["routes"][0]["line"].as_u64(), Some(2), "{put}");
    let listed = grpc(&["routes-list", &addr]).await.single().clone();
    assert_eq!(listed, put);
}

/// `RouteService.Watch` sends the current table, then the table after a change.
#[tokio::test]
async fn grpc_routes_watch_reports_changes() {
    let env = start("* test\n", &[]).await;
    let addr = grpc_addr(&env);
    let dir = TempDir::new();
    let v0 = as_u64(grpc(&["routes-list", &addr]).await.single(), "version");

    // The watcher prints the current table and the next one. It may start after a Put, so
    // keep installing fresh tables until it has seen two.
    let watch_addr = addr.clone();
    let watcher = tokio::spawn(async move { grpc(&["routes-watch", &watch_addr, "2"]).await });
    let mut n = 0;
    while !watcher.is_finished() && n < 30 {
        let file = dir.write(&format!("routes-{n}"), &format!("# put {n}\n* test\n"));
        grpc(&["routes-put", &addr, file.to_str().expect("utf-8 path")])
            .await
            .single();
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let watched = watcher.await.expect("watcher task");
    assert!(watched.ok, "Watch failed:\n{}", watched.output);
    assert_eq!(watched.lines.len(), 2, "{}", watched.output);
    let (w0, w1) = (
        as_u64(&watched.lines[0], "version"),
        as_u64(&watched.lines[1], "version"),
    );
    assert!(
        v0 <= w0 && w0 < w1,
        "versions {v0} {w0} {w1}:\n{}",
        watched.output
    );
    let text = watched.lines[1]["text"].as_str().unwrap_or("");
    assert!(
        text.starts_with("# put ") && text.ends_with("* test\n"),
        "{}",
        watched.output
    );
}

/// A table installed with `RouteService.Put` on `gripmesh control` reaches a running
/// `gripmesh edge` over NATS.
#[tokio::test]
async fn grpc_routes_put_reaches_edges() {
    let nats = NatsServer::start();
    let url = nats.url();
    let (control, edge) = tokio::join!(
        ControlNode::start_api(BIN, &url, Some("old.example test\n"), &[]),
        start_edge(BIN, &url, &[])
    );
    wait_ready(control.admin_addr(), WAIT, "control").await;
    wait_ready(edge.admin_addr(), WAIT, "edge").await;
    let addr = control
        .gm
        .listener_addr("grpc")
        .expect("gripmesh control printed no `listening grpc ADDR` line")
        .to_string();
    let edge_addr = edge.edge_addr();
    let new_host = || async move {
        http_get(edge_addr, "/", &[("Host", "new.example")])
            .await
            .status
    };
    assert_eq!(new_host().await, 502, "new.example has no route yet");

    let dir = TempDir::new();
    let file = dir.write("routes", "old.example test\nnew.example test\n");
    let put = grpc(&["routes-put", &addr, file.to_str().expect("utf-8 path")]).await;
    put.single();
    wait_until(WAIT, "the edge routes new.example", || async move {
        new_host().await == 200
    })
    .await;
}
