//! Fault injection: real processes, real NATS, real sockets, and one fault at a time.
//!
//! For each fault the test checks what clients see, what is lost (nothing beyond the
//! documented at-most-once window while a bus connection is down), that every process stays up
//! (`/healthz`) and that memory stays bounded (RSS growth from `/proc/<pid>/status`). Each test
//! prints one `FAULT:` line with the observed figures (run with `--no-capture` to see them).
//!
//! Timings are reported, and asserted only with generous bounds ("resumes within seconds"),
//! never as performance figures (docs/architecture.md: benchmarks live in `loadtest/`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use testkit::cluster::{
    ControlNode, healthz_status, put_routes, readyz_status, start_edge, start_edges, wait_ready,
};
use testkit::{
    Gripmesh, NatsServer, Origin, RawOrigin, Signal, StreamClient, StreamEnd, metric_value,
    try_http_request, wait_metric, wait_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::common::{BIN, Env, Survivor, WAIT, standard_origin, start};

/// Allowed RSS growth of any process over one fault.
const MAX_RSS_GROWTH_MB: f64 = 100.0;
/// How long a process may take to become ready next to a NATS cluster that just formed: a
/// follower retries opening the route bucket, and on a fresh 3-node JetStream cluster under
/// load one attempt has been seen to take 10 s.
const READY_WAIT: Duration = Duration::from_secs(30);

/// What the built-in test origin answers on `/`.
const HELLO: &str = "Hello from the gripmesh test origin.\n";

// ---------------------------------------------------------------------------------------------
// Process health
// ---------------------------------------------------------------------------------------------

/// Resident set size of a process in MB (`VmRSS` in `/proc/<pid>/status`).
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// RSS of a set of processes at the start of a fault, checked again at its end.
struct MemoryWatch {
    start: Vec<(String, u32, f64)>,
}

impl MemoryWatch {
    fn new(procs: &[(&str, &Gripmesh)]) -> MemoryWatch {
        MemoryWatch {
            start: procs
                .iter()
                .map(|(name, gm)| ((*name).to_owned(), gm.pid(), rss_mb(gm.pid())))
                .collect(),
        }
    }

    /// Asserts bounded growth; returns a short report (`edge-a 14→16MB, ...`).
    fn check(&self) -> String {
        let mut report = Vec::new();
        for (name, pid, before) in &self.start {
            let after = rss_mb(*pid);
            assert!(
                after - before < MAX_RSS_GROWTH_MB,
                "{name} (pid {pid}) RSS grew from {before:.1} MB to {after:.1} MB"
            );
            report.push(format!("{name} {before:.0}→{after:.0}MB"));
        }
        report.join(", ")
    }
}

/// Asserts that the process runs and its admin listener answers `/healthz` with 200.
async fn assert_healthy(gm: &mut Gripmesh, what: &str) {
    gm.assert_running();
    assert_eq!(
        healthz_status(gm.admin_addr()).await,
        Some(200),
        "{what}: /healthz"
    );
}

// ---------------------------------------------------------------------------------------------
// Steady publishing and counting what arrives
// ---------------------------------------------------------------------------------------------

/// One publish attempt of the steady publisher.
#[derive(Debug, Clone)]
struct Attempt {
    seq: u64,
    at: Instant,
    /// HTTP status, or `None` when the request failed (connection refused, reset).
    status: Option<u16>,
    /// How long the attempt took.
    took: Duration,
}

/// Where the steady publisher sends: replaced when control restarts on a new port.
type Target = Arc<std::sync::Mutex<SocketAddr>>;

/// Publishes `m-<seq>\n` (http-stream) to `channel` every `period` until `stop`; returns every
/// attempt. Failures are recorded, not fatal: some faults make publishing fail on purpose.
fn spawn_publisher(
    target: Target,
    channel: &'static str,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Vec<Attempt>> {
    tokio::spawn(async move {
        let mut attempts = Vec::new();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            seq += 1;
            let body = json!({"items": [{"channel": channel,
                "formats": {"http-stream": {"content": format!("m-{seq}\n")}}}]});
            let addr = *target.lock().unwrap_or_else(|p| p.into_inner());
            let at = Instant::now();
            let status = try_http_request(
                addr,
                "POST",
                "/publish/",
                &[("Content-Type", "application/json")],
                body.to_string(),
            )
            .await
            .ok()
            .map(|r| r.status);
            attempts.push(Attempt {
                seq,
                at,
                status,
                took: at.elapsed(),
            });
        }
        attempts
    })
}

/// What one stream client received: `(seq, arrival)` of every `m-<seq>` line, and how the
/// stream ended (if it did).
#[derive(Debug, Default)]
struct Received {
    lines: Vec<(u64, Instant)>,
    end: Option<StreamEnd>,
}

/// Reads `m-<seq>` lines from a held stream until `stop` or the end of the stream.
fn spawn_reader(mut client: StreamClient, mut stop: watch::Receiver<bool>) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut out = Received::default();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = client.read_for(Duration::from_millis(50)).await;
            let now = Instant::now();
            pending.extend_from_slice(&chunk);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(seq) = line.trim().strip_prefix("m-").and_then(|s| s.parse().ok()) {
                    out.lines.push((seq, now));
                }
            }
            if let Some(end) = client.end() {
                out.end = Some(end.clone());
                break;
            }
            if *stop.borrow_and_update() {
                break;
            }
        }
        out
    })
}

