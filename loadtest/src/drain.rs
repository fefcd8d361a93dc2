//! `gripmesh-loadtest drain`: the clients of a drained edge reconnecting to another.
//!
//! N clients (SSE, HTTP stream or WebSocket) hold a subscription on edge A, each on one of
//! `--channels` channels of a `gripmesh-loadtest origin`. Once all are held, edge A gets
//! SIGTERM: it closes its held connections at its paced drain rate (docs/operations.md,
//! "Deploying a new version"), and every client, as soon as its connection ends, opens the
//! same hold on edge B, without a last id. A reconnect counts once edge B answered with 200
//! and the origin's initial body (`open on channel …`), or, for a WebSocket, once the upgrade
//! came (the edge upgrades only after the origin accepted the `OPEN`). Reconnected clients
//! keep holding on B until the end, as real clients would.
//!
//! Reports reconnected and failed clients, the time from SIGTERM to the last reconnect, the
//! per-client reconnect time (from its close to its new hold being open) and the open rate
//! edge B sustained.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::clients::{self, Conn, OnPayload, Plan, Transport};
use crate::procfs;
use crate::stats::{self, Summary};

/// Hold kind of the drained clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DrainKind {
    /// `GET /sse` (Server-Sent Events hold).
    Sse,
    /// `GET /stream` (HTTP stream hold).
    Stream,
    /// WebSocket on `/ws` (WebSocket-over-HTTP to the origin).
    Ws,
}

impl DrainKind {
    fn transport(self) -> Transport {
        match self {
            DrainKind::Sse => Transport::Sse,
            DrainKind::Stream => Transport::Stream,
            DrainKind::Ws => Transport::Ws,
        }
    }

    fn path(self) -> &'static str {
        match self {
            DrainKind::Sse => "/sse",
            DrainKind::Stream => "/stream",
            DrainKind::Ws => "/ws",
        }
    }
}

/// Flags of `drain`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DrainArgs {
    /// System under test (label).
    #[arg(long, default_value = "gripmesh")]
    pub system: String,
    /// Scenario name (label).
    #[arg(long, default_value = "drain-reconnect")]
    pub scenario: String,
    /// Edge A, the one drained (`host:port`).
    #[arg(long)]
    pub edge: SocketAddr,
    /// Edge B, where the clients reconnect (`host:port`).
    #[arg(long)]
    pub edge_b: SocketAddr,
    /// Process id of edge A, sent SIGTERM once every client holds.
    #[arg(long)]
    pub drain_pid: u32,
    /// Hold kind.
    #[arg(long, value_enum, default_value = "sse")]
    pub kind: DrainKind,
    /// Clients.
    #[arg(long, default_value_t = 19_000)]
    pub clients: usize,
    /// Channels; client i subscribes to PREFIX(i % channels).
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Channel name prefix.
    #[arg(long, default_value = "drain")]
    pub channel_prefix: String,
    /// Connection attempts to edge A in flight at once (the reconnects to B are not limited:
    /// every client reconnects as soon as it is closed).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds allowed for all clients to hold on edge A.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// Seconds to wait between the last hold on A and the SIGTERM.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Seconds after the SIGTERM allowed for every client to be closed and back on B.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Clients per source address (127.X.Y.Z from a random base; 0 = don't bind): each
    /// address has ~28k ephemeral ports. Kept small because `bind()` to an address with an
    /// ephemeral port scans the sockets already bound to it: with 5,000 per address the
    /// kernel (6.18) spent the tool's two CPUs there, and a 19,000-client drain took 30 s
    /// instead of 6.
    #[arg(long, default_value_t = 500)]
    pub clients_per_source_ip: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// What a drain measured.
#[derive(Debug, Serialize)]
pub(crate) struct DrainResult {
    system: String,
    scenario: String,
    kind: DrainKind,
    clients: usize,
    /// Clients holding on edge A when it got SIGTERM.
    held_on_a: u64,
    /// Clients that could not open their hold on A.
    connect_failed: u64,
    #[serde(flatten)]
    figures: Figures,
    /// How edge A's connections ended, counted.
    a_closes: BTreeMap<String, u64>,
    /// Why reconnects to B failed, counted.
    errors: BTreeMap<String, u64>,
}

/// The figures computed from the clients' records ([`summarize`]).
#[derive(Debug, Default, PartialEq, Serialize)]
pub(crate) struct Figures {
    /// Clients closed by A after the SIGTERM and held again on B.
    reconnected: u64,
    /// Clients closed by A after the SIGTERM whose reconnect to B failed.
    failed: u64,
    /// Clients whose hold on A ended before the SIGTERM (not counted above).
    closed_early: u64,
    /// Clients still held on A (or still reconnecting) when `--timeout` ran out.
    unfinished: u64,
    /// Seconds from the SIGTERM to the last reconnect done.
    last_reconnect_s: f64,
    /// Seconds from the SIGTERM to the last close by A.
    last_close_s: f64,
    /// Per client, from its close to its hold on B being open.
    reconnect: Summary,
    /// Reconnects per second on B, from the first close to the last reconnect.
    b_opens_per_s: f64,
}

