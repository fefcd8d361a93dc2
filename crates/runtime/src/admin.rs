//! The admin listener every tier runs: `/metrics`, `/healthz`, `/readyz`.

use crate::health::Health;
use crate::server::{self, Body, ServerOptions};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
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

/// Serves the admin endpoints until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) {
    server::serve(
        listener,
        ServerOptions::default(),
        shutdown,
        move |req, _peer| {
            let resp = handle(&req, &health, &metrics);
            async move { resp }
        },
    )
    .await;
}

fn handle(req: &Request<Incoming>, health: &Health, metrics: &PrometheusHandle) -> Response<Body> {
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
