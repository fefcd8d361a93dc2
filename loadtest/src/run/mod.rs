//! `gripmesh-loadtest run`: connect the clients, publish step by step, measure.
//!
//! [`run`] starts the server when asked to, then goes through the phases in turn: plan the
//! clients ([`plan`]), measure the idle server, connect ([`connect`]), publish step by step
//! ([`steps`], each step in [`step`]) and gather the [`RunResult`].

mod args;
mod connect;
mod plan;
mod step;
mod steps;

use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::procfs::{self, Machine};
use crate::report::{ConnectResult, RunConfig, RunResult, ServerResult};
use crate::spawn::{self, Spawned};
use crate::stats::MAX_STEPS;

pub(crate) use args::RunArgs;

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

/// Runs the load test described by `args`. The second value is false when `--fail-on-loss`
/// was given and something was lost.
pub(crate) async fn run(args: &RunArgs) -> Result<(RunResult, bool)> {
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

fn msg_unix() -> u64 {
    crate::msg::now_us() / 1_000_000
}

/// The phases of a run against a server that is up: plan, connect, publish, gather.
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
    let ctx = plan::context(args, edges, pids).await?;

    // Idle server memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = (!ctx.pids.is_empty()).then(|| procfs::tree_rss_kib(&ctx.pids));

    let (connect, mut clients_set) = connect::connect_all(args, &ctx).await?;
    connect::print_summary(&connect);
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let server = connect::server_memory(&ctx, rss_before, &connect);

    let stepping = steps::run_steps(args, &ctx, publish_url, grpc_url).await?;

    let server = server.map(|mut s| {
        s.rss_end_kib = procfs::tree_rss_kib(&ctx.pids);
        s
    });
    let errors = ctx
        .shared
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
    let measured = Measured {
        connect,
        server,
        stepping,
        errors,
    };
    Ok(result(args, edges, machine, started_unix, measured))
}

/// What the phases measured.
struct Measured {
    connect: ConnectResult,
    server: Option<ServerResult>,
    stepping: steps::Stepping,
    errors: std::collections::BTreeMap<String, u64>,
}

/// The run's result document.
fn result(
    args: &RunArgs,
    edges: &[String],
    machine: Machine,
    started_unix: u64,
    m: Measured,
) -> RunResult {
    let steps::Stepping {
        rates,
        steps,
        series,
    } = m.stepping;
    let best = steps
        .iter()
        .filter(|s| s.passed)
        .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s))
        .cloned();
    let total_lost = steps.iter().map(|s| s.lost).sum();
    let series = std::mem::take(&mut *series.lock().unwrap_or_else(|e| e.into_inner()));
    RunResult {
        system: args.system.clone(),
        scenario: args.scenario.clone(),
        started_unix,
        machine,
        config: RunConfig {
            transports: args.transport.clone(),
            clients_per_transport: args.clients,
            clients: args.clients * args.transport.len(),
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
        connect: m.connect,
        server: m.server,
        steps,
        series,
        best,
        total_lost,
        errors: m.errors,
    }
}
