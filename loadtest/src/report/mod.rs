//! Results: the JSON documents of `run` and `publish` (and, through [`AnyResult`], `resume`),
//! and their renderings: the self-contained HTML report and the markdown rows for
//! BENCHMARKS.md.

mod chart;
mod html;
mod markdown;
mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clients::Transport;
use crate::procfs::Machine;
use crate::publish::Api;
use crate::stats::{SecondPoint, Summary};

pub(crate) use html::html;
pub(crate) use markdown::markdown;
pub(crate) use text::human;

/// What a run was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunConfig {
    /// Client transports (each gets `clients_per_transport` clients).
    pub transports: Vec<Transport>,
    /// Clients of each transport.
    pub clients_per_transport: usize,
    /// All clients.
    pub clients: usize,
    /// Channels; client `i` subscribes to channel `i % channels`.
    pub channels: usize,
    /// Payload bytes.
    pub size: usize,
    /// Publish tick.
    pub tick_ms: u64,
    /// Publish API.
    pub api: Option<Api>,
    /// Messages per second per channel, one step each.
    pub rates: Vec<f64>,
    /// Seconds each step publishes.
    pub step_duration_s: f64,
    /// Edge addresses.
    pub edges: Vec<String>,
    /// A step passes with no loss and p99 below this.
    pub p99_target_ms: f64,
    /// Connection attempts in flight at once.
    #[serde(default)]
    pub connect_concurrency: usize,
}

/// The connection phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConnectResult {
    /// Clients started.
    pub attempted: u64,
    /// Clients connected.
    pub connected: u64,
    /// Clients that failed.
    pub failed: u64,
    /// First start to last connection (or failure).
    pub elapsed_s: f64,
    /// `connected / elapsed_s`.
    pub opens_per_s: f64,
    /// Time to connect, per client.
    pub latency: Summary,
    /// Failure reasons.
    pub errors: BTreeMap<String, u64>,
}

/// The server's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServerResult {
    /// Processes measured (with their descendants).
    pub pids: Vec<u32>,
    /// RSS before any client connected, KiB.
    pub rss_before_kib: u64,
    /// RSS with every client connected and idle, KiB.
    pub rss_connected_kib: u64,
    /// `(rss_connected − rss_before) / connected`, KiB.
    pub rss_per_conn_kib: f64,
    /// RSS at the end of the run, KiB.
    pub rss_end_kib: u64,
}

/// One publishing step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepResult {
    /// Step index.
    pub step: usize,
    /// Messages per second per channel requested.
    pub rate_per_channel: f64,
    /// Deliveries per second requested (rate × subscribers).
    pub target_deliveries_per_s: f64,
    /// Seconds published.
    pub duration_s: f64,
    /// Publish calls made.
    pub publish_calls: u64,
    /// Calls that failed.
    pub publish_errors: u64,
    /// Items accepted by the server.
    pub published: u64,
    /// Items accepted per second.
    pub publish_items_per_s: f64,
    /// Publish call durations.
    pub publish_call: Summary,
    /// Deliveries expected (items accepted × subscribers connected when the step started).
    pub expected: u64,
    /// Deliveries received (long-poll clients excluded, see `poll_received`).
    pub received: u64,
    /// Deliveries never received (by the end of the run).
    pub lost: u64,
    /// Deliveries to clients a filter should have skipped (`--filter skip-self`).
    #[serde(default)]
    pub unexpected: u64,
    /// Connected clients a filter skips (not in `expected`).
    #[serde(default)]
    pub skipped_clients: u64,
    /// Deliveries received only after the step's drain window (`--drain`), but before the run
    /// ended: not lost, very late.
    #[serde(default)]
    pub late: u64,
    /// Messages received out of order.
    pub reordered: u64,
    /// Deliveries to long-poll clients (not loss-checked: messages between polls are lost).
    pub poll_received: u64,
    /// `received / duration_s`.
    pub delivered_per_s: f64,
    /// Publish → receive latency.
    pub latency: Summary,
    /// Clients that lost their connection during the step.
    pub disconnected: u64,
    /// Server CPU during the step, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// This tool's CPU during the step, % of one core.
    pub tool_cpu_pct: f64,
    /// No loss, no publish error, no disconnect, p99 below the target, no overrun.
    pub passed: bool,
    /// Publishing was cut off after twice the step's duration: the server accepted publishes
    /// slower than the requested rate.
    #[serde(default)]
    pub overran: bool,
    /// First publish error, if any.
    pub first_error: Option<String>,
}

