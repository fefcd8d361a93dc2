//! Results: the JSON documents, the self-contained HTML report (inline SVG charts, no scripts
//! or external resources) and the markdown rows for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::clients::Transport;
use crate::procfs::Machine;
use crate::publish::Api;
use crate::stats::{SecondPoint, Summary};

/// What a run was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
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
pub struct ConnectResult {
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
pub struct ServerResult {
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
pub struct StepResult {
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
pub struct RunResult {
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
pub struct PublishResult {
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
pub enum AnyResult {
    /// A subscriber run.
    Run(Box<RunResult>),
    /// A publish API benchmark.
    Publish(Box<PublishResult>),
    /// A resume benchmark.
    Resume(Box<crate::resume::ResumeResult>),
}

impl AnyResult {
    /// `(system, scenario)`.
    pub fn key(&self) -> (&str, &str) {
        match self {
            AnyResult::Run(r) => (&r.system, &r.scenario),
            AnyResult::Publish(r) => (&r.system, &r.scenario),
            AnyResult::Resume(r) => (&r.system, &r.scenario),
        }
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// About `n` round tick values covering `0..=max`.
pub fn nice_ticks(max: f64, n: usize) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0, 1.0];
    }
    let raw = max / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = 0.0;
    while t < max + step * 0.999 {
        v.push((t / step).round() * step);
        t += step;
    }
    v
}

/// Formats a number compactly (1.2k, 3.4M).
pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One line of a chart.
pub struct Line<'a> {
    /// Legend.
    pub name: &'a str,
    /// CSS color.
    pub color: &'a str,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

/// An SVG line chart.
/// An SVG line chart; `markers` are labelled vertical lines (step starts).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line<'_>],
    markers: &[(f64, String)],
) -> String {
    let (w, h) = (760.0, 280.0);
    let (l, r, t, b) = (70.0, 20.0, 30.0, 40.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let all = lines.iter().flat_map(|s| s.points.iter());
    let xmax = all.clone().map(|p| p.0).fold(0.0, f64::max);
    let ymax = all.map(|p| p.1).fold(0.0, f64::max);
    let xt = nice_ticks(xmax, 8);
    let yt = nice_ticks(ymax, 5);
    let xm = xt.last().copied().unwrap_or(1.0).max(1e-9);
    let ym = yt.last().copied().unwrap_or(1.0).max(1e-9);
    let sx = |x: f64| l + x / xm * pw;
    let sy = |y: f64| t + ph - y / ym * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<text x="{l}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for &y in &yt {
        let py = sy(y);
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            py + 4.0,
            human(y)
        );
    }
    for &x in &xt {
        let px = sx(x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{t}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 15.0,
            human(x)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#888"/><text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="14" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"##,
        l + pw / 2.0,
        h - 6.0,
        esc(x_label),
        t + ph / 2.0,
        t + ph / 2.0,
        esc(y_label)
    );
    for (x, label) in markers {
        let px = sx(*x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{t}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10" fill="#555">{}</text>"##,
            t + ph,
            px + 3.0,
            t + 10.0,
            esc(label)
        );
    }
    for (i, line) in lines.iter().enumerate() {
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !pts.is_empty() {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                esc(line.color),
                pts.join(" ")
            );
        }
        let lx = l + pw - 150.0;
        let ly = t + 14.0 + i as f64 * 16.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            lx + 18.0,
            esc(line.color),
            lx + 24.0,
            ly + 4.0,
            esc(line.name)
        );
    }
    s.push_str("</svg>");
    s
}

fn kv_table(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table>");
    s
}

/// The self-contained HTML report of a run.
pub fn html(r: &RunResult) -> String {
    let mut s = String::new();
    let title = format!("gripmesh-loadtest: {} / {}", r.system, r.scenario);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}\
.pass{{color:#070}}.fail{{color:#b00}}</style></head><body><h1>{}</h1>",
        esc(&title),
        esc(&title)
    );
    let c = &r.config;
    s.push_str("<h2>Setup</h2>");
    s.push_str(&kv_table(&[
        (
            "machine",
            format!(
                "{} CPUs ({}), {:.1} GiB, kernel {}, load {}",
                r.machine.nproc,
                r.machine.cpu,
                r.machine.mem_total_kib as f64 / 1048576.0,
                r.machine.kernel,
                r.machine.loadavg
            ),
        ),
        (
            "clients",
            format!(
                "{} ({} × {})",
                c.clients,
                c.clients_per_transport,
                c.transports
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join("+")
            ),
        ),
        ("channels", c.channels.to_string()),
        ("edges", c.edges.join(", ")),
        (
            "publishing",
            format!(
                "{} B messages, one call per {} ms tick, {:?} API, {} s per step",
                c.size, c.tick_ms, c.api, c.step_duration_s
            ),
        ),
        ("p99 target", format!("{} ms", c.p99_target_ms)),
    ]));
    let cn = &r.connect;
    s.push_str("<h2>Connections</h2>");
    let mut rows = vec![
        (
            "connected",
            format!(
                "{} of {} ({} failed)",
                cn.connected, cn.attempted, cn.failed
            ),
        ),
        (
            "ramp",
            format!("{:.0} opens/s over {:.2} s", cn.opens_per_s, cn.elapsed_s),
        ),
        (
            "connect time",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms",
                cn.latency.p50_ms, cn.latency.p99_ms, cn.latency.max_ms
            ),
        ),
    ];
    if let Some(sv) = &r.server {
        rows.push((
            "server RSS",
            format!(
                "{} KiB idle → {} KiB connected = {:.2} KiB per connection; {} KiB at the end (pids {:?})",
                sv.rss_before_kib, sv.rss_connected_kib, sv.rss_per_conn_kib, sv.rss_end_kib, sv.pids
            ),
        ));
    }
    for (e, n) in &cn.errors {
        rows.push(("error", format!("{n} × {e}")));
    }
    s.push_str(&kv_table(&rows));
    if !r.steps.is_empty() {
        s.push_str("<h2>Steps</h2><table><tr><th>step</th><th>msg/s/ch</th><th>target deliveries/s</th><th>delivered/s</th><th>published</th><th>expected</th><th>lost</th><th>late</th><th>dropped clients</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>server CPU</th><th>tool CPU</th><th>result</th></tr>");
        for st in &r.steps {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td class=\"{}\">{}</td></tr>",
                st.step,
                human(st.rate_per_channel),
                human(st.target_deliveries_per_s),
                human(st.delivered_per_s),
                st.published,
                st.expected,
                st.lost,
                st.late,
                st.disconnected,
                st.latency.p50_ms,
                st.latency.p90_ms,
                st.latency.p99_ms,
                st.latency.p999_ms,
                st.latency.max_ms,
                st.server_cpu_pct
                    .map_or_else(|| "—".to_owned(), |c| format!("{c:.0}%")),
                st.tool_cpu_pct,
                if st.passed { "pass" } else { "fail" },
                if st.passed {
                    "pass"
                } else if st.overran {
                    "fail (publishing overran)"
                } else {
                    "fail"
                }
            );
        }
        s.push_str("</table>");
        let p = |f: fn(&SecondPoint) -> f64| r.series.iter().map(|x| (x.t, f(x))).collect();
        let mut markers = Vec::new();
        for st in &r.steps {
            if let Some(first) = r.series.iter().find(|x| x.step == st.step) {
                markers.push((
                    (first.t - 1.0).max(0.0),
                    format!("{} msg/s/ch", human(st.rate_per_channel)),
                ));
            }
        }
        s.push_str(&line_chart(
            "Publish → receive latency per second",
            "seconds since publishing started",
            "ms",
            &[
                Line {
                    name: "p50",
                    color: "#1f77b4",
                    points: p(|x| x.p50_ms),
                },
                Line {
                    name: "p99",
                    color: "#d62728",
                    points: p(|x| x.p99_ms),
                },
            ],
            &markers,
        ));
        s.push_str("<br>");
        s.push_str(&line_chart(
            "Delivered messages per second",
            "seconds since publishing started",
            "messages/s",
            &[Line {
                name: "delivered/s",
                color: "#2ca02c",
                points: p(|x| x.delivered as f64),
            }],
            &markers,
        ));
    }
    s.push_str("</body></html>\n");
    s
}

