//! Per-key limits across a cluster (docs/protocol.md, "Key limits and usage"): two edges over
//! one NATS server with JetStream, control, and a sidecar asking a gateway that gives per-key
//! limits. Connections of a key are counted on both edges together (leases in the
//! `gripmesh_key_leases` bucket), a killed edge's connections stop counting within 30 s, and a
//! message quota is spent by the deliveries on both edges together (`gripmesh_key_usage`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use testkit::cluster::{ControlNode, start_edge, wait_ready};
use testkit::ws::{Recv, WsConn};
use testkit::{Gripmesh, NatsServer, StreamClient, StreamEnd, http_get, metric_value, wait_until};
use tokio::time::Instant;

use crate::common::publish_items;
use crate::key_limits::Gateway;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_gripmesh");
/// Patience for "eventually" conditions.
const WAIT: Duration = Duration::from_secs(20);
/// The documented bound for a killed edge's connections (30 s, docs/protocol.md), with room for a loaded machine.
const KILLED_EDGE_WAIT: Duration = Duration::from_secs(40);
const TOO_MANY: &str = "Too many connections for this key.\n";
const QUOTA: &str = "Message quota exceeded for this key.\n";

/// NATS with JetStream, control (routes `*,authz test`), a sidecar asking `gateway`, and two
/// edges with `edge_flags`.
struct Cluster {
    _nats: NatsServer,
    control: ControlNode,
    sidecar: Gripmesh,
    edges: Vec<Gripmesh>,
}

impl Cluster {
    async fn start(gateway: &str, edge_flags: &[&str]) -> Cluster {
        Cluster::start_bin(BIN, gateway, edge_flags).await
    }

    async fn start_bin(bin: &str, gateway: &str, edge_flags: &[&str]) -> Cluster {
        let nats = NatsServer::start();
        let url = nats.url();
        let sidecar_args = [
            "authz",
            "--gateway",
            gateway,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ];
        let (control, sidecar) = tokio::join!(
            ControlNode::start(bin, &url, "*,authz test\n", &[]),
            Gripmesh::start(bin, &sidecar_args, &[])
        );
        // Control creates the key buckets; edges then find them at once.
        wait_ready(control.admin_addr(), WAIT, "control").await;
        let authz = format!(
            "http://{}",
            sidecar.listener_addr("authz").expect("authz listener")
        );
        let mut flags = vec!["--authz", authz.as_str()];
        flags.extend_from_slice(edge_flags);
        let (e0, e1) = tokio::join!(start_edge(bin, &url, &flags), start_edge(bin, &url, &flags));
        for (i, e) in [&e0, &e1].iter().enumerate() {
            wait_ready(e.admin_addr(), WAIT, &format!("edge {i}")).await;
            wait_until(WAIT, "edge has the route table", || async {
                metric_value(e.admin_addr(), "gripmesh_edge_routes_version")
                    .await
                    .is_some_and(|v| v > 0.0)
            })
            .await;
        }
        Cluster {
            _nats: nats,
            control,
            sidecar,
            edges: vec![e0, e1],
        }
    }

    fn edge(&self, i: usize) -> SocketAddr {
        self.edges[i].edge_addr()
    }
}

/// Opens an HTTP stream that must be admitted.
async fn admitted_stream(edge: SocketAddr, key: &str) -> StreamClient {
    let mut s = StreamClient::open(edge, &format!("/stream?channel=c&apikey={key}"), &[]).await;
    assert_eq!(s.status, 200, "{key} on {edge}: {s:?}");
    s.read_until("stream open", WAIT).await;
    s
}

/// Asserts that `key` gets 429 `Too many connections` on `edge` over HTTP streaming, SSE and
/// the WebSocket handshake.
async fn assert_full(edge: SocketAddr, key: &str, what: &str) {
    let stream = http_get(edge, &format!("/stream?channel=c&apikey={key}"), &[]).await;
    assert_eq!(
        (stream.status, stream.text().as_str()),
        (429, TOO_MANY),
        "{what}: HTTP stream"
    );
    let sse = http_get(
        edge,
        &format!("/sse?channel=c&apikey={key}"),
        &[("Accept", "text/event-stream")],
    )
    .await;
    assert_eq!(
        (sse.status, sse.text().as_str()),
        (429, TOO_MANY),
        "{what}: SSE"
    );
    let ws = WsConn::connect_rejected(edge, &format!("/ws?channel=c&apikey={key}"), &[]).await;
    assert_eq!(
        (ws.status, ws.text().as_str()),
        (429, TOO_MANY),
        "{what}: WebSocket handshake"
    );
}

