//! Per-app metrics with bounded cardinality: `gripmesh_app_connections{app}`,
//! `gripmesh_app_messages_sent_total{app}`, `gripmesh_app_bytes_sent_total{app}`.
//!
//! At most `top` apps carry their own `app` label; everything else is `app="other"`. Which
//! apps: the busiest by bytes delivered, as an exponentially decaying score (each usage
//! interval keeps [`DECAY`] of the score and adds the interval's bytes). Re-ranked once per
//! interval, with hysteresis so the labelled set does not flap: a free slot goes to the
//! busiest unlabelled app; a labelled app loses its slot only to an app scoring more than
//! twice as much, or once it ranks below `2 × top`. An app that loses its label stops having
//! series (they are rendered from this table, not kept by the exporter); its later traffic
//! counts towards `other`, and a label regained starts again from zero (a counter reset, which
//! `rate()` handles). So a scrape never shows more than `top + 1` series per metric, and the
//! table itself holds at most `max(8 × top, 1024)` apps.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Share of an app's score kept from one interval to the next.
pub(crate) const DECAY: f64 = 0.8;
/// Longest app name used as a label value (longer names are cut at a character boundary).
const MAX_LABEL_LEN: usize = 128;

/// One metric's name, type, help, per-app value and `other` value.
type MetricText = (
    &'static str,
    &'static str,
    &'static str,
    fn(&AppStat) -> u64,
    u64,
);

#[derive(Debug, Default, Clone)]
struct AppStat {
    live: u64,
    score: f64,
    window_bytes: u64,
    labelled: bool,
    messages: u64,
    bytes: u64,
}

/// One app's figures, for the demo's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSummary {
    /// App name (`other` for everything unlabelled).
    pub app: String,
    /// Live connections.
    pub connections: u64,
    /// Messages delivered while labelled (or to `other`).
    pub messages: u64,
    /// Bytes delivered while labelled (or to `other`).
    pub bytes: u64,
}

/// The per-app table behind the metrics. Not thread-safe; the edge keeps it under a mutex
/// taken on connection open/close and once per interval (never per message).
#[derive(Debug)]
pub(crate) struct AppLabeller {
    top: usize,
    cap: usize,
    apps: HashMap<Arc<str>, AppStat>,
    /// Live connections of apps that found the table full.
    untracked_live: u64,
    other_messages: u64,
    other_bytes: u64,
}

/// Whether an opened connection was counted in the table (passed back on close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracked(bool);

impl AppLabeller {
    /// A table giving at most `top` apps their own label.
    pub(crate) fn new(top: usize) -> AppLabeller {
        AppLabeller {
            top,
            cap: (top.saturating_mul(8)).max(1024),
            apps: HashMap::new(),
            untracked_live: 0,
            other_messages: 0,
            other_bytes: 0,
        }
    }

    /// A connection of `app` opened.
    pub(crate) fn open(&mut self, app: &Arc<str>) -> Tracked {
        if let Some(s) = self.apps.get_mut(app) {
            s.live += 1;
            return Tracked(true);
        }
        if self.apps.len() >= self.cap {
            self.untracked_live += 1;
            return Tracked(false);
        }
        let labelled = self.top > 0 && self.labelled_count() < self.top;
        self.apps.insert(
            app.clone(),
            AppStat {
                live: 1,
                labelled,
                ..AppStat::default()
            },
        );
        Tracked(true)
    }

    /// A connection of `app` closed.
    pub(crate) fn close(&mut self, app: &str, tracked: Tracked) {
        if !tracked.0 {
            self.untracked_live = self.untracked_live.saturating_sub(1);
            return;
        }
        if let Some(s) = self.apps.get_mut(app) {
            s.live = s.live.saturating_sub(1);
        }
    }

    /// `messages` and `bytes` delivered to a connection of `app`.
    pub(crate) fn add(&mut self, app: &str, tracked: Tracked, messages: u64, bytes: u64) {
        match self.apps.get_mut(app) {
            Some(s) if tracked.0 => {
                s.window_bytes = s.window_bytes.saturating_add(bytes);
                if s.labelled {
                    s.messages = s.messages.saturating_add(messages);
                    s.bytes = s.bytes.saturating_add(bytes);
                    return;
                }
            }
            _ => {}
        }
        self.other_messages = self.other_messages.saturating_add(messages);
        self.other_bytes = self.other_bytes.saturating_add(bytes);
    }

