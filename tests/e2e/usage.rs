//! Usage records end to end (docs/protocol.md, "Key limits and usage"): connections on `authz`
//! routes yield records (interim every `--usage-interval`, a final one at close) whose sums
//! per key equal what the clients received, to the message and byte; they reach a webhook
//! through the JetStream stream (cluster) or straight (standalone), with retries and a bounded
//! buffer; per-app metrics keep at most `--usage-top-apps` app labels.
//!
//! The gateway is a fake allowing `key-*` with `X-Developer-App: app-<key>`; the origin is the
//! built-in `test` target (`/ws`, `/stream`, `/sse`, `/response` on `?channel=`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::cluster::{ControlNode, start_edge, wait_ready};
use testkit::ws::WsConn;
use testkit::{
    Gripmesh, NatsServer, Origin, OriginResponse, http_get, metric_value, query_param,
    scrape_metrics, wait_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{BIN, publish_items};
use testkit::TempDir;

/// Patience for "eventually" (records arrive within a few intervals; the machine is loaded).
const WAIT: Duration = Duration::from_secs(20);

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// WebSocket frame size (server to client, unmasked) of a `len`-byte payload.
fn ws_frame(len: usize) -> u64 {
    (len + if len < 126 {
        2
    } else if len <= 0xFFFF {
        4
    } else {
        10
    }) as u64
}

/// A fake forward-auth gateway allowing keys starting with `key-`.
async fn gateway() -> Origin {
    Origin::start(|req| {
        let key = query_param(&req.uri, "apikey").unwrap_or_default();
        if key.starts_with("key-") {
            OriginResponse::new(200)
                .header("X-Developer-App", &format!("app-{key}"))
                .header("X-Api-Product", "gold")
        } else {
            OriginResponse::new(401).body("no\n")
        }
    })
    .await
}

/// What the fake webhook does with the next POSTs.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Status(u16),
    /// Answer 200, but only after this long (longer than the sender's timeout).
    Slow(Duration),
}

/// A usage webhook that records every record it accepted (2xx).
struct Collector {
    origin: Origin,
    accepted: Arc<Mutex<Vec<Value>>>,
    posts: Arc<Mutex<usize>>,
}

impl Collector {
    /// A webhook that answers with `script` (in order) and 200 once it is used up.
    async fn start(script: Vec<Answer>) -> Collector {
        let accepted: Arc<Mutex<Vec<Value>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.into_iter().rev().collect::<Vec<_>>()));
        let posts: Arc<Mutex<usize>> = Arc::default();
        let origin = Origin::start({
            let (accepted, script, posts) = (accepted.clone(), script.clone(), posts.clone());
            move |req| {
                *posts.lock().expect("posts") += 1;
                assert_eq!(
                    req.header("content-type").as_deref(),
                    Some("application/x-ndjson")
                );
                let answer = script.lock().expect("script").pop().unwrap_or(Answer::Ok);
                let records = || -> Vec<Value> {
                    String::from_utf8_lossy(&req.body)
                        .lines()
                        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
                        .collect()
                };
                match answer {
                    Answer::Ok => {
                        accepted.lock().expect("accepted").extend(records());
                        OriginResponse::new(200)
                    }
                    Answer::Status(s) => OriginResponse::new(s),
                    // The sender gives up before this answer; nothing is accepted.
                    Answer::Slow(d) => OriginResponse::new(200).delay(d),
                }
            }
        })
        .await;
        Collector {
            origin,
            accepted,
            posts,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/usage", self.origin.addr())
    }

    fn records(&self) -> Vec<Value> {
        self.accepted.lock().expect("accepted").clone()
    }

    fn posts(&self) -> usize {
        *self.posts.lock().expect("posts")
    }

    fn finals(&self) -> usize {
        self.records()
            .iter()
            .filter(|r| r["final"] == json!(true))
            .count()
    }

    async fn wait_finals(&self, n: usize) {
        wait_until(WAIT, &format!("{n} final usage records"), || async move {
            self.finals() >= n
        })
        .await;
    }
}

