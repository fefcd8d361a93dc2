//! `gripmesh-loadtest resume`: how long a client coming back takes to get what it missed.
//!
//! Publishes an anchor item and then `--items` more, all with ids, to one channel (which should
//! keep history, `--history`), then opens `--clients` clients, `--concurrency` at a time, each
//! resuming from the anchor's id — SSE and HTTP stream with `Last-Event-ID`, WebSocket with
//! `prev-id` in the `subscribe` control message (the tool's origin turns `&prev-id=` into it).
//! For every client it measures the time from the start of its connection to the last missed
//! item, checks it got exactly the items after the anchor in order, and closes it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::clients::{self, OnPayload, Plan, Transport};
use crate::procfs::{self, Machine};
use crate::publish::{self, Extra, Formats, Labels};
use crate::spawn::{self, Spawned};
use crate::stats::{self, Summary};

/// Flags of `resume`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ResumeArgs {
    /// System under test, for reports.
    #[arg(long, default_value = "gripmesh")]
    pub system: String,
    /// Scenario name.
    #[arg(long, default_value = "resume")]
    pub scenario: String,
    /// Edge (client listener) address, `host:port`; repeat for several (round-robin).
    #[arg(long = "edge")]
    pub edges: Vec<String>,
    /// HTTP publish API base URL.
    #[arg(long, default_value = "http://127.0.0.1:5561")]
    pub publish: String,
    /// Start `PATH standalone` (give it `--gripmesh-arg=--history=…`) and measure it.
    #[arg(long, value_name = "PATH")]
    pub spawn_gripmesh: Option<PathBuf>,
    /// With --spawn-gripmesh: the GRIP origin (`host:port`, a `gripmesh-loadtest origin`);
    /// default: the built-in `test` target (SSE and stream only).
    #[arg(long, value_name = "ADDR")]
    pub origin: Option<String>,
    /// Extra flag for the spawned gripmesh (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub gripmesh_arg: Vec<String>,
    /// Server process to measure (CPU), with its descendants; repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// How clients resume: `sse`, `stream` (`Last-Event-ID`) or `ws` (`prev-id`).
    #[arg(long, value_enum, default_value = "sse")]
    pub transport: Transport,
    /// Items each client missed.
    #[arg(long, default_value_t = 1000)]
    pub items: u64,
    /// Clients that resume.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Resumes in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// The channel (must keep at least `--items` + 1 items of history).
    #[arg(long, default_value = "resume")]
    pub channel: String,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Most items per publish call.
    #[arg(long, default_value_t = 1000)]
    pub max_batch: u64,
    /// Seconds one client may take to get every missed item.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result of `gripmesh-loadtest resume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResumeResult {
    /// `gripmesh`, …
    pub system: String,
    /// Scenario name.
    pub scenario: String,
    /// Where.
    pub machine: Machine,
    /// How clients resumed.
    pub transport: Option<Transport>,
    /// Items each client missed.
    pub items: u64,
    /// Clients started.
    pub clients: usize,
    /// Resumes in flight at once.
    pub concurrency: usize,
    /// Seconds publishing the items took (stored in history before each call was answered).
    pub publish_s: f64,
    /// Clients that got every missed item, in order, exactly once.
    pub complete: u64,
    /// Clients that could not connect.
    pub failed: u64,
    /// Clients that connected but did not get every item within `--timeout`.
    pub incomplete: u64,
    /// Clients that got an item out of order, twice, or one they had not missed.
    pub wrong: u64,
    /// Seconds for all clients.
    pub elapsed_s: f64,
    /// Complete resumes per second.
    pub resumes_per_s: f64,
    /// Connection start → last missed item, complete clients.
    pub time_all: Summary,
    /// Connection start → first missed item.
    pub time_first: Summary,
    /// Server CPU during the resumes, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Failure reasons, counted.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// Checks one client's replay: items `1..=want` in order, each once.
#[derive(Debug)]
pub(crate) struct Replay {
    want: u64,
    next: u64,
    wrong: bool,
    started: Instant,
    first: Option<Duration>,
}

