//! `gripmesh-loadtest run`: connect the clients, publish step by step, measure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clients::{self, Plan, Shared, Transport, state};
use crate::procfs::{self, Machine};
use crate::publish::{self, Api, Formats, Publisher};
use crate::report::{ConnectResult, RunConfig, RunResult, ServerResult, StepResult, human};
use crate::spawn::{self, Spawned};
use crate::stats::{MAX_STEPS, SecondPoint, Summary};

/// Flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// System under test, for reports and tables (`gripmesh`, `pushpin`).
    #[arg(long, default_value = "gripmesh")]
    pub system: String,
    /// Scenario name, pairs results of different systems in `table`.
    #[arg(long, default_value = "custom")]
    pub scenario: String,
    /// Edge (client listener) address, `host:port`; repeat for several edges (clients are
    /// spread round-robin).
    #[arg(long = "edge")]
    pub edges: Vec<String>,
    /// HTTP publish API base URL.
    #[arg(long, default_value = "http://127.0.0.1:5561")]
    pub publish: String,
    /// gRPC publish API base URL (for `--api grpc`).
    #[arg(long)]
    pub grpc: Option<String>,
    /// Start `PATH standalone` on loopback ports (high limits, JSON logs to a temp file) and
    /// measure it; `--edge`/`--publish`/`--grpc` are then ignored.
    #[arg(long, value_name = "PATH")]
    pub spawn_gripmesh: Option<PathBuf>,
    /// With --spawn-gripmesh: route everything to this GRIP origin (`host:port`, e.g. a
    /// `gripmesh-loadtest origin`), WebSockets over HTTP; default: the built-in `test` target.
    #[arg(long, value_name = "ADDR")]
    pub origin: Option<String>,
    /// Client *i* presents the API key `key-<i mod K>` (`&apikey=`), e.g. to meter usage per
    /// key on an `authz` route (0: no key).
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// With --spawn-gripmesh: the routes carry `authz` (give the gateway with
    /// `--gripmesh-arg=--authz-gateway=http://<loadtest origin>/auth`).
    #[arg(long)]
    pub authz_route: bool,
    /// Subscription filter on every subscription (repeatable), e.g. `skip-self`; passed to the
    /// tool's origin as `&filter=NAME` (needs `--origin` with a `gripmesh-loadtest origin`).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Client *i* gets sub meta `user` = `u-<i mod U>` (`&user=`, the tool's origin sets it;
    /// 0: no user).
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    /// Publish meta `sender` on every item. With `--filter skip-self`, clients whose user is
    /// this value are skipped by the server: they are expected to get nothing (and anything
    /// they get is counted as `unexpected`).
    #[arg(long)]
    pub sender: Option<String>,
    /// Give every item an id (`<run>-<seq>`, unique across runs), as publishers to channels
    /// with history do.
    #[arg(long)]
    pub ids: bool,
    /// Extra flag for the spawned gripmesh (repeatable), e.g. `--gripmesh-arg=--nats=…`.
    #[arg(long, allow_hyphen_values = true)]
    pub gripmesh_arg: Vec<String>,
    /// Server process to measure (RSS, CPU), with its descendants; repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Client transports, comma-separated; each gets `--clients` clients.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ws")]
    pub transport: Vec<Transport>,
    /// Clients per transport.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Channels; client i of each transport subscribes to channel i % channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Channel name prefix (channels are PREFIX0, PREFIX1, …).
    #[arg(long, default_value = "lt")]
    pub channel_prefix: String,
    /// Messages per second per channel, one benchmark step per value (comma-separated); empty
    /// or 0 = connect only (idle RSS, ramp rate).
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// One publish call (batch) per tick.
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
    /// Seconds each step publishes.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publish API; several (comma-separated) alternate between steps.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http")]
    pub api: Vec<Api>,
    /// Most items per publish call (a tick with more makes several calls, one after the other).
    #[arg(long, default_value_t = 1000)]
    pub max_batch: u64,
    /// Connection opens per second (0 = as fast as --connect-concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds allowed for the whole connection phase.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// Seconds to wait after connecting before measuring RSS and publishing (subscriptions
    /// settle).
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Most seconds to wait after a step for late deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// A step passes with no loss and p99 below this.
    #[arg(long, default_value_t = 50.0)]
    pub p99_target_ms: f64,
    /// Stop stepping after the first failing step.
    #[arg(long)]
    pub stop_on_fail: bool,
    /// Keep stepping after a step collapsed (lost more than 1% of its deliveries, or its
    /// publishing overran twice its duration because the server accepted publishes too slowly);
    /// by default the remaining, higher steps are skipped.
    #[arg(long)]
    pub continue_after_collapse: bool,
    /// Publish every channel's messages at the same instants instead of spreading the channels'
    /// phases over the period (bursty: with 1,000 channels at 1 msg/s, one call of 1,000 items
    /// per second instead of 50 items per tick).
    #[arg(long)]
    pub no_stagger: bool,
    /// Exit non-zero on any loss, connection failure or disconnect.
    #[arg(long)]
    pub fail_on_loss: bool,
    /// Clients per source address (loopback edges only; 0 = don't bind). Each address has
    /// ~28k ephemeral ports (ip_local_port_range), and the previous run's ports linger in
    /// TIME_WAIT for 60 s.
    #[arg(long, default_value_t = 5_000)]
    pub clients_per_source_ip: usize,
    /// First source address for loopback edges; the next one is used every
    /// --clients-per-source-ip clients. Default: a random 127.X.Y.1, so back-to-back runs
    /// don't collide with each other's TIME_WAIT ports.
    #[arg(long)]
    pub source_ip_base: Option<Ipv4Addr>,
    /// WebSocket path.
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,
    /// HTTP stream path.
    #[arg(long, default_value = "/stream")]
    pub stream_path: String,
    /// SSE path.
    #[arg(long, default_value = "/sse")]
    pub sse_path: String,
    /// Long-poll path.
    #[arg(long, default_value = "/response")]
    pub poll_path: String,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// Defaults, as if given no flags.
    pub fn defaults() -> RunArgs {
        use clap::FromArgMatches;
        let cmd = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
        let m = cmd.get_matches_from(Vec::<String>::new());
        RunArgs::from_arg_matches(&m).expect("defaults parse")
    }
}

