//! `soak`: long churn against a `gripmesh standalone` started by the tool — clients connect,
//! subscribe, receive and leave (WebSocket and HTTP stream), a publisher publishes all the
//! while — with the server's RSS and open file descriptors sampled. Once warm, neither may
//! keep growing.

use crate::procfs;
use crate::publish::{base_uri, http_client, post};
use crate::spawn::spawn_gripmesh;
use anyhow::Result;
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Flags of `soak`.
#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    /// The gripmesh binary to start (standalone, built-in `test` routes).
    #[arg(long)]
    pub gripmesh: PathBuf,
    /// How long to churn, in seconds (the issue's soak is 3600).
    #[arg(long, default_value_t = 3600)]
    pub duration: u64,
    /// Concurrent churning clients (half WebSocket, half HTTP stream).
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Channels the clients pick from.
    #[arg(long, default_value_t = 50)]
    pub channels: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    pub sample: u64,
    /// Seconds of warm-up before the baseline sample.
    #[arg(long, default_value_t = 60)]
    pub warmup: u64,
    /// Largest RSS growth after warm-up that still passes, in KiB.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_rss_growth_kib: u64,
    /// Largest open-fd growth after warm-up that still passes.
    #[arg(long, default_value_t = 64)]
    pub max_fd_growth: u64,
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Counters of the churn.
#[derive(Default)]
struct Churn {
    sessions: AtomicU64,
    failed: AtomicU64,
    messages: AtomicU64,
    published: AtomicU64,
}

/// Runs the soak; `Ok(true)` when memory and fds did not grow once warm.
pub(crate) async fn soak(a: &SoakArgs) -> Result<bool> {
    let server = spawn_gripmesh(&a.gripmesh, "* test\n", &[]).await?;
    let edge = server.addr("edge")?;
    let publish_url = base_uri(&server.addr("publish")?.to_string(), "/publish/")?;
    let pid = server.pid;
    let churn = Arc::new(Churn::default());
    let deadline = Instant::now() + Duration::from_secs(a.duration);

    let tasks = spawn_clients(a, edge, &churn, deadline);
    let publisher = spawn_publisher(a, publish_url, &churn, deadline);
    let started = Instant::now();
    let samples = sample(a, pid, &churn, started, deadline).await;
    for t in tasks {
        let _ = t.await;
    }
    let _ = publisher.await;
    server.stop().await;
    Ok(verdict(a, started, &samples, &churn))
}

