//! A mock API gateway: Apigee's "API Key" security on every path, as a forward-auth endpoint.
//!
//! - key [`API_KEY`](crate::API_KEY) in `?apikey=` or `X-Api-Key` ⇒ `200` with
//!   `X-Developer-App` and `X-Api-Product`, and the key's realtime limits
//!   (`Gripmesh-Max-Connections`, `Gripmesh-Message-Quota`);
//! - another key ⇒ `401` `{"fault":{"faultstring":"Invalid ApiKey",...}}`;
//! - no key ⇒ `401` `{"fault":{"faultstring":"Failed to resolve API Key variable ...",...}}`.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use runtime::server::{Body, ServerOptions, full};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Apigee's fault for a key it does not know.
pub const INVALID_KEY_FAULT: &str =
    r#"{"fault":{"faultstring":"Invalid ApiKey","detail":{"errorcode":"oauth.v2.InvalidApiKey"}}}"#;

/// Apigee's fault for a request without a key.
pub const MISSING_KEY_FAULT: &str = r#"{"fault":{"faultstring":"Failed to resolve API Key variable request.queryparam.apikey","detail":{"errorcode":"steps.oauth.v2.FailedToResolveAPIKey"}}}"#;

/// A running mock gateway. Cheap to clone; the counter is shared.
#[derive(Debug, Clone, Default)]
pub struct MockGateway {
    calls: Arc<AtomicU64>,
}

impl MockGateway {
    /// A gateway that has answered nothing yet.
    pub fn new() -> MockGateway {
        MockGateway::default()
    }

    /// How many requests it has answered.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Serves on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        runtime::server::serve(
            listener,
            ServerOptions::default(),
            shutdown,
            move |req: Request<hyper::body::Incoming>, _peer| {
                let this = self.clone();
                async move {
                    this.calls.fetch_add(1, Ordering::Relaxed);
                    let resp = respond(req.uri().query(), req.headers());
                    tracing::debug!(
                        path = req.uri().path(),
                        status = resp.status().as_u16(),
                        "gateway check"
                    );
                    resp
                }
            },
        )
        .await;
    }
}

/// The gateway's answer to a request with `query` and `headers`.
pub fn respond(query: Option<&str>, headers: &HeaderMap) -> Response<Body> {
    let from_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("apikey="))
        .filter(|k| !k.is_empty());
    let from_header = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty());
    match from_query.or(from_header) {
        Some(key) if key == crate::API_KEY => {
            let mut resp = Response::new(full(""));
            let h = resp.headers_mut();
            h.insert(
                "x-developer-app",
                HeaderValue::from_static(crate::DEVELOPER_APP),
            );
            h.insert(
                "x-api-product",
                HeaderValue::from_static(crate::API_PRODUCT),
            );
            h.insert(
                "gripmesh-max-connections",
                HeaderValue::from(crate::MAX_CONNECTIONS),
            );
            h.insert(
                "gripmesh-message-quota",
                HeaderValue::from_static(crate::MESSAGE_QUOTA),
            );
            resp
        }
        Some(_) => fault(INVALID_KEY_FAULT),
        None => fault(MISSING_KEY_FAULT),
    }
}

fn fault(body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_demo_key() {
        let none = HeaderMap::new();
        let ok = respond(Some("apikey=demo-key"), &none);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers().get("x-developer-app").map(|v| v.as_bytes()),
            Some(&b"demo-app"[..])
        );
        let mut with_header = HeaderMap::new();
        with_header.insert("x-api-key", HeaderValue::from_static("demo-key"));
        assert_eq!(respond(None, &with_header).status(), StatusCode::OK);
        assert_eq!(
            respond(Some("apikey=nope"), &none).status(),
            StatusCode::UNAUTHORIZED
        );
        let missing = respond(Some("x=1"), &none);
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
    }
}
