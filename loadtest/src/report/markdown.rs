//! The markdown rows for BENCHMARKS.md: each scenario's headline figures with gripmesh next to
//! its peers (and their ratio), then the targets.

use std::fmt::Write as _;

use super::text::human;
use super::{AnyResult, PublishResult, RunResult};
use crate::clients::Transport;
use crate::publish::Api;
use crate::resume::ResumeResult;

/// A headline figure: `(metric, value, numeric value for ratios)`.
type Headline = (String, String, Option<f64>);

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

/// The headline figures of one result.
fn headline(r: &AnyResult) -> Vec<Headline> {
    let mut v = Vec::new();
    match r {
        AnyResult::Run(r) => {
            connection_headlines(&mut v, r);
            if !r.steps.is_empty() {
                best_step_headlines(&mut v, r);
                step_headlines(&mut v, r);
            }
        }
        AnyResult::Publish(p) => v.push(publish_headline(p)),
        AnyResult::Resume(r) => v.push(resume_headline(r)),
    }
    v
}

/// Idle memory per connection and the connection ramp, for the scenarios about them.
fn connection_headlines(v: &mut Vec<Headline>, r: &RunResult) {
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
}

/// The best passing step's delivery rate, and the server's CPU per delivery there.
fn best_step_headlines(v: &mut Vec<Headline>, r: &RunResult) {
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
}

/// Every step's latency (the ratio column compares p99s).
fn step_headlines(v: &mut Vec<Headline>, r: &RunResult) {
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

/// A publish benchmark's throughput.
fn publish_headline(p: &PublishResult) -> Headline {
    (
        format!(
            "publish items/s ({:?}, batch {}, ×{})",
            p.api.unwrap_or(Api::Http),
            p.batch,
            p.concurrency
        )
        .to_lowercase(),
        format!("{} items/s", human(p.items_per_s)),
        Some(p.items_per_s),
    )
}

/// A resume benchmark's time to the last missed item.
fn resume_headline(r: &ResumeResult) -> Headline {
    (
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
    )
}

/// Markdown rows: every scenario with gripmesh next to Pushpin (and their ratio) — and next to
/// Nchan when any result is Nchan's — then the targets.
pub(crate) fn markdown(results: &[AnyResult]) -> String {
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
