//! Durable channels in a cluster under failure (docs/protocol.md, "History"): a rolling deploy of every edge
//! (SIGTERM, and SIGKILL), control killed mid-stream, the same id through two control
//! replicas, NATS lost under one edge (for longer than `--bus-loss-close`, and briefly), and a
//! node of a 3-node NATS cluster killed — with real `gripmesh control`/`edge` processes on
//! real `nats-server -js`.
//!
//! Clients are HTTP streams on the built-in `test` origin, which turns `Last-Event-ID` into
//! `prev-id`: each client reconnects (to a live edge) with the last id it saw whenever its
//! stream ends or breaks, and in the end must hold every published id exactly once, in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use testkit::cluster::{ControlNode, start_edge, wait_ready};
use testkit::{Gripmesh, NatsServer, Signal, StreamClient, TempDir, try_http_request, wait_metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::history::item;

const BIN: &str = env!("CARGO_BIN_EXE_gripmesh");
const WAIT: Duration = Duration::from_secs(30);
const CHANNEL: &str = "roll";
const HISTORY: &str = "roll*=100000/1h";

/// Edges clients may connect to (what a load balancer with readiness checks would offer).
type Pool = Arc<Mutex<Vec<SocketAddr>>>;

/// One resuming stream client: what it received, in order.
struct Client {
    got: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Reads a close-delimited (HTTP/1.0) stream from `edge`, appending ids to `got`; returns
/// when the stream ends or breaks. `connected` is bumped once the response head arrived.
async fn one_stream(
    edge: SocketAddr,
    got: &Arc<Mutex<Vec<u64>>>,
    connected: &AtomicUsize,
    first: &mut bool,
) {
    let Ok(mut sock) = TcpStream::connect(edge).await else {
        return;
    };
    let last = got.lock().expect("lock").last().copied();
    let resume = last.map_or_else(String::new, |n| format!("Last-Event-ID: {n}\r\n"));
    let req = format!("GET /stream?channel={CHANNEL} HTTP/1.0\r\nHost: edge\r\n{resume}\r\n");
    if sock.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut head_done = false;
    loop {
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
                return;
            }
            buf.drain(..end + 4);
            head_done = true;
            if *first {
                *first = false;
                connected.fetch_add(1, Ordering::SeqCst);
            }
        }
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if let Some(n) = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.trim().parse::<u64>().ok())
            {
                got.lock().expect("lock").push(n);
            }
        }
    }
}