/// Per key hash: (messages, bytes, connections with a final record).
fn sums(records: &[Value]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in records {
        let e = out
            .entry(r["key_hash"].as_str().unwrap_or_default().to_owned())
            .or_default();
        e.0 += r["messages"].as_u64().unwrap_or(0);
        e.1 += r["bytes"].as_u64().unwrap_or(0);
        e.2 += u64::from(r["final"] == json!(true));
    }
    out
}

/// Every record once, each connection's `seq` from 1 without gaps, schema fields present.
fn check_records(records: &[Value]) {
    let mut seen = HashSet::new();
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for r in records {
        assert_eq!(
            (r["type"].as_str(), r["v"].as_u64()),
            (Some("usage"), Some(1)),
            "{r}"
        );
        for field in [
            "connection_id",
            "seq",
            "key_hash",
            "app",
            "product",
            "route",
            "transport",
            "edge",
            "opened_at",
            "closed_at",
            "messages",
            "bytes",
            "close_reason",
            "final",
        ] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
        let id = r["connection_id"].as_str().unwrap_or_default().to_owned();
        let seq = r["seq"].as_u64().unwrap_or(0);
        assert!(
            seen.insert((id.clone(), seq)),
            "record delivered twice: {r}"
        );
        seqs.entry(id).or_default().push(seq);
    }
    for (id, mut s) in seqs {
        s.sort_unstable();
        let expected: Vec<u64> = (1..=s.len() as u64).collect();
        assert_eq!(s, expected, "seq of {id}");
    }
}

/// A raw HTTP/1.1 stream client that sees the chunk framing on the wire.
struct RawStream {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Data chunks after the initial one: (wire bytes, data).
    chunks: Vec<(u64, Vec<u8>)>,
    initial_seen: bool,
}

impl RawStream {
    async fn open(addr: SocketAddr, path: &str) -> RawStream {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        sock.write_all(req.as_bytes()).await.expect("write");
        let mut s = RawStream {
            sock,
            buf: Vec::new(),
            chunks: Vec::new(),
            initial_seen: false,
        };
        while !s.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            s.fill().await;
        }
        let end = s.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let head = String::from_utf8_lossy(&s.buf[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        s.buf.drain(..end);
        s
    }

    async fn fill(&mut self) {
        let mut b = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.sock.read(&mut b))
            .await
            .expect("stream data in time")
            .expect("read");
        assert!(n > 0, "stream ended early");
        self.buf.extend_from_slice(&b[..n]);
    }

    /// Reads chunks until the deliveries hold `lines` lines (keep-alive chunks are skipped).
    async fn read_lines(&mut self, lines: usize, keep_alive: &[u8]) {
        loop {
            let delivered: usize = self
                .chunks
                .iter()
                .map(|(_, d)| d.iter().filter(|b| **b == b'\n').count())
                .sum();
            if delivered >= lines {
                return;
            }
            let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                self.fill().await;
                continue;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
            while self.buf.len() < line_end + 2 + size + 2 {
                self.fill().await;
            }
            let data = self.buf[line_end + 2..line_end + 2 + size].to_vec();
            let wire = (line_end + 2 + size + 2) as u64;
            self.buf.drain(..line_end + 2 + size + 2);
            if !self.initial_seen {
                self.initial_seen = true;
                continue;
            }
            if data == keep_alive {
                continue;
            }
            self.chunks.push((wire, data));
        }
    }

    fn totals(&self) -> (u64, u64) {
        let lines: usize = self
            .chunks
            .iter()
            .map(|(_, d)| d.iter().filter(|b| **b == b'\n').count())
            .sum();
        (lines as u64, self.chunks.iter().map(|(w, _)| w).sum())
    }
}

/// Content of the `i`th message: varied lengths, across the 126-byte WebSocket boundary.
fn content(i: usize) -> String {
    format!("m{i:03}:{}", "x".repeat((i * 37) % 300))
}

/// An item for every transport: stream/SSE get `content\n`, WebSocket `content`, long-poll
/// the body `content`.
fn item(channel: &str, c: &str) -> Value {
    json!({
        "channel": channel,
        "formats": {
            "http-stream": {"content": format!("{c}\n")},
            "ws-message": {"content": c},
            "http-response": {"body": c},
        }
    })
}

