//! Slow consumers: a client that stops reading while ~25 MB are published to its
//! channel is cut off once its send queue (`--send-queue-bytes 1048576`) overflows, counted in
//! `gripmesh_edge_messages_dropped_total{reason="slow_consumer"}`; a fast client on the same
//! channel receives every byte in order; the edge's memory stays bounded.
//!
//! The publisher keeps at most a few messages ahead of the fast client, so the fast client can
//! never overflow its own queue however the machine schedules the test; the slow client falls
//! behind by everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use testkit::ws::WsConn;
use testkit::{StreamClient, metric_value, publish, wait_metric, wait_metric_at_least};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::common::{Env, WAIT, start};

/// Messages published.
const MESSAGES: usize = 250;
/// Bytes per message (250 × 100 KB ≈ 25 MB).
const MESSAGE_SIZE: usize = 100_000;
/// How far the publisher may run ahead of the fast client (well under the 1 MiB queue).
const WINDOW: usize = 4;
/// The per-connection queue bound under test.
const QUEUE_BYTES: &str = "1048576";
/// RSS growth allowed during the flood.
const RSS_LIMIT: u64 = 100 * 1024 * 1024;
const DROPPED: &str = "gripmesh_edge_messages_dropped_total{reason=\"slow_consumer\"}";

/// Message `i`: a numbered header, filler, a numbered trailer; exactly `MESSAGE_SIZE` bytes.
fn message(i: usize, newline: bool) -> String {
    let head = format!("msg-{i:05}:");
    let tail = if newline {
        format!("end-{i:05}\n")
    } else {
        format!("end-{i:05}")
    };
    let filler = MESSAGE_SIZE - head.len() - tail.len();
    let letter = char::from(b'a' + (i % 26) as u8);
    let mut s = String::with_capacity(MESSAGE_SIZE);
    s.push_str(&head);
    s.extend(std::iter::repeat_n(letter, filler));
    s.push_str(&tail);
    s
}

/// The process' resident set size in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples the RSS every 10 ms until stopped; keeps the peak.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        RssSampler { peak, stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A raw TCP client with a small receive buffer, so the server's writes back up quickly.
async fn slow_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

/// Reads from `tcp` until `needle` has arrived; returns everything read.
async fn read_until(tcp: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{:?} not received; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&buf)
                )
            })
            .expect("read");
        assert!(n > 0, "EOF before {:?}", String::from_utf8_lossy(needle));
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// Reads everything left until EOF or reset (or `timeout`); says how it ended.
async fn read_rest(tcp: &mut TcpStream, timeout: Duration) -> (Vec<u8>, String) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return (buf, "still open".into()),
            Ok(Ok(0)) => return (buf, "EOF".into()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return (buf, format!("error: {e}")),
        }
    }
}

/// The sequence numbers of the `msg-NNNNN:` headers in `data`, in order.
fn sequence_numbers(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 10 <= data.len() {
        if &data[i..i + 4] == b"msg-"
            && data[i + 9] == b':'
            && let Some(n) = std::str::from_utf8(&data[i + 4..i + 9])
                .ok()
                .and_then(|s| s.parse().ok())
        {
            out.push(n);
            i += 10;
            continue;
        }
        i += 1;
    }
    out
}

