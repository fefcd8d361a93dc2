//! One publishing step: publish every channel's messages at the step's rate for its duration,
//! wait for late deliveries, then count deliveries, loss, latency and CPU.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::RunArgs;
use super::plan::Ctx;
use crate::clients::{Transport, state};
use crate::procfs;
use crate::publish::{self, Api, Batch, Outcome, Publisher};
use crate::report::StepResult;
use crate::stats::Summary;

/// Runs step `step` at `rate` messages per second per channel through `api`; also returns the
/// loss-checked clients it expected deliveries to.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_step(
    args: &RunArgs,
    ctx: &Ctx,
    step: usize,
    rate: f64,
    api: Api,
    publish_url: &str,
    grpc_url: Option<&str>,
    pb: &ProgressBar,
) -> Result<(StepResult, Vec<usize>)> {
    let mut publisher = Publisher::new(api, publish_url, grpc_url).await?;
    let audience = Audience::now(ctx);
    let start = Baseline::now(ctx);
    let published = publish(args, ctx, &mut publisher, step, rate, pb, start.t0).await;
    let expected: u64 = published
        .per_channel
        .iter()
        .zip(&audience.subs)
        .map(|(p, s)| p * s)
        .sum();
    // Wait for late deliveries.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain.max(0.0));
    while audience.received(ctx, step).0 < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = measure(
        args, ctx, step, rate, &audience, &start, published, expected,
    );
    let loss_checked: Vec<usize> = audience
        .live
        .iter()
        .copied()
        .filter(|&i| ctx.plans[i].transport != Transport::Poll)
        .collect();
    Ok((result, loss_checked))
}

/// The clients connected when the step starts: those it expects deliveries to, and those a
/// filter skips.
struct Audience {
    live: Vec<usize>,
    skipped: Vec<usize>,
    /// Loss-checked subscribers (long-poll clients excluded) per channel.
    subs: Vec<u64>,
}

impl Audience {
    fn now(ctx: &Ctx) -> Audience {
        let shared = &ctx.shared;
        let connected: Vec<usize> = (0..ctx.plans.len())
            .filter(|&i| shared.slots[i].state.load(Ordering::Relaxed) == state::CONNECTED)
            .collect();
        let (live, skipped): (Vec<usize>, Vec<usize>) =
            connected.into_iter().partition(|&i| ctx.expects[i]);
        let mut subs = vec![0u64; ctx.channels.len()];
        for &i in &live {
            if ctx.plans[i].transport != Transport::Poll {
                subs[ctx.channel_of[i]] += 1;
            }
        }
        Audience {
            live,
            skipped,
            subs,
        }
    }

    /// Deliveries of `step` so far: `(to loss-checked clients, to long-poll clients)`.
    fn received(&self, ctx: &Ctx, step: usize) -> (u64, u64) {
        let mut r = 0;
        let mut poll = 0;
        for &i in &self.live {
            let n = ctx.shared.slots[i].received[step].load(Ordering::Relaxed);
            if ctx.plans[i].transport == Transport::Poll {
                poll += n;
            } else {
                r += n;
            }
        }
        (r, poll)
    }
}

/// Counters at the step's start, for what the step itself used.
struct Baseline {
    disconnected: u64,
    server_cpu: f64,
    tool_cpu: f64,
    t0: Instant,
}

impl Baseline {
    fn now(ctx: &Ctx) -> Baseline {
        Baseline {
            disconnected: ctx.shared.disconnected.load(Ordering::Relaxed),
            server_cpu: procfs::tree_cpu_secs(&ctx.pids),
            tool_cpu: procfs::cpu_secs(std::process::id()).unwrap_or(0.0),
            t0: Instant::now(),
        }
    }
}

/// What the step's publishing achieved.
struct Published {
    /// Items accepted, per channel.
    per_channel: Vec<u64>,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    call_hist: Histogram<u64>,
    /// Cut off after twice the step's duration.
    overran: bool,
    /// Seconds from the step's start to the last call's end.
    elapsed: f64,
}

