//! Shared setup: launching gripmesh with a routes file, a standard GRIP origin, and a
//! "survivor" stream used to prove that bad input did not hurt unrelated connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    Origin, OriginResponse, RecordedRequest, StreamClient, TempDir, publish, publish_stream,
};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gripmesh");

/// Patience for anything that should happen "soon" (delivery, reloads, metrics).
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The workspace root.
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running gripmesh (started the way this tier starts it, `crate::launch`) with its routes
/// file.
pub(crate) struct Env {
    pub gm: crate::launch::Gripmesh,
    /// Keeps the routes file alive.
    pub _dir: TempDir,
    pub routes_file: PathBuf,
}

impl Env {
    pub(crate) fn edge(&self) -> SocketAddr {
        self.gm.edge_addr()
    }

    pub(crate) fn publish(&self) -> SocketAddr {
        self.gm.publish_addr()
    }

    pub(crate) fn admin(&self) -> SocketAddr {
        self.gm.admin_addr()
    }

    /// Rewrites the routes file in place.
    pub(crate) fn write_routes(&self, text: &str) {
        std::fs::write(&self.routes_file, text).expect("rewriting routes file");
    }
}

/// Starts `gripmesh standalone --routes <file with routes_text>` plus `extra` flags.
pub(crate) async fn start(routes_text: &str, extra: &[&str]) -> Env {
    start_named("routes", routes_text, extra).await
}

/// Like [`start`], with a chosen routes file name.
pub(crate) async fn start_named(file_name: &str, routes_text: &str, extra: &[&str]) -> Env {
    let dir = TempDir::new();
    let routes_file = dir.write(file_name, routes_text);
    let routes_arg = routes_file.to_str().expect("utf-8 temp path").to_string();
    let mut args = vec!["--routes", routes_arg.as_str()];
    args.extend_from_slice(extra);
    let gm = crate::launch::standalone(&args).await;
    Env {
        gm,
        _dir: dir,
        routes_file,
    }
}

/// Starts gripmesh with the single route `* <origin>`.
pub(crate) async fn start_with_origin(origin: &Origin, extra: &[&str]) -> Env {
    start(&format!("* {}\n", origin.target()), extra).await
}

/// The standard GRIP origin used by most tests:
/// - `/plain` ⇒ 200 text/plain `plain\n`
/// - `/stream?channel=C` ⇒ stream hold on `C` (default `test`; `%20` decoded), text/plain,
///   body `hello\n`
/// - `/response?channel=C[&timeout=N]` ⇒ response hold on `C` (default `resp`), `X-Orig: yes`,
///   body `timeout-body\n`, `Grip-Timeout: N` when given
/// - anything else ⇒ 404 `not found\n`
pub(crate) fn standard_origin(req: RecordedRequest) -> OriginResponse {
    match req.path() {
        "/plain" => OriginResponse::text("plain\n"),
        "/stream" => {
            let channel = req.query("channel").unwrap_or_else(|| "test".into());
            OriginResponse::stream_hold(&channel.replace("%20", " "), "hello\n")
        }
        "/response" => {
            let channel = req.query("channel").unwrap_or_else(|| "resp".into());
            let mut resp =
                OriginResponse::response_hold(&channel, "timeout-body\n").header("X-Orig", "yes");
            if let Some(timeout) = req.query("timeout") {
                resp = resp.header("Grip-Timeout", &timeout);
            }
            resp
        }
        _ => OriginResponse::new(404)
            .header("Content-Type", "text/plain")
            .body("not found\n"),
    }
}

/// Starts the standard origin.
pub(crate) async fn start_standard_origin() -> Origin {
    Origin::start(standard_origin).await
}

/// Starts a standard origin and gripmesh routed to it.
pub(crate) async fn start_standard(extra: &[&str]) -> (Env, Origin) {
    let origin = start_standard_origin().await;
    let env = start_with_origin(&origin, extra).await;
    (env, origin)
}

