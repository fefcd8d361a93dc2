//! `gripmesh-loadtest`: load test tool and benchmark driver for gripmesh (and, through the
//! Pushpin-compatible publish API, for Pushpin).
//!
//! * `run` — open N clients (WebSocket, SSE, HTTP stream, long-poll) across edges, publish at
//!   set rates (HTTP batched or gRPC streaming), measure deliveries/s, loss, latency
//!   percentiles, connection ramp and server RSS per connection; JSON and HTML reports.
//! * `publish` — publish API throughput (items/s) of one control process.
//! * `resume` — time for clients coming back with a last id to get the items they missed
//!   (channels with history).
//! * `origin` — a GRIP origin equivalent to gripmesh's built-in `test` target, so gripmesh
//!   and Pushpin can be driven through the same origin.
//! * `smoke` — a few-second end-to-end check for CI (exit non-zero on loss).
//! * `table` / `report` — markdown rows from result files; HTML from a result file.
//! * `storm` — reconnect storm: HTTP holds opened back to back, sustained open rate and
//!   failures.
//! * `drain` — the clients of a drained edge (SIGTERM) reconnecting to another: failures,
//!   time to the last reconnect, per-client reconnect time.
//! * `soak` — churning clients with steady publishing; fails when the server's RSS or open
//!   files keep growing once warm.

mod bench_publish;
mod clients;
mod drain;
mod http1;
mod msg;
mod origin;
mod procfs;
mod publish;
mod report;
mod resume;
mod run;
mod soak;
mod spawn;
mod stats;
mod storm;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::report::AnyResult;

/// Load test tool for gripmesh and Pushpin.
#[derive(Debug, Parser)]
#[command(name = "gripmesh-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Connect clients, publish step by step, measure delivery, loss, latency and memory.
    Run(Box<run::RunArgs>),
    /// Measure publish API throughput (items/s).
    Publish(Box<bench_publish::PublishArgs>),
    /// Publish items to a channel with history, then time clients resuming after them.
    Resume(Box<resume::ResumeArgs>),
    /// Serve a GRIP origin like gripmesh's built-in `test` target.
    Origin(OriginArgs),
    /// A few-second end-to-end check: 50 WS + 50 stream clients, 20 publishes (HTTP and gRPC),
    /// exit non-zero on any loss.
    Smoke(SmokeArgs),
    /// Print markdown table rows (gripmesh next to Pushpin) from result JSON files.
    Table(TableArgs),
    /// Churn clients and publishes for a long time, sampling the server's RSS and fds; fail if
    /// they keep growing once warm.
    Soak(soak::SoakArgs),
    /// Render the HTML report of a `run` result JSON file.
    Report(ReportArgs),
    /// Reconnect storm: open HTTP holds (stream, SSE, long-poll) back to back for a while and
    /// report the sustained open rate and failures.
    Storm(Box<storm::StormArgs>),
    /// Hold clients on edge A, send it SIGTERM and time them reconnecting to edge B.
    Drain(Box<drain::DrainArgs>),
}

#[derive(Debug, Args)]
struct OriginArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[derive(Debug, Args)]
struct SmokeArgs {
    /// The gripmesh binary to start.
    #[arg(long, default_value = "target/debug/gripmesh")]
    gripmesh: PathBuf,
    /// Clients per transport (WebSocket and HTTP stream).
    #[arg(long, default_value_t = 50)]
    clients: usize,
}

#[derive(Debug, Args)]
struct TableArgs {
    /// Result files (`--json` output of `run` and `publish`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A `run` result JSON file.
    json: PathBuf,
    /// Where to write the HTML.
    #[arg(long)]
    html: PathBuf,
}

fn write_json(path: &Path, r: &AnyResult) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn write_html(path: &Path, r: &report::RunResult) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, report::html(r)).with_context(|| format!("writing {}", path.display()))
}

fn read_result(path: &Path) -> Result<AnyResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

async fn cmd_run(args: &run::RunArgs) -> Result<bool> {
    let (r, ok) = run::run(args).await?;
    if let Some(p) = &args.html {
        write_html(p, &r)?;
    }
    let best = r.best.as_ref().map_or_else(
        || "no passing step".to_owned(),
        |b| {
            format!(
                "best passing step: {} msg/s/ch = {} deliveries/s, p99 {} ms",
                report::human(b.rate_per_channel),
                report::human(b.delivered_per_s),
                b.latency.p99_ms
            )
        },
    );
    if !r.steps.is_empty() {
        println!(
            "{}/{}: {best}, total lost {}",
            r.system, r.scenario, r.total_lost
        );
    }
    if let Some(p) = &args.json {
        write_json(p, &AnyResult::Run(Box::new(r)))?;
    }
    Ok(ok)
}