fn spawn_client(
    pool: Pool,
    start: usize,
    connected: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> Client {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mine = got.clone();
    let task = tokio::spawn(async move {
        let mut turn = start;
        let mut first = true;
        while !stop.is_cancelled() {
            let edge = {
                let pool = pool.lock().expect("lock");
                if pool.is_empty() {
                    None
                } else {
                    Some(pool[turn % pool.len()])
                }
            };
            if let Some(edge) = edge {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = one_stream(edge, &mine, &connected, &mut first) => {}
                }
            }
            turn += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Client { got, task }
}

/// `n` resuming clients spread over `pool`, once every one is connected; returns them, the
/// count of clients that connected at least once, and what stops them.
async fn connect_clients(
    pool: &Pool,
    n: usize,
) -> (Vec<Client>, Arc<AtomicUsize>, CancellationToken) {
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let clients: Vec<Client> = (0..n)
        .map(|i| spawn_client(pool.clone(), i, connected.clone(), stop.clone()))
        .collect();
    testkit::wait_until(WAIT, "every client connected", || {
        let up = connected.load(Ordering::SeqCst);
        async move { up == n }
    })
    .await;
    (clients, connected, stop)
}

/// Ids acknowledged so far by a feed.
type Acked = Arc<std::sync::atomic::AtomicU64>;

/// Waits (generously: the machine may be loaded) until the feed has `n` items acknowledged.
async fn wait_acked(acked: &Acked, n: u64) {
    testkit::wait_until(
        Duration::from_secs(120),
        &format!("{n} items published"),
        || {
            let v = acked.load(Ordering::SeqCst);
            async move { v >= n }
        },
    )
    .await;
}

/// Publishes item 1, 2, 3… to the control whose publish address is in `control`, one every
/// `every`, retrying each until acknowledged; returns the last acknowledged id once `stop`.
fn spawn_feed(
    control: Arc<Mutex<SocketAddr>>,
    every: Duration,
    stop: CancellationToken,
) -> (tokio::task::JoinHandle<u64>, Acked) {
    let acked: Acked = Arc::default();
    let counter = acked.clone();
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.is_cancelled() {
            tick.tick().await;
            let id = n + 1;
            let body = json!({"items": [item(CHANNEL, id)]}).to_string();
            loop {
                let addr = *control.lock().expect("lock");
                let sent = try_http_request(
                    addr,
                    "POST",
                    "/publish/",
                    &[("Content-Type", "application/json")],
                    body.clone(),
                )
                .await;
                if sent.is_ok_and(|r| r.status == 200) {
                    break;
                }
                // Not acknowledged: publish the same id again (de-duplicated if it was stored).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n = id;
            counter.store(n, Ordering::SeqCst);
        }
        n
    });
    (task, acked)
}

/// Waits until every client has reached `last`, then checks each holds 1..=last exactly once
/// in order; returns (losses, duplicates) summed over clients, and panics when a client holds
/// every item once but out of order.
async fn settle(clients: &[Client], last: u64, what: &str) -> (u64, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done = clients
            .iter()
            .all(|c| c.got.lock().expect("lock").last().copied() >= Some(last));
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut losses, mut dups) = (0u64, 0u64);
    let want: Vec<u64> = (1..=last).collect();
    for (i, c) in clients.iter().enumerate() {
        let got = c.got.lock().expect("lock").clone();
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        dups += (got.len() - unique.len()) as u64;
        losses += want
            .iter()
            .filter(|n| unique.binary_search(n).is_err())
            .count() as u64;
        if got != want {
            let firsts: Vec<_> = got.iter().take(20).collect();
            eprintln!(
                "{what}: client {i} got {} items (want {last}); first: {firsts:?}",
                got.len()
            );
        }
    }
    for c in clients {
        c.task.abort();
    }
    let out_of_order = clients
        .iter()
        .filter(|c| *c.got.lock().expect("lock") != want)
        .count();
    eprintln!(
        "{what}: clients={} items={last} losses={losses} duplicates={dups} clients_not_exactly_in_order={out_of_order}",
        clients.len()
    );
    assert_eq!(
        out_of_order, 0,
        "{what}: every client gets 1..={last} in order"
    );
    (losses, dups)
}

struct Deploy {
    nats: NatsServer,
    control: ControlNode,
    edges: Vec<Gripmesh>,
    routes: std::path::PathBuf,
    _dir: TempDir,
}

async fn deploy(edges: usize, edge_flags: &[&str]) -> Deploy {
    let nats = NatsServer::start_jetstream();
    let dir = TempDir::new();
    let routes = dir.write("routes", "* test\n");
    let control = ControlNode::start(BIN, &nats.url(), "* test\n", &["--history", HISTORY]).await;
    let mut started = Vec::new();
    for _ in 0..edges {
        started.push(new_edge(&nats.url(), &routes, edge_flags).await);
    }
    wait_ready(control.admin_addr(), WAIT, "control").await;
    Deploy {
        nats,
        control,
        edges: started,
        routes,
        _dir: dir,
    }
}

async fn new_edge(nats: &str, routes: &std::path::Path, flags: &[&str]) -> Gripmesh {
    let mut args = vec![
        "--routes",
        routes.to_str().expect("utf-8"),
        "--drain-timeout",
        "10",
    ];
    args.extend_from_slice(flags);
    let edge = start_edge(BIN, nats, &args).await;
    wait_ready(edge.admin_addr(), WAIT, "edge").await;
    edge
}

/// 3 edges, 100 clients spread over them, up to 200 items/s with ids (one publish call each,
/// acknowledged before the next); every edge in turn is replaced
/// (`signal`: SIGTERM drains, SIGKILL vanishes); clients reconnect with their last id.
async fn rolling(signal: Signal, what: &str) {
    let mut d = deploy(3, &[]).await;
    let pool: Pool = Arc::new(Mutex::new(
        d.edges.iter().map(Gripmesh::edge_addr).collect(),
    ));
    let (clients, _, stop_clients) = connect_clients(&pool, 100).await;
    let stop_feed = CancellationToken::new();
    let (feed, acked) = spawn_feed(
        Arc::new(Mutex::new(d.control.publish_addr())),
        Duration::from_millis(5),
        stop_feed.clone(),
    );
    wait_acked(&acked, 200).await;
    let url = d.nats.url();
    for step in 0..3u64 {
        let fresh = new_edge(&url, &d.routes, &[]).await;
        let mut old = d.edges.remove(0);
        {
            let mut p = pool.lock().expect("lock");
            p.retain(|a| *a != old.edge_addr());
            p.push(fresh.edge_addr());
        }
        d.edges.push(fresh);
        match signal {
            Signal::Kill => old.kill().await,
            _ => {
                old.signal(signal);
                let status = old.wait_exit(Duration::from_secs(20)).await;
                assert!(status.success(), "drained edge exits 0: {status:?}");
            }
        }
        // Items keep flowing while clients reconnect and resume.
        wait_acked(&acked, 200 * (step + 2)).await;
    }
    stop_feed.cancel();
    let last = feed.await.expect("feed");
    let (losses, dups) = settle(&clients, last, what).await;
    stop_clients.cancel();
    assert_eq!((losses, dups), (0, 0), "{what}: every item exactly once");
}

#[tokio::test]
async fn history_rolling_deploy_sigterm_loses_nothing() {
    rolling(Signal::Term, "rolling deploy (SIGTERM)").await;
}

#[tokio::test]
async fn history_rolling_deploy_sigkill_loses_nothing() {
    rolling(Signal::Kill, "rolling deploy (SIGKILL)").await;
}

/// Control killed mid-stream and started again: every acknowledged item reaches every client
/// exactly once (the publisher re-sends what was not acknowledged, with the same id).
#[tokio::test]
async fn history_control_restart_loses_nothing_acknowledged() {
    let d = deploy(1, &[]).await;
    let pool: Pool = Arc::new(Mutex::new(vec![d.edges[0].edge_addr()]));
    let (clients, _, stop_clients) = connect_clients(&pool, 5).await;
    let control_addr = Arc::new(Mutex::new(d.control.publish_addr()));
    let stop_feed = CancellationToken::new();
    let (feed, acked) = spawn_feed(
        control_addr.clone(),
        Duration::from_millis(10),
        stop_feed.clone(),
    );
    wait_acked(&acked, 100).await;
    let Deploy {
        nats,
        mut control,
        edges,
        ..
    } = d;
    control.gm.kill().await;
    let again = ControlNode::start(BIN, &nats.url(), "* test\n", &["--history", HISTORY]).await;
    wait_ready(again.admin_addr(), WAIT, "control again").await;
    let before = acked.load(Ordering::SeqCst);
    *control_addr.lock().expect("lock") = again.publish_addr();
    wait_acked(&acked, before + 100).await;
    stop_feed.cancel();
    let last = feed.await.expect("feed");
    let (losses, dups) = settle(&clients, last, "control restart").await;
    stop_clients.cancel();
    assert_eq!((losses, dups), (0, 0));
    drop(edges);
}

/// The same id published through two control replicas is stored once and delivered once, to
/// live and to resuming clients, and both answers name the same seq.
#[tokio::test]
async fn history_same_id_through_two_controls_once() {
    let d = deploy(1, &[]).await;
    let b = ControlNode::start(BIN, &d.nats.url(), "* test\n", &["--history", HISTORY]).await;
    wait_ready(b.admin_addr(), WAIT, "second control").await;
    let edge = d.edges[0].edge_addr();
    let publish_json = |addr: SocketAddr, n: u64| async move {
        let resp = try_http_request(
            addr,
            "POST",
            "/publish/",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            json!({"items": [item(CHANNEL, n)]}).to_string(),
        )
        .await
        .expect("publish");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON");
        v["items"][0]["seq"].as_u64().expect("seq")
    };
    publish_json(d.control.publish_addr(), 1).await;
    let mut live = StreamClient::open(edge, &format!("/stream?channel={CHANNEL}"), &[]).await;
    let s1 = publish_json(d.control.publish_addr(), 2).await;
    let s2 = publish_json(b.publish_addr(), 2).await;
    assert_eq!(s1, s2, "one stored copy");
    publish_json(b.publish_addr(), 3).await;
    live.read_until("\n3\n", WAIT).await;
    assert_eq!(
        crate::history::numbers_of(&live.received_text()),
        [2, 3],
        "live: once"
    );
    let mut back = StreamClient::open(
        edge,
        &format!("/stream?channel={CHANNEL}"),
        &[("Last-Event-ID", "1")],
    )
    .await;
    back.read_until("\n3\n", WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = back.read_for(Duration::from_millis(200)).await;
    assert_eq!(
        crate::history::numbers_of(&back.received_text()),
        [2, 3],
        "replay: once"
    );
}

/// Forwards TCP connections from a loopback port to `to` until cut.
struct Cable {
    addr: SocketAddr,
    cut: CancellationToken,
}

impl Cable {
    async fn start(to: SocketAddr) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Cable { addr, cut }
    }
}

/// NATS lost under one edge: after `--bus-loss-close` its clients are closed, reconnect to the
/// other edge with their last id, and miss nothing.
#[tokio::test]
async fn history_bus_loss_closes_clients_who_resume_elsewhere() {
    let d = deploy(1, &[]).await;
    let nats_addr: SocketAddr = ([127, 0, 0, 1], d.nats.port).into();
    let cable = Cable::start(nats_addr).await;
    let cut_edge = new_edge(
        &format!("nats://{}", cable.addr),
        &d.routes,
        &["--bus-loss-close", "2"],
    )
    .await;
    let healthy = d.edges[0].edge_addr();
    let pool: Pool = Arc::new(Mutex::new(vec![cut_edge.edge_addr()]));
    let (clients, _, stop_clients) = connect_clients(&pool, 5).await;
    let stop_feed = CancellationToken::new();
    let (feed, acked) = spawn_feed(
        Arc::new(Mutex::new(d.control.publish_addr())),
        Duration::from_millis(20),
        stop_feed.clone(),
    );
    wait_acked(&acked, 50).await;
    // The edge loses NATS; readiness would send new clients elsewhere: so does the pool.
    cable.cut.cancel();
    *pool.lock().expect("lock") = vec![healthy];
    wait_metric(
        cut_edge.admin_addr(),
        "gripmesh_edge_bus_loss_closes_total",
        WAIT,
        "held clients closed after the bus-loss delay",
        |v| v >= 5.0,
    )
    .await;
    let before = acked.load(Ordering::SeqCst);
    wait_acked(&acked, before + 50).await;
    stop_feed.cancel();
    let last = feed.await.expect("feed");
    let (losses, dups) = settle(&clients, last, "bus loss").await;
    stop_clients.cancel();
    assert_eq!((losses, dups), (0, 0));
}

/// One node of a 3-node NATS cluster (history with 3 replicas) is SIGKILLed under steady
/// publishing and started again: the edge that was connected to it reconnects to a surviving
/// node, and its clients — which missed the live items published while it was away — resume
/// from history; every client ends with every acknowledged item exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_nats_node_killed_loses_nothing() {
    let mut nodes = NatsServer::start_cluster(3);
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let dir = TempDir::new();
    let routes = dir.write("routes", "* test\n");
    let control = ControlNode::start(
        BIN,
        &urls[2],
        "* test\n",
        &["--history", HISTORY, "--history-replicas", "3"],
    )
    .await;
    wait_ready(control.admin_addr(), WAIT, "control").await;
    // Edge A on the node that dies, edge B on one that stays.
    let edge_a = new_edge(&urls[0], &routes, &[]).await;
    let edge_b = new_edge(&urls[1], &routes, &[]).await;
    let pool: Pool = Arc::new(Mutex::new(vec![edge_a.edge_addr(), edge_b.edge_addr()]));
    let (clients, _, stop_clients) = connect_clients(&pool, 20).await;
    let stop_feed = CancellationToken::new();
    let (feed, acked) = spawn_feed(
        Arc::new(Mutex::new(control.publish_addr())),
        Duration::from_millis(10),
        stop_feed.clone(),
    );
    wait_acked(&acked, 100).await;
    tokio::task::block_in_place(|| nodes[0].kill());
    let before = acked.load(Ordering::SeqCst);
    wait_acked(&acked, before + 100).await;
    tokio::task::block_in_place(|| nodes[0].restart());
    let before = acked.load(Ordering::SeqCst);
    wait_acked(&acked, before + 100).await;
    stop_feed.cancel();
    let last = feed.await.expect("feed");
    let (losses, dups) = settle(&clients, last, "NATS node killed").await;
    stop_clients.cancel();
    let reconnects = testkit::metric_value(edge_a.admin_addr(), "gripmesh_bus_reconnects_total")
        .await
        .unwrap_or(0.0);
    assert!(
        reconnects >= 1.0,
        "edge A lost its NATS node and reconnected"
    );
    assert_eq!((losses, dups), (0, 0), "every item exactly once");
    drop((edge_a, edge_b));
}