/// `--key-max-connections 2` on both edges; the gateway gives `big` 3 (its header overrides
/// the flag on every edge) and `odd` unusable values (ignored with a log line: the flag
/// applies). The connection past the limit gets 429 on either edge, whichever edge holds the
/// others, over every transport; closing one frees a slot on the other edge.
#[tokio::test]
async fn key_limits_cluster_connections_are_counted_across_edges() {
    let gw = Gateway::start(&[
        ("small", vec![]),
        ("big", vec![("Gripmesh-Max-Connections", "3".into())]),
        (
            "odd",
            vec![
                ("Gripmesh-Max-Connections", "-1".into()),
                ("Gripmesh-Message-Quota", "lots/often".into()),
            ],
        ),
    ])
    .await;
    let c = Cluster::start(&gw.url(), &["--key-max-connections", "2"]).await;
    let (e0, e1) = (c.edge(0), c.edge(1));

    // small: one stream on each edge, then nothing more on either.
    let s0 = admitted_stream(e0, "small").await;
    let _s1 = admitted_stream(e1, "small").await;
    assert_full(e0, "small", "small, 3rd on edge 0").await;
    assert_full(e1, "small", "small, 3rd on edge 1").await;

    // big: 3 by the gateway's header, spread over both edges and transports.
    let _b0 = WsConn::connect(e0, "/ws?channel=c&apikey=big", &[]).await;
    let _b1 = admitted_stream(e1, "big").await;
    let _b2 = admitted_stream(e0, "big").await;
    assert_full(e1, "big", "big, 4th on edge 1").await;
    assert_full(e0, "big", "big, 4th on edge 0").await;

    // odd: unusable headers are ignored (logged by the sidecar), the flag's 2 applies.
    let _o0 = admitted_stream(e1, "odd").await;
    let _o1 = admitted_stream(e1, "odd").await;
    assert_full(e0, "odd", "odd, 3rd on edge 0").await;
    let logs = c.sidecar.stderr_text();
    assert!(
        logs.matches("ignored").count() >= 2,
        "each unusable value is logged: {logs}"
    );

    // Closing small's stream on edge 0 frees a slot on edge 1 too.
    s0.close();
    wait_until(WAIT, "small's freed slot is usable on edge 1", || async {
        let s = StreamClient::open(e1, "/stream?channel=c&apikey=small", &[]).await;
        let ok = s.status == 200;
        // Keep it open: the slot is taken now.
        std::mem::forget(s);
        ok
    })
    .await;
    assert_full(e0, "small", "small, full again").await;
    let refused: f64 = futures_util::future::join_all(c.edges.iter().map(|e| async {
        metric_value(
            e.admin_addr(),
            r#"gripmesh_edge_key_limited_total{limit="connections"}"#,
        )
        .await
        .unwrap_or(0.0)
    }))
    .await
    .into_iter()
    .sum();
    assert!(refused >= 18.0, "every refusal is counted: {refused}");
}