impl Replay {
    /// Expects items `1..=want`, timed from `started`.
    pub(crate) fn new(want: u64, started: Instant) -> Replay {
        Replay {
            want,
            next: 1,
            wrong: false,
            started,
            first: None,
        }
    }

    /// Every item arrived, in order, once.
    pub(crate) fn complete(&self) -> bool {
        self.next > self.want && !self.wrong
    }
}

impl OnPayload for Replay {
    fn on_payload(&mut self, line: &[u8]) -> bool {
        let Some((seq, _)) = crate::msg::decode(line) else {
            return false;
        };
        self.first.get_or_insert_with(|| self.started.elapsed());
        if seq != self.next {
            self.wrong = true;
            return true;
        }
        self.next += 1;
        self.next > self.want
    }
}

/// The ids: `PREFIX-0` is the anchor, `PREFIX-1` … `PREFIX-<items>` the missed items.
fn labels() -> Labels {
    Labels {
        id_prefix: Some(format!("r{:x}", crate::msg::now_us())),
        sender: None,
    }
}

/// One publish body: items `from..to` of the channel with their ids.
fn body(channel_json: &str, labels: &Labels, from: u64, to: u64, size: usize, f: Formats) -> Bytes {
    let ts = crate::msg::now_us();
    let mut b = String::from("{\"items\":[");
    for n in from..to {
        if n > from {
            b.push(',');
        }
        let id = labels.id(n);
        let p = crate::msg::encode(n, ts, size);
        let extra = Extra {
            id: id.as_deref(),
            sender: None,
        };
        publish::push_json_item(&mut b, channel_json, &p, f, extra);
    }
    b.push_str("]}");
    Bytes::from(b)
}

/// The path and extra header a client resuming after `anchor` uses.
fn resume_request(t: Transport, channel: &str, anchor: &str) -> Result<(String, Option<String>)> {
    Ok(match t {
        Transport::Ws => (format!("/ws?channel={channel}&prev-id={anchor}"), None),
        Transport::Sse => (
            format!("/sse?channel={channel}"),
            Some(format!("Last-Event-ID: {anchor}")),
        ),
        Transport::Stream => (
            format!("/stream?channel={channel}"),
            Some(format!("Last-Event-ID: {anchor}")),
        ),
        Transport::Poll => bail!("long-polls get one item per request: use sse, stream or ws"),
    })
}

/// Runs the resume benchmark.
pub(crate) async fn run(args: &ResumeArgs) -> Result<ResumeResult> {
    if args.clients == 0 || args.items == 0 {
        bail!("--clients and --items must be at least 1");
    }
    procfs::raise_nofile();
    let machine = Machine::current();
    let mut spawned: Option<Spawned> = None;
    let (edges, publish_url) = if let Some(bin) = &args.spawn_gripmesh {
        let routes = match &args.origin {
            Some(o) => spawn::origin_routes(o),
            None => "* test\n".to_owned(),
        };
        let s = spawn::spawn_gripmesh(bin, &routes, &args.gripmesh_arg).await?;
        let e = vec![s.addr("edge")?.to_string()];
        let p = format!("http://{}", s.addr("publish")?);
        spawned = Some(s);
        (e, p)
    } else {
        if args.edges.is_empty() {
            bail!("give --edge ADDR (or --spawn-gripmesh PATH)");
        }
        (args.edges.clone(), args.publish.clone())
    };
    let mut pids = args.server_pids.clone();
    if let Some(s) = &spawned {
        pids.push(s.pid);
    }
    let r = run_inner(args, &edges, &publish_url, &pids, machine).await;
    if let Some(s) = spawned {
        if r.is_err() {
            eprintln!("gripmesh log: {}", s.log_path().display());
        }
        s.stop().await;
    }
    r
}

