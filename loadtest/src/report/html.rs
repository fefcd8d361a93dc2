//! The self-contained HTML report of a run: setup, connection phase, steps table and the
//! per-second charts (inline SVG, no scripts or external resources).

use std::fmt::Write as _;

use super::RunResult;
use super::chart::{Line, line_chart};
use super::text::{esc, human};
use crate::stats::SecondPoint;

/// The self-contained HTML report of a run.
pub(crate) fn html(r: &RunResult) -> String {
    let mut s = String::new();
    head(&mut s, r);
    setup(&mut s, r);
    connections(&mut s, r);
    if !r.steps.is_empty() {
        steps(&mut s, r);
        charts(&mut s, r);
    }
    s.push_str("</body></html>\n");
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

/// The document head (title, inline style) and the page heading.
fn head(s: &mut String, r: &RunResult) {
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
}

/// What was measured, where and how.
fn setup(s: &mut String, r: &RunResult) {
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
}

/// The connection phase and the server's memory.
fn connections(s: &mut String, r: &RunResult) {
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
}

/// One row per publishing step.
fn steps(s: &mut String, r: &RunResult) {
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
}

/// Latency and delivery rate per second, with a marker where each step starts.
fn charts(s: &mut String, r: &RunResult) {
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
