//! The subscribing clients: WebSocket, SSE, HTTP stream and long-poll.
//!
//! Each client is one task: it connects (optionally from a chosen 127.0.0.x source address),
//! reports the connection, then reads until the run ends, decoding every payload it receives
//! and recording the publish→receive latency and a per-step delivery count.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::http1::{self, Body};
use crate::msg::{self, LineSplitter};
use crate::stats::{self, MAX_STEPS, Recorder};

/// How a client subscribes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// WebSocket (`ws-message` format).
    Ws,
    /// Server-sent events (`http-stream` format, `data:` lines).
    Sse,
    /// HTTP streaming (`http-stream` format, one line per message).
    Stream,
    /// Long-polling (`http-response` format), re-polling after every answer.
    Poll,
}

impl Transport {
    /// Lowercase name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Stream => "stream",
            Transport::Poll => "poll",
        }
    }
}

/// Connection state of a client slot (0 = not connected yet).
pub(crate) mod state {
    /// Subscribed and reading.
    pub(crate) const CONNECTED: u8 = 1;
    /// Could not connect.
    pub(crate) const FAILED: u8 = 2;
    /// Was connected, then lost.
    pub(crate) const CLOSED: u8 = 3;
}

/// Per-client counters.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Messages received, by the step that published them.
    pub received: [AtomicU64; MAX_STEPS],
    /// Messages that arrived with a sequence number not above the previous one.
    pub reordered: AtomicU64,
    /// One of [`state`].
    pub state: AtomicU8,
}

/// State shared by every client of a run.
pub(crate) struct Shared {
    /// Latencies.
    pub recorder: Recorder,
    /// One per client.
    pub slots: Vec<Slot>,
    /// Clients connected so far.
    pub connected: AtomicU64,
    /// Clients that failed to connect.
    pub failed: AtomicU64,
    /// Clients that were connected and then lost their connection.
    pub disconnected: AtomicU64,
    /// Messages received in total (progress display).
    pub delivered: AtomicU64,
    /// Connection setup times (µs).
    pub connect_latency: Mutex<Histogram<u64>>,
    /// Failure and disconnect reasons, counted.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// The first few out-of-order arrivals: `(client, previous seq, seq)`.
    pub reorder_samples: Mutex<Vec<(usize, u64, u64)>>,
}

impl Shared {
    /// State for `n` clients.
    pub(crate) fn new(n: usize) -> Shared {
        Shared {
            recorder: Recorder::default(),
            slots: (0..n).map(|_| Slot::default()).collect(),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            connect_latency: Mutex::new(stats::new_hist()),
            errors: Mutex::new(BTreeMap::new()),
            reorder_samples: Mutex::new(Vec::new()),
        }
    }

    fn error(&self, what: &str, e: &anyhow::Error) {
        let mut msg = group_key(&format!("{what}: {e:#}"));
        msg.truncate(120);
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(msg)
            .or_default() += 1;
    }
}

/// Groups error texts by kind: runs of digits and dots longer than 4 characters (addresses,
/// ports, os error numbers stay; status and close codes stay) become `N`.
fn group_key(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() > 4 {
            out.push('N');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in msg.chars() {
        if c.is_ascii_digit() || (c == '.' && !run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Where and how one client connects.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Index into [`Shared::slots`].
    pub idx: usize,
    /// Transport.
    pub transport: Transport,
    /// Edge address.
    pub addr: SocketAddr,
    /// `Host` header / authority.
    pub host: Arc<str>,
    /// Path and query, e.g. `/ws?channel=c0`.
    pub path: String,
    /// Source address to bind, if any.
    pub source: Option<IpAddr>,
    /// An extra request header line for HTTP transports, e.g. `Last-Event-ID: 41`.
    pub header: Option<Arc<str>>,
}

/// How long one connection attempt (TCP + handshake / response head) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.set_reuseaddr(true)?;
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let s = sock.connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// What a client does with each payload it reads (a WebSocket message, a stream line).
pub(crate) trait OnPayload {
    /// Takes one payload; true when the client has read all it wanted (the read loop ends).
    fn on_payload(&mut self, line: &[u8]) -> bool;
}

/// Decodes payloads for one client and records them.
struct Receiver<'a> {
    idx: usize,
    shared: &'a Shared,
    last_seq: Option<u64>,
}

impl OnPayload for Receiver<'_> {
    fn on_payload(&mut self, line: &[u8]) -> bool {
        let Some((seq, ts)) = msg::decode(line) else {
            return false;
        };
        let lat = msg::now_us().saturating_sub(ts);
        let step = msg::seq_step(seq).min(MAX_STEPS - 1);
        self.shared.recorder.record(self.idx, step, lat);
        let slot = &self.shared.slots[self.idx];
        slot.received[step].fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.last_seq.filter(|&l| seq <= l) {
            slot.reordered.fetch_add(1, Ordering::Relaxed);
            let mut samples = self
                .shared
                .reorder_samples
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if samples.len() < 5 {
                samples.push((self.idx, l, seq));
            }
        }
        self.last_seq = Some(seq);
        self.shared.delivered.fetch_add(1, Ordering::Relaxed);
        false
    }
}

fn request(plan: &Plan, accept: &str) -> String {
    let extra = plan
        .header
        .as_deref()
        .map(|h| format!("{h}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: gripmesh-loadtest\r\nAccept: {accept}\r\n{extra}\r\n",
        plan.path, plan.host
    )
}

/// Runs one client until its task is aborted. `permit` (connection concurrency) is released
/// once connected or failed.
pub(crate) async fn run(plan: Plan, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let slot = &shared.slots[plan.idx];
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect(&plan)).await;
    drop(permit);
    let conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            slot.state.store(state::FAILED, Ordering::Relaxed);
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.error("connect", &e);
            return;
        }
        Err(_) => {
            slot.state.store(state::FAILED, Ordering::Relaxed);
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.error("connect", &anyhow::anyhow!("timed out"));
            return;
        }
    };
    stats::record(
        &mut shared
            .connect_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
        started.elapsed().as_micros() as u64,
    );
    slot.state.store(state::CONNECTED, Ordering::Relaxed);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut rx = Receiver {
        idx: plan.idx,
        shared: &shared,
        last_seq: None,
    };
    let res = read(&plan, conn, &mut rx).await;
    slot.state.store(state::CLOSED, Ordering::Relaxed);
    shared.disconnected.fetch_add(1, Ordering::Relaxed);
    let e = res
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("closed by server"));
    shared.error(&format!("{} disconnected", plan.transport.name()), &e);
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// An established client connection (subscribed, or the long-poll request sent).
pub(crate) enum Conn {
    Ws(Box<Ws>),
    Stream(TcpStream, Vec<u8>, Body),
    Poll(TcpStream, Vec<u8>),
}