/// Delivery to one client compared with the publishes control accepted.
#[derive(Debug)]
struct Delivery {
    accepted: usize,
    received: usize,
    /// Accepted but never received, as `first-last` ranges.
    gaps: Vec<(u64, u64)>,
    lost: usize,
    /// The lost sequence numbers.
    missing: Vec<u64>,
    /// Received more than once, or after a later one.
    out_of_order: usize,
    /// Longest time between two arrivals.
    max_silence: Duration,
}

fn analyse(attempts: &[Attempt], got: &Received) -> Delivery {
    let accepted: Vec<u64> = attempts
        .iter()
        .filter(|a| a.status == Some(200))
        .map(|a| a.seq)
        .collect();
    let seen: std::collections::HashSet<u64> = got.lines.iter().map(|(s, _)| *s).collect();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut missing = Vec::new();
    let mut prev_missing = false;
    for &seq in &accepted {
        if seen.contains(&seq) {
            prev_missing = false;
            continue;
        }
        missing.push(seq);
        match gaps.last_mut() {
            Some(gap) if prev_missing => gap.1 = seq,
            _ => gaps.push((seq, seq)),
        }
        prev_missing = true;
    }
    let out_of_order = got.lines.windows(2).filter(|w| w[1].0 <= w[0].0).count();
    let max_silence = got
        .lines
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default();
    Delivery {
        accepted: accepted.len(),
        received: got.lines.len(),
        gaps,
        lost: missing.len(),
        missing,
        out_of_order,
        max_silence,
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gaps: Vec<String> = self
            .gaps
            .iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        write!(
            f,
            "received {}/{} lost {} gaps [{}] out-of-order {} max-silence {}ms",
            self.received,
            self.accepted,
            self.lost,
            gaps.join(","),
            self.out_of_order,
            self.max_silence.as_millis()
        )
    }
}

/// Arrival time of the first message published after `t`, measured from `t`.
fn resumed_after(attempts: &[Attempt], got: &Received, t: Instant) -> Option<Duration> {
    let first_after = attempts.iter().find(|a| a.at > t)?.seq;
    got.lines
        .iter()
        .find(|(seq, _)| *seq >= first_after)
        .map(|(_, at)| *at - t)
}

/// Publishes `warm-<n>` until every client has received one (bus interest crosses NATS
/// cluster routes asynchronously), then drains the clients.
async fn warm_up(control: SocketAddr, channel: &str, clients: &mut [StreamClient]) {
    let deadline = Instant::now() + WAIT;
    let mut got = vec![false; clients.len()];
    let mut n = 0;
    while got.iter().any(|g| !g) {
        assert!(Instant::now() < deadline, "warm-up not delivered: {got:?}");
        n += 1;
        let body = json!({"items": [{"channel": channel,
            "formats": {"http-stream": {"content": format!("warm-{n}\n")}}}]});
        let _ = try_http_request(
            control,
            "POST",
            "/publish/",
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .await;
        for (c, done) in clients.iter_mut().zip(got.iter_mut()) {
            if !*done {
                *done = c
                    .try_read_until("warm-", Duration::from_millis(300))
                    .await
                    .is_some();
            }
        }
    }
    // Let stragglers arrive, then discard them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for c in clients.iter_mut() {
        c.read_for(Duration::from_millis(10)).await;
    }
}

/// Opens a stream hold on the built-in test origin and consumes its opening line.
async fn open_test_stream(edge: SocketAddr, channel: &str, host: &str) -> StreamClient {
    let mut s = StreamClient::open(
        edge,
        &format!("/stream?channel={channel}"),
        &[("Host", host)],
    )
    .await;
    assert_eq!(s.status, 200, "stream hold on {channel} via {edge}");
    s.read_until(format!("[stream open on channel {channel}]\n"), WAIT)
        .await;
    s
}

/// Waits until an edge that follows control's routes is ready and has a route table.
async fn wait_edge_ready(edge: &Gripmesh, what: &str) {
    wait_ready(edge.admin_addr(), READY_WAIT, what).await;
    wait_metric(
        edge.admin_addr(),
        "gripmesh_edge_routes_version",
        READY_WAIT,
        &format!("{what}: has control's route table"),
        |v| v > 0.0,
    )
    .await;
}

/// `gripmesh-*` client connections on a NATS node.
fn gripmesh_connections(node: &NatsServer) -> usize {
    node.monitor("/connz?limit=1000")["connections"]
        .as_array()
        .map_or(0, |conns| {
            conns
                .iter()
                .filter(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("gripmesh"))
                })
                .count()
        })
}

// ---------------------------------------------------------------------------------------------
// 1. NATS cluster node killed and restarted under steady publishing
// ---------------------------------------------------------------------------------------------

