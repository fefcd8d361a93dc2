//! `gripmesh-loadtest publish`: how many items per second one control process accepts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use proto::v1::{PublishReply, PublishRequest};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::procfs::{self, Machine};
use crate::publish::{self, Api, Formats};
use crate::report::PublishResult;
use crate::spawn;
use crate::stats::{self, Summary};

/// Flags of `publish`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PublishArgs {
    /// System under test (`gripmesh`, `pushpin`).
    #[arg(long, default_value = "gripmesh")]
    pub system: String,
    /// Scenario name.
    #[arg(long, default_value = "publish")]
    pub scenario: String,
    /// HTTP publish API base URL.
    #[arg(long, default_value = "http://127.0.0.1:5561")]
    pub publish: String,
    /// gRPC publish API base URL.
    #[arg(long)]
    pub grpc: Option<String>,
    /// Start `PATH standalone` and measure it instead.
    #[arg(long, value_name = "PATH")]
    pub spawn_gripmesh: Option<PathBuf>,
    /// Extra flag for the spawned gripmesh (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub gripmesh_arg: Vec<String>,
    /// Server process to measure (CPU), with its descendants; repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// API.
    #[arg(long, value_enum, default_value = "http")]
    pub api: Api,
    /// Items per call.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Concurrent HTTP connections or gRPC streams.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// gRPC requests in flight per stream.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// HTTP calls per second over all connections (0: as fast as they are answered). Paced
    /// calls measure the publish call's latency at a given rate, e.g. next to `run` holding
    /// the subscribers in another process, so the tool's own fan-out does not delay the
    /// publisher.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Channels the items rotate over.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Channel name prefix (channels are PREFIX0, PREFIX1, …), e.g. to match a `--history`
    /// glob.
    #[arg(long, default_value = "pub")]
    pub channel_prefix: String,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Give every item a unique id (as publishers to channels with history should; the
    /// requests are then built per call instead of reused).
    #[arg(long)]
    pub ids: bool,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Default)]
struct Totals {
    items: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    first_error: Mutex<Option<String>>,
}