/// One client after the SIGTERM, in µs relative to it (negative: before it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Record {
    /// When A's connection ended.
    closed_us: i64,
    /// When the hold on B was open; `None` when the reconnect failed.
    reopened_us: Option<i64>,
}

/// Computes the figures for `held` clients that held on A at the SIGTERM from the records
/// of those whose connection ended.
fn summarize(held: u64, records: &[Record]) -> Figures {
    let mut f = Figures::default();
    let mut hist = stats::new_hist();
    let mut first_close = i64::MAX;
    let mut last_done = i64::MIN;
    let mut last_close = 0;
    for r in records {
        if r.closed_us < 0 {
            f.closed_early += 1;
            continue;
        }
        last_close = last_close.max(r.closed_us);
        match r.reopened_us {
            Some(t) => {
                f.reconnected += 1;
                stats::record(&mut hist, t.saturating_sub(r.closed_us).max(0) as u64);
                first_close = first_close.min(r.closed_us);
                last_done = last_done.max(t);
            }
            None => f.failed += 1,
        }
    }
    f.unfinished = held.saturating_sub(records.len() as u64);
    f.reconnect = Summary::of(&hist);
    f.last_close_s = secs(last_close);
    if f.reconnected > 0 {
        f.last_reconnect_s = secs(last_done);
        let span = (last_done - first_close).max(1) as f64 / 1e6;
        f.b_opens_per_s = (f.reconnected as f64 / span).round();
    }
    f
}

fn secs(us: i64) -> f64 {
    (us as f64 / 1e3).round() / 1e3
}

/// State shared by the client tasks.
#[derive(Default)]
struct Shared {
    /// Clients holding on A.
    held: AtomicU64,
    /// Clients that could not hold on A.
    connect_failed: AtomicU64,
    /// Closes by A and their reconnects, as `Instant`s (made relative once SIGTERM is known).
    records: Mutex<Vec<(Instant, Option<Instant>)>>,
    a_closes: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn count(map: &Mutex<BTreeMap<String, u64>>, what: String) {
        let mut what = what;
        what.truncate(120);
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    fn record(&self, closed: Instant, reopened: Option<Instant>) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((closed, reopened));
    }

    fn finished(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// How long one open (TCP, request, initial answer) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the origin's initial body of a stream or SSE hold contains.
const INITIAL_BODY: &[u8] = b"open on channel";

/// Reads nothing of interest: a held connection is only kept open.
struct Ignore;

impl OnPayload for Ignore {
    fn on_payload(&mut self, _line: &[u8]) -> bool {
        false
    }
}

/// Opens `plan`'s hold and waits for the edge's first GRIP-held answer: the origin's initial
/// body on a stream or SSE hold, the upgrade on a WebSocket. The bytes read stay in the
/// returned connection for [`clients::read`].
async fn open(plan: &Plan) -> Result<Conn> {
    let (mut tcp, mut raw, body) = match clients::connect(plan).await? {
        Conn::Stream(tcp, raw, body) => (tcp, raw, body),
        ws @ Conn::Ws(_) => return Ok(ws),
        Conn::Poll(..) => bail!("long-polls are not drained clients"),
    };
    // Decode a copy of the framing to find the initial body; the raw bytes are kept.
    let mut probe = body.clone();
    let mut decoded = Vec::new();
    let mut fed = 0;
    let mut chunk = [0u8; 4096];
    loop {
        fed += probe.feed(&raw[fed..], |b| decoded.extend_from_slice(b))?;
        if decoded
            .windows(INITIAL_BODY.len())
            .any(|w| w == INITIAL_BODY)
        {
            return Ok(Conn::Stream(tcp, raw, body));
        }
        if probe.done() {
            bail!("hold ended before its initial body");
        }
        let n = tcp.read(&mut chunk).await.context("read")?;
        if n == 0 {
            bail!("closed before the initial body");
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

async fn open_within(plan: &Plan) -> Result<Conn> {
    tokio::time::timeout(OPEN_TIMEOUT, open(plan))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no initial answer in {OPEN_TIMEOUT:?}")))
}

/// One client: holds on A until A closes it, then reconnects to B at once and holds there
/// until the task is aborted.
async fn client(a: Plan, b: Plan, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let conn = open_within(&a).await;
    drop(permit);
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            shared.connect_failed.fetch_add(1, Ordering::Relaxed);
            Shared::count(&shared.errors, format!("hold on A: {e:#}"));
            return;
        }
    };
    shared.held.fetch_add(1, Ordering::Relaxed);
    let end = clients::read(&a, conn, &mut Ignore).await;
    let closed = Instant::now();
    let how = end
        .err()
        .map_or_else(|| "closed".to_owned(), |e| format!("{e:#}"));
    Shared::count(&shared.a_closes, how);
    match open_within(&b).await {
        Ok(conn) => {
            shared.record(closed, Some(Instant::now()));
            let _ = clients::read(&b, conn, &mut Ignore).await;
        }
        Err(e) => {
            shared.record(closed, None);
            Shared::count(&shared.errors, format!("reconnect to B: {e:#}"));
        }
    }
}

/// A random 127.X.Y.1, so back-to-back runs don't meet each other's `TIME_WAIT` ports.
fn random_loopback() -> u32 {
    let r = crate::msg::now_us() ^ (u64::from(std::process::id()) << 20);
    let r = r ^ (r >> 29);
    u32::from(Ipv4Addr::new(
        127,
        1 + (r % 250) as u8,
        ((r / 250) % 256) as u8,
        1,
    ))
}

/// The plans of client `i` on A and on B (same channel, same source address).
fn plans(args: &DrainArgs, i: usize, source_base: u32) -> (Plan, Plan) {
    let source = (args.clients_per_source_ip > 0).then(|| {
        let n = source_base.wrapping_add((i / args.clients_per_source_ip) as u32);
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff)))
    });
    let path = format!(
        "{}?channel={}{}",
        args.kind.path(),
        args.channel_prefix,
        i % args.channels.max(1)
    );
    let plan = |addr: SocketAddr| Plan {
        idx: i,
        transport: args.kind.transport(),
        addr,
        host: Arc::from(addr.to_string()),
        path: path.clone(),
        source,
        header: None,
    };
    (plan(args.edge), plan(args.edge_b))
}