/// Publishes the `MESSAGES` items produced by `item`, never more than `WINDOW` ahead of
/// `progress` (messages the fast client has fully received).
async fn flood(env: &Env, progress: &AtomicUsize, item: impl Fn(usize) -> serde_json::Value) {
    let started = Instant::now();
    for i in 0..MESSAGES {
        let deadline = Instant::now() + WAIT;
        while i >= progress.load(Ordering::Acquire) + WINDOW {
            assert!(
                Instant::now() < deadline,
                "the fast client stalled at message {}",
                progress.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let resp = publish(env.publish(), &json!({ "items": [item(i)] })).await;
        assert_eq!(resp.status, 200, "publish {i}: {}", resp.text());
    }
    eprintln!(
        "MEASURE: published {MESSAGES} × {MESSAGE_SIZE} B in {:?}",
        started.elapsed()
    );
}

/// Waits until the gauge reaches `want` within `timeout`; returns whether it did.
async fn gauge_reaches(admin: SocketAddr, query: &str, want: f64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if metric_value(admin, query).await.unwrap_or(0.0) == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HTTP stream: a client that stops reading is cut off (aborted without the terminating
/// chunk, after an in-order prefix of the messages), counted as `slow_consumer`; the fast
/// client gets all 25 MB in order; RSS growth stays under 100 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_consumer_is_cut_off_with_bounded_memory() {
    const GAUGE: &str = "gripmesh_edge_connections{transport=\"http-stream\"}";
    let env = start("* test\n", &["--send-queue-bytes", QUEUE_BYTES]).await;
    let admin = env.admin();

    let mut slow = slow_socket(env.edge()).await;
    slow.write_all(b"GET /stream?channel=flood HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .expect("send request");
    let head = read_until(&mut slow, b"[stream open on channel flood]\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );

    let mut fast = StreamClient::open(env.edge(), "/stream?channel=flood", &[]).await;
    assert_eq!(fast.status, 200);
    fast.read_until("]\n", WAIT).await;
    wait_metric(admin, GAUGE, WAIT, "== 2", |v| v == 2.0).await;
    assert_eq!(metric_value(admin, DROPPED).await.unwrap_or(0.0), 0.0);

    let progress = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let progress = progress.clone();
        async move {
            for i in 0..MESSAGES {
                let got = fast
                    .read_until(format!("end-{i:05}\n"), Duration::from_secs(20))
                    .await;
                assert!(
                    got.len() == MESSAGE_SIZE && got == message(i, true).as_bytes(),
                    "fast client: message {i} differs ({} bytes, starts {:?})",
                    got.len(),
                    String::from_utf8_lossy(&got[..got.len().min(16)])
                );
                progress.store(i + 1, Ordering::Release);
            }
            fast
        }
    });

    let pid = env.gm.pid();
    let before = rss_bytes(pid);
    let sampler = RssSampler::start(pid);
    flood(
        &env,
        &progress,
        |i| json!({"channel": "flood", "formats": {"http-stream": {"content": message(i, true)}}}),
    )
    .await;
    let mut fast = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fast client received everything")
        .expect("fast reader");
    let peak = sampler.finish().await;
    let after = rss_bytes(pid);
    eprintln!(
        "MEASURE: http-stream slow consumer, 25 MB flood: RSS before {:.1} MB, peak {:.1} MB, after {:.1} MB (growth {:.1} MB)",
        mb(before),
        mb(peak),
        mb(after),
        mb(peak.saturating_sub(before))
    );
    assert!(
        peak.saturating_sub(before) < RSS_LIMIT,
        "RSS grew by {:.1} MB during the flood",
        mb(peak.saturating_sub(before))
    );

    // The overflow is counted; the fast client is untouched.
    wait_metric_at_least(admin, DROPPED, 1.0, WAIT).await;
    assert!(fast.end().is_none(), "fast client ended: {:?}", fast.end());

    // Once it reads, it finds an in-order prefix of the messages and an aborted stream.
    let (rest, how) = read_rest(&mut slow, Duration::from_secs(20)).await;
    let mut all = head;
    all.extend_from_slice(&rest);
    assert_ne!(how, "still open", "the slow client was never cut off");
    assert!(
        !all.ends_with(b"\r\n0\r\n\r\n"),
        "the slow client's stream ended cleanly; an overflow must abort it"
    );
    let seen = sequence_numbers(&all);
    assert!(
        seen.len() < MESSAGES,
        "the slow client got all {} messages",
        seen.len()
    );
    assert!(
        seen.iter().enumerate().all(|(k, &n)| k == n),
        "the slow client's messages are not an in-order prefix: {seen:?}"
    );
    eprintln!(
        "MEASURE: http-stream slow consumer got {} of {MESSAGES} messages, then {how}",
        seen.len()
    );
    wait_metric(admin, GAUGE, WAIT, "== 1 (only the fast client)", |v| {
        v == 1.0
    })
    .await;

    // The fast client is still subscribed and served.
    testkit::publish_stream(env.publish(), "flood", "after-the-flood\n").await;
    fast.read_until("after-the-flood\n", WAIT).await;
}

/// A WebSocket upgrade request.
fn ws_upgrade(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Server-to-client frames in `data` (unmasked): `(opcode, payload)`; a truncated last frame
/// is left out.
fn frames(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let opcode = data[i] & 0x0f;
        let len7 = (data[i + 1] & 0x7f) as usize;
        let (len, header) = match len7 {
            126 if i + 4 <= data.len() => (
                usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]])),
                4,
            ),
            127 if i + 10 <= data.len() => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[i + 2..i + 10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => break,
            n => (n, 2),
        };
        if i + header + len > data.len() {
            break;
        }
        out.push((opcode, data[i + header..i + header + len].to_vec()));
        i += header + len;
    }
    out
}

