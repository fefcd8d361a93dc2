//! docs/clients.md, executed: the browser snippet in headless Chromium on a page
//! from another origin, the Python and Node publisher snippets, the serve-grip origin snippet
//! behind a default gripmesh, and every `sh test` block.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testkit::StreamClient;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{WAIT, test_python, workspace_root};
use crate::readme::{Block, DocEnv, blocks, run_block};

fn doc() -> PathBuf {
    workspace_root().join("docs/clients.md")
}

/// The one block of docs/clients.md with `info`.
fn only(info: &str) -> Block {
    let mut found = blocks(&doc(), info);
    assert_eq!(
        found.len(),
        1,
        "docs/clients.md: one ```{info} block expected"
    );
    found.remove(0)
}

/// Writes a snippet next to tests/node/package.json (so its imports resolve) and returns the
/// path; the file is removed on drop.
struct SnippetFile(PathBuf);

impl SnippetFile {
    fn new(name: &str, text: &str) -> SnippetFile {
        let dir = workspace_root().join("tests/node");
        assert!(
            dir.join("node_modules/@fanoutio/grip").exists(),
            "tests/node/node_modules is missing: run scripts/test"
        );
        // Unique per test process, so parallel tests don't collide.
        let path = dir.join(format!("docs-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("writing snippet");
        SnippetFile(path)
    }
}

impl Drop for SnippetFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `program file` with `env`; asserts success; returns stdout.
async fn run_ok(program: &str, file: &std::path::Path, env: &[(&str, String)]) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(file).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("finishes in 30 s")
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{program} {}: {stdout}{stderr}",
        file.display()
    );
    stdout
}

/// The `sh test` blocks other than the browser publishes (those run with the browser).
#[tokio::test]
async fn clients_doc_shell_blocks_run() {
    let all = blocks(&doc(), "sh test");
    assert!(all.len() >= 2);
    for block in all.iter().skip(1) {
        let env = DocEnv::start("examples/test.routes", &[]).await;
        run_block(block, &env).await;
    }
}

/// The browser snippet: EventSource (named event with its id) and WebSocket (echo and a
/// publish) on a page of another origin, through a route with `aco`; the publishes are the
/// doc's first `sh test` block.
#[tokio::test]
async fn clients_doc_browser_snippet_runs_in_chromium() {
    let dir = testkit::TempDir::new();
    let routes = dir.write("routes", "*,aco test\n");
    let env = DocEnv::start(routes.to_str().expect("path"), &[]).await;
    let snippet = SnippetFile::new("browser.js", &only("js browser").text);
    let gripmesh = format!("http://127.0.0.1:{}", env.gm.edge_addr().port());
    let script = workspace_root().join("tests/node/browser_clients.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&snippet.0)
        .arg(&gripmesh)
        .args([
            "ws: hello origin",
            "sse 41: gripmesh 1.0 released",
            "ws: hello browsers",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("browser ready")
        .expect("read");
    assert_eq!(first.as_deref(), Some("ready"));
    let publishes = blocks(&doc(), "sh test").remove(0);
    run_block(&publishes, &env).await;
    let result = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("browser result")
        .expect("read")
        .unwrap_or_default();
    let status = child.wait().await.expect("exit");
    assert!(status.success(), "browser snippet: {result}");
}

/// The Python `GripPubControl` and Node `Publisher` snippets reach a held stream.
#[tokio::test]
async fn clients_doc_publisher_snippets_publish() {
    let env = DocEnv::start("examples/test.routes", &[]).await;
    // pubcontrol appends "/publish/" itself; the Node library takes either form.
    let grip_url = format!("http://{}", env.gm.publish_addr());
    let mut stream = StreamClient::open(env.gm.edge_addr(), "/stream?channel=test", &[]).await;
    stream.read_until("stream open", WAIT).await;

    let py = testkit::TempDir::new();
    let file = py.write("publish.py", &only("python test").text);
    let out = run_ok(&test_python(), &file, &[("GRIP_URL", grip_url.clone())]).await;
    assert_eq!(out.trim(), "published");
    stream.read_until("hello from Python\n", WAIT).await;

    let snippet = SnippetFile::new("publisher.mjs", &only("js node-publisher").text);
    let out = run_ok("node", &snippet.0, &[("GRIP_URL", grip_url)]).await;
    assert_eq!(out.trim(), "published");
    stream.read_until("hello from Node\n", WAIT).await;
}

/// The serve-grip origin snippet (proxy required) holds a stream behind a default gripmesh (no
/// `--sig-key`), and refuses the same request sent to it directly.
#[tokio::test]
async fn clients_doc_serve_grip_origin_works_behind_default_gripmesh() {
    let snippet = SnippetFile::new("origin.mjs", &only("js node-origin").text);
    let mut origin = tokio::process::Command::new("node")
        .arg(&snippet.0)
        .env("GRIP_URL", "http://127.0.0.1:1/")
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(origin.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("origin starts")
        .expect("read")
        .unwrap_or_default();
    let port = line.strip_prefix("listening ").unwrap_or_default().trim();
    let direct: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("port");
    let refused = testkit::http_get(direct, "/stream", &[]).await;
    assert_eq!(
        refused.status,
        501,
        "without a GRIP proxy: {}",
        refused.text()
    );
    let dir = testkit::TempDir::new();
    let routes = dir.write("routes", &format!("* 127.0.0.1:{port}\n"));
    let env = DocEnv::start(routes.to_str().expect("path"), &[]).await;
    let mut stream = StreamClient::open(env.gm.edge_addr(), "/stream", &[]).await;
    assert_eq!(stream.status, 200, "{}", stream.received_text());
    stream.read_until("[stream open]\n", WAIT).await;
    let publish = format!("http://{}", env.gm.publish_addr());
    let (status, out, err) = testkit::run(
        crate::common::BIN,
        &[
            "publish",
            "--control-url",
            &publish,
            "test",
            "to the serve-grip stream",
        ],
    )
    .await;
    assert!(status.success(), "{out}{err}");
    stream.read_until("to the serve-grip stream\n", WAIT).await;
}
