//! Shared setup of the parity tests: the same assertion runs against gripmesh and,
//! where Debian's Pushpin 1.36 has the feature, against Pushpin started side by side
//! ([`testkit::pushpin::Pushpin`]), so a passing pair proves "drop-in" rather than our
//! reading of Pushpin's source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use testkit::pushpin::Pushpin;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{Env, start, workspace_root};

/// Which proxy a parity test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gripmesh,
    Pushpin,
}

/// A running proxy of either kind.
pub(crate) enum Proxy {
    Gripmesh(Env),
    Pushpin(Pushpin),
}

impl Proxy {
    /// Starts `kind` with `routes` (Pushpin routes syntax, valid for both).
    pub(crate) async fn start(kind: Kind, routes: &str) -> Proxy {
        match kind {
            Kind::Gripmesh => Proxy::Gripmesh(start(routes, &[]).await),
            Kind::Pushpin => Proxy::Pushpin(Pushpin::start(routes, &[]).await),
        }
    }

    /// The client-facing listener.
    pub(crate) fn edge(&self) -> SocketAddr {
        match self {
            Proxy::Gripmesh(env) => env.edge(),
            Proxy::Pushpin(p) => p.http,
        }
    }

    /// The HTTP control API (`/publish/`, `/recover`).
    pub(crate) fn control(&self) -> SocketAddr {
        match self {
            Proxy::Gripmesh(env) => env.publish(),
            Proxy::Pushpin(p) => p.control,
        }
    }

    /// Which one this is.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Proxy::Gripmesh(_) => Kind::Gripmesh,
            Proxy::Pushpin(_) => Kind::Pushpin,
        }
    }
}

/// Publishes `items` to the proxy's control API; asserts 200.
pub(crate) async fn publish(proxy: &Proxy, items: Value) {
    let resp = testkit::publish(proxy.control(), &serde_json::json!({ "items": items })).await;
    assert_eq!(
        resp.status,
        200,
        "{:?} publish {items}: {}",
        proxy.kind(),
        resp.text()
    );
}

/// A free loopback port (for a helper process that must be told its port up front).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// The Python interpreter with `tests/py/requirements.txt` (as `ws_py.rs` uses it).
fn python() -> PathBuf {
    let python = std::env::var_os("GRIPMESH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/e2e-venv/bin/python"));
    assert!(
        python.exists(),
        "Python interpreter {} not found (scripts/test creates target/e2e-venv), or set \
         GRIPMESH_TEST_PYTHON",
        python.display()
    );
    python
}

/// A Python helper from `tests/py` that prints `listening PORT`; killed when dropped.
pub(crate) struct PyProcess {
    _child: Child,
}

impl PyProcess {
    pub(crate) async fn start(script: &str, args: &[&str]) -> PyProcess {
        let script = workspace_root().join("tests/py").join(script);
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
            .expect("the Python helper printed `listening PORT` within 20 s")
            .expect("reading the Python helper's stdout")
            .expect("the Python helper exited early (see stderr)");
        assert!(
            line.strip_prefix("listening ")
                .is_some_and(|p| p.trim().parse::<u16>().is_ok()),
            "unexpected first line from the Python helper: {line:?}"
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PyProcess { _child: child }
    }
}