/// Starts every client (at most `--connect-concurrency` opening at once) and waits until all
/// hold on A or failed; false when `--connect-timeout` ran out first.
async fn connect_all(args: &DrainArgs, shared: &Arc<Shared>, set: &mut JoinSet<()>) -> bool {
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    let base = random_loopback();
    for i in 0..args.clients {
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p,
            _ = tokio::time::sleep_until(deadline.into()) => return false,
        };
        let Ok(permit) = permit else { return false };
        let (a, b) = plans(args, i, base);
        set.spawn(client(a, b, shared.clone(), permit));
    }
    let total = args.clients as u64;
    while shared.held.load(Ordering::Relaxed) + shared.connect_failed.load(Ordering::Relaxed)
        < total
    {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Sends SIGTERM to `pid` (with `kill`: the crate forbids `unsafe`, and so `libc::kill`).
async fn sigterm(pid: u32) -> Result<()> {
    let st = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .context("running kill")?;
    if !st.success() {
        bail!("kill -TERM {pid}: {st}");
    }
    Ok(())
}

/// Waits until every client held at the SIGTERM has a record, or `timeout` after `t0`.
async fn wait_reconnects(shared: &Shared, held: u64, t0: Instant, timeout: f64) {
    let deadline = t0 + Duration::from_secs_f64(timeout);
    while (shared.finished() as u64) < held && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn relative_us(t: Instant, t0: Instant) -> i64 {
    if t >= t0 {
        t.duration_since(t0).as_micros() as i64
    } else {
        -(t0.duration_since(t).as_micros() as i64)
    }
}

/// Runs the drain and prints one summary line (and the JSON file when asked); true when every
/// client was back on B.
pub(crate) async fn drain(args: &DrainArgs) -> Result<bool> {
    if args.clients == 0 || args.channels == 0 || args.timeout <= 0.0 {
        bail!("--clients, --channels and --timeout must be positive");
    }
    procfs::raise_nofile();
    let shared = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    let started = Instant::now();
    if !connect_all(args, &shared, &mut set).await {
        set.abort_all();
        bail!(
            "{} of {} clients held on A after {:.0} s",
            shared.held.load(Ordering::Relaxed),
            args.clients,
            args.connect_timeout
        );
    }
    let held = shared.held.load(Ordering::Relaxed);
    eprintln!(
        "{held} of {} {:?} clients hold on {} after {:.2} s; SIGTERM to {} in {} s",
        args.clients,
        args.kind,
        args.edge,
        started.elapsed().as_secs_f64(),
        args.drain_pid,
        args.settle
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let t0 = Instant::now();
    sigterm(args.drain_pid).await?;
    wait_reconnects(&shared, held, t0, args.timeout).await;
    let records: Vec<Record> = shared
        .records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|&(c, r)| Record {
            closed_us: relative_us(c, t0),
            reopened_us: r.map(|r| relative_us(r, t0)),
        })
        .collect();
    set.abort_all();
    let take = |m: &Mutex<BTreeMap<String, u64>>| {
        std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let result = DrainResult {
        system: args.system.clone(),
        scenario: args.scenario.clone(),
        kind: args.kind,
        clients: args.clients,
        held_on_a: held,
        connect_failed: shared.connect_failed.load(Ordering::Relaxed),
        figures: summarize(held, &records),
        a_closes: take(&shared.a_closes),
        errors: take(&shared.errors),
    };
    print_result(&result);
    if let Some(path) = &args.json {
        let mut bytes = serde_json::to_vec_pretty(&result)?;
        bytes.push(b'\n');
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let f = &result.figures;
    Ok(result.connect_failed == 0 && f.reconnected == args.clients as u64)
}

fn print_result(r: &DrainResult) {
    let f = &r.figures;
    println!(
        "{} {} {:?}: {} clients, {} held on A ({} failed to), after SIGTERM {} reconnected to B, {} failed, {} closed before SIGTERM, {} unfinished; last close {} s, last reconnect {} s after SIGTERM; reconnect p50 {} / p99 {} / max {} ms; B opens {}/s",
        r.system,
        r.scenario,
        r.kind,
        r.clients,
        r.held_on_a,
        r.connect_failed,
        f.reconnected,
        f.failed,
        f.closed_early,
        f.unfinished,
        f.last_close_s,
        f.last_reconnect_s,
        f.reconnect.p50_ms,
        f.reconnect.p99_ms,
        f.reconnect.max_ms,
        f.b_opens_per_s,
    );
    for (how, n) in &r.a_closes {
        println!("  A closed {n} × {how}");
    }
    for (e, n) in &r.errors {
        println!("  {n} × {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(closed_us: i64, reopened_us: Option<i64>) -> Record {
        Record {
            closed_us,
            reopened_us,
        }
    }

    #[test]
    fn figures_of_a_drain() {
        // Five held: two reconnected, one failed, one closed before the SIGTERM, one never
        // closed.
        let records = [
            rec(100_000, Some(103_000)),
            rec(1_200_000, Some(1_210_000)),
            rec(1_500_000, None),
            rec(-5_000, Some(1_000)),
        ];
        let f = summarize(5, &records);
        assert_eq!(
            (f.reconnected, f.failed, f.closed_early, f.unfinished),
            (2, 1, 1, 1)
        );
        assert_eq!(f.last_close_s, 1.5);
        assert_eq!(f.last_reconnect_s, 1.21);
        assert_eq!(f.reconnect.count, 2);
        assert!((f.reconnect.min_ms - 3.0).abs() < 0.01, "{f:?}");
        assert!((f.reconnect.max_ms - 10.0).abs() < 0.01, "{f:?}");
        // 2 reconnects from the first close (0.1 s) to the last reconnect (1.21 s).
        assert_eq!(f.b_opens_per_s, (2.0 / 1.11_f64).round());
    }

    #[test]
    fn nothing_reconnected() {
        let f = summarize(3, &[rec(10, None)]);
        assert_eq!((f.reconnected, f.failed, f.unfinished), (0, 1, 2));
        assert_eq!(f.b_opens_per_s, 0.0);
        assert_eq!(f.last_reconnect_s, 0.0);
        assert_eq!(f.reconnect, Summary::default());
        assert_eq!(summarize(0, &[]), Figures::default());
    }

    #[test]
    fn times_relative_to_the_sigterm() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_micros(1500);
        assert_eq!(relative_us(later, t0), 1500);
        assert_eq!(relative_us(t0, later), -1500);
    }

    #[test]
    fn plans_share_channel_and_source() {
        let args = DrainArgs {
            system: "gripmesh".into(),
            scenario: "drain".into(),
            edge: "127.0.0.1:1000".parse().unwrap_or_else(|_| unreachable!()),
            edge_b: "127.0.0.1:2000".parse().unwrap_or_else(|_| unreachable!()),
            drain_pid: 1,
            kind: DrainKind::Sse,
            clients: 10,
            channels: 4,
            channel_prefix: "d".into(),
            connect_concurrency: 1,
            connect_timeout: 1.0,
            settle: 0.0,
            timeout: 1.0,
            clients_per_source_ip: 3,
            json: None,
        };
        let base = u32::from(Ipv4Addr::new(127, 5, 255, 255));
        let (a, b) = plans(&args, 7, base);
        assert_eq!(a.path, "/sse?channel=d3");
        assert_eq!(b.path, a.path);
        assert_eq!((a.addr.port(), b.addr.port()), (1000, 2000));
        assert_eq!(&*b.host, "127.0.0.1:2000");
        // 7 / 3 = 2 addresses on from the base, wrapping inside 127/8.
        let want = IpAddr::V4(Ipv4Addr::new(127, 6, 0, 1));
        assert_eq!((a.source, b.source), (Some(want), Some(want)));
    }
}
