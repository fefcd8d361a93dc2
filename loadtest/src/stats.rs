//! Latency recording shared by thousands of client tasks, and percentile summaries.
//!
//! Clients record into one of a few shards (by client index) so two worker threads rarely
//! contend for a lock. Each shard keeps one full-precision histogram per benchmark step and a
//! coarse "current second" histogram that the once-a-second collector takes and merges into
//! the per-second series of the report.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked, in µs (larger values are clamped to it).
pub(crate) const MAX_US: u64 = 120_000_000;
/// Steps a run may have (the high bits of a sequence number).
pub(crate) const MAX_STEPS: usize = 32;
const SHARDS: usize = 16;

/// A histogram of latencies in µs with 3 significant digits.
pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn new_coarse() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds")
}

/// Records `v` µs, clamped into the histogram's range.
pub(crate) fn record(h: &mut Histogram<u64>, v: u64) {
    h.saturating_record(v.clamp(1, MAX_US));
}

struct Shard {
    steps: Vec<Histogram<u64>>,
    second: Histogram<u64>,
}

/// Latency recorder shared by all clients.
pub(crate) struct Recorder {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        steps: Vec::new(),
                        second: new_coarse(),
                    })
                })
                .collect(),
        }
    }
}

impl Recorder {
    /// Records one delivery of a message of `step` that took `latency_us`.
    pub(crate) fn record(&self, client: usize, step: usize, latency_us: u64) {
        let step = step.min(MAX_STEPS - 1);
        let mut s = self.shards[client % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while s.steps.len() <= step {
            s.steps.push(new_hist());
        }
        record(&mut s.steps[step], latency_us);
        record(&mut s.second, latency_us);
    }

    /// Takes (and resets) what was recorded since the last call, merged over shards.
    pub(crate) fn take_second(&self) -> Histogram<u64> {
        let mut out = new_coarse();
        for sh in &self.shards {
            let mut s = sh.lock().unwrap_or_else(|e| e.into_inner());
            let _ = out.add(&s.second);
            s.second.reset();
        }
        out
    }

    /// Everything recorded for `step`, merged over shards.
    pub(crate) fn step(&self, step: usize) -> Histogram<u64> {
        let mut out = new_hist();
        for sh in &self.shards {
            let s = sh.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = s.steps.get(step) {
                let _ = out.add(h);
            }
        }
        out
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

impl Summary {
    /// Summarises a histogram of µs values (all zeros when empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of a run, for the charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SecondPoint {
    /// Seconds since publishing started (end of this interval).
    pub t: f64,
    /// Benchmark step publishing during this second.
    pub step: usize,
    /// Messages delivered during the second.
    pub delivered: u64,
    /// Median latency of those, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl SecondPoint {
    /// A point from one second's histogram.
    pub(crate) fn of(t: f64, step: usize, h: &Histogram<u64>) -> SecondPoint {
        let s = Summary::of(h);
        SecondPoint {
            t,
            step,
            delivered: s.count,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let r = Recorder::default();
        for v in 1..=10_000u64 {
            r.record(v as usize, 1, v * 10); // 10 µs .. 100 ms
        }
        let s = Summary::of(&r.step(1));
        assert_eq!(s.count, 10_000);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.p999_ms - 99.9).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(Summary::of(&r.step(0)).count, 0);
        assert_eq!(Summary::of(&r.step(5)), Summary::default());
    }

    #[test]
    fn seconds_are_taken_and_reset() {
        let r = Recorder::default();
        r.record(0, 0, 1000);
        r.record(1, 0, 3000);
        let first = SecondPoint::of(1.0, 0, &r.take_second());
        assert_eq!(first.delivered, 2);
        assert!((first.max_ms - 3.0).abs() < 0.05, "{first:?}");
        assert_eq!(r.take_second().len(), 0);
        assert_eq!(r.step(0).len(), 2, "step histograms keep everything");
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_US);
    }
}
