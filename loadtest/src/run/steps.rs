//! The publishing steps in turn: a per-second sampler of latency and delivery rate, each step's
//! summary line, the collapse rule that skips higher rates, and the final settling of late
//! deliveries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;
use tokio::task::JoinHandle;

use super::plan::Ctx;
use super::step::run_step;
use super::{RunArgs, progress};
use crate::clients::Shared;
use crate::report::{StepResult, human};
use crate::stats::SecondPoint;

/// The steps run (`rates` are those asked for, fewer may have run) and the per-second series,
/// still shared with the sampler.
pub(super) struct Stepping {
    pub rates: Vec<f64>,
    pub steps: Vec<StepResult>,
    pub series: Arc<Mutex<Vec<SecondPoint>>>,
}

/// Runs a step per positive `--rate`, until one fails (with `--stop-on-fail`) or collapses.
pub(super) async fn run_steps(
    args: &RunArgs,
    ctx: &Ctx,
    publish_url: &str,
    grpc_url: Option<&str>,
) -> Result<Stepping> {
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
        let sampler = spawn_sampler(&ctx.shared, &series, &current_step, &pb);
        for (i, &rate) in rates.iter().enumerate() {
            current_step.store(i, Ordering::Relaxed);
            let api = args.api[i % args.api.len().max(1)];
            let (st, live) = run_step(args, ctx, i, rate, api, publish_url, grpc_url, &pb).await?;
            books.push(live);
            pb.suspend(|| eprintln!("{}", step_line(i, rate, api, &st)));
            print_reorder_samples(&ctx.shared);
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
        settle_late(args, ctx, &books, &mut steps).await;
        sampler.abort();
        pb.finish_and_clear();
    }
    Ok(Stepping {
        rates,
        steps,
        series,
    })
}

/// Every second: takes the second's latencies into `series` and shows them on the progress bar.
fn spawn_sampler(
    shared: &Arc<Shared>,
    series: &Arc<Mutex<Vec<SecondPoint>>>,
    current_step: &Arc<AtomicUsize>,
    pb: &ProgressBar,
) -> JoinHandle<()> {
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
}

/// The step's summary line.
fn step_line(i: usize, rate: f64, api: crate::publish::Api, st: &StepResult) -> String {
    format!(
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
    )
}

/// Prints (and clears) the samples of out-of-order deliveries the clients kept.
fn print_reorder_samples(shared: &Shared) {
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
}

/// Messages that missed their step's drain window but still arrive count as late, not lost:
/// gives stragglers one more drain period, then settles every step's books.
async fn settle_late(args: &RunArgs, ctx: &Ctx, books: &[Vec<usize>], steps: &mut [StepResult]) {
    let final_received = |i: usize| -> u64 {
        books[i]
            .iter()
            .map(|&c| ctx.shared.slots[c].received[i].load(Ordering::Relaxed))
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
}