    fn labelled_count(&self) -> usize {
        self.apps.values().filter(|s| s.labelled).count()
    }

    /// Ends an interval: folds its bytes into the scores, re-ranks, forgets idle apps.
    pub(crate) fn rerank(&mut self) {
        for s in self.apps.values_mut() {
            s.score = s.score * DECAY + s.window_bytes as f64;
            s.window_bytes = 0;
        }
        let mut ranked: Vec<(Arc<str>, f64)> = self
            .apps
            .iter()
            .map(|(k, s)| (k.clone(), s.score))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let keep_rank = self.top.saturating_mul(2);
        // Labelled apps that fell far down lose their label.
        for (rank, (name, _)) in ranked.iter().enumerate() {
            if rank >= keep_rank
                && let Some(s) = self.apps.get_mut(name)
                && s.labelled
            {
                unlabel(s);
            }
        }
        // The busiest unlabelled apps take free slots, or displace a much quieter app.
        for (name, score) in ranked.iter().take(self.top) {
            if self.apps.get(name).is_none_or(|s| s.labelled) || *score <= 0.0 {
                continue;
            }
            if self.labelled_count() >= self.top {
                let weakest = self
                    .apps
                    .iter()
                    .filter(|(_, s)| s.labelled)
                    .min_by(|a, b| a.1.score.total_cmp(&b.1.score))
                    .map(|(k, s)| (k.clone(), s.score));
                match weakest {
                    Some((w, ws)) if *score > 2.0 * ws => {
                        if let Some(s) = self.apps.get_mut(&w) {
                            unlabel(s);
                        }
                    }
                    _ => continue,
                }
            }
            if let Some(s) = self.apps.get_mut(name) {
                s.labelled = true;
            }
        }
        // Apps with no live connection and a negligible score are forgotten (bounded table).
        self.apps.retain(|_, s| s.live > 0 || s.score >= 1.0);
    }