impl Published {
    /// Books one tick's calls: a call counts only if the server accepted all its items.
    fn record(&mut self, batches: &[Batch], outcomes: Vec<Outcome>) {
        for (b, o) in batches.iter().zip(outcomes) {
            self.calls += 1;
            crate::stats::record(&mut self.call_hist, o.elapsed.as_micros() as u64);
            if o.error.is_none() && o.accepted == b.items() {
                for &(ch, _, cnt) in &b.runs {
                    self.per_channel[ch] += cnt;
                }
            } else {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = o.error.clone();
                }
            }
        }
    }
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

/// Publishes the step's messages, one call (or a few, see `--max-batch`) per tick, until every
/// channel has its `rate × duration` messages or publishing overruns.
async fn publish(
    args: &RunArgs,
    ctx: &Ctx,
    publisher: &mut Publisher,
    step: usize,
    rate: f64,
    pb: &ProgressBar,
    t0: Instant,
) -> Published {
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
    let mut out = Published {
        per_channel: vec![0u64; nch],
        calls: 0,
        errors: 0,
        first_error: None,
        call_hist: crate::stats::new_hist(),
        overran: false,
        elapsed: 0.0,
    };
    let mut last_pos = 0;
    // A server that accepts publishes much slower than asked would stretch the step forever.
    let overrun_at = Duration::from_secs_f64(args.duration * 2.0 + 5.0);
    while sent.iter().any(|&s| s < total_per_channel) {
        if t0.elapsed() > overrun_at {
            out.overran = true;
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
        out.record(&batches, outcomes);
        let pos = (step as f64 * args.duration + el) as u64;
        if pos != last_pos {
            pb.set_position(pos);
            last_pos = pos;
        }
    }
    out.elapsed = t0.elapsed().as_secs_f64();
    out
}

/// The step's result once its deliveries have drained.
#[allow(clippy::too_many_arguments)]
fn measure(
    args: &RunArgs,
    ctx: &Ctx,
    step: usize,
    rate: f64,
    audience: &Audience,
    start: &Baseline,
    published: Published,
    expected: u64,
) -> StepResult {
    let shared = &ctx.shared;
    let wall = start.t0.elapsed().as_secs_f64();
    let (received, poll_received) = audience.received(ctx, step);
    let reordered = audience
        .live
        .iter()
        .map(|&i| shared.slots[i].reordered.swap(0, Ordering::Relaxed))
        .sum();
    let latency = Summary::of(&shared.recorder.step(step));
    let lost = expected.saturating_sub(received);
    let unexpected = audience
        .skipped
        .iter()
        .map(|&i| shared.slots[i].received[step].load(Ordering::Relaxed))
        .sum();
    let disconnected = shared.disconnected.load(Ordering::Relaxed) - start.disconnected;
    let server_cpu_pct = (!ctx.pids.is_empty()).then(|| {
        ((procfs::tree_cpu_secs(&ctx.pids) - start.server_cpu) / wall * 1000.0).round() / 10.0
    });
    let tool_cpu_pct =
        ((procfs::cpu_secs(std::process::id()).unwrap_or(0.0) - start.tool_cpu) / wall * 1000.0)
            .round()
            / 10.0;
    let published_total: u64 = published.per_channel.iter().sum();
    let duration = published.elapsed.max(args.duration).max(1e-9);
    let delivered_per_s = ((received as f64 / duration) * 10.0).round() / 10.0;
    let target = rate * audience.subs.iter().sum::<u64>() as f64;
    let passed = lost == 0
        && unexpected == 0
        && !published.overran
        && published.errors == 0
        && disconnected == 0
        && published_total > 0
        && latency.p99_ms < args.p99_target_ms;
    StepResult {
        step,
        rate_per_channel: rate,
        target_deliveries_per_s: target,
        duration_s: (published.elapsed * 1000.0).round() / 1000.0,
        publish_calls: published.calls,
        publish_errors: published.errors,
        published: published_total,
        publish_items_per_s: (published_total as f64 / duration).round(),
        publish_call: Summary::of(&published.call_hist),
        expected,
        received,
        lost,
        unexpected,
        skipped_clients: audience.skipped.len() as u64,
        reordered,
        poll_received,
        delivered_per_s,
        latency,
        disconnected,
        server_cpu_pct,
        tool_cpu_pct,
        passed,
        overran: published.overran,
        late: 0,
        first_error: published.first_error,
    }
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
}