/// Issue targets checked by [`markdown`], by scenario name (see `run-benchmarks.sh`).
fn target_lines(results: &[AnyResult]) -> Vec<String> {
    let find = |sys: &str, sc: &str| {
        results.iter().find_map(|r| match r {
            AnyResult::Run(x) if x.system == sys && x.scenario == sc => Some(x.as_ref()),
            _ => None,
        })
    };
    let step_at = |r: &RunResult, rate: f64| {
        r.steps
            .iter()
            .find(|s| (s.rate_per_channel - rate).abs() < 1e-9)
            .cloned()
    };
    let mark = |ok: bool| if ok { "met" } else { "missed" };
    let mut out = Vec::new();
    if let Some(r) = find("gripmesh", "ws-idle")
        && let Some(sv) = &r.server
    {
        out.push(format!(
            "| idle RSS per WebSocket ≤ 8 KiB | {:.2} KiB at {} connections | {} |",
            sv.rss_per_conn_kib,
            r.connect.connected,
            mark(sv.rss_per_conn_kib <= 8.0)
        ));
    }
    if let Some(r) = find("gripmesh", "ws-ramp") {
        out.push(format!(
            "| ≥ 5,000 WS-over-HTTP opens/s, zero failures | {:.0}/s, {} failures | {} |",
            r.connect.opens_per_s,
            r.connect.failed,
            mark(r.connect.opens_per_s >= 5000.0 && r.connect.failed == 0)
        ));
    }
    // The fan-out targets are about 1,000 subscribers (QUICK runs use fewer: no verdict).
    let full = |r: &&RunResult| r.config.clients >= 1000;
    if let Some(r) = find("gripmesh", "ws-fanout-1k").filter(full) {
        if let Some(s) = step_at(r, 1000.0) {
            out.push(format!(
                "| WS fan-out ≥ 1,000,000 deliveries/s, no loss, p99 < 250 ms (1k × 1,000 msg/s) | {} /s, lost {}, p99 {} ms | {} |",
                human(s.delivered_per_s),
                s.lost,
                s.latency.p99_ms,
                mark(s.delivered_per_s >= 1e6 * 0.99 && s.lost == 0 && s.latency.p99_ms < 250.0)
            ));
        } else if let Some(last) = r.steps.last() {
            out.push(format!(
                "| WS fan-out ≥ 1,000,000 deliveries/s, no loss, p99 < 250 ms (1k × 1,000 msg/s) | not run: the {} msg/s step already collapsed ({} /s, lost {}) | missed |",
                human(last.rate_per_channel),
                human(last.delivered_per_s),
                last.lost
            ));
        }
        if let Some(s) = step_at(r, 100.0) {
            out.push(format!(
                "| p99 < 20 ms at 100k deliveries/s (1k × 100 msg/s) | p99 {} ms, {} /s, lost {} | {} |",
                s.latency.p99_ms,
                human(s.delivered_per_s),
                s.lost,
                mark(s.latency.p99_ms < 20.0 && s.lost == 0)
            ));
        }
    }
    for (sc, what) in [
        ("stream-fanout-1k", "HTTP-stream"),
        ("sse-fanout-1k", "SSE"),
    ] {
        if let Some(r) = find("gripmesh", sc).filter(full) {
            let best = r
                .steps
                .iter()
                .filter(|s| s.lost == 0)
                .map(|s| s.delivered_per_s)
                .fold(0.0, f64::max);
            out.push(format!(
                "| {what} fan-out ≥ 1,000,000 deliveries/s | {} /s without loss | {} |",
                human(best),
                mark(best >= 1e6 * 0.99)
            ));
        }
    }
    let publish_best = results
        .iter()
        .filter_map(|r| match r {
            AnyResult::Publish(p) if p.system == "gripmesh" => Some(p.items_per_s),
            _ => None,
        })
        .fold(0.0, f64::max);
    if publish_best > 0.0 {
        out.push(format!(
            "| ≥ 100k publish items/s per control process | {} items/s (best API) | {} |",
            human(publish_best),
            mark(publish_best >= 100_000.0)
        ));
    }
    out
}

