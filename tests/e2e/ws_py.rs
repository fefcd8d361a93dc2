//! A third-party GRIP library as the WebSocket-over-HTTP origin: Python `gripcontrol`
//! (`tests/py/ws_origin_gripcontrol.py`, which decodes and encodes websocket-events and builds
//! control messages with the library, and validates `Grip-Sig` with it).
//!
//! The interpreter comes from `GRIPMESH_TEST_PYTHON`, default
//! `<workspace>/target/e2e-venv/bin/python`. A missing interpreter fails the test: it is never
//! silently skipped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testkit::ws::WsConn;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{WAIT, start, workspace_root};
use crate::ws_common::{SIG_KEY, publish_ws_text};

fn python() -> PathBuf {
    let python = std::env::var_os("GRIPMESH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/e2e-venv/bin/python"));
    assert!(
        python.exists(),
        "Python interpreter {} not found. Create it with `python3 -m venv target/e2e-venv && \
         target/e2e-venv/bin/pip install -r tests/py/requirements.txt` (scripts/test does), or \
         set GRIPMESH_TEST_PYTHON to an interpreter that has tests/py/requirements.txt installed.",
        python.display()
    );
    python
}

/// The running Python origin; killed when dropped.
struct PyOrigin {
    _child: Child,
    port: u16,
}

impl PyOrigin {
    async fn start(args: &[&str]) -> PyOrigin {
        let script = workspace_root().join("tests/py/ws_origin_gripcontrol.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the Python origin printed `listening PORT` within 20 s")
            .expect("reading the Python origin's stdout")
            .expect("the Python origin exited before `listening PORT` (see stderr)");
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the Python origin: {line:?}"));
        // Keep draining stdout so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PyOrigin {
            _child: child,
            port,
        }
    }
}

/// An origin written with `gripcontrol` (validating the edge's `Grip-Sig` with the library)
/// opens the connection, subscribes it to its channel, echoes text with the `m:` prefix, and
/// answers the client's close; publishes reach the client.
#[tokio::test]
async fn gripcontrol_python_ws_over_http_origin() {
    let origin = PyOrigin::start(&["pyws", "--sig-key", SIG_KEY]).await;
    let env = start(
        &format!("* 127.0.0.1:{},over_http\n", origin.port),
        &["--sig-key", SIG_KEY],
    )
    .await;
    let mut client = WsConn::connect(env.edge(), "/py/ws", &[]).await;

    publish_ws_text(env.publish(), "pyws", "published-to-python-sub").await;
    assert_eq!(client.expect_text(WAIT).await, "published-to-python-sub");

    client.send_text("hello python").await;
    assert_eq!(client.expect_text(WAIT).await, "hello python");

    client.close(4000, "client-bye").await;
    assert_eq!(
        client.expect_close(WAIT).await,
        (4000, "client-bye".to_string())
    );
}

/// A django-grip-style origin as configured in the wild — `gripcontrol` validating `Grip-Sig`
/// with Pushpin's stock key `changeme` — behind a `gripmesh standalone` started without
/// `--sig-key`: it recognises gripmesh as its GRIP proxy, as it would a stock Pushpin. The
/// same origin with another key refuses gripmesh's requests, so the signature is really checked.
#[tokio::test]
async fn gripcontrol_python_origin_with_the_stock_key_behind_a_default_gripmesh() {
    let stock = PyOrigin::start(&["pyws", "--sig-key", "changeme"]).await;
    let other = PyOrigin::start(&["pyws", "--sig-key", "not-the-stock-key"]).await;
    let env = start(
        &format!(
            "*,path_beg=/other/ 127.0.0.1:{},over_http\n* 127.0.0.1:{},over_http\n",
            other.port, stock.port
        ),
        &[],
    )
    .await;
    let mut client = WsConn::connect(env.edge(), "/py/ws", &[]).await;
    publish_ws_text(env.publish(), "pyws", "to-the-stock-origin").await;
    assert_eq!(client.expect_text(WAIT).await, "to-the-stock-origin");
    client.send_text("echo").await;
    assert_eq!(client.expect_text(WAIT).await, "echo");

    let refused = WsConn::connect_rejected(env.edge(), "/other/ws", &[]).await;
    assert_eq!(refused.status, 403, "the origin with another key refuses");
}