/// The result of `gripmesh-loadtest run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunResult {
    /// `gripmesh`, `pushpin`, …
    pub system: String,
    /// Scenario name (pairs results of different systems).
    pub scenario: String,
    /// Unix time the run started.
    pub started_unix: u64,
    /// Where.
    pub machine: Machine,
    /// What.
    pub config: RunConfig,
    /// Connection phase.
    pub connect: ConnectResult,
    /// Server memory, with `--server-pid` or `--spawn-gripmesh`.
    pub server: Option<ServerResult>,
    /// Publishing steps.
    pub steps: Vec<StepResult>,
    /// Per-second latency and delivery rate.
    pub series: Vec<SecondPoint>,
    /// The passing step with the highest delivery rate.
    pub best: Option<StepResult>,
    /// Deliveries lost over all steps.
    pub total_lost: u64,
    /// Connection failures and disconnect reasons over the whole run.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
}

/// The result of `gripmesh-loadtest publish`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PublishResult {
    /// `gripmesh`, `pushpin`, …
    pub system: String,
    /// Scenario name.
    pub scenario: String,
    /// Where.
    pub machine: Machine,
    /// API.
    pub api: Option<Api>,
    /// Items per call.
    pub batch: usize,
    /// Concurrent HTTP connections / gRPC streams.
    pub concurrency: usize,
    /// gRPC requests in flight per stream.
    pub window: usize,
    /// Seconds.
    pub duration_s: f64,
    /// Items accepted.
    pub items: u64,
    /// Calls made.
    pub calls: u64,
    /// Calls failed.
    pub errors: u64,
    /// Items accepted per second.
    pub items_per_s: f64,
    /// Call durations.
    pub call_latency: Summary,
    /// Server CPU, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// First error.
    pub first_error: Option<String>,
}

/// Any result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum AnyResult {
    /// A subscriber run.
    Run(Box<RunResult>),
    /// A publish API benchmark.
    Publish(Box<PublishResult>),
    /// A resume benchmark.
    Resume(Box<crate::resume::ResumeResult>),
}

