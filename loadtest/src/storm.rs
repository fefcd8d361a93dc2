//! `gripmesh-loadtest storm`: a reconnect storm. Workers open HTTP holds (stream, SSE or
//! long-poll) back to back for a while — a stream or SSE hold counts once its initial body
//! arrived, then the client closes and opens the next one; a long-poll counts once answered
//! (after the origin's `Grip-Timeout`), and the next poll goes on the same keep-alive
//! connection; a publisher (`--publish`) answers them every few milliseconds, since
//! `Grip-Timeout` is at least 5 s. Reports opens/s (overall and the slowest second), failures and open latency.
//!
//! Client addresses are spread over 127.0.0.2… (`--source-ips`), as clients of many hosts
//! would be: the `TIME_WAIT` sockets of closed holds are the clients' and must not run one
//! machine's port range dry before the edge's limits show.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::procfs;
use crate::stats::{self, Summary};

/// Hold kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StormKind {
    /// `GET /stream` (HTTP stream hold).
    Stream,
    /// `GET /sse` (Server-Sent Events hold).
    Sse,
    /// `GET /response?timeout=N` (long-poll response hold).
    Poll,
}

/// Flags of `storm`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StormArgs {
    /// System under test (label).
    #[arg(long, default_value = "gripmesh")]
    pub system: String,
    /// Scenario name (label).
    #[arg(long, default_value = "storm")]
    pub scenario: String,
    /// Edge address (`host:port`).
    #[arg(long)]
    pub edge: SocketAddr,
    /// Hold kind.
    #[arg(long, value_enum, default_value = "stream")]
    pub kind: StormKind,
    /// Holds being opened at once (workers).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Channels the holds rotate over.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// `Grip-Timeout` asked of the origin for long-polls (`/response?timeout=N`).
    #[arg(long, default_value_t = 5)]
    pub poll_timeout: u64,
    /// Long-polls: publish API base URL (`http://host:port`); every channel gets an item
    /// each `--publish-every-ms`, which answers the polls.
    #[arg(long)]
    pub publish: Option<String>,
    /// Milliseconds between publishes (long-polls).
    #[arg(long, default_value_t = 5)]
    pub publish_every_ms: u64,
    /// Client source addresses 127.0.0.2… to spread connections over (0: the kernel's).
    #[arg(long, default_value_t = 16)]
    pub source_ips: u8,
    /// Server process to measure (CPU), repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// What a storm measured.
#[derive(Debug, Serialize)]
pub(crate) struct StormResult {
    system: String,
    scenario: String,
    kind: StormKind,
    concurrency: usize,
    duration_s: f64,
    opened: u64,
    failed: u64,
    opens_per_s: f64,
    /// The slowest whole second.
    min_opens_per_s: u64,
    open_latency: Summary,
    server_cpu_pct: Option<f64>,
    first_error: Option<String>,
}