/// A TCP link from a loopback port to `to` that can go down for a while: its connections are
/// cut and new ones refused until it comes back up.
struct Link {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Link {
    async fn start(to: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: the connection is refused
                }
                let mut down = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = down.wait_for(|up| !*up) => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Link { addr, up }
    }
}

/// An edge whose NATS connection is down for 2 s — shorter than `--bus-loss-close`, so its
/// clients stay connected — misses the live items published meanwhile; when the bus is back
/// it reads them from history and delivers them before later live ones: every client ends
/// with every item exactly once, in order, without having been closed.
#[tokio::test]
async fn history_short_bus_outage_is_caught_up_from_history() {
    let d = deploy(1, &[]).await;
    let link = Link::start(([127, 0, 0, 1], d.nats.port).into()).await;
    let edge = new_edge(&format!("nats://{}", link.addr), &d.routes, &[]).await;
    let pool: Pool = Arc::new(Mutex::new(vec![edge.edge_addr()]));
    let (clients, connected, stop_clients) = connect_clients(&pool, 10).await;
    let stop_feed = CancellationToken::new();
    let (feed, acked) = spawn_feed(
        Arc::new(Mutex::new(d.control.publish_addr())),
        Duration::from_millis(10),
        stop_feed.clone(),
    );
    wait_acked(&acked, 50).await;
    link.up.send_replace(false);
    let before = acked.load(Ordering::SeqCst);
    wait_acked(&acked, before + 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    link.up.send_replace(true);
    wait_metric(
        edge.admin_addr(),
        r#"gripmesh_edge_catch_ups_total{result="recovered"}"#,
        WAIT,
        "the channel caught up from history",
        |v| v >= 1.0,
    )
    .await;
    let before = acked.load(Ordering::SeqCst);
    wait_acked(&acked, before + 50).await;
    stop_feed.cancel();
    let last = feed.await.expect("feed");
    let (losses, dups) = settle(&clients, last, "short bus outage").await;
    stop_clients.cancel();
    let closed = testkit::metric_value(edge.admin_addr(), "gripmesh_edge_bus_loss_closes_total")
        .await
        .unwrap_or(-1.0);
    assert_eq!(closed, 0.0, "no client was closed");
    assert_eq!(connected.load(Ordering::SeqCst), 10);
    assert_eq!((losses, dups), (0, 0), "every item exactly once");
}