/// One NATS server with JetStream, control (with the webhook), a sidecar, two edges.
struct Cluster {
    _nats: NatsServer,
    control: ControlNode,
    _sidecar: Gripmesh,
    edges: Vec<Gripmesh>,
}

impl Cluster {
    async fn start(gateway: &str, webhook: &str, interval: &str) -> Cluster {
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
        let control_args = ["--usage-webhook", webhook];
        let (control, sidecar) = tokio::join!(
            ControlNode::start(BIN, &url, "*,authz test\n", &control_args),
            Gripmesh::start(BIN, &sidecar_args, &[])
        );
        let authz_url = format!(
            "http://{}",
            sidecar.listener_addr("authz").expect("listening authz")
        );
        let edge = |id: &'static str| {
            let (url, authz_url) = (url.clone(), authz_url.clone());
            async move {
                start_edge(
                    BIN,
                    &url,
                    &[
                        "--authz",
                        &authz_url,
                        "--usage-interval",
                        interval,
                        "--node-id",
                        id,
                    ],
                )
                .await
            }
        };
        let (e0, e1) = tokio::join!(edge("edge-0"), edge("edge-1"));
        wait_ready(control.admin_addr(), WAIT, "control").await;
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
            _sidecar: sidecar,
            edges: vec![e0, e1],
        }
    }
}

/// Waits until the edge whose admin listener is `edge` holds `n` connections of `transport`.
async fn wait_held(edge: SocketAddr, transport: &str, n: f64) {
    let q = format!("gripmesh_edge_connections{{transport=\"{transport}\"}}");
    wait_until(WAIT, &format!("{n} {transport} holds on {edge}"), || {
        let q = q.clone();
        async move { metric_value(edge, &q).await == Some(n) }
    })
    .await;
}