/// A 3-node NATS cluster; control on node 2, edge A on node 0, edge B on node 1, a stream
/// client on each edge and a publisher at 50/s. Node 0 is SIGKILLed, then restarted on the
/// same ports. Edge A's client loses what was published while its bus connection was down (the
/// at-most-once window) and receives again within seconds; edge B's client loses (almost)
/// nothing; once the node is back, nothing at all is lost and order is kept throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_nats_node_killed_and_restarted_under_publishing() {
    let mut nodes = NatsServer::start_cluster(3);
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let (control, edge_a, edge_b) = tokio::join!(
        ControlNode::start(BIN, &urls[2], "* test\n", &[]),
        start_edge(BIN, &urls[0], &[]),
        start_edge(BIN, &urls[1], &[])
    );
    let (mut control, mut edge_a, mut edge_b) = (control, edge_a, edge_b);
    wait_ready(control.admin_addr(), READY_WAIT, "control").await;
    wait_edge_ready(&edge_a, "edge A").await;
    wait_edge_ready(&edge_b, "edge B").await;
    assert_eq!(gripmesh_connections(&nodes[0]), 1, "edge A on node 0");
    assert_eq!(gripmesh_connections(&nodes[1]), 1, "edge B on node 1");

    let channel = "fault-nats";
    let mut clients = vec![
        open_test_stream(edge_a.edge_addr(), channel, "a").await,
        open_test_stream(edge_b.edge_addr(), channel, "b").await,
    ];
    warm_up(control.publish_addr(), channel, &mut clients).await;
    let memory = MemoryWatch::new(&[
        ("control", &control.gm),
        ("edge-a", &edge_a),
        ("edge-b", &edge_b),
    ]);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drained_tx, drained_rx) = watch::channel(false);
    let target: Target = Arc::new(std::sync::Mutex::new(control.publish_addr()));
    let publisher = spawn_publisher(target, channel, Duration::from_millis(20), stop_rx.clone());
    let mut readers = Vec::new();
    for c in clients {
        readers.push(spawn_reader(c, drained_rx.clone()));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| nodes[0].kill());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted_at = Instant::now();
    tokio::task::block_in_place(|| nodes[0].restart());
    let nodes_ref = &nodes;
    wait_until(WAIT, "node 0 back in the cluster", || async move {
        nodes_ref[0].route_count() == 2
    })
    .await;
    let rejoined = restarted_at.elapsed();
    // Steady state again: everything published from now on must arrive everywhere.
    wait_ready(
        edge_a.admin_addr(),
        READY_WAIT,
        "edge A after the node restart",
    )
    .await;
    let settled_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let attempts = publisher.await.expect("publisher task");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drained_tx.send_replace(true);
    let mut got = Vec::new();
    for r in readers {
        got.push(r.await.expect("reader task"));
    }

    let a = analyse(&attempts, &got[0]);
    let b = analyse(&attempts, &got[1]);
    let resumed_a = resumed_after(&attempts, &got[0], killed_at);
    let refused = attempts.iter().filter(|x| x.status != Some(200)).count();
    let reconnects_a = metric_value(edge_a.admin_addr(), "gripmesh_bus_reconnects_total")
        .await
        .unwrap_or(0.0);
    let reconnects_b = metric_value(edge_b.admin_addr(), "gripmesh_bus_reconnects_total")
        .await
        .unwrap_or(0.0);
    let mem = memory.check();
    eprintln!(
        "FAULT: nats-node-kill: published {} ({} refused); edge A (node 0, killed {}s, rejoined \
         {}ms after restart, {reconnects_a} bus reconnects): {a}, delivery resumed {}ms after \
         the kill; edge B (node 1, {reconnects_b} reconnects): {b}; rss {mem}",
        attempts.len(),
        refused,
        (restarted_at - killed_at).as_secs(),
        rejoined.as_millis(),
        resumed_a.map_or(-1, |d| d.as_millis() as i64),
    );
    assert!(
        reconnects_a >= 1.0,
        "edge A lost its NATS node and reconnected"
    );

    for (name, d, r) in [("edge A", &a, &got[0]), ("edge B", &b, &got[1])] {
        assert_eq!(d.out_of_order, 0, "{name}: order kept: {d}");
        assert!(
            r.end.is_none(),
            "{name}: the client's stream ended: {:?}",
            r.end
        );
        let after: Vec<u64> = attempts
            .iter()
            .filter(|x| x.at > settled_at && x.status == Some(200))
            .map(|x| x.seq)
            .collect();
        let missing: Vec<&u64> = after
            .iter()
            .filter(|s| !r.lines.iter().any(|(seq, _)| seq == *s))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: lost after the cluster settled: {missing:?} ({d})"
        );
    }
    assert!(
        b.lost * 50 <= b.accepted,
        "edge B (its node stayed up) lost more than 2%: {b}"
    );
    assert!(
        a.received * 2 >= a.accepted,
        "edge A received less than half: {a}"
    );
    let resumed_a = resumed_a.expect("edge A received again after the kill");
    assert!(
        resumed_a < Duration::from_secs(10),
        "edge A: delivery resumed only {resumed_a:?} after the kill"
    );
    assert!(
        refused * 50 <= attempts.len(),
        "control (on a surviving node) refused publishes: {refused} of {}",
        attempts.len()
    );
    assert_healthy(&mut control.gm, "control").await;
    assert_healthy(&mut edge_a, "edge A").await;
    assert_healthy(&mut edge_b, "edge B").await;
}

// ---------------------------------------------------------------------------------------------
// 2. Control killed and restarted
// ---------------------------------------------------------------------------------------------

