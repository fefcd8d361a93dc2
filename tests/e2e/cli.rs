//! The client subcommands against a running gripmesh: `gripmesh publish` (every
//! format, SSE framing, ids, close, JWT auth from the environment), `gripmesh routes
//! get|put|watch` and `gripmesh status`.

use std::process::Stdio;
use std::time::Duration;

use testkit::{
    StreamClient, StreamEnd, TempDir, http_get, run, run_with_env, wait_metric_at_least,
};

use crate::common::{BIN, WAIT, start};

/// `gripmesh publish ARGS` against `env`'s control; returns (success, stdout, stderr).
async fn publish_cli(control: std::net::SocketAddr, args: &[&str]) -> (bool, String, String) {
    let url = format!("http://{control}");
    let mut all = vec!["publish", "--control-url", url.as_str()];
    all.extend_from_slice(args);
    let (status, out, err) = run(BIN, &all).await;
    (status.success(), out, err)
}

/// Plain content reaches streams (with pushpin-publish's newline) and WebSocket-less holds;
/// `--sse --id --event` frames a complete event for SSE clients; `--http-response` answers a
/// long-poll with `--code`; `--close` ends a stream.
#[tokio::test]
async fn publish_command_formats() {
    let env = start("* test\n", &[]).await;
    let p = env.publish();

    let mut stream = StreamClient::open(env.edge(), "/stream?channel=cli", &[]).await;
    stream
        .read_until("[stream open on channel cli]\n", WAIT)
        .await;
    let (ok, out, err) = publish_cli(p, &["cli", "hello from the shell"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(out, "Published\n");
    stream.read_until("hello from the shell\n", WAIT).await;

    let mut sse = StreamClient::open(env.edge(), "/sse?channel=cli-sse", &[]).await;
    sse.read_until("stream open", WAIT).await;
    let (ok, out, err) = publish_cli(
        p,
        &[
            "--sse",
            "--id",
            "7",
            "--event",
            "trade",
            "cli-sse",
            "line one\nline two",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    sse.read_until(
        "event: trade\nid: 7\ndata: line one\ndata: line two\n\n",
        WAIT,
    )
    .await;

    let edge = env.edge();
    let held = tokio::spawn(async move { http_get(edge, "/response?channel=cli-poll", &[]).await });
    wait_metric_at_least(env.admin(), "gripmesh_edge_subscriptions", 3.0, WAIT).await;
    let (ok, out, err) = publish_cli(
        p,
        &[
            "--http-response",
            "--code",
            "202",
            "--header",
            "X-From: cli",
            "cli-poll",
            "answered",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("long-poll answered")
        .expect("task");
    assert_eq!((resp.status, resp.text().as_str()), (202, "answered\n"));
    assert_eq!(resp.header("x-from").as_deref(), Some("cli"));

    let (ok, out, err) = publish_cli(p, &["--close", "cli"]).await;
    assert!(ok, "{out}{err}");
    assert!(matches!(stream.wait_end(WAIT).await, StreamEnd::Clean));
}

/// With `--publish-key` and `--publish-iss` on control, the same settings from the
/// environment (`GRIPMESH_PUBLISH_KEY`, `GRIPMESH_PUBLISH_ISS`) sign the CLI's JWT; a wrong
/// issuer is refused with control's 401 and exit status 1.
#[tokio::test]
async fn publish_command_signs_with_the_environments_key() {
    let env = start(
        "* test\n",
        &[
            "--publish-key",
            "cli-key-0123456789",
            "--publish-iss",
            "ops",
        ],
    )
    .await;
    let url = format!("http://{}", env.publish());
    let mut stream = StreamClient::open(env.edge(), "/stream?channel=auth", &[]).await;
    stream.read_until("stream open", WAIT).await;
    let args = ["publish", "--control-url", url.as_str(), "auth", "signed"];
    let key = ("GRIPMESH_PUBLISH_KEY", "cli-key-0123456789");
    let (status, out, err) =
        run_with_env(BIN, &args, &[key, ("GRIPMESH_PUBLISH_ISS", "ops")]).await;
    assert!(status.success(), "{out}{err}");
    stream.read_until("signed\n", WAIT).await;
    let (status, out, err) =
        run_with_env(BIN, &args, &[key, ("GRIPMESH_PUBLISH_ISS", "intruder")]).await;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("401"), "{err}");
}

/// `routes get` prints the table, `routes put` replaces it (a bad file is refused with
/// control's reason), `routes watch` prints the current table and every change.
#[tokio::test]
async fn routes_command_get_put_watch() {
    let env = start("* test\n", &[]).await;
    let url = format!("http://{}", env.publish());
    let grpc = format!("http://{}", env.gm.listener_addr("grpc").expect("grpc"));

    let (status, out, err) = run(BIN, &["routes", "--control-url", &url, "get"]).await;
    assert!(status.success(), "{out}{err}");
    assert_eq!(out, "* test\n");

    // Watch in the background: the current table, then the one put below.
    let watch = tokio::process::Command::new(BIN)
        .args([
            "routes",
            "--control-url",
            &url,
            "watch",
            "--grpc-url",
            &grpc,
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn watch");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let dir = TempDir::new();
    let file = dir.write("new.routes", "*,aco test\n");
    let (status, out, err) = run(
        BIN,
        &[
            "routes",
            "--control-url",
            &url,
            "put",
            file.to_str().expect("path"),
        ],
    )
    .await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("\"version\""), "{out}");
    let bad = dir.write("bad.routes", "*,sig_key= test\n");
    let (status, _, err) = run(
        BIN,
        &[
            "routes",
            "--control-url",
            &url,
            "put",
            bad.to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("400"), "{err}");

    let out = tokio::time::timeout(WAIT, watch.wait_with_output())
        .await
        .expect("watch ends after 2 tables")
        .expect("watch output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("# version ").count(), 2, "{text}");
    assert!(
        text.contains("* test\n") && text.ends_with("*,aco test\n"),
        "{text}"
    );

    let (_, out, _) = run(BIN, &["routes", "--control-url", &url, "get"]).await;
    assert_eq!(out, "*,aco test\n");
}

/// `gripmesh status` prints readiness and live figures and exits 0 when ready; an unreachable
/// admin listener exits 1.
#[tokio::test]
async fn status_command_reports_readiness_and_figures() {
    let env = start("* test\n", &[]).await;
    let admin = format!("http://{}", env.admin());
    let mut stream = StreamClient::open(env.edge(), "/stream?channel=st", &[]).await;
    stream.read_until("stream open", WAIT).await;
    let (status, out, err) = run(BIN, &["status", "--admin-url", &admin]).await;
    assert!(status.success(), "{out}{err}");
    assert!(out.starts_with("standalone "), "{out}");
    assert!(out.contains("— ready"), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("connections http-stream"))
        .unwrap_or_default();
    assert!(line.trim_end().ends_with(" 1"), "{out}");
    let (status, out, _) = run(BIN, &["status", "--admin-url", &admin, "--json"]).await;
    assert!(status.success());
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(doc["routes"]["text"], "* test\n");

    drop(env);
    let (status, _, err) = run(BIN, &["status", "--admin-url", &admin]).await;
    assert_eq!(status.code(), Some(1), "{err}");
}

/// `--id`, `--prev-id` and `--meta` end up in the published item as Pushpin's publish API
/// spells them (`id`, `prev-id`, `meta`): checked on what a control stand-in receives.
#[tokio::test]
async fn publish_command_sends_id_prev_id_and_meta() {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
    let control = testkit::Origin::start({
        let seen = seen.clone();
        move |req| {
            seen.lock().expect("seen").push(req.body.to_vec());
            testkit::OriginResponse::new(200).body("Published\n")
        }
    })
    .await;
    let (ok, out, err) = publish_cli(
        control.addr(),
        &[
            "--id",
            "p2",
            "--prev-id",
            "p1",
            "--meta",
            "user=alice",
            "chat",
            "hi",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let bodies = seen.lock().expect("seen").clone();
    assert_eq!(bodies.len(), 1, "one publish request");
    let body: serde_json::Value = serde_json::from_slice(&bodies[0]).expect("JSON body");
    let item = &body["items"][0];
    assert_eq!(
        (
            &item["channel"],
            &item["id"],
            &item["prev-id"],
            &item["meta"]
        ),
        (
            &serde_json::json!("chat"),
            &serde_json::json!("p2"),
            &serde_json::json!("p1"),
            &serde_json::json!({"user": "alice"})
        ),
        "{body}"
    );
}