impl Totals {
    fn outcome(&self, items: u64, elapsed: Duration, error: Option<String>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match error {
            None => {
                self.items.fetch_add(items, Ordering::Relaxed);
            }
            Some(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        stats::record(
            l.get_or_insert_with(stats::new_hist),
            elapsed.as_micros() as u64,
        );
    }
}

/// What every publishing task shares: the items to publish, their ids, the totals and when to
/// stop.
struct Load {
    channels: Vec<String>,
    payload: String,
    formats: Formats,
    /// Unique ids across runs too (the de-dup window outlives a run).
    ids: Option<Arc<str>>,
    next_id: Arc<AtomicU64>,
    totals: Arc<Totals>,
    deadline: Instant,
}

/// Runs the publish benchmark.
pub(crate) async fn run(args: &PublishArgs) -> Result<PublishResult> {
    if args.batch == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    let machine = Machine::current();
    let mut spawned = None;
    let (publish_url, grpc_url) = if let Some(bin) = &args.spawn_gripmesh {
        let s = spawn::spawn_gripmesh(bin, "* test\n", &args.gripmesh_arg).await?;
        let urls = (
            format!("http://{}", s.addr("publish")?),
            Some(format!("http://{}", s.addr("grpc")?)),
        );
        spawned = Some(s);
        urls
    } else {
        (args.publish.clone(), args.grpc.clone())
    };
    let mut pids = args.server_pids.clone();
    if let Some(s) = &spawned {
        pids.push(s.pid);
    }
    let channels: Vec<String> = (0..args.channels.max(1))
        .map(|j| format!("{}{j}", args.channel_prefix))
        .collect();
    let payload = crate::msg::encode(0, crate::msg::now_us(), args.size);
    let ids: Option<Arc<str>> = args
        .ids
        .then(|| format!("b{:x}", crate::msg::now_us()).into());
    let totals = Arc::new(Totals::default());
    let cpu0 = procfs::tree_cpu_secs(&pids);
    let started = Instant::now();
    let load = Load {
        channels,
        payload,
        formats: Formats {
            ws: true,
            stream: true,
            ..Formats::default()
        },
        ids,
        next_id: Arc::new(AtomicU64::new(0)),
        totals: totals.clone(),
        deadline: started + Duration::from_secs_f64(args.duration),
    };
    let mut tasks = tokio::task::JoinSet::new();
    match args.api {
        Api::Nchan => {
            bail!("`publish` measures the HTTP and gRPC publish APIs; use `run --api nchan`")
        }
        Api::Http => spawn_http(args, load, &publish_url, &mut tasks)?,
        Api::Grpc => {
            let Some(g) = grpc_url.clone() else {
                bail!("--api grpc needs --grpc URL");
            };
            spawn_grpc(args, &load, &g, &mut tasks).await?;
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_pct = (!pids.is_empty())
        .then(|| ((procfs::tree_cpu_secs(&pids) - cpu0) / elapsed * 1000.0).round() / 10.0);
    if let Some(s) = spawned {
        s.stop().await;
    }
    Ok(result(args, machine, &totals, elapsed, server_cpu_pct))
}

/// `--concurrency` HTTP publishers, each posting one batch after the other (paced by `--rate`).
fn spawn_http(
    args: &PublishArgs,
    load: Load,
    publish_url: &str,
    tasks: &mut JoinSet<()>,
) -> Result<()> {
    let Load {
        channels,
        payload,
        formats,
        ids,
        next_id,
        totals,
        deadline,
    } = load;
    let batch = args.batch;
    let channels_json = channels
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    let body_for = move |ids: Option<(&str, u64)>| {
        let mut body = String::from("{\"items\":[");
        for (i, ch) in channels_json.iter().cycle().take(batch).enumerate() {
            if i > 0 {
                body.push(',');
            }
            let id = ids.map(|(p, n)| format!("{p}-{:x}", n + i as u64));
            let extra = publish::Extra {
                id: id.as_deref(),
                sender: None,
            };
            publish::push_json_item(&mut body, ch, &payload, formats, extra);
        }
        body.push_str("]}");
        Bytes::from(body)
    };
    let fixed = body_for(None);
    let body_for = Arc::new(body_for);
    let client = publish::http_client();
    let url = publish::base_uri(publish_url, "/publish/")?;
    for _ in 0..args.concurrency {
        let (client, url, fixed, totals) =
            (client.clone(), url.clone(), fixed.clone(), totals.clone());
        let (body_for, next_id, ids) = (body_for.clone(), next_id.clone(), ids.clone());
        let items = args.batch as u64;
        let pace =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
        tasks.spawn(async move {
            let mut tick = pace.map(tokio::time::interval);
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let body = match &ids {
                    Some(p) => body_for(Some((p, next_id.fetch_add(items, Ordering::Relaxed)))),
                    None => fixed.clone(),
                };
                let o = publish::post(&client, &url, body, items).await;
                totals.outcome(o.accepted, o.elapsed, o.error);
            }
        });
    }
    Ok(())
}

/// `--concurrency` gRPC streams, each with a sender keeping `--window` requests in flight and a
/// receiver timing their replies.
async fn spawn_grpc(
    args: &PublishArgs,
    load: &Load,
    grpc_url: &str,
    tasks: &mut JoinSet<()>,
) -> Result<()> {
    let req = PublishRequest {
        items: (0..args.batch)
            .map(|i| {
                publish::grpc_item(
                    &load.channels[i % load.channels.len()],
                    &load.payload,
                    load.formats,
                    publish::Extra::default(),
                )
            })
            .collect(),
    };
    for _ in 0..args.concurrency {
        let (tx, replies) = publish::grpc_stream(grpc_url).await?;
        let window = Arc::new(Semaphore::new(args.window.max(1)));
        let sent_at = Arc::new(Mutex::new(VecDeque::new()));
        tasks.spawn(grpc_sender(
            tx,
            req.clone(),
            load.ids.clone(),
            load.next_id.clone(),
            load.totals.clone(),
            InFlight {
                window: window.clone(),
                sent_at: sent_at.clone(),
                deadline: load.deadline,
            },
        ));
        tasks.spawn(grpc_receiver(
            replies,
            load.totals.clone(),
            InFlight {
                window,
                sent_at,
                deadline: load.deadline,
            },
        ));
    }
    Ok(())
}

/// A gRPC stream's requests in flight, shared by its sender and its receiver.
struct InFlight {
    /// One permit per request that may be sent before its reply.
    window: Arc<Semaphore>,
    /// When each request in flight was sent, oldest first.
    sent_at: Arc<Mutex<VecDeque<Instant>>>,
    deadline: Instant,
}

/// Sends `req` (with fresh ids when asked) whenever the window allows, until the deadline.
async fn grpc_sender(
    tx: mpsc::Sender<PublishRequest>,
    req: PublishRequest,
    ids: Option<Arc<str>>,
    next_id: Arc<AtomicU64>,
    totals: Arc<Totals>,
    f: InFlight,
) {
    while Instant::now() < f.deadline {
        let Ok(p) = f.window.acquire().await else {
            break;
        };
        p.forget();
        f.sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Instant::now());
        let mut r = req.clone();
        if let Some(p) = &ids {
            let n0 = next_id.fetch_add(r.items.len() as u64, Ordering::Relaxed);
            for (i, it) in r.items.iter_mut().enumerate() {
                it.id = format!("{p}-{:x}", n0 + i as u64);
            }
        }
        if tx.send(r).await.is_err() {
            totals.outcome(0, Duration::ZERO, Some("stream closed".into()));
            break;
        }
    }
}

/// Books each reply against its request's send time and reopens the window, until the deadline
/// has passed and nothing is in flight (or the stream ends or stalls).
async fn grpc_receiver(
    mut replies: tonic::Streaming<PublishReply>,
    totals: Arc<Totals>,
    f: InFlight,
) {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), replies.message());
        let (items, err) = match r.await {
            Ok(Ok(Some(r))) if r.error.is_empty() => (u64::from(r.accepted), None),
            Ok(Ok(Some(r))) => (0, Some(r.error)),
            Ok(Ok(None)) => break,
            Ok(Err(s)) => (0, Some(s.message().to_owned())),
            Err(_) => break,
        };
        let t = f
            .sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        totals.outcome(items, t.map_or(Duration::ZERO, |t| t.elapsed()), err);
        f.window.add_permits(1);
        if Instant::now() >= f.deadline
            && f.sent_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            break;
        }
    }
}

/// The benchmark's result document.
fn result(
    args: &PublishArgs,
    machine: Machine,
    totals: &Totals,
    elapsed: f64,
    server_cpu_pct: Option<f64>,
) -> PublishResult {
    let items = totals.items.load(Ordering::Relaxed);
    let latency = totals
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    PublishResult {
        system: args.system.clone(),
        scenario: args.scenario.clone(),
        machine,
        api: Some(args.api),
        batch: args.batch,
        concurrency: args.concurrency,
        window: if args.api == Api::Grpc {
            args.window
        } else {
            1
        },
        duration_s: (elapsed * 1000.0).round() / 1000.0,
        items,
        calls: totals.calls.load(Ordering::Relaxed),
        errors: totals.errors.load(Ordering::Relaxed),
        items_per_s: (items as f64 / elapsed).round(),
        call_latency: latency.map(|h| Summary::of(&h)).unwrap_or_default(),
        server_cpu_pct,
        first_error: totals
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    }
}