/// Control is SIGKILLed under steady publishing: publishes fail fast (connection refused) while
/// it is down, edges keep their clients and keep serving new ones; a restarted control (the
/// table it serves comes from JetStream) accepts publishes that reach the old clients, and a
/// route `PUT` after the restart reaches every edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_control_killed_and_restarted() {
    let nats = NatsServer::start();
    let url = nats.url();
    let table = "old.example test\n";
    let (control, edges) = tokio::join!(
        ControlNode::start_api(BIN, &url, Some(table), &[]),
        start_edges(BIN, &url, 2, &[])
    );
    let mut control = control;
    let mut edges = edges;
    wait_ready(control.admin_addr(), WAIT, "control").await;
    for (i, e) in edges.iter().enumerate() {
        wait_edge_ready(e, &format!("edge {i}")).await;
    }
    let channel = "fault-control";
    let mut clients = Vec::new();
    for e in &edges {
        clients.push(open_test_stream(e.edge_addr(), channel, "old.example").await);
    }
    warm_up(control.publish_addr(), channel, &mut clients).await;
    let memory = MemoryWatch::new(&[("edge-0", &edges[0]), ("edge-1", &edges[1])]);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drained_tx, drained_rx) = watch::channel(false);
    let target: Target = Arc::new(std::sync::Mutex::new(control.publish_addr()));
    let publisher = spawn_publisher(
        target.clone(),
        channel,
        Duration::from_millis(20),
        stop_rx.clone(),
    );
    let readers: Vec<_> = clients
        .into_iter()
        .map(|c| spawn_reader(c, drained_rx.clone()))
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled_at = Instant::now();
    control.gm.signal(Signal::Kill);
    let status = control.gm.wait_exit(WAIT).await;
    assert!(!status.success(), "SIGKILLed control: {status:?}");
    // Reaped: from here on nothing listens on its port.
    let killed_at = Instant::now();

    // While control is down the edges keep working: healthy, ready, and serving new clients.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (i, e) in edges.iter_mut().enumerate() {
        assert_healthy(e, &format!("edge {i} with control down")).await;
        assert_eq!(
            readyz_status(e.admin_addr()).await,
            Some(200),
            "edge {i} stays ready with control down (it has a route table)"
        );
        let late = open_test_stream(e.edge_addr(), "late", "old.example").await;
        drop(late);
    }

    let restarted_at = Instant::now();
    // The table lives in JetStream: the restarted control needs no routes file.
    let restarted = Gripmesh::start(
        BIN,
        &[
            "control",
            "--nats",
            &url,
            "--publish-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ],
        &[],
    )
    .await;
    wait_ready(restarted.admin_addr(), WAIT, "restarted control").await;
    let ready_after = restarted_at.elapsed();
    *target.lock().unwrap_or_else(|p| p.into_inner()) = restarted.publish_addr();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let attempts = publisher.await.expect("publisher task");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drained_tx.send_replace(true);
    let mut got = Vec::new();
    for r in readers {
        got.push(r.await.expect("reader task"));
    }

    // Publishes while control was down failed, and failed fast.
    let down: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.at > killed_at && a.at < restarted_at)
        .collect();
    assert!(!down.is_empty(), "the publisher ran while control was down");
    let accepted_while_down = down.iter().filter(|a| a.status == Some(200)).count();
    assert_eq!(
        accepted_while_down, 0,
        "publishes accepted with control down"
    );
    let slowest_failure = down.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(
        slowest_failure < Duration::from_secs(2),
        "a publish to a dead control took {slowest_failure:?} to fail"
    );
    // Before the kill and after the restart, everything accepted arrived, in order — except
    // that a publish control acknowledged in the last moments before the SIGKILL may still have
    // been in its NATS client's write buffer (at-most-once: "200 Published" means handed to the
    // bus client, not flushed to the server).
    let kill_window = (signalled_at - Duration::from_millis(250))..killed_at;
    let deliveries: Vec<Delivery> = got.iter().map(|g| analyse(&attempts, g)).collect();
    let mut lost_in_window = 0;
    for (i, (d, g)) in deliveries.iter().zip(&got).enumerate() {
        assert!(
            g.end.is_none(),
            "edge {i}: client stream ended: {:?}",
            g.end
        );
        for &seq in &d.missing {
            let Some(a) = attempts.iter().find(|a| a.seq == seq) else {
                continue;
            };
            assert!(
                kill_window.contains(&a.at),
                "edge {i}: publish {seq}, accepted {:?} before the kill, was lost ({d})",
                signalled_at.saturating_duration_since(a.at)
            );
            lost_in_window += 1;
        }
        assert_eq!(d.out_of_order, 0, "edge {i}: {d}");
    }
    let first_ok_after = attempts
        .iter()
        .find(|a| a.at > restarted_at && a.status == Some(200))
        .map(|a| a.at - restarted_at)
        .expect("publishes succeed after the restart");

    // A route change made on the restarted control reaches both edges.
    let put_at = Instant::now();
    let resp = put_routes(
        restarted.publish_addr(),
        "old.example test\nnew.example test\n",
    )
    .await;
    assert_eq!(resp.status, 200, "PUT /routes: {}", resp.text());
    for (i, e) in edges.iter().enumerate() {
        let addr = e.edge_addr();
        wait_until(
            WAIT,
            &format!("edge {i} routes new.example"),
            || async move {
                try_http_request(addr, "GET", "/", &[("Host", "new.example")], Bytes::new())
                    .await
                    .is_ok_and(|r| r.status == 200 && r.text() == HELLO)
            },
        )
        .await;
    }
    let propagated = put_at.elapsed();
    let mem = memory.check();
    eprintln!(
        "FAULT: control-kill: published {} ({} while down, all failed, slowest failure {}ms); \
         restarted control ready {}ms after start, first accepted publish {}ms after start; \
         edge 0: {}; edge 1: {} (lost: acknowledged <250ms before the SIGKILL: \
         {lost_in_window}); route PUT after restart reached both edges in {}ms; rss {mem}",
        attempts.len(),
        down.len(),
        slowest_failure.as_millis(),
        ready_after.as_millis(),
        first_ok_after.as_millis(),
        deliveries[0],
        deliveries[1],
        propagated.as_millis(),
    );
    let mut restarted = restarted;
    assert_healthy(&mut restarted, "restarted control").await;
    for (i, e) in edges.iter_mut().enumerate() {
        assert_healthy(e, &format!("edge {i}")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. An edge SIGKILLed mid-fan-out
// ---------------------------------------------------------------------------------------------

/// Three edges with two stream clients each, a publisher at 100/s; one edge is SIGKILLed while
/// messages fan out. Its clients see a broken stream; the clients of the other edges receive
/// every accepted message, in order, and control keeps accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_edge_killed_mid_fanout() {
    let nats = NatsServer::start();
    let url = nats.url();
    let (control, edges) = tokio::join!(
        ControlNode::start(BIN, &url, "* test\n", &[]),
        start_edges(BIN, &url, 3, &[])
    );
    let mut control = control;
    let mut edges = edges;
    wait_ready(control.admin_addr(), WAIT, "control").await;
    for (i, e) in edges.iter().enumerate() {
        wait_edge_ready(e, &format!("edge {i}")).await;
    }
    let channel = "fault-edge";
    let mut clients = Vec::new();
    for e in &edges {
        for _ in 0..2 {
            clients.push(open_test_stream(e.edge_addr(), channel, "h").await);
        }
    }
    warm_up(control.publish_addr(), channel, &mut clients).await;
    let memory = MemoryWatch::new(&[
        ("control", &control.gm),
        ("edge-0", &edges[0]),
        ("edge-1", &edges[1]),
    ]);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drained_tx, drained_rx) = watch::channel(false);
    let target: Target = Arc::new(std::sync::Mutex::new(control.publish_addr()));
    let publisher = spawn_publisher(target, channel, Duration::from_millis(10), stop_rx.clone());
    let readers: Vec<_> = clients
        .into_iter()
        .map(|c| spawn_reader(c, drained_rx.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    edges[2].signal(Signal::Kill);
    let status = edges[2].wait_exit(WAIT).await;
    assert!(!status.success(), "SIGKILLed edge: {status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let attempts = publisher.await.expect("publisher task");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drained_tx.send_replace(true);
    let mut got = Vec::new();
    for r in readers {
        got.push(r.await.expect("reader task"));
    }

    let rejected = attempts.iter().filter(|a| a.status != Some(200)).count();
    assert_eq!(rejected, 0, "control refused publishes after an edge died");
    let after_kill = attempts.iter().filter(|a| a.at > killed_at).count();
    let mut report = Vec::new();
    for (i, g) in got.iter().enumerate() {
        let d = analyse(&attempts, g);
        let edge = i / 2;
        if edge == 2 {
            assert!(
                matches!(g.end, Some(StreamEnd::Error(_))),
                "client {i} of the killed edge: stream should break, got {:?} ({d})",
                g.end
            );
            report.push(format!(
                "killed edge client {i}: {} received, {:?}",
                d.received, g.end
            ));
        } else {
            assert!(
                g.end.is_none(),
                "client {i} (edge {edge}): stream ended: {:?}",
                g.end
            );
            assert_eq!(d.lost, 0, "client {i} (edge {edge}): {d}");
            assert_eq!(d.out_of_order, 0, "client {i} (edge {edge}): {d}");
            report.push(format!("edge {edge} client {i}: {d}"));
        }
    }
    let mem = memory.check();
    eprintln!(
        "FAULT: edge-kill: published {} ({} after the kill, 0 refused); {}; rss {mem}",
        attempts.len(),
        after_kill,
        report.join("; ")
    );
    assert_healthy(&mut control.gm, "control").await;
    assert_healthy(&mut edges[0], "edge 0").await;
    assert_healthy(&mut edges[1], "edge 1").await;
}

// ---------------------------------------------------------------------------------------------
// 4. Misbehaving origins
// ---------------------------------------------------------------------------------------------

/// What a broken origin does with each connection.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Reads the request and never answers (holds the socket open).
    Hang,
    /// Reads the request head and resets the connection (RST).
    Reset,
}

/// A raw TCP origin that misbehaves on every connection; stops when dropped.
struct BrokenOrigin {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl BrokenOrigin {
    async fn start(how: Misbehaviour) -> BrokenOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(misbehave(stream, how));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        BrokenOrigin { addr, task }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for BrokenOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}

async fn misbehave(mut stream: TcpStream, how: Misbehaviour) {
    read_head(&mut stream).await;
    match how {
        Misbehaviour::Hang => {
            // Keep reading (and discarding) until the edge gives up and closes.
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        Misbehaviour::Reset => {
            // A zero linger makes the close an immediate RST; it cannot block (the reason the
            // method is deprecated), since nothing is left to flush.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    }
}

/// Outcome of one request to a broken origin.
#[derive(Debug)]
struct Outcome {
    path: &'static str,
    result: Result<(u16, String), String>,
    took: Duration,
}

/// Four broken origins (hang, reset, garbage bytes, a stream hold whose chunked body is cut
/// mid-stream) behind one edge with `--origin-response-timeout 2`, hit three times each, all
/// at once, while healthy clients keep using the same edge. Each broken request gets its 502
/// (the truncated stream hold: a broken stream); nothing else is affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_misbehaving_origins() {
    let hang = BrokenOrigin::start(Misbehaviour::Hang).await;
    let reset = BrokenOrigin::start(Misbehaviour::Reset).await;
    let garbage = RawOrigin::start(Bytes::from_static(
        b"\x00\xff\xfeHTTP/9 ???\r\n\x07\x08 not a response at all \x1b[0m\r\n\r\n\xde\xad",
    ))
    .await;
    let truncated = RawOrigin::start(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\n\
          Grip-Channel: trunc\r\nTransfer-Encoding: chunked\r\n\r\n\
          6\r\nhello\n\r\n40\r\npartial-chunk",
    ))
    .await;
    let standard = Origin::start(standard_origin).await;
    let routes = format!(
        "*,path_beg=/hang {}\n*,path_beg=/reset {}\n*,path_beg=/garbage {}\n\
         *,path_beg=/trunc {}\n* {}\n",
        hang.target(),
        reset.target(),
        garbage.target(),
        truncated.target(),
        standard.target()
    );
    let mut env = start(&routes, &["--origin-response-timeout", "2"]).await;
    let mut survivor = Survivor::open(&env).await;
    let memory = MemoryWatch::new(&[("standalone", &env.gm)]);
    let edge = env.edge();

    // Healthy traffic on the same edge for the whole fault: plain requests and publishes to a
    // held stream.
    let healthy_stop = Arc::new(AtomicBool::new(false));
    let healthy = tokio::spawn({
        let stop = healthy_stop.clone();
        async move {
            let (mut ok, mut bad, mut slowest) = (0u32, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                match try_http_request(edge, "GET", "/plain", &[], Bytes::new()).await {
                    Ok(r) if r.status == 200 && r.text() == "plain\n" => ok += 1,
                    other => bad.push(format!("{other:?}")),
                }
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, bad, slowest)
        }
    });

    let mut broken = JoinSet::new();
    for _ in 0..3 {
        for path in ["/hang", "/reset", "/garbage"] {
            broken.spawn(async move {
                let t = Instant::now();
                let result = try_http_request(edge, "GET", path, &[], Bytes::new())
                    .await
                    .map(|r| (r.status, r.text()));
                Outcome {
                    path,
                    result,
                    took: t.elapsed(),
                }
            });
        }
        broken.spawn(async move {
            let t = Instant::now();
            let mut s = StreamClient::open(edge, "/trunc", &[]).await;
            let end = s.wait_end(Duration::from_secs(10)).await;
            let result = match end {
                StreamEnd::Clean => Ok((s.status, s.received_text())),
                other => Err(format!(
                    "status {}, received {:?}, end {other:?}",
                    s.status,
                    s.received_text()
                )),
            };
            Outcome {
                path: "/trunc",
                result,
                took: t.elapsed(),
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(o) = broken.join_next().await {
        outcomes.push(o.expect("request task"));
    }
    survivor.check(&mut env, "misbehaving origins").await;
    healthy_stop.store(true, Ordering::SeqCst);
    let (healthy_ok, healthy_bad, healthy_slowest) = healthy.await.expect("healthy task");

    let mut summary = Vec::new();
    for path in ["/hang", "/reset", "/garbage", "/trunc"] {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.path == path).collect();
        let slowest = of.iter().map(|o| o.took).max().unwrap_or_default();
        for o in &of {
            match path {
                "/trunc" => {
                    // The origin's stream broke mid-body: the client must not see a clean,
                    // complete stream (that would pass the truncation off as a normal end), and
                    // must not be left hanging.
                    let res = &o.result;
                    assert!(
                        match res {
                            Ok((502, _)) => true,
                            Ok(_) => false,
                            Err(e) => !e.contains("Timeout"),
                        },
                        "/trunc: {res:?}"
                    );
                }
                _ => assert_eq!(
                    o.result,
                    Ok((502, "Error while proxying to origin.\n".to_owned())),
                    "{path} after {:?}",
                    o.took
                ),
            }
        }
        if path == "/hang" {
            assert!(
                of.iter().all(|o| o.took >= Duration::from_millis(1500)),
                "/hang answered before the 2 s origin timeout: {of:?}"
            );
            assert!(slowest < Duration::from_secs(10), "/hang took {slowest:?}");
        }
        let first = of.first().map(|o| match &o.result {
            Ok((s, _)) => format!("{s}"),
            Err(e) => e.chars().take(120).collect(),
        });
        summary.push(format!(
            "{path} ×{}: {} in ≤{}ms",
            of.len(),
            first.unwrap_or_default(),
            slowest.as_millis()
        ));
    }
    assert!(
        healthy_bad.is_empty(),
        "healthy requests failed: {healthy_bad:?}"
    );
    assert!(healthy_ok > 0, "no healthy request completed");
    assert!(
        healthy_slowest < Duration::from_secs(5),
        "a healthy request took {healthy_slowest:?} while origins misbehaved"
    );
    let errors = metric_value(
        env.admin(),
        r#"gripmesh_edge_origin_requests_total{status_class="error"}"#,
    )
    .await
    .unwrap_or(0.0);
    let mem = memory.check();
    eprintln!(
        "FAULT: bad-origins: {}; healthy /plain {healthy_ok} ok, 0 failed, slowest {}ms; \
         survivor stream kept receiving; origin errors counted {errors}; rss {mem}",
        summary.join("; "),
        healthy_slowest.as_millis()
    );
    assert_healthy(&mut env.gm, "standalone").await;
}

// ---------------------------------------------------------------------------------------------
// 5. A flapping API gateway behind an `authz` route
// ---------------------------------------------------------------------------------------------

/// A forward-auth gateway on a fixed port that is up for `period`, then down (port closed,
/// open connections cut) for `period`, until stopped. While up it allows keys starting with
/// `good` (200 + `X-Developer-App`) and denies the rest (401).
struct FlappingGateway {
    addr: SocketAddr,
    flapping: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl FlappingGateway {
    async fn start(period: Duration) -> FlappingGateway {
        let first = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = first.local_addr().expect("local addr");
        let flapping = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let flapping = flapping.clone();
            async move {
                let mut listener = Some(first);
                loop {
                    let listener_now = match listener.take() {
                        Some(l) => l,
                        None => match TcpListener::bind(addr).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        },
                    };
                    // Up: serve until the period is over (forever once flapping stops).
                    let mut conns = JoinSet::new();
                    let up_until = Instant::now() + period;
                    loop {
                        let flapping_now = flapping.load(Ordering::SeqCst);
                        tokio::select! {
                            accepted = listener_now.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    conns.spawn(answer_gateway(stream));
                                }
                            }
                            _ = tokio::time::sleep_until(up_until), if flapping_now => break,
                            _ = tokio::time::sleep(Duration::from_millis(50)), if !flapping_now => {}
                        }
                    }
                    // Down: refuse connections and cut the ones in progress.
                    conns.abort_all();
                    drop(listener_now);
                    tokio::time::sleep(period).await;
                }
            }
        });
        FlappingGateway {
            addr,
            flapping,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stays up from the next up phase on.
    fn stabilize(&self) {
        self.flapping.store(false, Ordering::SeqCst);
    }
}

impl Drop for FlappingGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One forward-auth answer per connection (`Connection: close`).
async fn answer_gateway(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let key = testkit::query_param(target, "apikey").unwrap_or_default();
    let reply = if key.starts_with("good") {
        "HTTP/1.1 200 OK\r\nX-Developer-App: flappy\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
            .to_owned()
    } else {
        let body = r#"{"fault":"Invalid ApiKey"}"#;
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The gateway flaps (up/down every 500 ms) while clients with good keys (a fresh key per
/// attempt, so nothing is served from the decision cache) hit an `authz` route: every check
/// ends quickly in an allow or a fail-closed 503, never a hang or another status; the process
/// stays up; once the gateway is stable, new clients with a good key get in (after the circuit
/// breaker's cooldown at worst) and a bad key is refused with the gateway's 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_authz_gateway_flaps() {
    let gw = FlappingGateway::start(Duration::from_millis(500)).await;
    let mut env = start(
        "*,authz test\n",
        &["--authz-gateway", &gw.url(), "--gateway-timeout", "1"],
    )
    .await;
    let memory = MemoryWatch::new(&[("standalone", &env.gm)]);
    let edge = env.edge();

    let mut workers = JoinSet::new();
    for w in 0..4 {
        workers.spawn(async move {
            let mut results = Vec::new();
            let until = Instant::now() + Duration::from_secs(4);
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let path = format!("/?apikey=good-{w}-{n}");
                let t = Instant::now();
                let r = try_http_request(edge, "GET", &path, &[], Bytes::new())
                    .await
                    .map(|r| (r.status, r.text()));
                results.push((r, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            results
        });
    }
    let mut results = Vec::new();
    while let Some(r) = workers.join_next().await {
        results.extend(r.expect("worker"));
    }
    let allowed = results
        .iter()
        .filter(|(r, _)| matches!(r, Ok((200, body)) if body == HELLO))
        .count();
    let refused = results
        .iter()
        .filter(|(r, _)| matches!(r, Ok((503, body)) if body == "Authorization unavailable.\n"))
        .count();
    let other: Vec<_> = results
        .iter()
        .filter(|(r, _)| {
            !matches!(r, Ok((200, body)) if body == HELLO)
                && !matches!(r, Ok((503, body)) if body == "Authorization unavailable.\n")
        })
        .collect();
    let slowest = results.iter().map(|(_, t)| *t).max().unwrap_or_default();
    assert!(
        other.is_empty(),
        "answers other than allow / 503: {other:?}"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a check took {slowest:?} (gateway timeout 1 s)"
    );
    assert_healthy(&mut env.gm, "standalone while the gateway flaps").await;

    gw.stabilize();
    let stable_at = Instant::now();
    let mut attempt = 0u32;
    wait_until(
        Duration::from_secs(20),
        "a good key gets in once the gateway is stable",
        || {
            attempt += 1;
            let path = format!("/?apikey=good-after-{attempt}");
            async move {
                try_http_request(edge, "GET", &path, &[], Bytes::new())
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
        },
    )
    .await;
    let recovered = stable_at.elapsed();
    let denied = try_http_request(edge, "GET", "/?apikey=bad", &[], Bytes::new())
        .await
        .expect("request with a bad key");
    assert_eq!(denied.status, 401, "bad key: {}", denied.text());
    let errors = metric_value(
        env.admin(),
        r#"gripmesh_authz_checks_total{decision="error"}"#,
    )
    .await
    .unwrap_or(0.0);
    let mem = memory.check();
    eprintln!(
        "FAULT: gateway-flap: {} checks in 4s while flapping: {allowed} allowed, {refused} \
         fail-closed 503, 0 other, slowest {}ms; {errors} error decisions counted; good key got \
         in {}ms after the gateway stabilised; bad key 401; rss {mem}",
        results.len(),
        slowest.as_millis(),
        recovered.as_millis()
    );
    assert_healthy(&mut env.gm, "standalone").await;
}

// ---------------------------------------------------------------------------------------------
// 6. The routes file replaced by garbage, a binary blob, an empty file, or deleted
// ---------------------------------------------------------------------------------------------

/// `GET /` with a Host header: the status.
async fn status_for_host(env: &Env, host: &str) -> u16 {
    try_http_request(env.edge(), "GET", "/", &[("Host", host)], Bytes::new())
        .await
        .map_or(0, |r| r.status)
}

/// The routes file of a running standalone is overwritten with garbage text and a binary blob,
/// then deleted: the old table keeps serving throughout (and the held stream keeps receiving),
/// rejected files are logged and counted (a deleted file is logged, not counted); a good file
/// afterwards is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_routes_file_replaced_by_garbage() {
    let standard = Origin::start(standard_origin).await;
    let good = format!("a.example test\n* {}\n", standard.target());
    let mut env = start(&good, &["--routes-poll-interval", "1"]).await;
    let mut survivor = Survivor::open(&env).await;
    let memory = MemoryWatch::new(&[("standalone", &env.gm)]);
    let errors_query = "gripmesh_edge_routes_reload_errors_total";
    assert_eq!(status_for_host(&env, "a.example").await, 200);
    assert_eq!(
        status_for_host(&env, "b.example").await,
        404,
        "* ⇒ standard origin"
    );

    let mut binary: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    binary.extend_from_slice(b"\xff\xfe\x00");
    // The empty file has its own test: `fault_routes_file_emptied_keeps_old_table`.
    let cases: [(&str, Option<Vec<u8>>); 3] = [
        (
            "garbage text",
            Some(b"this is not a routes file\n*,bogus_prop=1 nowhere\n".to_vec()),
        ),
        ("binary blob", Some(binary)),
        ("deleted", None),
    ];
    let mut report = Vec::new();
    for (name, content) in cases {
        let before = metric_value(env.admin(), errors_query).await.unwrap_or(0.0);
        match &content {
            Some(bytes) => std::fs::write(&env.routes_file, bytes).expect("write routes"),
            None => std::fs::remove_file(&env.routes_file).expect("delete routes"),
        }
        // The watcher polls every second; allow for a loaded machine.
        let changed_at = Instant::now();
        let counted = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let now = metric_value(env.admin(), errors_query).await.unwrap_or(0.0);
                if now > before {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .ok();
        if counted.is_none() {
            // Not counted (yet): wait out the poll so the serving check below sees the result.
            tokio::time::sleep(Duration::from_millis(
                10_000u64.saturating_sub(changed_at.elapsed().as_millis() as u64),
            ))
            .await;
        }
        let a = status_for_host(&env, "a.example").await;
        let b = status_for_host(&env, "b.example").await;
        report.push(format!(
            "{name}: {} (a.example {a}, b.example {b})",
            match counted {
                Some(n) => format!("rejected, counted ({n})"),
                None => "not counted".to_owned(),
            }
        ));
        assert_eq!((a, b), (200, 404), "{name}: the old table keeps serving");
        match name {
            "deleted" => assert!(
                env.gm.stderr_text().contains("unreadable"),
                "{name}: logged"
            ),
            _ => assert!(counted.is_some(), "{name}: rejection counted"),
        }
        survivor.check(&mut env, name).await;
    }
    let rejected_logs = env.gm.stderr_text().matches("routes file rejected").count();
    assert!(rejected_logs >= 2, "rejections logged: {rejected_logs}");

    // A good file afterwards is picked up.
    let fixed_at = Instant::now();
    std::fs::write(
        &env.routes_file,
        format!("a.example test\nb.example test\n* {}\n", standard.target()),
    )
    .expect("write routes");
    let env_ref = &env;
    wait_until(WAIT, "the good routes file is picked up", || async move {
        status_for_host(env_ref, "b.example").await == 200
    })
    .await;
    let picked_up = fixed_at.elapsed();
    survivor.check(&mut env, "good file").await;
    let mem = memory.check();
    eprintln!(
        "FAULT: routes-file: {}; {rejected_logs} rejections logged; good file picked up in {}ms; \
         survivor stream kept receiving; rss {mem}",
        report.join("; "),
        picked_up.as_millis()
    );
    assert_healthy(&mut env.gm, "standalone").await;
}

/// An emptied routes file (a truncate-then-write caught by the 1 s poll, a bad ConfigMap) should
/// be treated like a broken one: the old table keeps serving, the rejection is logged and
/// counted; a deleted file should be counted too.
///
/// Today both reload paths (`gripmesh::tiers::watch_store_file`, `edge::routes_file::watch`)
/// accept an empty file as a valid table with no routes, so every request gets `502 No route`
/// until the file is fixed; and a deleted file is only logged. Un-ignore once the reload paths
/// refuse a table without routes and count unreadable files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_routes_file_emptied_keeps_old_table() {
    let mut env = start("a.example test\n", &["--routes-poll-interval", "1"]).await;
    let errors_query = "gripmesh_edge_routes_reload_errors_total";
    assert_eq!(status_for_host(&env, "a.example").await, 200);
    for (name, content) in [
        ("empty file", Some("")),
        ("blank lines", Some("\n \n# c\n")),
        ("deleted", None),
    ] {
        let before = metric_value(env.admin(), errors_query).await.unwrap_or(0.0);
        match content {
            Some(text) => std::fs::write(&env.routes_file, text).expect("write routes"),
            None => std::fs::remove_file(&env.routes_file).expect("delete routes"),
        }
        wait_metric(
            env.admin(),
            errors_query,
            WAIT,
            &format!("{name}: counted"),
            |v| v > before,
        )
        .await;
        assert_eq!(
            status_for_host(&env, "a.example").await,
            200,
            "{name}: the old table keeps serving"
        );
    }
    assert_healthy(&mut env.gm, "standalone").await;
}