async fn resolve(edge: &str) -> Result<(SocketAddr, String)> {
    let hostport = edge
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let addr = tokio::net::lookup_host(&hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .ok_or_else(|| anyhow!("{hostport}: no address"))?;
    Ok((addr, hostport))
}

fn progress(quiet: bool, len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// What a step's bookkeeping needs from the run.
struct Ctx {
    shared: Arc<Shared>,
    plans: Vec<Plan>,
    channel_of: Vec<usize>,
    channels: Vec<String>,
    channels_json: Vec<String>,
    formats: Formats,
    labels: publish::Labels,
    /// Per client: whether published items are due to it (false when a filter skips it).
    expects: Vec<bool>,
    pids: Vec<u32>,
}

/// The path and query of client `k` of a transport: its channel, key, user and filters.
fn client_path(
    path: &str,
    channel: &str,
    key: Option<usize>,
    user: Option<usize>,
    filters: &[String],
) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut p = format!("{path}{sep}channel={channel}");
    if let Some(k) = key {
        p.push_str(&format!("&apikey=key-{k}"));
    }
    if let Some(u) = user {
        p.push_str(&format!("&user=u-{u}"));
    }
    for f in filters {
        p.push_str("&filter=");
        p.push_str(f);
    }
    p
}

/// Whether a subscriber with sub meta `user` gets items published with meta `sender` through
/// `filters` (only `skip-self` decides here; the tool's items carry no other publish meta).
fn expects_delivery(filters: &[String], user: Option<&str>, sender: Option<&str>) -> bool {
    let skip_self = filters.iter().any(|f| f == "skip-self");
    !(skip_self && user.is_some() && user == sender)
}

/// Runs the load test described by `args`. The second value is false when `--fail-on-loss`
/// was given and something was lost.
pub async fn run(args: &RunArgs) -> Result<(RunResult, bool)> {
    if args.transport.is_empty() || args.clients == 0 {
        bail!("no clients: give --clients N and --transport");
    }
    if args.channels == 0 {
        bail!("--channels must be at least 1");
    }
    if args.rate.len() > MAX_STEPS {
        bail!("at most {MAX_STEPS} steps");
    }
    let nofile = crate::procfs::raise_nofile();
    let total = args.clients * args.transport.len();
    if (total as u64) + 64 > nofile {
        eprintln!(
            "warning: {total} clients but the open-file limit is {nofile}; expect connect failures"
        );
    }
    let machine = Machine::current();
    let started_unix = msg_unix();

    // The server.
    let mut spawned: Option<Spawned> = None;
    let (edges, publish_url, grpc_url) = if let Some(bin) = &args.spawn_gripmesh {
        let mut routes = match &args.origin {
            Some(o) => spawn::origin_routes(o),
            None => "* test\n".to_owned(),
        };
        if args.authz_route {
            routes = routes
                .replace("* ", "*,authz ")
                .replace("*,proto", "*,authz,proto");
        }
        let s = spawn::spawn_gripmesh(bin, &routes, &args.gripmesh_arg).await?;
        let e = vec![s.addr("edge")?.to_string()];
        let p = format!("http://{}", s.addr("publish")?);
        let g = format!("http://{}", s.addr("grpc")?);
        spawned = Some(s);
        (e, p, Some(g))
    } else {
        if args.edges.is_empty() {
            bail!("give --edge ADDR (or --spawn-gripmesh PATH)");
        }
        (args.edges.clone(), args.publish.clone(), args.grpc.clone())
    };
    let mut pids = args.server_pids.clone();
    if let Some(s) = &spawned {
        pids.push(s.pid);
    }
    let result = run_inner(
        args,
        &edges,
        &publish_url,
        grpc_url.as_deref(),
        pids,
        machine,
        started_unix,
    )
    .await;
    if let Some(s) = spawned {
        if result.is_err() {
            eprintln!("gripmesh log: {}", s.log_path().display());
        }
        s.stop().await;
    }
    let r = result?;
    let ok = !args.fail_on_loss
        || (r.total_lost == 0
            && r.connect.failed == 0
            && r.steps
                .iter()
                .all(|s| s.disconnected == 0 && s.publish_errors == 0));
    Ok((r, ok))
}

/// Messages a channel with `phase` (0..1 of a period) should have published `el` seconds into
/// a step of `duration` seconds at `rate` per second: all `total` once the step is over.
fn due(rate: f64, el: f64, duration: f64, phase: f64, total: u64) -> u64 {
    if el >= duration {
        total
    } else {
        ((rate * el + phase).floor() as u64).min(total)
    }
}

/// A pseudo-random 127.X.Y.1 (X in 1..=250).
fn random_loopback() -> Ipv4Addr {
    let r = crate::msg::now_us() ^ (u64::from(std::process::id()) << 20);
    let r = r ^ (r >> 29);
    Ipv4Addr::new(127, 1 + (r % 250) as u8, ((r / 250) % 256) as u8, 1)
}

fn msg_unix() -> u64 {
    crate::msg::now_us() / 1_000_000
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    args: &RunArgs,
    edges: &[String],
    publish_url: &str,
    grpc_url: Option<&str>,
    pids: Vec<u32>,
    machine: Machine,
    started_unix: u64,
) -> Result<RunResult> {
    let mut targets = Vec::new();
    for e in edges {
        let (addr, host) = resolve(e).await?;
        targets.push((addr, Arc::<str>::from(host)));
    }
    let channels: Vec<String> = (0..args.channels)
        .map(|j| format!("{}{j}", args.channel_prefix))
        .collect();
    let channels_json = channels
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .collect();

    // Plans: per transport, client k ⇒ channel k % C, edge k % E.
    let source_base = u32::from(args.source_ip_base.unwrap_or_else(random_loopback));
    let mut plans = Vec::new();
    let mut channel_of = Vec::new();
    let mut expects = Vec::new();
    for &t in &args.transport {
        let path = match t {
            Transport::Ws => &args.ws_path,
            Transport::Sse => &args.sse_path,
            Transport::Stream => &args.stream_path,
            Transport::Poll => &args.poll_path,
        };
        for k in 0..args.clients {
            let idx = plans.len();
            let ch = k % args.channels;
            let (addr, host) = &targets[k % targets.len()];
            let source = match addr.ip() {
                IpAddr::V4(ip) if ip.is_loopback() && args.clients_per_source_ip > 0 => {
                    let n = source_base.wrapping_add((idx / args.clients_per_source_ip) as u32);
                    Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))))
                }
                _ => None,
            };
            let key = (args.keys > 0).then(|| k % args.keys);
            let user = (args.users > 0).then(|| k % args.users);
            let user_name = user.map(|u| format!("u-{u}"));
            expects.push(expects_delivery(
                &args.filters,
                user_name.as_deref(),
                args.sender.as_deref(),
            ));
            plans.push(Plan {
                idx,
                transport: t,
                addr: *addr,
                host: host.clone(),
                path: client_path(path, &channels[ch], key, user, &args.filters),
                source,
                header: None,
            });
            channel_of.push(ch);
        }
    }
    let total = plans.len();
    let shared = Arc::new(Shared::new(total));
    let ctx = Ctx {
        shared: shared.clone(),
        plans,
        channel_of,
        channels,
        channels_json,
        formats: Formats::for_transports(&args.transport),
        labels: publish::Labels {
            id_prefix: args.ids.then(|| format!("{:x}", crate::msg::now_us())),
            sender: args.sender.clone(),
        },
        expects,
        pids,
    };
    let skipped = ctx.expects.iter().filter(|e| !**e).count();
    if skipped > 0 {
        eprintln!("{skipped} clients are skipped by their filter: they expect no deliveries");
    }

    // Idle server memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = (!ctx.pids.is_empty()).then(|| procfs::tree_rss_kib(&ctx.pids));

    // Connect.
    let connect = connect_all(args, &ctx).await?;
    let mut clients_set = connect.1;
    let connect = connect.0;
    eprintln!(
        "connected {}/{} clients in {:.2} s ({:.0} opens/s, {} failed)",
        connect.connected,
        connect.attempted,
        connect.elapsed_s,
        connect.opens_per_s,
        connect.failed
    );
    for (e, n) in &connect.errors {
        eprintln!("  {n} × {e}");
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let server = rss_before.map(|before| {
        let after = procfs::tree_rss_kib(&ctx.pids);
        ServerResult {
            pids: ctx.pids.clone(),
            rss_before_kib: before,
            rss_connected_kib: after,
            rss_per_conn_kib: if connect.connected > 0 {
                (after as f64 - before as f64) / connect.connected as f64
            } else {
                0.0
            },
            rss_end_kib: after,
        }
    });
    if let Some(s) = &server {
        eprintln!(
            "server RSS {} KiB → {} KiB: {:.2} KiB per connection",
            s.rss_before_kib, s.rss_connected_kib, s.rss_per_conn_kib
        );
    }

    // Steps.
    let series = Arc::new(Mutex::new(Vec::<SecondPoint>::new()));
    let current_step = Arc::new(AtomicUsize::new(0));
    let rates: Vec<f64> = args.rate.iter().copied().filter(|r| *r > 0.0).collect();
    let mut steps: Vec<StepResult> = Vec::new();
    // Per step, the loss-checked clients it expected deliveries to.
    let mut books: Vec<Vec<usize>> = Vec::new();
    if !rates.is_empty() {
        let pb = progress(
            args.quiet,
            (rates.len() as f64 * args.duration).ceil() as u64,
            "{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
        );
        let collector = {
            let shared = shared.clone();
            let series = series.clone();
            let step = current_step.clone();
            let pb = pb.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut iv = tokio::time::interval(Duration::from_secs(1));
                iv.tick().await;
                loop {
                    iv.tick().await;
                    let h = shared.recorder.take_second();
                    let p = SecondPoint::of(
                        start.elapsed().as_secs_f64().round(),
                        step.load(Ordering::Relaxed),
                        &h,
                    );
                    pb.set_message(format!(
                        "step {}: {} delivered/s, p50 {} ms, p99 {} ms",
                        p.step,
                        human(p.delivered as f64),
                        p.p50_ms,
                        p.p99_ms
                    ));
                    series.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                }
            })
        };
        for (i, &rate) in rates.iter().enumerate() {
            current_step.store(i, Ordering::Relaxed);
            let api = args.api[i % args.api.len().max(1)];
            let (st, live) = run_step(args, &ctx, i, rate, api, publish_url, grpc_url, &pb).await?;
            books.push(live);
            let line = format!(
                "step {i}: {} msg/s/ch via {api:?} → {} deliveries/s (target {}), missing after drain {}, unexpected {}, reordered {}, disconnected {}, p50 {} / p90 {} / p99 {} / p99.9 {} / max {} ms, server CPU {}, tool CPU {:.0}% [{}]{}",
                human(rate),
                human(st.delivered_per_s),
                human(st.target_deliveries_per_s),
                st.lost,
                st.unexpected,
                st.reordered,
                st.disconnected,
                st.latency.p50_ms,
                st.latency.p90_ms,
                st.latency.p99_ms,
                st.latency.p999_ms,
                st.latency.max_ms,
                st.server_cpu_pct
                    .map_or_else(|| "—".to_owned(), |c| format!("{c:.0}%")),
                st.tool_cpu_pct,
                if st.passed {
                    "pass"
                } else if st.overran {
                    "FAIL: publishing overran"
                } else {
                    "FAIL"
                },
                st.first_error
                    .as_ref()
                    .map(|e| format!(" first error: {e}"))
                    .unwrap_or_default(),
            );
            pb.suspend(|| eprintln!("{line}"));
            let samples = std::mem::take(
                &mut *shared
                    .reorder_samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            for (c, prev, seq) in samples {
                eprintln!(
                    "  out of order: client {c} got message {} (step {}) after {} (step {})",
                    seq & 0xff_ffff_ffff,
                    crate::msg::seq_step(seq),
                    prev & 0xff_ffff_ffff,
                    crate::msg::seq_step(prev)
                );
            }
            let failed = !st.passed;
            let collapsed = st.overran || st.lost > st.expected / 100 || st.disconnected > 0;
            steps.push(st);
            if failed && args.stop_on_fail {
                break;
            }
            if collapsed && !args.continue_after_collapse && i + 1 < rates.len() {
                pb.suspend(|| {
                    eprintln!(
                        "step {i} collapsed (loss > 1% or publishing overran): skipping the higher rates"
                    );
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Messages that missed their step's drain window but still arrive count as late, not
        // lost: give stragglers one more drain period, then settle every step's books.
        let final_received = |i: usize| -> u64 {
            books[i]
                .iter()
                .map(|&c| shared.slots[c].received[i].load(Ordering::Relaxed))
                .sum()
        };
        let until = Instant::now() + Duration::from_secs_f64(args.drain.max(0.0));
        while steps
            .iter()
            .enumerate()
            .any(|(i, s)| final_received(i) < s.expected)
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, st) in steps.iter_mut().enumerate() {
            let fin = final_received(i).max(st.received);
            st.late = fin - st.received;
            st.lost = st.expected.saturating_sub(fin);
        }
        collector.abort();
        pb.finish_and_clear();
    }
    let server = server.map(|mut s| {
        s.rss_end_kib = procfs::tree_rss_kib(&ctx.pids);
        s
    });
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (e, n) in errors
        .iter()
        .filter(|(e, _)| !connect.errors.contains_key(*e))
    {
        eprintln!("  {n} × {e}");
    }
    clients_set.abort_all();
    while clients_set.join_next().await.is_some() {}
    let best = steps
        .iter()
        .filter(|s| s.passed)
        .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s))
        .cloned();
    let total_lost = steps.iter().map(|s| s.lost).sum();
    let series = std::mem::take(&mut *series.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(RunResult {
        system: args.system.clone(),
        scenario: args.scenario.clone(),
        started_unix,
        machine,
        config: RunConfig {
            transports: args.transport.clone(),
            clients_per_transport: args.clients,
            clients: total,
            channels: args.channels,
            size: args.size.max(crate::msg::MIN_SIZE),
            tick_ms: args.tick_ms,
            api: args.api.first().copied(),
            rates,
            step_duration_s: args.duration,
            edges: edges.to_vec(),
            p99_target_ms: args.p99_target_ms,
            connect_concurrency: args.connect_concurrency,
        },
        connect,
        server,
        steps,
        series,
        best,
        total_lost,
        errors,
    })
}

async fn connect_all(args: &RunArgs, ctx: &Ctx) -> Result<(ConnectResult, JoinSet<()>)> {
    let total = ctx.plans.len() as u64;
    let pb = progress(
        args.quiet,
        total,
        "{elapsed_precise} connecting [{bar:30}] {pos}/{len} {per_sec} {msg}",
    );
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = Instant::now();
    let spawner = {
        let plans = ctx.plans.clone();
        let shared = ctx.shared.clone();
        let ramp = args.ramp;
        tokio::spawn(async move {
            let mut set = JoinSet::new();
            for (i, plan) in plans.into_iter().enumerate() {
                if ramp > 0.0 {
                    let due = started + Duration::from_secs_f64(i as f64 / ramp);
                    tokio::time::sleep_until(due.into()).await;
                }
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    break;
                };
                set.spawn(clients::run(plan, shared.clone(), permit));
            }
            set
        })
    };
    let deadline = started + Duration::from_secs_f64(args.connect_timeout);
    let shared = &ctx.shared;
    let mut finished_at = None;
    loop {
        let c = shared.connected.load(Ordering::Relaxed);
        let f = shared.failed.load(Ordering::Relaxed);
        pb.set_position(c + f);
        pb.set_message(format!("{f} failed"));
        if c + f >= total {
            finished_at = Some(started.elapsed());
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.finish_and_clear();
    let mut set = spawner.await?;
    let elapsed = finished_at
        .unwrap_or_else(|| started.elapsed())
        .as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    let failed = total - connected;
    if finished_at.is_none() {
        set.abort_all();
        bail!(
            "connection phase timed out: {connected} of {total} connected after {:.0} s",
            args.connect_timeout
        );
    }
    let latency = Summary::of(
        &shared
            .connect_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok((
        ConnectResult {
            attempted: total,
            connected,
            failed,
            elapsed_s: (elapsed * 1000.0).round() / 1000.0,
            opens_per_s: if elapsed > 0.0 {
                (connected as f64 / elapsed).round()
            } else {
                0.0
            },
            latency,
            errors,
        },
        set,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    args: &RunArgs,
    ctx: &Ctx,
    step: usize,
    rate: f64,
    api: Api,
    publish_url: &str,
    grpc_url: Option<&str>,
    pb: &ProgressBar,
) -> Result<(StepResult, Vec<usize>)> {
    let shared = &ctx.shared;
    let mut publisher = Publisher::new(api, publish_url, grpc_url).await?;
    // Subscribers per channel among loss-checked clients connected now.
    let connected: Vec<usize> = (0..ctx.plans.len())
        .filter(|&i| shared.slots[i].state.load(Ordering::Relaxed) == state::CONNECTED)
        .collect();
    let (live, skipped): (Vec<usize>, Vec<usize>) =
        connected.into_iter().partition(|&i| ctx.expects[i]);
    let mut subs = vec![0u64; ctx.channels.len()];
    let mut all_subs = 0u64;
    for &i in &live {
        all_subs += 1;
        if ctx.plans[i].transport != Transport::Poll {
            subs[ctx.channel_of[i]] += 1;
        }
    }
    let disconnected0 = shared.disconnected.load(Ordering::Relaxed);
    let cpu0 = procfs::tree_cpu_secs(&ctx.pids);
    let tool0 = procfs::cpu_secs(std::process::id()).unwrap_or(0.0);
    let t0 = Instant::now();

    let tick = Duration::from_millis(args.tick_ms.max(1));
    let mut iv = tokio::time::interval(tick);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let total_per_channel = (rate * args.duration).round() as u64;
    let nch = ctx.channels.len();
    // Each channel's messages are due at its own phase within the period (channel j is offset
    // by j/C of 1/rate), so many slow channels spread over the ticks instead of all landing in
    // the same one; a single channel is unaffected.
    let phase: Vec<f64> = (0..nch)
        .map(|j| {
            if args.no_stagger {
                0.0
            } else {
                j as f64 / nch as f64
            }
        })
        .collect();
    let mut sent = vec![0u64; nch];
    let mut published = vec![0u64; nch];
    let mut calls = 0u64;
    let mut errors = 0u64;
    let mut first_error = None;
    let mut call_hist = crate::stats::new_hist();
    let mut last_pos = 0;
    // A server that accepts publishes much slower than asked would stretch the step forever.
    let overrun_at = Duration::from_secs_f64(args.duration * 2.0 + 5.0);
    let mut overran = false;
    while sent.iter().any(|&s| s < total_per_channel) {
        if t0.elapsed() > overrun_at {
            overran = true;
            break;
        }
        iv.tick().await;
        let el = t0.elapsed().as_secs_f64().min(args.duration);
        let mut runs = Vec::new();
        for ch in 0..nch {
            let due = due(rate, el, args.duration, phase[ch], total_per_channel);
            if due > sent[ch] {
                runs.push((ch, sent[ch], due - sent[ch]));
                sent[ch] = due;
            }
        }
        if runs.is_empty() {
            continue;
        }
        let batches = publish::plan_tick(&runs, args.max_batch);
        let outcomes = publisher
            .publish_tick(
                &batches,
                &ctx.channels,
                &ctx.channels_json,
                step,
                args.size,
                ctx.formats,
                &ctx.labels,
            )
            .await;
        for (b, o) in batches.iter().zip(outcomes) {
            calls += 1;
            crate::stats::record(&mut call_hist, o.elapsed.as_micros() as u64);
            if o.error.is_none() && o.accepted == b.items() {
                for &(ch, _, cnt) in &b.runs {
                    published[ch] += cnt;
                }
            } else {
                errors += 1;
                if first_error.is_none() {
                    first_error = o.error.clone();
                }
            }
        }
        let pos = (step as f64 * args.duration + el) as u64;
        if pos != last_pos {
            pb.set_position(pos);
            last_pos = pos;
        }
    }
    let publish_elapsed = t0.elapsed().as_secs_f64();
    let expected: u64 = published.iter().zip(&subs).map(|(p, s)| p * s).sum();
    let received_now = || -> (u64, u64) {
        let mut r = 0;
        let mut poll = 0;
        for &i in &live {
            let n = shared.slots[i].received[step].load(Ordering::Relaxed);
            if ctx.plans[i].transport == Transport::Poll {
                poll += n;
            } else {
                r += n;
            }
        }
        (r, poll)
    };
    // Wait for late deliveries.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain.max(0.0));
    while received_now().0 < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let (received, poll_received) = received_now();
    let reordered = live
        .iter()
        .map(|&i| shared.slots[i].reordered.swap(0, Ordering::Relaxed))
        .sum();
    let latency = Summary::of(&shared.recorder.step(step));
    let lost = expected.saturating_sub(received);
    let unexpected = skipped
        .iter()
        .map(|&i| shared.slots[i].received[step].load(Ordering::Relaxed))
        .sum();
    let disconnected = shared.disconnected.load(Ordering::Relaxed) - disconnected0;
    let server_cpu_pct = (!ctx.pids.is_empty())
        .then(|| ((procfs::tree_cpu_secs(&ctx.pids) - cpu0) / wall * 1000.0).round() / 10.0);
    let tool_cpu_pct =
        ((procfs::cpu_secs(std::process::id()).unwrap_or(0.0) - tool0) / wall * 1000.0).round()
            / 10.0;
    let published_total: u64 = published.iter().sum();
    let duration = publish_elapsed.max(args.duration).max(1e-9);
    let delivered_per_s = ((received as f64 / duration) * 10.0).round() / 10.0;
    let _ = all_subs;
    let target = rate * subs.iter().sum::<u64>() as f64;
    let passed = lost == 0
        && unexpected == 0
        && !overran
        && errors == 0
        && disconnected == 0
        && published_total > 0
        && latency.p99_ms < args.p99_target_ms;
    let loss_checked: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&i| ctx.plans[i].transport != Transport::Poll)
        .collect();
    let result = StepResult {
        step,
        rate_per_channel: rate,
        target_deliveries_per_s: target,
        duration_s: (publish_elapsed * 1000.0).round() / 1000.0,
        publish_calls: calls,
        publish_errors: errors,
        published: published_total,
        publish_items_per_s: (published_total as f64 / duration).round(),
        publish_call: Summary::of(&call_hist),
        expected,
        received,
        lost,
        unexpected,
        skipped_clients: skipped.len() as u64,
        reordered,
        poll_received,
        delivered_per_s,
        latency,
        disconnected,
        server_cpu_pct,
        tool_cpu_pct,
        passed,
        overran,
        late: 0,
        first_error,
    };
    Ok((result, loss_checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggered_channels_spread_over_ticks_and_sum_up() {
        // 1,000 channels at 1 msg/s, 50 ms ticks over 2 s: each tick publishes ~50 items, and
        // every channel gets exactly 2 messages.
        let (rate, dur, nch, total) = (1.0, 2.0, 1000usize, 2u64);
        let mut sent = vec![0u64; nch];
        let mut per_tick = Vec::new();
        for k in 1..=40 {
            let el = f64::from(k) * 0.05;
            let mut n = 0;
            for (ch, s) in sent.iter_mut().enumerate() {
                let d = due(rate, el, dur, ch as f64 / nch as f64, total);
                n += d - *s;
                *s = d;
            }
            per_tick.push(n);
        }
        assert!(sent.iter().all(|&s| s == total));
        assert!(per_tick.iter().all(|&n| n <= 60), "{per_tick:?}");
        // Without a phase, every channel fires in the same tick.
        assert_eq!(due(1.0, 0.99, 2.0, 0.0, 2), 0);
        assert_eq!(due(1.0, 1.0, 2.0, 0.0, 2), 1);
        assert_eq!(due(1.0, 5.0, 2.0, 0.0, 2), 2);
    }

    #[test]
    fn client_paths_and_skip_self_expectations() {
        let f = vec!["skip-self".to_owned()];
        assert_eq!(
            client_path("/ws", "lt0", Some(3), Some(1), &f),
            "/ws?channel=lt0&apikey=key-3&user=u-1&filter=skip-self"
        );
        assert_eq!(
            client_path("/sse?x=1", "c", None, None, &[]),
            "/sse?x=1&channel=c"
        );
        // skip-self skips only the subscriber whose user is the sender.
        assert!(!expects_delivery(&f, Some("u-0"), Some("u-0")));
        assert!(expects_delivery(&f, Some("u-1"), Some("u-0")));
        assert!(expects_delivery(&f, None, Some("u-0")));
        assert!(expects_delivery(&f, Some("u-0"), None));
        assert!(expects_delivery(&[], Some("u-0"), Some("u-0")));
    }

    #[test]
    fn random_source_addresses_are_loopback() {
        let ip = random_loopback();
        assert!(ip.is_loopback());
        assert_ne!(ip.octets()[1], 0);
    }
}
