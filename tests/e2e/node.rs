//! The official Node GRIP libraries, used as in the wild: an Express origin with
//! `@fanoutio/serve-grip` configured from a `GRIP_URL` and requiring a GRIP proxy, behind a
//! default `gripmesh standalone` (no `--sig-key`: the edge signs with Pushpin's default key, as
//! a stock Pushpin does), and the `@fanoutio/grip` `Publisher` publishing to it.

use std::process::Stdio;
use std::time::Duration;

use testkit::StreamClient;
use testkit::ws::WsConn;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{WAIT, run_node, start, workspace_root};

/// A running `serve_grip_origin.mjs`; killed on drop.
pub(crate) struct NodeOrigin {
    _child: tokio::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// Starts `serve_grip_origin.mjs` with `grip_url`.
pub(crate) async fn start_origin(grip_url: &str) -> NodeOrigin {
    let dir = workspace_root().join("tests/node");
    assert!(
        dir.join("node_modules/@fanoutio/serve-grip").exists(),
        "tests/node/node_modules is missing: run scripts/test"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("serve_grip_origin.mjs"))
        .env("GRIP_URL", grip_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node on PATH");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("origin starts")
        .expect("read")
        .expect("a line");
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected origin output {line:?}"));
    NodeOrigin {
        _child: child,
        port,
    }
}

fn routes(origin: &NodeOrigin) -> String {
    format!(
        "*,path_beg=/ws 127.0.0.1:{p},over_http\n* 127.0.0.1:{p}\n",
        p = origin.port
    )
}

/// serve-grip configured from a `GRIP_URL` with `gripProxyRequired`: a stream hold and a
/// WebSocket-over-HTTP session work behind a default gripmesh (serve-grip takes a request as
/// proxied when it carries a `Grip-Sig`), and the Node `Publisher` reaches both.
#[tokio::test]
async fn serve_grip_origin_and_node_publisher_behind_default_gripmesh() {
    // The origin publishes nothing here, so its control URL does not matter; the Publisher
    // below gets the real one.
    let origin = start_origin("http://127.0.0.1:1/").await;
    let env = start(&routes(&origin), &[]).await;

    let mut stream = StreamClient::open(env.edge(), "/stream", &[]).await;
    assert_eq!(stream.status, 200, "{}", stream.received_text());
    stream.read_until("[stream open]\n", WAIT).await;

    let mut ws = WsConn::connect(env.edge(), "/ws", &[]).await;
    ws.send_text("echo me").await;
    assert_eq!(ws.expect_text(WAIT).await, "echo me");

    let grip_url = format!("http://{}/", env.publish());
    let (ok, out, err) = run_node(
        "publish_node.mjs",
        &["test", "from the Node Publisher"],
        &[("GRIP_URL", &grip_url)],
    )
    .await;
    assert!(ok, "publish_node.mjs: {out}{err}");
    stream.read_until("from the Node Publisher\n", WAIT).await;
    assert_eq!(ws.expect_text(WAIT).await, "from the Node Publisher");
}

/// Sent to the origin directly (no GRIP proxy, so no `Grip-Sig`), the same request gets 501:
/// what every request got behind a gripmesh that sent no `Grip-Sig` without `--sig-key`.
#[tokio::test]
async fn serve_grip_refuses_requests_without_a_grip_proxy() {
    let origin = start_origin("http://127.0.0.1:1/").await;
    let direct: std::net::SocketAddr = format!("127.0.0.1:{}", origin.port)
        .parse()
        .expect("address");
    let resp = testkit::http_get(direct, "/stream", &[]).await;
    assert_eq!(resp.status, 501, "{}", resp.text());
}
