//! The connection phase: open every planned client (ramped, with bounded concurrency), report
//! how it went, and the server's memory per idle connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::plan::Ctx;
use super::{RunArgs, progress};
use crate::clients;
use crate::procfs;
use crate::report::{ConnectResult, ServerResult};
use crate::stats::Summary;

/// Connects every planned client; the set holds their tasks, which keep them connected.
pub(super) async fn connect_all(args: &RunArgs, ctx: &Ctx) -> Result<(ConnectResult, JoinSet<()>)> {
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

/// Prints the connection phase's summary and failure reasons.
pub(super) fn print_summary(connect: &ConnectResult) {
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
}

/// The server's memory now, against `rss_before` (taken before any client connected), when
/// there are server processes to measure.
pub(super) fn server_memory(
    ctx: &Ctx,
    rss_before: Option<u64>,
    connect: &ConnectResult,
) -> Option<ServerResult> {
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
    server
}