/// Reads `conn` into `rx` until it ends (`Err`, or `Ok` when closed cleanly) or `rx` has had
/// enough (`Ok`).
pub(crate) async fn read(plan: &Plan, conn: Conn, rx: &mut impl OnPayload) -> Result<()> {
    match conn {
        Conn::Ws(ws) => read_ws(ws, rx).await,
        Conn::Stream(tcp, buf, body) => read_stream(tcp, buf, body, rx).await,
        Conn::Poll(tcp, buf) => poll_loop(plan, tcp, buf, rx).await,
    }
}

/// Connects and subscribes as `plan` says.
pub(crate) async fn connect(plan: &Plan) -> Result<Conn> {
    let mut tcp = tcp_connect(plan.addr, plan.source).await?;
    match plan.transport {
        Transport::Ws => {
            let cfg = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let url = format!("ws://{}{}", plan.host, plan.path);
            let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(cfg))
                .await
                .context("websocket handshake")?;
            Ok(Conn::Ws(Box::new(ws)))
        }
        Transport::Stream | Transport::Sse => {
            let accept = if plan.transport == Transport::Sse {
                "text/event-stream"
            } else {
                "*/*"
            };
            tcp.write_all(request(plan, accept).as_bytes()).await?;
            let mut buf = Vec::with_capacity(1024);
            let head = http1::read_head(&mut tcp, &mut buf).await?;
            if head.status != 200 {
                bail!("status {}", head.status);
            }
            Ok(Conn::Stream(tcp, buf, Body::for_head(&head)))
        }
        Transport::Poll => {
            tcp.write_all(request(plan, "*/*").as_bytes()).await?;
            Ok(Conn::Poll(tcp, Vec::with_capacity(1024)))
        }
    }
}

async fn read_ws(mut ws: Box<Ws>, rx: &mut impl OnPayload) -> Result<()> {
    while let Some(m) = ws.next().await {
        let done = match m? {
            Message::Text(t) => rx.on_payload(t.as_bytes()),
            Message::Binary(b) => rx.on_payload(&b),
            Message::Close(c) => bail!("close frame {:?}", c.map(|c| u16::from(c.code))),
            _ => false,
        };
        if done {
            return Ok(());
        }
    }
    Ok(())
}

async fn read_stream(
    mut tcp: TcpStream,
    mut buf: Vec<u8>,
    mut body: Body,
    rx: &mut impl OnPayload,
) -> Result<()> {
    let mut lines = LineSplitter::default();
    let mut chunk = vec![0u8; 8192];
    let mut pending = std::mem::take(&mut buf);
    let mut done = false;
    loop {
        body.feed(&pending, |b| {
            lines.feed(b, |l| {
                if !done {
                    done = rx.on_payload(l);
                }
            });
        })?;
        if done {
            return Ok(());
        }
        if body.done() {
            bail!("stream ended");
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        pending.clear();
        pending.extend_from_slice(&chunk[..n]);
    }
}

async fn poll_loop(
    plan: &Plan,
    mut tcp: TcpStream,
    mut buf: Vec<u8>,
    rx: &mut impl OnPayload,
) -> Result<()> {
    let mut chunk = vec![0u8; 8192];
    loop {
        let head = http1::read_head(&mut tcp, &mut buf).await?;
        let mut body = Body::for_head(&head);
        let mut content = Vec::new();
        loop {
            let used = body.feed(&buf, |b| content.extend_from_slice(b))?;
            buf.drain(..used);
            if body.done() {
                break;
            }
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                if matches!(body, Body::UntilClose) {
                    break;
                }
                bail!("connection closed mid-body");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if head.status != 200 {
            bail!("status {}", head.status);
        }
        let trimmed = content.strip_suffix(b"\n").unwrap_or(&content);
        if rx.on_payload(trimmed) {
            return Ok(());
        }
        if head.close || matches!(body, Body::UntilClose) {
            tcp = tcp_connect(plan.addr, plan.source).await?;
            buf.clear();
        }
        tcp.write_all(request(plan, "*/*").as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::group_key;

    #[test]
    fn error_keys_drop_addresses_but_keep_codes() {
        assert_eq!(
            group_key("connect: bind 127.4.5.1: Address already in use (os error 98)"),
            "connect: bind N: Address already in use (os error 98)"
        );
        assert_eq!(
            group_key("ws disconnected: close frame Some(1013)"),
            "ws disconnected: close frame Some(1013)"
        );
        assert_eq!(
            group_key("handshake: HTTP error: 502 Bad Gateway, port 34567"),
            "handshake: HTTP error: 502 Bad Gateway, port N"
        );
    }
}
