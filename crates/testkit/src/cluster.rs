//! Multi-process clusters: `gripmesh control` and `gripmesh edge` processes sharing a NATS
//! server (or a NATS cluster), plus the readiness and route-API calls cluster tests need.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{HttpResponse, http_request, try_http_request};
use crate::process::Gripmesh;
use crate::tempdir::TempDir;
use crate::wait::wait_until;

/// A running `gripmesh control`, with the routes file that owns the table or without one.
pub struct ControlNode {
    /// The process.
    pub gm: Gripmesh,
    /// The routes file control was started with (it owns the cluster's table; `PUT /routes`
    /// answers 409); `None` when the table is set through the API.
    pub routes_file: Option<PathBuf>,
    _dir: TempDir,
}

impl ControlNode {
    /// Starts `gripmesh control --nats <nats>` on loopback ports with a routes file holding
    /// `routes`, followed by `extra` flags; waits for `ready` on stdout.
    pub async fn start(bin: &str, nats: &str, routes: &str, extra: &[&str]) -> ControlNode {
        let dir = TempDir::new();
        let routes_file = dir.write("routes", routes);
        let routes_arg = routes_file.to_str().expect("utf-8 temp path").to_owned();
        let mut args = vec![
            "control",
            "--nats",
            nats,
            "--publish-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--routes",
            routes_arg.as_str(),
        ];
        args.extend_from_slice(extra);
        let gm = Gripmesh::start(bin, &args, &[]).await;
        ControlNode {
            gm,
            routes_file: Some(routes_file),
            _dir: dir,
        }
    }

    /// Starts `gripmesh control --nats <nats>` without a routes file (the table lives in the
    /// JetStream bucket and is set with `PUT /routes`), followed by `extra` flags; waits for
    /// `ready` on stdout, then for readiness, and, when `routes` is given, installs it with an
    /// unauthenticated `PUT /routes`.
    pub async fn start_api(
        bin: &str,
        nats: &str,
        routes: Option<&str>,
        extra: &[&str],
    ) -> ControlNode {
        let mut args = vec![
            "control",
            "--nats",
            nats,
            "--publish-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ];
        args.extend_from_slice(extra);
        let gm = Gripmesh::start(bin, &args, &[]).await;
        let node = ControlNode {
            gm,
            routes_file: None,
            _dir: TempDir::new(),
        };
        wait_ready(
            node.admin_addr(),
            Duration::from_secs(20),
            "control (API-managed routes)",
        )
        .await;
        if let Some(text) = routes {
            let resp = put_routes(node.publish_addr(), text).await;
            assert_eq!(resp.status, 200, "PUT /routes: {}", resp.text());
        }
        node
    }

    /// The HTTP publish API (also `/routes`).
    pub fn publish_addr(&self) -> SocketAddr {
        self.gm.publish_addr()
    }

    /// The admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.gm.admin_addr()
    }
}

/// Starts `gripmesh edge --nats <nats>` on loopback ports followed by `extra` flags and waits
/// for `ready` on stdout (an edge following control's routes may still answer `/readyz` with
/// 503 then; see [`wait_ready`]).
pub async fn start_edge(bin: &str, nats: &str, extra: &[&str]) -> Gripmesh {
    let mut args = vec![
        "edge",
        "--nats",
        nats,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ];
    args.extend_from_slice(extra);
    Gripmesh::start(bin, &args, &[]).await
}

/// Starts `n` edges concurrently (see [`start_edge`]).
pub async fn start_edges(bin: &str, nats: &str, n: usize, extra: &[&str]) -> Vec<Gripmesh> {
    futures_util::future::join_all((0..n).map(|_| start_edge(bin, nats, extra))).await
}

/// The status of `GET /readyz` on an admin listener, or `None` if the request failed.
pub async fn readyz_status(admin: SocketAddr) -> Option<u16> {
    try_http_request(admin, "GET", "/readyz", &[], Bytes::new())
        .await
        .ok()
        .map(|r| r.status)
}

/// The status of `GET /healthz` on an admin listener, or `None` if the request failed.
pub async fn healthz_status(admin: SocketAddr) -> Option<u16> {
    try_http_request(admin, "GET", "/healthz", &[], Bytes::new())
        .await
        .ok()
        .map(|r| r.status)
}

/// Waits until `GET /readyz` answers `status`; panics naming `what` after `timeout`.
pub async fn wait_readyz(admin: SocketAddr, status: u16, timeout: Duration, what: &str) {
    wait_until(
        timeout,
        &format!("{what}: /readyz {status}"),
        || async move { readyz_status(admin).await == Some(status) },
    )
    .await;
}

/// Waits until `GET /readyz` answers 200.
pub async fn wait_ready(admin: SocketAddr, timeout: Duration, what: &str) {
    wait_readyz(admin, 200, timeout, what).await;
}

/// `GET /routes` on control's publish listener, parsed; panics unless 200 JSON.
pub async fn get_routes(publish: SocketAddr) -> serde_json::Value {
    let resp = http_request(publish, "GET", "/routes", &[], Bytes::new()).await;
    assert_eq!(resp.status, 200, "GET /routes: {}", resp.text());
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("GET /routes: not JSON ({e}): {:?}", resp.text()))
}

/// `PUT /routes` with `text` (routes-file syntax) on control's publish listener.
pub async fn put_routes(publish: SocketAddr, text: &str) -> HttpResponse {
    http_request(
        publish,
        "PUT",
        "/routes",
        &[("Content-Type", "text/plain")],
        text.to_owned(),
    )
    .await
}