/// Publishes the items, then resumes every client after the anchor and gathers the result.
async fn run_inner(
    args: &ResumeArgs,
    edges: &[String],
    publish_url: &str,
    pids: &[u32],
    machine: Machine,
) -> Result<ResumeResult> {
    let targets = resolve_targets(edges).await?;
    let formats = Formats::for_transports(&[args.transport]);
    let labels = labels();
    let anchor = labels.id(0).unwrap_or_default();
    let publish_s = publish_missed(args, publish_url, &labels, formats).await?;
    eprintln!(
        "published {} items (ids {anchor} …) in {publish_s:.3} s",
        args.items + 1
    );

    let (path, header) = resume_request(args.transport, &args.channel, &anchor)?;
    let header: Option<Arc<str>> = header.map(Into::into);
    let tally = Arc::new(Tally::new());
    let cpu0 = procfs::tree_cpu_secs(pids);
    let started = Instant::now();
    resume_all(args, &targets, &path, header, &tally).await;
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_pct = (!pids.is_empty())
        .then(|| ((procfs::tree_cpu_secs(pids) - cpu0) / elapsed * 1000.0).round() / 10.0);
    let c = |i: usize| tally.counts[i].load(Ordering::Relaxed);
    let time_all = Summary::of(&tally.all.lock().unwrap_or_else(|e| e.into_inner()));
    let time_first = Summary::of(&tally.first.lock().unwrap_or_else(|e| e.into_inner()));
    let errors = tally
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (e, n) in &errors {
        eprintln!("  {n} × {e}");
    }
    Ok(ResumeResult {
        system: args.system.clone(),
        scenario: args.scenario.clone(),
        machine,
        transport: Some(args.transport),
        items: args.items,
        clients: args.clients,
        concurrency: args.concurrency.max(1),
        publish_s: (publish_s * 1000.0).round() / 1000.0,
        complete: c(0),
        failed: c(1),
        incomplete: c(2),
        wrong: c(3),
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
        resumes_per_s: (c(0) as f64 / elapsed.max(1e-9)).round(),
        time_all,
        time_first,
        server_cpu_pct,
        errors,
    })
}

/// Each edge's address and `Host`.
async fn resolve_targets(edges: &[String]) -> Result<Vec<(SocketAddr, Arc<str>)>> {
    let mut targets: Vec<(SocketAddr, Arc<str>)> = Vec::new();
    for e in edges {
        let host = e
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let addr = tokio::net::lookup_host(&host)
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host}: no address"))?;
        targets.push((addr, host.into()));
    }
    Ok(targets)
}

/// Publishes the anchor and the items the clients will have missed; returns the seconds it
/// took.
async fn publish_missed(
    args: &ResumeArgs,
    publish_url: &str,
    labels: &Labels,
    formats: Formats,
) -> Result<f64> {
    let channel_json = serde_json::to_string(&args.channel)?;
    let client = publish::http_client();
    let url = publish::base_uri(publish_url, "/publish/")?;
    let t_pub = Instant::now();
    let mut n = 0;
    while n <= args.items {
        let to = (n + args.max_batch.max(1)).min(args.items + 1);
        let b = body(&channel_json, labels, n, to, args.size, formats);
        let o = publish::post(&client, &url, b, to - n).await;
        if let Some(e) = o.error {
            bail!("publishing items {n}..{to}: {e}");
        }
        n = to;
    }
    Ok(t_pub.elapsed().as_secs_f64())
}

/// What the resuming clients found, booked as each one ends.
struct Tally {
    /// Connect → last item, of complete clients.
    all: Mutex<Histogram<u64>>,
    /// Connect → first item.
    first: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Clients complete, failed, incomplete, wrong.
    counts: [AtomicU64; 4],
}