struct Totals {
    opened: AtomicU64,
    failed: AtomicU64,
    per_second: Vec<AtomicU64>,
    latency: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

/// Runs the storm and prints one summary line (and the JSON file when asked).
pub(crate) async fn storm(args: &StormArgs) -> Result<bool> {
    if args.concurrency == 0 || args.duration <= 0.0 {
        bail!("--concurrency and --duration must be positive");
    }
    let seconds = args.duration.ceil() as usize;
    let totals = Arc::new(Totals {
        opened: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        per_second: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
        latency: Mutex::new(stats::new_hist()),
        first_error: Mutex::new(None),
    });
    let cpu0 = procfs::tree_cpu_secs(&args.server_pids);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(args.duration);
    let publisher = match (&args.publish, args.kind) {
        (Some(url), StormKind::Poll) => {
            let addr: SocketAddr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .context("--publish must be http://ADDR:PORT")?;
            let every = Duration::from_millis(args.publish_every_ms.max(1));
            Some(tokio::spawn(publish_loop(
                addr,
                args.channels.max(1),
                every,
                end,
            )))
        }
        (None, StormKind::Poll) => bail!("long-poll storms need --publish"),
        _ => None,
    };
    let mut workers = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let (args, totals) = (args.clone(), totals.clone());
        workers.push(tokio::spawn(async move {
            worker(w, &args, &totals, t0, end).await;
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    if let Some(p) = publisher {
        p.abort();
    }
    let wall = t0.elapsed().as_secs_f64();
    let opened = totals.opened.load(Ordering::Relaxed);
    let failed = totals.failed.load(Ordering::Relaxed);
    let min_opens_per_s = totals
        .per_second
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let latency = Summary::of(&totals.latency.lock().unwrap_or_else(|e| e.into_inner()));
    let result = StormResult {
        system: args.system.clone(),
        scenario: args.scenario.clone(),
        kind: args.kind,
        concurrency: args.concurrency,
        duration_s: (args.duration * 1000.0).round() / 1000.0,
        opened,
        failed,
        opens_per_s: (opened as f64 / args.duration).round(),
        min_opens_per_s,
        open_latency: latency,
        server_cpu_pct: (!args.server_pids.is_empty()).then(|| {
            ((procfs::tree_cpu_secs(&args.server_pids) - cpu0) / wall * 1000.0).round() / 10.0
        }),
        first_error: totals
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    };
    println!(
        "{} {} {:?}: {} opened ({}/s, slowest second {}), {} failed, open p50 {} ms p99 {} ms, server CPU {:?}%{}",
        result.system,
        result.scenario,
        result.kind,
        result.opened,
        result.opens_per_s,
        result.min_opens_per_s,
        result.failed,
        result.open_latency.p50_ms,
        result.open_latency.p99_ms,
        result.server_cpu_pct,
        result
            .first_error
            .as_deref()
            .map(|e| format!(", first error: {e}"))
            .unwrap_or_default()
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(failed == 0)
}

async fn worker(w: usize, args: &StormArgs, totals: &Totals, t0: Instant, end: Instant) {
    let source = (args.source_ips > 0).then(|| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (w % args.source_ips as usize) as u8,
        ))
    });
    let mut n = w;
    let mut poll_conn: Option<TcpStream> = None;
    while Instant::now() < end {
        let channel = format!("storm{}", n % args.channels.max(1));
        n += args.concurrency;
        let started = Instant::now();
        let outcome = match args.kind {
            StormKind::Stream => {
                open_hold(
                    args.edge,
                    source,
                    &format!("/stream?channel={channel}"),
                    b"open on channel",
                )
                .await
            }
            StormKind::Sse => {
                open_hold(
                    args.edge,
                    source,
                    &format!("/sse?channel={channel}"),
                    b"open on channel",
                )
                .await
            }
            StormKind::Poll => {
                let path = format!("/response?channel={channel}&timeout={}", args.poll_timeout);
                poll(args.edge, source, &path, &mut poll_conn).await
            }
        };
        let now = Instant::now();
        match outcome {
            Ok(()) => {
                totals.opened.fetch_add(1, Ordering::Relaxed);
                let sec = now.duration_since(t0).as_secs() as usize;
                if let Some(c) = totals.per_second.get(sec) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                {
                    let mut h = totals.latency.lock().unwrap_or_else(|e| e.into_inner());
                    stats::record(&mut h, now.duration_since(started).as_micros() as u64);
                }
            }
            Err(e) => {
                totals.failed.fetch_add(1, Ordering::Relaxed);
                {
                    let mut first = totals.first_error.lock().unwrap_or_else(|e| e.into_inner());
                    if first.is_none() {
                        *first = Some(format!("{e:#}"));
                    }
                }
                poll_conn = None;
                // Do not spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(edge: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let s = sock.connect(edge).await.context("connect")?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: storm\r\nUser-Agent: gripmesh-loadtest\r\n\r\n")
        .into_bytes()
}

/// Opens a stream/SSE hold and reads until `marker` (in the initial body) arrives; the
/// connection is closed when it returns.
async fn open_hold(
    edge: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    marker: &[u8],
) -> Result<()> {
    let exchange = async {
        let mut s = connect(edge, source).await?;
        s.write_all(&request(path)).await.context("write")?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = s.read(&mut chunk).await.context("read")?;
            if n == 0 {
                bail!(
                    "closed before the initial body: {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
            buf.extend_from_slice(&chunk[..n]);
            if !buf.starts_with(b"HTTP/1.1 200") && buf.len() >= 12 {
                bail!(
                    "answer: {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(120)])
                );
            }
            if buf.windows(marker.len()).any(|w| w == marker) {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, exchange)
        .await
        .context("no initial body in 10 s")?
}

/// One long-poll on `conn` (opened when `None`), read to the end of its answer.
async fn poll(
    edge: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    conn: &mut Option<TcpStream>,
) -> Result<()> {
    let exchange = async {
        if conn.is_none() {
            *conn = Some(connect(edge, source).await?);
        }
        let Some(s) = conn.as_mut() else {
            bail!("no connection");
        };
        s.write_all(&request(path)).await.context("write")?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = s.read(&mut chunk).await.context("read")?;
            if n == 0 {
                bail!(
                    "closed before the answer: {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("answer: {:?}", head.lines().next().unwrap_or_default());
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .context("long-poll answer without Content-Length")?;
            if buf.len() >= head_end + 4 + length {
                return Ok(());
            }
        }
    };
    let timeout = OPEN_TIMEOUT + Duration::from_secs(60);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            *conn = None;
            Err(e)
        }
        Err(_) => {
            *conn = None;
            bail!("no answer in {timeout:?}")
        }
    }
}

/// Publishes one `http-response` item to every storm channel each `every` until `end`, on
/// one keep-alive connection.
async fn publish_loop(addr: SocketAddr, channels: usize, every: Duration, end: Instant) {
    let items: Vec<String> = (0..channels)
        .map(|c| {
            format!(r#"{{"channel":"storm{c}","formats":{{"http-response":{{"body":"x\n"}}}}}}"#)
        })
        .collect();
    let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
    let req = format!(
        "POST /publish/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < end {
        tick.tick().await;
        if conn.is_none() {
            conn = connect(addr, None).await.ok();
        }
        let Some(s) = conn.as_mut() else {
            continue;
        };
        let ok = s.write_all(req.as_bytes()).await.is_ok() && read_answer(s, &mut buf).await;
        if !ok {
            conn = None;
        }
    }
}

/// Reads one `Content-Length` answer; false when the connection failed.
async fn read_answer(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut got: Vec<u8> = Vec::new();
    loop {
        let Ok(n) = s.read(buf).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        got.extend_from_slice(&buf[..n]);
        let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if got.len() >= head_end + 4 + length {
            return true;
        }
    }
}