/// Three keys, two edges, every transport: the records per key sum to exactly what the
/// clients received (messages and bytes on the wire), each record arrives at the webhook once
/// (after it answered 503 twice), and every connection has a final record with its reason.
#[tokio::test]
async fn usage_records_per_key_sum_to_what_clients_received_across_two_edges() {
    let gw = gateway().await;
    let hook = Collector::start(vec![Answer::Status(503), Answer::Status(503)]).await;
    let c = Cluster::start(&format!("http://{}", gw.addr()), &hook.url(), "500ms").await;
    let (e0, e1) = (c.edges[0].edge_addr(), c.edges[1].edge_addr());
    let (a0, a1) = (c.edges[0].admin_addr(), c.edges[1].admin_addr());
    let publish = c.control.publish_addr();

    // key-a: WebSocket on edge 0. key-b: HTTP stream on edge 1 and SSE on edge 0.
    // key-c: WebSocket on edge 1, then long-polls on edge 0.
    let mut ws_a = WsConn::connect(e0, "/ws?channel=u&apikey=key-a", &[]).await;
    let mut stream_b = RawStream::open(e1, "/stream?channel=u&apikey=key-b").await;
    let mut sse_b = RawStream::open(e0, "/sse?channel=u&apikey=key-b").await;
    let mut ws_c = WsConn::connect(e1, "/ws?channel=u&apikey=key-c", &[]).await;
    wait_held(a0, "ws", 1.0).await;
    wait_held(a0, "http-stream", 1.0).await;
    wait_held(a1, "ws", 1.0).await;
    wait_held(a1, "http-stream", 1.0).await;

    const N: usize = 40;
    for batch in (0..N).collect::<Vec<_>>().chunks(8) {
        publish_items(
            publish,
            json!(
                batch
                    .iter()
                    .map(|i| item("u", &content(*i)))
                    .collect::<Vec<_>>()
            ),
        )
        .await;
        // Let a record interval or two pass mid-traffic: interim records carry deltas.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut got: HashMap<&str, (u64, u64)> = HashMap::new();
    for (name, ws) in [("a", &mut ws_a), ("c", &mut ws_c)] {
        let e = got.entry(name).or_default();
        for i in 0..N {
            let text = ws.expect_text(WAIT).await;
            assert_eq!(text, content(i));
            e.0 += 1;
            e.1 += ws_frame(text.len());
        }
    }
    stream_b.read_lines(N, b"").await;
    sse_b.read_lines(N, b":\n\n").await;
    let (m1, b1) = stream_b.totals();
    let (m2, b2) = sse_b.totals();
    got.insert("b", (m1 + m2, b1 + b2));
    assert_eq!(got["b"].0, 2 * N as u64);

    // Long-polls for key-c on edge 0, each answered by one publish on its own channel.
    for i in 0..3 {
        let poll =
            tokio::spawn(
                async move { http_get(e0, "/response?channel=lp&apikey=key-c", &[]).await },
            );
        wait_held(a0, "http-response", 1.0).await;
        let body = content(100 + i);
        publish_items(publish, json!([item("lp", &body)])).await;
        let resp = poll.await.expect("long-poll task");
        assert_eq!((resp.status, resp.text()), (200, body.clone()));
        let e = got.entry("c").or_default();
        e.0 += 1;
        e.1 += body.len() as u64;
        wait_held(a0, "http-response", 0.0).await;
    }

    // Clients leave: 4 connections + 3 long-polls ⇒ 7 final records.
    ws_a.close(1000, "bye").await;
    ws_c.close(1000, "bye").await;
    drop(stream_b);
    drop(sse_b);
    hook.wait_finals(7).await;
    // Interim records of the last interval may trail the finals by nothing: finals come last.
    let records = hook.records();
    check_records(&records);
    let s = sums(&records);
    for (key, name) in [("key-a", "a"), ("key-b", "b"), ("key-c", "c")] {
        let (m, b, finals) = s.get(&sha256_hex(key)).copied().unwrap_or_default();
        assert_eq!(
            (m, b),
            got[name],
            "{key}: records vs what its clients received"
        );
        let want_finals = match name {
            "a" => 1,
            "b" => 2,
            _ => 4,
        };
        assert_eq!(
            finals, want_finals,
            "{key}: one final record per connection"
        );
    }
    let interim = records
        .iter()
        .filter(|r| r["final"] == json!(false))
        .count();
    assert!(interim > 0, "interim records every interval");
    for r in &records {
        let key = r["key_hash"].as_str().unwrap_or_default();
        let key = ["key-a", "key-b", "key-c"]
            .into_iter()
            .find(|k| sha256_hex(k) == key)
            .expect("a known key");
        assert_eq!(r["app"], json!(format!("app-{key}")));
        assert_eq!(r["product"], json!("gold"));
        assert!(r["edge"] == json!("edge-0") || r["edge"] == json!("edge-1"));
        if r["final"] == json!(true) {
            let reason = r["close_reason"].as_str().unwrap_or_default();
            match r["transport"].as_str() {
                Some("http-response") => assert_eq!(reason, "origin", "{r}"),
                _ => assert_eq!(reason, "client", "{r}"),
            }
            assert!(r["closed_at"].as_u64() >= r["opened_at"].as_u64());
        } else {
            assert!(r["closed_at"].is_null() && r["close_reason"].is_null());
        }
    }
    assert!(hook.posts() >= 3, "the webhook was retried after its 503s");
    eprintln!(
        "usage: {} records ({} interim, 7 final), per key {:?}",
        records.len(),
        interim,
        got
    );
}

/// An edge SIGKILLed mid-connection loses at most its current interval: what was recorded
/// before the kill reached the stream (and the webhook), and nothing was invented.
#[tokio::test]
async fn a_killed_edge_loses_at_most_its_current_interval() {
    let gw = gateway().await;
    let hook = Collector::start(Vec::new()).await;
    let mut c = Cluster::start(&format!("http://{}", gw.addr()), &hook.url(), "500ms").await;
    let e0 = c.edges[0].edge_addr();
    let publish = c.control.publish_addr();
    let mut ws = WsConn::connect(e0, "/ws?channel=k&apikey=key-a", &[]).await;
    wait_held(c.edges[0].admin_addr(), "ws", 1.0).await;
    let mut bytes = 0;
    for i in 0..10 {
        publish_items(publish, json!([item("k", &content(i))])).await;
        bytes += ws_frame(ws.expect_text(WAIT).await.len());
    }
    // The interval after these deliveries records them all.
    wait_until(
        WAIT,
        "interim records cover the first 10 messages",
        || async {
            sums(&hook.records())
                .get(&sha256_hex("key-a"))
                .is_some_and(|s| s.0 == 10)
        },
    )
    .await;
    for i in 10..15 {
        publish_items(publish, json!([item("k", &content(i))])).await;
        ws.expect_text(WAIT).await;
    }
    c.edges[0].kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = hook.records();
    check_records(&records);
    let (m, b, finals) = sums(&records)
        .get(&sha256_hex("key-a"))
        .copied()
        .unwrap_or_default();
    assert_eq!(finals, 0, "a killed edge makes no final record");
    assert!(
        (10..=15).contains(&m),
        "at most the current interval (5 messages) is lost: {m}"
    );
    assert!(b >= bytes, "{b} >= {bytes}");
    eprintln!("killed edge: {m} of 15 messages recorded");
}

/// `gripmesh standalone` with the `test` target behind `authz` (route `*,authz test`) asking
/// `gateway`, usage records every `interval`, and `extra` flags; the directory holding its routes
/// file lives as long as the returned one.
async fn metered_standalone(
    gateway: &Origin,
    interval: &str,
    extra: &[&str],
) -> (Gripmesh, TempDir) {
    let dir = TempDir::new();
    let routes = dir.write("routes", "*,authz test\n");
    let gateway = format!("http://{}", gateway.addr());
    let mut args = vec![
        "--routes",
        routes.to_str().expect("utf-8"),
        "--authz-gateway",
        &gateway,
        "--usage-interval",
        interval,
    ];
    args.extend_from_slice(extra);
    (Gripmesh::standalone(BIN, &args).await, dir)
}

/// Standalone: a webhook answering 503 and timing out is retried with backoff; once it
/// answers, it has every record once.
#[tokio::test]
async fn standalone_webhook_retries_through_errors_and_timeouts_and_catches_up() {
    let gw = gateway().await;
    let hook = Collector::start(vec![
        Answer::Status(503),
        Answer::Slow(Duration::from_secs(3)),
        Answer::Status(500),
    ])
    .await;
    let (gm, _dir) = metered_standalone(
        &gw,
        "200ms",
        &[
            "--usage-webhook",
            &hook.url(),
            "--usage-webhook-timeout",
            "1s",
        ],
    )
    .await;
    let edge = gm.edge_addr();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = WsConn::connect(edge, &format!("/ws?channel=s&apikey=key-{i}"), &[]).await;
        clients.push(async move {
            let t = ws.expect_text(WAIT).await;
            ws.close(1000, "bye").await;
            t.len()
        });
    }
    wait_held(gm.admin_addr(), "ws", 3.0).await;
    publish_items(gm.publish_addr(), json!([item("s", "hello")])).await;
    for c in clients {
        assert_eq!(c.await, 5);
    }
    hook.wait_finals(3).await;
    let records = hook.records();
    check_records(&records);
    let s = sums(&records);
    for i in 0..3 {
        assert_eq!(
            s.get(&sha256_hex(&format!("key-{i}")))
                .map(|x| (x.0, x.1, x.2)),
            Some((1, ws_frame(5), 1))
        );
    }
    let failures = metric_value(gm.admin_addr(), "gripmesh_usage_webhook_failures_total")
        .await
        .unwrap_or(0.0);
    assert!(
        failures >= 3.0,
        "503, timeout and 500 were failures: {failures}"
    );
}