/// An edge holding all of a key's connections is killed (SIGKILL: it cannot say goodbye): the
/// other edge refuses the key until the killed edge's lease lapses, then admits it — within
/// the documented 30 s.
#[tokio::test]
async fn key_limits_cluster_a_killed_edges_connections_stop_counting() {
    let gw = Gateway::start(&[("k", vec![])]).await;
    let mut c = Cluster::start(&gw.url(), &["--key-max-connections", "2"]).await;
    let (e0, e1) = (c.edge(0), c.edge(1));
    let _a = admitted_stream(e0, "k").await;
    let _b = WsConn::connect(e0, "/ws?channel=c&apikey=k", &[]).await;
    assert_full(e1, "k", "k held on edge 0").await;

    c.edges[0].kill().await;
    let killed = Instant::now();
    wait_until(
        KILLED_EDGE_WAIT,
        "the killed edge's slots are free",
        || async {
            let s = StreamClient::open(e1, "/stream?channel=c&apikey=k", &[]).await;
            let ok = s.status == 200;
            std::mem::forget(s);
            ok
        },
    )
    .await;
    println!(
        "slots of the killed edge free after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    // Both slots, and no more.
    let _second = admitted_stream(e1, "k").await;
    assert_full(e1, "k", "k held on edge 1").await;
}

/// Texts a WebSocket receives until it is closed; returns them with the close code.
async fn ws_until_close(ws: &mut WsConn) -> (usize, u16) {
    let mut n = 0;
    loop {
        match ws.recv(WAIT).await {
            Recv::Text(_) => n += 1,
            Recv::Ping(_) | Recv::Pong(_) | Recv::Binary(_) => {}
            Recv::Close(frame) => return (n, frame.map_or(1005, |(code, _)| code)),
            other => panic!("WebSocket: {other:?} after {n} messages"),
        }
    }
}

/// `Gripmesh-Message-Quota: 100/1m` for `q`, with a WebSocket on edge 0 and a stream on edge
/// 1: 60 items are 120 deliveries, neither edge alone reaches 100, together they do — both
/// connections are closed (WebSocket 4429, stream ended) after 100 to 120 deliveries (the
/// overshoot is bounded by what the edges deliver before their counts settle). Another key on
/// the same channel gets every item; `q` then gets 429 on both edges (streams, WebSocket,
/// long-polls) until the period rolls over.
#[tokio::test]
async fn key_limits_cluster_quota_is_spent_by_both_edges_together() {
    let gw = Gateway::start(&[
        ("q", vec![("Gripmesh-Message-Quota", "100/1m".into())]),
        ("free", vec![]),
    ])
    .await;
    // The flag's quota is larger than the gateway's for `q`: the header wins.
    let c = Cluster::start(&gw.url(), &["--key-message-quota", "1000/1m"]).await;
    let (e0, e1) = (c.edge(0), c.edge(1));
    let mut ws = WsConn::connect(e0, "/ws?channel=mq&apikey=q", &[]).await;
    let mut stream = StreamClient::open(e1, "/stream?channel=mq&apikey=q", &[]).await;
    assert_eq!(stream.status, 200);
    stream.read_until("stream open", WAIT).await;
    let mut free = StreamClient::open(e0, "/stream?channel=mq&apikey=free", &[]).await;
    free.read_until("stream open", WAIT).await;
    // Both edges hold their subscriptions before anything is published.
    for (i, e) in c.edges.iter().enumerate() {
        let want = if i == 0 { 2.0 } else { 1.0 };
        wait_until(WAIT, "subscriptions", || async {
            metric_value(e.admin_addr(), "gripmesh_edge_subscriptions").await == Some(want)
        })
        .await;
    }

    const ITEMS: usize = 60;
    for batch in (0..ITEMS).collect::<Vec<_>>().chunks(5) {
        let items: Vec<_> = batch
            .iter()
            .map(|i| {
                json!({"channel": "mq", "formats": {
                    "ws-message": {"content": format!("m{i}")},
                    "http-stream": {"content": format!("m{i}\n")},
                }})
            })
            .collect();
        publish_items(c.control.publish_addr(), json!(items)).await;
    }
    free.read_until(format!("m{}\n", ITEMS - 1), WAIT).await;

    let (on_ws, code) = ws_until_close(&mut ws).await;
    assert_eq!(code, 4429, "WebSocket closed for the quota");
    assert_eq!(stream.wait_end(WAIT).await, StreamEnd::Clean);
    let on_stream = stream
        .received_text()
        .lines()
        .filter(|l| l.starts_with('m'))
        .count();
    let total = on_ws + on_stream;
    println!("quota 100: {on_ws} on the WebSocket (edge 0) + {on_stream} on the stream (edge 1)");
    assert!(
        (100..=2 * ITEMS).contains(&total),
        "closed after {total} deliveries (quota 100, {} attempted)",
        2 * ITEMS
    );

    for e in [e0, e1] {
        let refused = http_get(e, "/stream?channel=mq&apikey=q", &[]).await;
        assert_eq!((refused.status, refused.text().as_str()), (429, QUOTA));
        let ws_refused = WsConn::connect_rejected(e, "/ws?channel=mq&apikey=q", &[]).await;
        assert_eq!(ws_refused.status, 429);
        let poll = http_get(e, "/response?channel=mq&apikey=q", &[]).await;
        assert_eq!(
            (poll.status, poll.text().as_str()),
            (429, QUOTA),
            "long-poll"
        );
        let other = StreamClient::open(e, "/stream?channel=mq&apikey=free", &[]).await;
        assert_eq!(other.status, 200, "other keys are not affected");
    }

    // A new period: the key is admitted again (1m periods start on the minute).
    wait_until(
        Duration::from_secs(75),
        "the next period admits q",
        || async {
            StreamClient::open(e1, "/stream?channel=mq&apikey=q", &[])
                .await
                .status
                == 200
        },
    )
    .await;
}

/// Percentile of sorted durations, in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Open latency of `n` keys on `edge`, each opened once before (warm sidecar cache): (p50,
/// p99) in ms.
async fn open_latency(edge: SocketAddr, keys: &[String]) -> (f64, f64) {
    for k in keys {
        admitted_stream(edge, k).await.close();
    }
    let mut took = Vec::with_capacity(keys.len());
    for k in keys {
        let t = Instant::now();
        let s = StreamClient::open(edge, &format!("/stream?channel=c&apikey={k}"), &[]).await;
        took.push(t.elapsed());
        assert_eq!(s.status, 200);
        s.close();
    }
    took.sort();
    (pct(&took, 0.5), pct(&took, 0.99))
}

/// Measurement, not a test (`--run-ignored only`): 200 simultaneous opens of one key limited
/// to 50, 100 on each of two edges — how many are admitted; and the time to open a stream
/// with and without a connection limit (warm sidecar cache). `GRIPMESH_MEASURE_BIN` runs
/// another build (a release one) for the processes. Figures go to BENCHMARKS.md.
#[tokio::test]
#[ignore = "measurement; run explicitly and copy the figures to BENCHMARKS.md"]
async fn key_limits_measure_simultaneous_opens() {
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    let mut gw_keys: Vec<(&str, Vec<(&str, String)>)> =
        keys.iter().map(|k| (k.as_str(), vec![])).collect();
    gw_keys.push(("hot", vec![]));
    let gw = Gateway::start(&gw_keys).await;
    let bin = std::env::var("GRIPMESH_MEASURE_BIN").unwrap_or_else(|_| BIN.to_owned());
    println!("binary: {bin}");

    let c = Cluster::start_bin(&bin, &gw.url(), &["--key-max-connections", "50"]).await;
    let (e0, e1) = (c.edge(0), c.edge(1));
    // Warm the sidecar's cache for `hot`.
    admitted_stream(e0, "hot").await.close();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opens = (0..200).map(|i| {
        let edge = if i % 2 == 0 { e0 } else { e1 };
        async move { StreamClient::open(edge, "/stream?channel=c&apikey=hot", &[]).await }
    });
    let started = Instant::now();
    let clients = futures_util::future::join_all(opens).await;
    let took = started.elapsed();
    let admitted = clients.iter().filter(|s| s.status == 200).count();
    let refused = clients.iter().filter(|s| s.status == 429).count();
    println!(
        "simultaneous opens of one key, limit 50, 2 edges: 200 opens, {admitted} admitted, {refused} refused (429), in {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    drop(clients);
    let (p50, p99) = open_latency(e0, &keys).await;
    println!("stream open, --key-max-connections 50: p50 {p50:.2} ms, p99 {p99:.2} ms");
    drop(c);

    let c = Cluster::start_bin(&bin, &gw.url(), &[]).await;
    let (p50, p99) = open_latency(c.edge(0), &keys).await;
    println!("stream open, no limit: p50 {p50:.2} ms, p99 {p99:.2} ms");
}