/// Opens a stream hold on `channel` through the standard origin and reads the initial
/// `hello\n`.
pub(crate) async fn open_stream(edge: SocketAddr, channel: &str) -> StreamClient {
    let mut client = StreamClient::open(edge, &format!("/stream?channel={channel}"), &[]).await;
    assert_eq!(
        client.status,
        200,
        "stream hold on {channel}: {}",
        client.received_text()
    );
    client.read_until("hello\n", WAIT).await;
    client
}

/// An `http-stream` item.
pub(crate) fn stream_item(channel: &str, content: &str) -> Value {
    json!({"channel": channel, "formats": {"http-stream": {"content": content}}})
}

/// Publishes `items` (a JSON array) and asserts `200 Published\n`.
pub(crate) async fn publish_items(addr: SocketAddr, items: Value) {
    let resp = publish(addr, &json!({ "items": items })).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "Published\n"),
        "publishing {items}"
    );
}

/// A stream hold on channel `survivor`, opened before some bad input, that must still receive
/// publishes afterwards.
pub(crate) struct Survivor {
    client: StreamClient,
}

impl Survivor {
    /// Opens the stream (the edge must route `/stream` to a standard origin).
    pub(crate) async fn open(env: &Env) -> Survivor {
        Survivor {
            client: open_stream(env.edge(), "survivor").await,
        }
    }

    /// Asserts the process is still up and the stream still receives a publish.
    pub(crate) async fn check(&mut self, env: &mut Env, tag: &str) {
        env.gm.assert_running();
        let content = format!("still-alive-after-{tag}\n");
        publish_stream(env.publish(), "survivor", &content).await;
        self.client.read_until(content.as_bytes(), WAIT).await;
        let healthz = testkit::http_get(env.admin(), "/healthz", &[]).await;
        assert_eq!(healthz.status, 200, "healthz after {tag}");
    }
}

/// Counts non-overlapping occurrences of `needle` in `haystack`.
pub(crate) fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

/// Asserts the gateway-error answer of the edge.
pub(crate) fn assert_proxy_error(resp: &testkit::HttpResponse, context: &str) {
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (502, "Error while proxying to origin.\n"),
        "{context}"
    );
}

/// The Python with tests/py/requirements.txt installed: `GRIPMESH_TEST_PYTHON`, default
/// `<workspace>/target/e2e-venv/bin/python` (created by scripts/test). Missing ⇒ the test
/// fails; it is never skipped.
pub(crate) fn test_python() -> String {
    let python = std::env::var("GRIPMESH_TEST_PYTHON").unwrap_or_else(|_| {
        workspace_root()
            .join("target/e2e-venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    assert!(
        PathBuf::from(&python).exists(),
        "Python interpreter {python} not found. Run scripts/test (it creates target/e2e-venv \
         from tests/py/requirements.txt), or set GRIPMESH_TEST_PYTHON."
    );
    python
}

/// Runs `tests/py/<script> ARGS...` with [`test_python`]; returns (success, stdout, stderr).
pub(crate) async fn run_py(script: &str, args: &[&str]) -> (bool, String, String) {
    let script = workspace_root().join("tests/py").join(script);
    let script = script.to_string_lossy().into_owned();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = testkit::run(&test_python(), &all).await;
    (status.success(), stdout, stderr)
}

/// Runs `node tests/node/<script> ARGS...` with `env`; returns (success, stdout, stderr). The
/// modules come from tests/node/node_modules, which scripts/test installs (`npm ci` of
/// tests/node/package-lock.json into target/node-tests, linked there). Missing ⇒ the test
/// fails; it is never skipped.
pub(crate) async fn run_node(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let dir = workspace_root().join("tests/node");
    assert!(
        dir.join("node_modules/@fanoutio/grip").exists(),
        "{}/node_modules is missing: run scripts/test (it runs `npm ci` for tests/node)",
        dir.display()
    );
    let script = dir.join(script);
    let script = script.to_string_lossy().into_owned();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let mut cmd = tokio::process::Command::new("node");
    cmd.args(&all)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Chromium starts slowly on a loaded machine: more patience than testkit::run's 20 s.
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("node {all:?} did not exit within 90 s"))
        .unwrap_or_else(|e| panic!("running node {all:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