/// Resumes `--clients` clients, at most `--concurrency` at a time, and waits for them all.
async fn resume_all(
    args: &ResumeArgs,
    targets: &[(SocketAddr, Arc<str>)],
    path: &str,
    header: Option<Arc<str>>,
    tally: &Arc<Tally>,
) {
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let mut set = tokio::task::JoinSet::new();
    for idx in 0..args.clients {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (addr, host) = targets[idx % targets.len()].clone();
        let plan = Plan {
            idx,
            transport: args.transport,
            addr,
            host,
            path: path.to_owned(),
            source: None,
            header: header.clone(),
        };
        let tally = tally.clone();
        let want = args.items;
        set.spawn(async move {
            let t0 = Instant::now();
            let mut replay = Replay::new(want, t0);
            let outcome = tokio::time::timeout(timeout, async {
                let conn = clients::connect(&plan).await.map_err(|e| (1, e))?;
                clients::read(&plan, conn, &mut replay)
                    .await
                    .map_err(|e| (2, e))
            })
            .await;
            drop(permit);
            let slot = match outcome {
                _ if replay.complete() => 0,
                _ if replay.wrong => 3,
                Ok(Err((kind, e))) => {
                    tally.error(&e);
                    kind
                }
                Ok(Ok(())) => 2,
                Err(_) => 2,
            };
            tally.book(slot, t0, replay.first);
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
}

impl Tally {
    fn new() -> Tally {
        Tally {
            all: Mutex::new(stats::new_hist()),
            first: Mutex::new(stats::new_hist()),
            errors: Mutex::new(BTreeMap::new()),
            counts: Default::default(),
        }
    }

    /// Counts a failure reason (its first 100 bytes).
    fn error(&self, e: &anyhow::Error) {
        let mut m = format!("{e:#}");
        m.truncate(100);
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(m)
            .or_default() += 1;
    }

    /// Books a client that ended in `slot` (see `counts`), started at `t0`.
    fn book(&self, slot: usize, t0: Instant, first: Option<Duration>) {
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        if slot == 0 {
            stats::record(
                &mut self.all.lock().unwrap_or_else(|e| e.into_inner()),
                t0.elapsed().as_micros() as u64,
            );
        }
        if let Some(f) = first {
            stats::record(
                &mut self.first.lock().unwrap_or_else(|e| e.into_inner()),
                f.as_micros() as u64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_wants_every_item_in_order_once() {
        let t = Instant::now();
        let item = |n| crate::msg::encode(n, 0, 60);
        let mut r = Replay::new(3, t);
        assert!(!r.on_payload(b": keep-alive"));
        assert!(!r.on_payload(b"id: r1-1"));
        assert!(!r.on_payload(format!("data: {}", item(1)).as_bytes()));
        assert!(r.first.is_some());
        assert!(!r.on_payload(item(2).as_bytes()));
        assert!(!r.complete());
        assert!(r.on_payload(item(3).as_bytes()));
        assert!(r.complete());

        // The anchor itself (0), a duplicate or a gap stops the client and marks it wrong.
        for bad in [[1, 1], [0, 1], [1, 3]] {
            let mut r = Replay::new(3, t);
            let stopped = bad.iter().any(|&n| r.on_payload(item(n).as_bytes()));
            assert!(stopped && r.wrong && !r.complete(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_carry_ids_and_resume_requests_name_the_anchor() {
        let labels = Labels {
            id_prefix: Some("r7".into()),
            sender: None,
        };
        let f = Formats::for_transports(&[Transport::Sse]);
        let b = body("\"ch\"", &labels, 0, 3, 60, f);
        let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
        let items = v["items"].as_array().expect("items");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["id"], "r7-0");
        assert_eq!(items[2]["id"], "r7-2");
        let content = items[2]["formats"]["http-stream"]["content"]
            .as_str()
            .expect("content");
        assert!(content.starts_with("id: r7-2\ndata: gm1 "), "{content}");
        assert_eq!(
            resume_request(Transport::Ws, "c", "r7-0").expect("ws"),
            ("/ws?channel=c&prev-id=r7-0".to_owned(), None)
        );
        assert_eq!(
            resume_request(Transport::Sse, "c", "r7-0").expect("sse"),
            (
                "/sse?channel=c".to_owned(),
                Some("Last-Event-ID: r7-0".to_owned())
            )
        );
        assert!(resume_request(Transport::Poll, "c", "r7-0").is_err());
    }
}