/// `--clients` clients (even ones WebSocket, odd ones HTTP stream), each opening sessions of
/// random length on random channels one after the other until the deadline.
fn spawn_clients(
    a: &SoakArgs,
    edge: SocketAddr,
    churn: &Arc<Churn>,
    deadline: Instant,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let (churn, channels) = (churn.clone(), a.channels.max(1));
        tasks.push(tokio::spawn(async move {
            let mut n = i as u64;
            while Instant::now() < deadline {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let channel = format!("soak{}", (n >> 33) as usize % channels);
                let stay = Duration::from_millis(200 + (n >> 40) % 2000);
                let ok = if i % 2 == 0 {
                    ws_session(edge, &channel, stay, &churn).await
                } else {
                    stream_session(edge, &channel, stay, &churn).await
                };
                churn.sessions.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    churn.failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    tasks
}

/// One item every 50 ms, round-robin over the channels, until the deadline.
fn spawn_publisher(
    a: &SoakArgs,
    publish_url: http::Uri,
    churn: &Arc<Churn>,
    deadline: Instant,
) -> JoinHandle<()> {
    let (churn, channels) = (churn.clone(), a.channels.max(1));
    tokio::spawn(async move {
        let client = http_client();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut k = 0u64;
        while Instant::now() < deadline {
            tick.tick().await;
            k += 1;
            let ch = format!("soak{}", k as usize % channels);
            let body = format!(
                r#"{{"items":[{{"channel":"{ch}","formats":{{"ws-message":{{"content":"m{k}"}},"http-stream":{{"content":"m{k}\n"}}}}}}]}}"#
            );
            let out = post(&client, &publish_url, Bytes::from(body), 1).await;
            churn.published.fetch_add(out.accepted, Ordering::Relaxed);
        }
    })
}

/// Samples the server's RSS and open fds every `--sample` seconds until the deadline:
/// (seconds since `started`, RSS KiB, fds).
async fn sample(
    a: &SoakArgs,
    pid: u32,
    churn: &Churn,
    started: Instant,
    deadline: Instant,
) -> Vec<(u64, u64, u64)> {
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(a.sample.max(1)));
    while Instant::now() < deadline {
        tick.tick().await;
        let (rss, fds) = (procfs::rss_kib(pid).unwrap_or(0), open_fds(pid));
        let t = started.elapsed().as_secs();
        samples.push((t, rss, fds));
        eprintln!(
            "soak t={t:>5}s rss={rss} KiB fds={fds} sessions={} failed={} received={} published={}",
            churn.sessions.load(Ordering::Relaxed),
            churn.failed.load(Ordering::Relaxed),
            churn.messages.load(Ordering::Relaxed),
            churn.published.load(Ordering::Relaxed),
        );
    }
    samples
}

/// Prints the summary; true when RSS and fds grew no more than allowed after the warm-up.
fn verdict(a: &SoakArgs, started: Instant, samples: &[(u64, u64, u64)], churn: &Churn) -> bool {
    let warm: Vec<&(u64, u64, u64)> = samples.iter().filter(|(t, _, _)| *t >= a.warmup).collect();
    let (Some(first), Some(last)) = (warm.first(), warm.last()) else {
        println!(
            "soak: too short to judge (no sample after the {} s warm-up)",
            a.warmup
        );
        return false;
    };
    let peak_rss = warm.iter().map(|s| s.1).max().unwrap_or(0);
    let rss_growth = last.1.saturating_sub(first.1);
    let fd_growth = last.2.saturating_sub(first.2);
    let ok = rss_growth <= a.max_rss_growth_kib && fd_growth <= a.max_fd_growth;
    println!(
        "soak: {} s, {} sessions ({} failed), {} messages received, {} published; after warm-up \
         RSS {} → {} KiB (peak {}, growth {} KiB), fds {} → {} (growth {}) [{}]",
        started.elapsed().as_secs(),
        churn.sessions.load(Ordering::Relaxed),
        churn.failed.load(Ordering::Relaxed),
        churn.messages.load(Ordering::Relaxed),
        churn.published.load(Ordering::Relaxed),
        first.1,
        last.1,
        peak_rss,
        rss_growth,
        first.2,
        last.2,
        fd_growth,
        if ok { "pass" } else { "FAIL" },
    );
    ok
}

/// One WebSocket session on the built-in test origin: connect, receive until `stay`, close.
async fn ws_session(
    edge: std::net::SocketAddr,
    channel: &str,
    stay: Duration,
    churn: &Churn,
) -> bool {
    let url = format!("ws://{edge}/ws?channel={channel}");
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    else {
        return false;
    };
    let end = tokio::time::sleep(stay);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            msg = ws.next() => match msg {
                Some(Ok(_)) => { churn.messages.fetch_add(1, Ordering::Relaxed); }
                _ => return false,
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    true
}

/// One HTTP stream session: hold, read until `stay`, drop the connection.
async fn stream_session(
    edge: std::net::SocketAddr,
    channel: &str,
    stay: Duration,
    churn: &Churn,
) -> bool {
    let Ok(Ok(mut tcp)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(edge)).await
    else {
        return false;
    };
    let req = format!("GET /stream?channel={channel} HTTP/1.1\r\nHost: soak\r\n\r\n");
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 8192];
    let end = tokio::time::sleep(stay);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => return true,
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    let lines = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                    churn.messages.fetch_add(lines, Ordering::Relaxed);
                }
            },
        }
    }
}