    /// Appends the three metrics in Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        let mut labelled: Vec<(&Arc<str>, &AppStat)> =
            self.apps.iter().filter(|(_, s)| s.labelled).collect();
        labelled.sort_by(|a, b| a.0.cmp(b.0));
        let other_live = self.untracked_live
            + self
                .apps
                .values()
                .filter(|s| !s.labelled)
                .map(|s| s.live)
                .sum::<u64>();
        let metrics: [MetricText; 3] = [
            (
                "gripmesh_app_connections",
                "gauge",
                "Live usage-metered connections per developer app (top --usage-top-apps apps, the rest app=\"other\").",
                |s| s.live,
                other_live,
            ),
            (
                "gripmesh_app_messages_sent_total",
                "counter",
                "Messages delivered per developer app (top --usage-top-apps apps, the rest app=\"other\").",
                |s| s.messages,
                self.other_messages,
            ),
            (
                "gripmesh_app_bytes_sent_total",
                "counter",
                "Bytes delivered per developer app, framing included (top --usage-top-apps apps, the rest app=\"other\").",
                |s| s.bytes,
                self.other_bytes,
            ),
        ];
        for (name, kind, help, value, other) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (app, s) in &labelled {
                let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", escape(app), value(s));
            }
            let _ = writeln!(out, "{name}{{app=\"other\"}} {other}");
        }
    }

    /// The labelled apps and `other`, busiest first.
    pub(crate) fn summary(&self) -> Vec<AppSummary> {
        let mut out: Vec<(f64, AppSummary)> = self
            .apps
            .iter()
            .filter(|(_, s)| s.labelled)
            .map(|(k, s)| {
                (
                    s.score,
                    AppSummary {
                        app: k.to_string(),
                        connections: s.live,
                        messages: s.messages,
                        bytes: s.bytes,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.app.cmp(&b.1.app)));
        let other_live = self.untracked_live
            + self
                .apps
                .values()
                .filter(|s| !s.labelled)
                .map(|s| s.live)
                .sum::<u64>();
        let mut summary: Vec<AppSummary> = out.into_iter().map(|(_, s)| s).collect();
        summary.push(AppSummary {
            app: "other".to_owned(),
            connections: other_live,
            messages: self.other_messages,
            bytes: self.other_bytes,
        });
        summary
    }
}

fn unlabel(s: &mut AppStat) {
    s.labelled = false;
    s.messages = 0;
    s.bytes = 0;
}

/// A label value: quotes, backslashes and newlines escaped, length bounded.
fn escape(app: &str) -> String {
    let mut end = app.len().min(MAX_LABEL_LEN);
    while !app.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 2);
    for c in app[..end].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn series(l: &AppLabeller) -> Vec<String> {
        let mut out = String::new();
        l.render(&mut out);
        out.lines()
            .filter(|l| l.starts_with("gripmesh_app_bytes_sent_total{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn first_apps_take_free_slots_and_the_rest_is_other() {
        let mut l = AppLabeller::new(2);
        let (a, b, c) = (app("a"), app("b"), app("c"));
        let ta = l.open(&a);
        let tb = l.open(&b);
        let tc = l.open(&c);
        l.add("a", ta, 1, 10);
        l.add("b", tb, 2, 20);
        l.add("c", tc, 3, 30);
        assert_eq!(
            series(&l),
            [
                "gripmesh_app_bytes_sent_total{app=\"a\"} 10",
                "gripmesh_app_bytes_sent_total{app=\"b\"} 20",
                "gripmesh_app_bytes_sent_total{app=\"other\"} 30",
            ]
        );
        let mut out = String::new();
        l.render(&mut out);
        assert!(out.contains("gripmesh_app_connections{app=\"other\"} 1\n"));
        l.close("c", tc);
        let mut out = String::new();
        l.render(&mut out);
        assert!(out.contains("gripmesh_app_connections{app=\"other\"} 0\n"));
    }

    #[test]
    fn a_much_busier_app_displaces_the_quietest_and_series_stay_bounded() {
        let mut l = AppLabeller::new(2);
        let names: Vec<Arc<str>> = (0..50).map(|i| app(&format!("app{i}"))).collect();
        let tracked: Vec<Tracked> = names.iter().map(|n| l.open(n)).collect();
        for round in 0..20u64 {
            for (i, n) in names.iter().enumerate() {
                // app49 is by far the busiest; app0/app1 (first in) barely send.
                let bytes = if i == 49 { 10_000 } else { i as u64 + round };
                l.add(n, tracked[i], 1, bytes);
            }
            l.rerank();
            assert!(series(&l).len() <= 3, "top 2 + other at every scrape");
        }
        let s = series(&l);
        assert!(s.iter().any(|x| x.contains("app=\"app49\"")), "{s:?}");
        assert!(s.iter().any(|x| x.contains("app=\"app48\"")), "{s:?}");
    }

    #[test]
    fn similar_apps_do_not_flap() {
        let mut l = AppLabeller::new(1);
        let (a, b) = (app("a"), app("b"));
        let (ta, tb) = (l.open(&a), l.open(&b));
        for i in 0..10u64 {
            // b is a little busier, alternately — never twice as busy as a.
            l.add("a", ta, 1, 100 + (i % 2) * 20);
            l.add("b", tb, 1, 110 + ((i + 1) % 2) * 20);
            l.rerank();
            assert!(series(&l)[0].contains("app=\"a\""), "a keeps its slot");
        }
    }

    #[test]
    fn the_table_is_bounded_and_idle_apps_are_forgotten() {
        let mut l = AppLabeller::new(1);
        let mut opened = Vec::new();
        for i in 0..5000 {
            let n = app(&format!("x{i}"));
            let t = l.open(&n);
            opened.push((n, t));
        }
        assert_eq!(l.apps.len(), 1024);
        let mut out = String::new();
        l.render(&mut out);
        assert!(out.contains("gripmesh_app_connections{app=\"other\"} 4999\n"));
        for (n, t) in &opened {
            l.close(n, *t);
        }
        l.rerank();
        assert!(l.apps.is_empty());
        let mut out = String::new();
        l.render(&mut out);
        assert!(out.contains("gripmesh_app_connections{app=\"other\"} 0\n"));
    }

    #[test]
    fn label_values_are_escaped_and_bounded() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape(&"é".repeat(100)).len(), 128);
    }
}