/// The headline figures of one result: `(metric, value, numeric value for ratios)`.
fn headline(r: &AnyResult) -> Vec<(String, String, Option<f64>)> {
    let mut v = Vec::new();
    match r {
        AnyResult::Run(r) => {
            if r.scenario.contains("idle")
                && let Some(sv) = &r.server
            {
                v.push((
                    "idle RSS per connection".to_owned(),
                    format!(
                        "{:.2} KiB ({} connected, {} failed)",
                        sv.rss_per_conn_kib, r.connect.connected, r.connect.failed
                    ),
                    Some(sv.rss_per_conn_kib),
                ));
            }
            if r.scenario.contains("ramp") {
                v.push((
                    format!(
                        "connection ramp ({} attempted, ×{} concurrent)",
                        r.connect.attempted, r.config.connect_concurrency
                    ),
                    format!(
                        "{:.0} opens/s, {} failed",
                        r.connect.opens_per_s, r.connect.failed
                    ),
                    Some(r.connect.opens_per_s),
                ));
            }
            if !r.steps.is_empty() {
                match &r.best {
                    Some(b) => v.push((
                        format!(
                            "max delivered/s with p99 < {} ms, no loss",
                            r.config.p99_target_ms
                        ),
                        format!(
                            "{} /s ({} msg/s/ch, p50 {} / p99 {} ms)",
                            human(b.delivered_per_s),
                            human(b.rate_per_channel),
                            b.latency.p50_ms,
                            b.latency.p99_ms
                        ),
                        Some(b.delivered_per_s),
                    )),
                    None => v.push((
                        format!(
                            "max delivered/s with p99 < {} ms, no loss",
                            r.config.p99_target_ms
                        ),
                        "no step passed".to_owned(),
                        Some(0.0),
                    )),
                }
                if let Some(b) = &r.best
                    && let Some(cpu) = b.server_cpu_pct
                    && b.delivered_per_s > 0.0
                {
                    v.push((
                        "server CPU per delivery at that step".to_owned(),
                        format!(
                            "{:.2} µs ({cpu:.0}% of a core)",
                            cpu / 100.0 / b.delivered_per_s * 1e6
                        ),
                        Some(cpu / 100.0 / b.delivered_per_s * 1e6),
                    ));
                }
                // Every step's latency (the ratio column compares p99s).
                for s in &r.steps {
                    let mut notes = String::new();
                    if s.late > 0 {
                        let _ = write!(notes, ", late {}", s.late);
                    }
                    if s.disconnected > 0 {
                        let _ = write!(notes, ", {} clients dropped", s.disconnected);
                    }
                    if s.overran {
                        notes.push_str(", publishing overran");
                    }
                    v.push((
                        format!("p50 / p99 at {} msg/s/ch", human(s.rate_per_channel)),
                        format!(
                            "{} / {} ms, {} of {} /s, lost {}{notes}",
                            s.latency.p50_ms,
                            s.latency.p99_ms,
                            human(s.delivered_per_s),
                            human(s.target_deliveries_per_s),
                            s.lost
                        ),
                        Some(s.latency.p99_ms),
                    ));
                }
            }
        }
        AnyResult::Publish(p) => v.push((
            format!(
                "publish items/s ({:?}, batch {}, ×{})",
                p.api.unwrap_or(Api::Http),
                p.batch,
                p.concurrency
            )
            .to_lowercase(),
            format!("{} items/s", human(p.items_per_s)),
            Some(p.items_per_s),
        )),
        AnyResult::Resume(r) => {
            v.push((
                format!(
                    "resume of {} missed items ({}, {} clients, ×{} in flight): connect → last item",
                    r.items,
                    r.transport.map_or("?", Transport::name),
                    r.clients,
                    r.concurrency
                ),
                format!(
                    "p50 {} / p99 {} ms, {} of {} complete ({} failed, {} incomplete, {} wrong)",
                    r.time_all.p50_ms,
                    r.time_all.p99_ms,
                    r.complete,
                    r.clients,
                    r.failed,
                    r.incomplete,
                    r.wrong
                ),
                Some(r.time_all.p99_ms),
            ));
        }
    }
    v
}

