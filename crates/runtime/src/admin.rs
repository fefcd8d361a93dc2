//! The admin listener every tier runs: `/metrics`, `/healthz`, `/readyz`.

use crate::health::Health;
use crate::server::{self, Body, ServerOptions};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
            let mut resp = server::text(StatusCode::OK, metrics.render());
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