/// WebSocket: a client that stops reading is cut off (close 1013 when it can still be told),
/// counted as `slow_consumer`; the fast client gets every message in order; RSS growth stays
/// under 100 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_websocket_consumer_is_cut_off_with_bounded_memory() {
    const GAUGE: &str = "gripmesh_edge_connections{transport=\"ws\"}";
    let env = start("* test\n", &["--send-queue-bytes", QUEUE_BYTES]).await;
    let admin = env.admin();

    let mut slow = slow_socket(env.edge()).await;
    slow.write_all(ws_upgrade("/ws?channel=wsflood").as_bytes())
        .await
        .expect("send upgrade");
    let head = read_until(&mut slow, b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let head_len = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    let early = head[head_len..].to_vec();

    let mut fast = WsConn::connect(env.edge(), "/ws?channel=wsflood", &[]).await;
    wait_metric(admin, GAUGE, WAIT, "== 2", |v| v == 2.0).await;
    assert_eq!(metric_value(admin, DROPPED).await.unwrap_or(0.0), 0.0);

    let progress = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let progress = progress.clone();
        async move {
            for i in 0..MESSAGES {
                let got = fast.expect_text(Duration::from_secs(20)).await;
                assert!(
                    got == message(i, false),
                    "fast WebSocket: message {i} differs ({} bytes, starts {:?})",
                    got.len(),
                    &got[..got.len().min(16)]
                );
                progress.store(i + 1, Ordering::Release);
            }
            fast
        }
    });

    let pid = env.gm.pid();
    let before = rss_bytes(pid);
    let sampler = RssSampler::start(pid);
    flood(&env, &progress, |i| {
        json!({"channel": "wsflood", "formats": {"ws-message": {"content": message(i, false)}}})
    })
    .await;
    let mut fast = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fast WebSocket received everything")
        .expect("fast reader");
    let peak = sampler.finish().await;
    let after = rss_bytes(pid);
    eprintln!(
        "MEASURE: websocket slow consumer, 25 MB flood: RSS before {:.1} MB, peak {:.1} MB, after {:.1} MB (growth {:.1} MB)",
        mb(before),
        mb(peak),
        mb(after),
        mb(peak.saturating_sub(before))
    );
    assert!(
        peak.saturating_sub(before) < RSS_LIMIT,
        "RSS grew by {:.1} MB during the flood",
        mb(peak.saturating_sub(before))
    );
    wait_metric_at_least(admin, DROPPED, 1.0, WAIT).await;

    let (rest, how) = read_rest(&mut slow, Duration::from_secs(20)).await;
    let mut all = early;
    all.extend_from_slice(&rest);
    assert_ne!(how, "still open", "the slow WebSocket was never cut off");
    let frames = frames(&all);
    let texts: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|(op, _)| *op == 0x1)
        .map(|(_, p)| p)
        .collect();
    assert!(
        texts.len() < MESSAGES,
        "the slow WebSocket got every message"
    );
    for (k, text) in texts.iter().enumerate() {
        assert!(
            text.as_slice() == message(k, false).as_bytes(),
            "slow WebSocket: message {k} is not the {k}th published (in-order prefix expected)"
        );
    }
    let close = frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .map(|(_, p)| p.clone());
    let close_code = close
        .as_ref()
        .filter(|p| p.len() >= 2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]));
    eprintln!(
        "MEASURE: websocket slow consumer got {} of {MESSAGES} messages, then close {close_code:?} and {how}",
        texts.len()
    );
    if let Some(code) = close_code {
        assert_eq!(code, 1013, "slow WebSocket close code");
    }
    wait_metric(admin, GAUGE, WAIT, "== 1 (only the fast client)", |v| {
        v == 1.0
    })
    .await;

    crate::ws_common::publish_ws_text(env.publish(), "wsflood", "after-the-flood").await;
    assert_eq!(fast.expect_text(WAIT).await, "after-the-flood");
}

/// Publishes `n` messages made by `item` as fast as the publish API takes them.
async fn burst(env: &Env, n: usize, item: impl Fn(usize) -> serde_json::Value) {
    for i in 0..n {
        let resp = publish(env.publish(), &json!({ "items": [item(i)] })).await;
        assert_eq!(resp.status, 200, "publish {i}: {}", resp.text());
    }
}

