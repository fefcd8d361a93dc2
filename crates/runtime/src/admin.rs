//! The admin listener every tier runs: `/metrics`, `/healthz`, `/readyz`, and for operators a
//! read-only status page `GET /` (self-contained HTML: no external scripts, fonts or CDNs) that
//! polls `GET /status.json`.

use crate::health::Health;
use crate::server::{self, Body, ServerOptions};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A renderer of extra `/metrics` text; returns false once its owner is gone (it is dropped).
type MetricsSection = Box<dyn Fn(&mut String) -> bool + Send + Sync>;

/// Extra `/metrics` sections rendered by their owners (e.g. the per-app usage metrics, whose
/// series come and go with the top-N apps, which the exporter cannot remove).
static SECTIONS: std::sync::Mutex<Vec<MetricsSection>> = std::sync::Mutex::new(Vec::new());

/// Adds a section appended to every `/metrics` answer of this process. The section writes
/// Prometheus text and returns false when it should be removed.
pub fn add_metrics_section(section: impl Fn(&mut String) -> bool + Send + Sync + 'static) {
    SECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(section));
}

/// The exporter's text followed by every live extra section.
pub fn render_metrics(metrics: &PrometheusHandle) -> String {
    let mut out = metrics.render();
    SECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|section| section(&mut out));
    out
}

/// What a tier adds to `/status.json` beyond its metrics: e.g. `routes` (version and text) and
/// `revocations` (the most recent ones). Called once per request; keep it cheap.
pub type StatusExtras = Arc<dyn Fn() -> Map<String, Value> + Send + Sync>;

/// The status page's settings.
#[derive(Clone)]
pub struct StatusPage {
    /// The subcommand (`standalone`, `edge`, …), shown on the page.
    pub tier: &'static str,
    /// The tier's own sections.
    pub extras: Option<StatusExtras>,
    started: Instant,
}

impl StatusPage {
    /// A page for `tier` with the tier's own sections.
    pub fn new(tier: &'static str, extras: Option<StatusExtras>) -> StatusPage {
        StatusPage {
            tier,
            extras,
            started: Instant::now(),
        }
    }
}

/// Serves the admin endpoints until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    metrics: PrometheusHandle,
    page: StatusPage,
    shutdown: CancellationToken,
) {
    server::serve(
        listener,
        ServerOptions::default(),
        shutdown,
        move |req, _peer| {
            let resp = handle(&req, &health, &metrics, &page);
            async move { resp }
        },
    )
    .await;
}

/// The page itself: one file, inline CSS and JavaScript.
const PAGE_HTML: &str = include_str!("admin_page.html");

/// Inline code only, data only from this origin, never framed.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn handle(
    req: &Request<Incoming>,
    health: &Health,
    metrics: &PrometheusHandle,
    page: &StatusPage,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = server::text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n");
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = server::text(StatusCode::OK, render_metrics(metrics));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/healthz" => server::text(StatusCode::OK, "ok\n"),
        "/" => {
            let mut resp = server::text(StatusCode::OK, PAGE_HTML);
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static(PAGE_CSP),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        "/status.json" => {
            let body = status_json(health, &render_metrics(metrics), page);
            let mut resp = server::text(StatusCode::OK, body);
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        "/readyz" => match health.readiness() {
            Ok(()) => server::text(StatusCode::OK, "ready\n"),
            Err(reasons) => server::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", reasons.join("; ")),
            ),
        },
        _ => server::text(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}

/// `/status.json`: readiness, every `gripmesh_*` sample by series (the page derives rates and
/// latency percentiles from successive polls), and the tier's extras.
fn status_json(health: &Health, exposition: &str, page: &StatusPage) -> String {
    let (ready, not_ready) = match health.readiness() {
        Ok(()) => (true, Vec::new()),
        Err(reasons) => (false, reasons),
    };
    let mut doc = json!({
        "tier": page.tier,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ready,
        "not_ready": not_ready,
        "uptime_seconds": page.started.elapsed().as_secs(),
        "metrics": Value::Object(samples(exposition)),
    });
    if let (Some(extras), Some(obj)) = (&page.extras, doc.as_object_mut()) {
        obj.extend(extras());
    }
    doc.to_string()
}

/// `gripmesh_*` samples of a Prometheus text exposition: series text ⇒ value.
fn samples(exposition: &str) -> Map<String, Value> {
    exposition
        .lines()
        .filter(|l| l.starts_with("gripmesh_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            // JSON has no infinities or NaN.
            let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
            Some((series.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_series_and_values() {
        let page = "# HELP x\ngripmesh_a{t=\"ws\"} 3\ngripmesh_b 0.5\nother 1\ngripmesh_h_bucket{le=\"+Inf\"} 2\n";
        let m = samples(page);
        assert_eq!(m.get("gripmesh_a{t=\"ws\"}"), Some(&json!(3.0)));
        assert_eq!(m.get("gripmesh_b"), Some(&json!(0.5)));
        assert_eq!(m.get("gripmesh_h_bucket{le=\"+Inf\"}"), Some(&json!(2.0)));
        assert!(!m.contains_key("other"));
    }
}