/// Markdown rows: every scenario with gripmesh next to Pushpin (and their ratio) — and next to
/// Nchan when any result is Nchan's — then the issue's targets.
pub fn markdown(results: &[AnyResult]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in results {
        let sc = r.key().1;
        if !scenarios.contains(&sc) {
            scenarios.push(sc);
        }
    }
    let peers: Vec<(&str, &str)> = if results.iter().any(|r| r.key().0 == "nchan") {
        vec![("nchan", "Nchan"), ("pushpin", "Pushpin")]
    } else {
        vec![("pushpin", "Pushpin")]
    };
    let mut s = String::from("| scenario | metric | gripmesh |");
    for (_, name) in &peers {
        let _ = write!(s, " {name} |");
    }
    for (_, name) in &peers {
        let _ = write!(s, " gripmesh / {name} |");
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---|".repeat(peers.len() * 2));
    s.push('\n');
    for sc in scenarios {
        let of = |sys: &str| {
            results
                .iter()
                .find(|r| r.key() == (sys, sc))
                .map(headline)
                .unwrap_or_default()
        };
        let g = of("gripmesh");
        let others: Vec<_> = peers.iter().map(|(sys, _)| of(sys)).collect();
        // Rows matched by metric name: gripmesh's order, then the peers' own metrics.
        let mut metrics: Vec<&str> = g.iter().map(|m| m.0.as_str()).collect();
        for o in &others {
            for m in o {
                if !metrics.contains(&m.0.as_str()) {
                    metrics.push(&m.0);
                }
            }
        }
        for metric in metrics {
            let gm = g.iter().find(|m| m.0 == metric);
            let _ = write!(
                s,
                "| {sc} | {metric} | {} |",
                gm.map_or("—".to_owned(), |m| m.1.clone())
            );
            let om: Vec<_> = others
                .iter()
                .map(|o| o.iter().find(|m| m.0 == metric))
                .collect();
            for m in &om {
                let _ = write!(s, " {} |", m.map_or("—".to_owned(), |m| m.1.clone()));
            }
            for m in &om {
                let ratio = match (gm.and_then(|m| m.2), m.and_then(|m| m.2)) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "—".to_owned(),
                };
                let _ = write!(s, " {ratio} |");
            }
            s.push('\n');
        }
    }
    let t = target_lines(results);
    if !t.is_empty() {
        s.push_str("\n| issue target | measured (gripmesh) | |\n|---|---|---|\n");
        for l in t {
            s.push_str(&l);
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