async fn cmd_smoke(args: &SmokeArgs) -> Result<bool> {
    let mut ra = run::RunArgs::defaults();
    ra.scenario = "smoke".into();
    ra.spawn_gripmesh = Some(args.gripmesh.clone());
    ra.transport = vec![clients::Transport::Ws, clients::Transport::Stream];
    ra.clients = args.clients;
    ra.channels = 5;
    // Two steps of 10 messages per channel (20 msg/s for 0.5 s): one over HTTP, one over gRPC.
    ra.rate = vec![20.0, 20.0];
    ra.duration = 0.5;
    ra.api = vec![publish::Api::Http, publish::Api::Grpc];
    ra.settle = 0.2;
    ra.drain = 5.0;
    ra.fail_on_loss = true;
    ra.quiet = true;
    let (r, ok) = run::run(&ra).await?;
    let expected: u64 = r.steps.iter().map(|s| s.expected).sum();
    let received: u64 = r.steps.iter().map(|s| s.received).sum();
    let reordered: u64 = r.steps.iter().map(|s| s.reordered).sum();
    println!(
        "smoke: {} clients connected ({} failed), {} publishes per channel, {received}/{expected} deliveries, {} lost, {reordered} out of order",
        r.connect.connected,
        r.connect.failed,
        r.steps.iter().map(|s| s.published).sum::<u64>() / ra.channels as u64,
        r.total_lost
    );
    let want = (ra.clients * 2) as u64 * 20;
    if expected != want {
        eprintln!("smoke: expected {want} deliveries to be due, got {expected}");
        return Ok(false);
    }
    Ok(ok && reordered == 0)
}

async fn main_inner(cli: Cli) -> Result<bool> {
    match cli.command {
        Cmd::Run(a) => cmd_run(&a).await,
        Cmd::Publish(a) => {
            let r = bench_publish::run(&a).await?;
            println!(
                "{}/{}: {} items/s over {:?} (batch {}, concurrency {}), {} calls, {} errors, call p50 {} / p99 {} ms{}",
                r.system,
                r.scenario,
                report::human(r.items_per_s),
                r.api.unwrap_or(publish::Api::Http),
                r.batch,
                r.concurrency,
                r.calls,
                r.errors,
                r.call_latency.p50_ms,
                r.call_latency.p99_ms,
                r.first_error
                    .as_ref()
                    .map(|e| format!(", first error: {e}"))
                    .unwrap_or_default()
            );
            let ok = r.errors == 0;
            if let Some(p) = &a.json {
                write_json(p, &AnyResult::Publish(Box::new(r)))?;
            }
            Ok(ok)
        }
        Cmd::Resume(a) => {
            let r = resume::run(&a).await?;
            println!(
                "{}/{}: {} of {} {:?} clients resumed {} items (×{} in flight): last item p50 {} / p90 {} / p99 {} / max {} ms, first item p50 {} / p99 {} ms; {} failed, {} incomplete, {} wrong; {} resumes/s, server CPU {}",
                r.system,
                r.scenario,
                r.complete,
                r.clients,
                a.transport,
                r.items,
                r.concurrency,
                r.time_all.p50_ms,
                r.time_all.p90_ms,
                r.time_all.p99_ms,
                r.time_all.max_ms,
                r.time_first.p50_ms,
                r.time_first.p99_ms,
                r.failed,
                r.incomplete,
                r.wrong,
                r.resumes_per_s,
                r.server_cpu_pct
                    .map_or_else(|| "—".to_owned(), |c| format!("{c:.0}%")),
            );
            let ok = r.complete == r.clients as u64;
            if let Some(p) = &a.json {
                write_json(p, &AnyResult::Resume(Box::new(r)))?;
            }
            Ok(ok)
        }
        Cmd::Origin(a) => {
            let l = origin::bind(a.listen).await?;
            origin::serve(l).await?;
            Ok(true)
        }
        Cmd::Smoke(a) => cmd_smoke(&a).await,
        Cmd::Soak(a) => soak::soak(&a).await,
        Cmd::Storm(a) => storm::storm(&a).await,
        Cmd::Drain(a) => drain::drain(&a).await,
        Cmd::Table(a) => {
            let rs = a
                .files
                .iter()
                .map(|f| read_result(f))
                .collect::<Result<Vec<_>>>()?;
            print!("{}", report::markdown(&rs));
            Ok(true)
        }
        Cmd::Report(a) => match read_result(&a.json)? {
            AnyResult::Run(r) => {
                write_html(&a.html, &r)?;
                Ok(true)
            }
            AnyResult::Publish(_) | AnyResult::Resume(_) => {
                bail!("{}: not a `run` result", a.json.display())
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gripmesh-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(main_inner(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("gripmesh-loadtest: FAILED (loss, errors or disconnects; see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("gripmesh-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