/// How long a consumer that stopped reading may keep its connection after its queue
/// overflowed.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// A stream client that stopped reading is disconnected once its queue overflows: the edge
/// lets go of the connection (held-connection gauge back to 0) without waiting for the client
/// to read again (docs/protocol.md, "Limits and bad input": "a consumer that can't keep up is disconnected"). Otherwise a client
/// that keeps its TCP window closed holds the connection, its connection slot and a full
/// socket send buffer forever.
#[tokio::test]
async fn slow_stream_consumer_is_released_without_reading_again() {
    const GAUGE: &str = "gripmesh_edge_connections{transport=\"http-stream\"}";
    let env = start("* test\n", &["--send-queue-bytes", QUEUE_BYTES]).await;
    let admin = env.admin();
    let mut slow = slow_socket(env.edge()).await;
    slow.write_all(b"GET /stream?channel=stuck HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .expect("send request");
    read_until(&mut slow, b"[stream open on channel stuck]\n").await;
    wait_metric(admin, GAUGE, WAIT, "== 1", |v| v == 1.0).await;
    burst(
        &env,
        100,
        |i| json!({"channel": "stuck", "formats": {"http-stream": {"content": message(i, true)}}}),
    )
    .await;
    wait_metric_at_least(admin, DROPPED, 1.0, WAIT).await;
    let overflowed = Instant::now();
    let released = gauge_reaches(admin, GAUGE, 0.0, RELEASE_WITHIN).await;
    let held_for = overflowed.elapsed();
    let subscriptions = metric_value(admin, "gripmesh_edge_subscriptions")
        .await
        .unwrap_or(0.0);
    // Whatever happened, a client that reads again sees an aborted stream.
    let (rest, how) = read_rest(&mut slow, Duration::from_secs(20)).await;
    assert!(
        !rest.ends_with(b"\r\n0\r\n\r\n"),
        "clean end after an overflow"
    );
    wait_metric(admin, GAUGE, WAIT, "== 0 once the client read", |v| {
        v == 0.0
    })
    .await;
    assert!(
        released,
        "the slow stream client was still held {held_for:?} after its queue overflowed while \
         it did not read (subscriptions {subscriptions}); it was let go only once it read \
         again ({how})"
    );
}

/// A WebSocket client whose queue overflows gets close 1013 (README: "a slow WebSocket client
/// gets close 1013") when it reads again, and is let go without having to read.
#[tokio::test]
async fn slow_websocket_consumer_gets_close_1013() {
    const GAUGE: &str = "gripmesh_edge_connections{transport=\"ws\"}";
    let env = start("* test\n", &["--send-queue-bytes", QUEUE_BYTES]).await;
    let admin = env.admin();
    let mut slow = slow_socket(env.edge()).await;
    slow.write_all(ws_upgrade("/ws?channel=wsstuck").as_bytes())
        .await
        .expect("send upgrade");
    let head = read_until(&mut slow, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let head_len = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    wait_metric(admin, GAUGE, WAIT, "== 1", |v| v == 1.0).await;
    burst(&env, 100, |i| {
        json!({"channel": "wsstuck", "formats": {"ws-message": {"content": message(i, false)}}})
    })
    .await;
    wait_metric_at_least(admin, DROPPED, 1.0, WAIT).await;
    let released = gauge_reaches(admin, GAUGE, 0.0, RELEASE_WITHIN).await;
    let (rest, how) = read_rest(&mut slow, Duration::from_secs(20)).await;
    let mut all = head[head_len..].to_vec();
    all.extend_from_slice(&rest);
    let frames = frames(&all);
    let texts = frames.iter().filter(|(op, _)| *op == 0x1).count();
    let close_code = frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .filter(|(_, p)| p.len() >= 2)
        .map(|(_, p)| u16::from_be_bytes([p[0], p[1]]));
    wait_metric(admin, GAUGE, WAIT, "== 0 once the client read", |v| {
        v == 0.0
    })
    .await;
    // A client whose socket buffer is full cannot be handed a close frame at all: it is let
    // go without reading (the socket dropped); if a frame got through, it is 1013.
    assert!(
        released && close_code.is_none_or(|c| c == 1013),
        "slow WebSocket: close code {close_code:?} after {texts} messages, then {how} (want \
         none or 1013); let go within {RELEASE_WITHIN:?} without reading: {released}"
    );
}