impl AnyResult {
    /// `(system, scenario)`.
    pub(crate) fn key(&self) -> (&str, &str) {
        match self {
            AnyResult::Run(r) => (&r.system, &r.scenario),
            AnyResult::Publish(r) => (&r.system, &r.scenario),
            AnyResult::Resume(r) => (&r.system, &r.scenario),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::chart::{Line, line_chart, nice_ticks};
    use super::*;

    fn sample() -> RunResult {
        RunResult {
            system: "gripmesh".into(),
            scenario: "ws-fanout-1k".into(),
            config: RunConfig {
                transports: vec![Transport::Ws],
                clients_per_transport: 1000,
                clients: 1000,
                channels: 1,
                size: 100,
                tick_ms: 50,
                api: Some(Api::Http),
                rates: vec![100.0, 1000.0],
                step_duration_s: 10.0,
                edges: vec!["127.0.0.1:7999".into()],
                p99_target_ms: 50.0,
                connect_concurrency: 256,
            },
            steps: vec![
                StepResult {
                    step: 0,
                    rate_per_channel: 100.0,
                    delivered_per_s: 100_000.0,
                    latency: Summary {
                        count: 1_000_000,
                        p50_ms: 1.5,
                        p99_ms: 8.0,
                        ..Summary::default()
                    },
                    passed: true,
                    ..StepResult::default()
                },
                StepResult {
                    step: 1,
                    rate_per_channel: 1000.0,
                    delivered_per_s: 400_000.0,
                    lost: 12,
                    latency: Summary {
                        p99_ms: 300.0,
                        ..Summary::default()
                    },
                    ..StepResult::default()
                },
            ],
            series: (0..20)
                .map(|i| SecondPoint {
                    t: f64::from(i) + 1.0,
                    step: (i / 10) as usize,
                    delivered: 100_000,
                    p50_ms: 1.0,
                    p99_ms: f64::from(i),
                    max_ms: 30.0,
                })
                .collect(),
            ..RunResult::default()
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_max() {
        assert_eq!(nice_ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = nice_ticks(937.0, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 937.0);
        assert_eq!(t[1], 200.0);
        assert_eq!(nice_ticks(0.0, 5), vec![0.0, 1.0]);
        assert_eq!(nice_ticks(f64::NAN, 5), vec![0.0, 1.0]);
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(45_600.0), "45.6k");
        assert_eq!(human(999.0), "999");
        assert_eq!(human(2.5), "2.50");
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let mut r = sample();
        r.scenario = "<script>alert(1)</script>".into();
        let h = html(&r);
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(!h.contains("<script"), "no scripts, and input is escaped");
        assert!(h.contains("&lt;script&gt;"));
        assert_eq!(h.matches("<svg").count(), 2);
        assert!(h.contains("<polyline"));
        // No external resources: the only URL is the SVG namespace.
        assert_eq!(
            h.matches("http").count(),
            h.matches("http://www.w3.org/2000/svg").count()
        );
    }

    #[test]
    fn chart_maps_points_into_the_plot() {
        let svg = line_chart(
            "t",
            "x",
            "y",
            &[Line {
                name: "a",
                color: "red",
                points: vec![(0.0, 0.0), (10.0, 10.0)],
            }],
            &[(5.0, "step 1".to_owned())],
        );
        // x: 0 ⇒ left edge (70), 10 ⇒ right edge (740); y: 0 ⇒ bottom (240), 10 ⇒ top (30).
        assert!(svg.contains(r#"points="70.0,240.0 740.0,30.0""#), "{svg}");
        assert!(svg.contains(r#"x1="405.0" x2="405.0""#), "{svg}");
        assert!(svg.contains(">step 1</text>"), "{svg}");
    }

    #[test]
    fn markdown_pairs_systems_and_checks_targets() {
        let g = sample();
        let mut p = sample();
        p.system = "pushpin".into();
        p.best = Some(StepResult {
            delivered_per_s: 50_000.0,
            ..StepResult::default()
        });
        let mut g2 = g.clone();
        g2.best = Some(g.steps[0].clone());
        let md = markdown(&[AnyResult::Run(Box::new(g2)), AnyResult::Run(Box::new(p))]);
        assert!(md.contains("| ws-fanout-1k | max delivered/s"), "{md}");
        assert!(md.contains("| 2.00× |"), "{md}");
        assert!(md.contains("WS fan-out ≥ 1,000,000"), "{md}");
        assert!(md.contains("| missed |"), "{md}");
        assert!(md.contains("p99 < 20 ms at 100k deliveries/s"), "{md}");
        assert!(md.contains("p99 8 ms"), "{md}");
        assert!(!md.contains("Nchan"), "{md}");
    }

    #[test]
    fn markdown_adds_an_nchan_column_when_there_are_nchan_results() {
        let mut g = sample();
        g.best = Some(g.steps[0].clone());
        let mut n = g.clone();
        n.system = "nchan".into();
        n.best = Some(StepResult {
            delivered_per_s: g.steps[0].delivered_per_s / 4.0,
            ..g.steps[0].clone()
        });
        let md = markdown(&[AnyResult::Run(Box::new(g)), AnyResult::Run(Box::new(n))]);
        let header = md.lines().next().unwrap_or_default();
        assert_eq!(
            header,
            "| scenario | metric | gripmesh | Nchan | Pushpin | gripmesh / Nchan | gripmesh / Pushpin |"
        );
        let row = md
            .lines()
            .find(|l| l.contains("max delivered/s"))
            .unwrap_or_default();
        assert!(row.contains("| 4.00× | — |"), "{row}");
        assert_eq!(row.matches('|').count(), 8, "{row}");
    }

    #[test]
    fn results_round_trip_through_json() {
        let r = AnyResult::Run(Box::new(sample()));
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"kind\":\"run\""));
        let back: AnyResult = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }
}