/// A webhook that never answers: delivery to clients goes on at full speed, the buffer stays
/// within its bound and the overflow is counted.
#[tokio::test]
async fn a_webhook_that_never_answers_does_not_slow_delivery_or_grow_memory() {
    let gw = gateway().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    tokio::spawn({
        let held = held.clone();
        async move {
            while let Ok((s, _)) = silent.accept().await {
                held.lock().expect("held").push(s);
            }
        }
    });
    let url = format!("http://{silent_addr}/usage");
    let (gm, _dir) = metered_standalone(
        &gw,
        "100ms",
        &["--usage-webhook", &url, "--usage-webhook-buffer", "50"],
    )
    .await;
    let edge = gm.edge_addr();
    let mut conns = Vec::new();
    for i in 0..20 {
        conns.push(WsConn::connect(edge, &format!("/ws?channel=n&apikey=key-{i}"), &[]).await);
    }
    wait_held(gm.admin_addr(), "ws", 20.0).await;
    // 20 connections × 10 records/s overflow a 50-record buffer within a second.
    wait_until(WAIT, "webhook drops counted", || async {
        metric_value(gm.admin_addr(), "gripmesh_usage_webhook_dropped_total")
            .await
            .is_some_and(|v| v > 0.0)
    })
    .await;
    let started = tokio::time::Instant::now();
    for round in 0..20 {
        publish_items(gm.publish_addr(), json!([item("n", &format!("r{round}"))])).await;
        for ws in &mut conns {
            assert_eq!(ws.expect_text(WAIT).await, format!("r{round}"));
        }
    }
    eprintln!(
        "400 deliveries with a silent webhook in {:?}",
        started.elapsed()
    );
    let buffered = metric_value(gm.admin_addr(), "gripmesh_usage_webhook_buffered")
        .await
        .unwrap_or(f64::MAX);
    assert!(buffered <= 50.0, "buffer bound kept: {buffered}");
}

/// Per-app metrics: with `--usage-top-apps 2` and three apps, two apps have their own label
/// (the busiest among them), the rest is `app="other"`, and the sums match the traffic.
#[tokio::test]
async fn per_app_metrics_keep_at_most_top_n_labels() {
    let gw = gateway().await;
    let (gm, _dir) = metered_standalone(&gw, "200ms", &["--usage-top-apps", "2"]).await;
    let edge = gm.edge_addr();
    // key-x and key-y connect first (and take the free labels); key-z is far busier.
    let mut x = WsConn::connect(edge, "/ws?channel=px&apikey=key-x", &[]).await;
    let mut y = WsConn::connect(edge, "/ws?channel=py&apikey=key-y", &[]).await;
    let mut z = WsConn::connect(edge, "/ws?channel=pz&apikey=key-z", &[]).await;
    wait_held(gm.admin_addr(), "ws", 3.0).await;
    publish_items(gm.publish_addr(), json!([item("px", "x"), item("py", "y")])).await;
    let mut total = ws_frame(x.expect_text(WAIT).await.len());
    total += ws_frame(y.expect_text(WAIT).await.len());
    // key-z sends far more, until it has displaced one of the others and its own series counts.
    let admin = gm.admin_addr();
    let mut i = 0;
    loop {
        publish_items(
            gm.publish_addr(),
            json!([item("pz", &content(200 + i % 50))]),
        )
        .await;
        total += ws_frame(z.expect_text(WAIT).await.len());
        i += 1;
        let text = scrape_metrics(admin).await;
        let z_bytes = series(&text, "gripmesh_app_bytes_sent_total")
            .iter()
            .find(|(a, _)| a == "app-key-z")
            .map_or(0.0, |(_, v)| *v);
        if z_bytes > 0.0 {
            break;
        }
        assert!(i < 2000, "app-key-z never got its own label: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scrape_metrics(admin).await;
    for name in [
        "gripmesh_app_connections",
        "gripmesh_app_messages_sent_total",
        "gripmesh_app_bytes_sent_total",
    ] {
        let s = series(&text, name);
        assert_eq!(s.len(), 3, "{name}: 2 apps + other: {s:?}");
        assert!(s.iter().any(|(a, _)| a == "other"), "{name}: {s:?}");
    }
    let conns: f64 = series(&text, "gripmesh_app_connections")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(conns, 3.0, "every live connection is counted once");
    // An app that lost its label took its series along; nothing is counted twice.
    let bytes: f64 = series(&text, "gripmesh_app_bytes_sent_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(bytes <= total as f64, "{bytes} <= {total}");
    eprintln!(
        "per-app series after {i} busy messages: {:?}",
        series(&text, "gripmesh_app_bytes_sent_total")
    );
    drop((x, y, z));
}

/// `(app, value)` of every series of `name`.
fn series(text: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}{{app=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (app, value) = rest.split_once("\"} ")?;
            Some((app.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Final records name why the edge ended each connection (standalone, webhook): a spent quota
/// (`quota`), an expired credential (`expired`), a client that stopped reading while its
/// send queue overflowed (`slow_consumer`) and the drain on SIGTERM (`drain`), each under its
/// own key.
#[tokio::test]
async fn final_records_name_why_the_edge_ended_the_connection() {
    let expires = (crate::jwt::now_unix() + 2).to_string();
    let gw = Origin::start(move |req| {
        let key = query_param(&req.uri, "apikey").unwrap_or_default();
        let allow = OriginResponse::new(200).header("X-Developer-App", &format!("app-{key}"));
        match key.as_str() {
            "key-quota" => allow.header("Gripmesh-Message-Quota", "1/1m"),
            "key-expired" => allow.header("Gripmesh-Expires", &expires),
            "key-slow" | "key-drain" => allow,
            _ => OriginResponse::new(401).body("no\n"),
        }
    })
    .await;
    let hook = Collector::start(vec![]).await;
    let (mut gm, _dir) = metered_standalone(
        &gw,
        "1s",
        &[
            "--usage-webhook",
            &hook.url(),
            "--send-queue-bytes",
            "65536",
        ],
    )
    .await;
    let edge = gm.edge_addr();
    let reason_of = |key: &str| {
        let hash = sha256_hex(key);
        hook.records()
            .into_iter()
            .find(|r| r["final"] == json!(true) && r["key_hash"] == json!(hash))
            .map(|r| r["close_reason"].as_str().unwrap_or_default().to_owned())
    };

    // Quota 1: the second delivery closes the WebSocket.
    let mut quota = WsConn::connect(edge, "/ws?channel=rq&apikey=key-quota", &[]).await;
    // Expires in 2 s.
    let mut expired = WsConn::connect(edge, "/ws?channel=re&apikey=key-expired", &[]).await;
    // Never reads: 24 MiB published to its channel overflow the 64 KiB send queue (and the
    // socket buffers).
    let mut slow = TcpStream::connect(edge).await.expect("connect");
    slow.write_all(b"GET /stream?channel=rs&apikey=key-slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut drained = WsConn::connect(edge, "/ws?channel=rd&apikey=key-drain", &[]).await;
    wait_held(gm.admin_addr(), "ws", 3.0).await;
    wait_held(gm.admin_addr(), "http-stream", 1.0).await;

    publish_items(gm.publish_addr(), json!([item("rq", "one")])).await;
    assert_eq!(quota.expect_text(WAIT).await, "one");
    publish_items(gm.publish_addr(), json!([item("rq", "two")])).await;
    assert_eq!(quota.expect_close(WAIT).await.0, 4429);
    assert_eq!(expired.expect_close(WAIT).await.0, 4401);
    let big = "x".repeat(256 * 1024);
    for _ in 0..96 {
        publish_items(gm.publish_addr(), json!([item("rs", &big)])).await;
    }
    wait_until(WAIT, "the slow stream's final record", || async {
        reason_of("key-slow").is_some()
    })
    .await;
    gm.signal(testkit::Signal::Term);
    assert_eq!(drained.expect_close(WAIT).await.0, 1012);
    gm.wait_exit(WAIT).await;

    hook.wait_finals(4).await;
    for (key, reason) in [
        ("key-quota", "quota"),
        ("key-expired", "expired"),
        ("key-slow", "slow_consumer"),
        ("key-drain", "drain"),
    ] {
        assert_eq!(reason_of(key).as_deref(), Some(reason), "{key}");
    }
    check_records(&hook.records());
}
