//! `Grip-Link: <url>; rel=gone` (Pushpin 1.41, `httpsession.cpp`): when the client's
//! connection ends — whatever ends it: the client, a `close` publish, a timeout, drain,
//! revocation, a slow-consumer cut-off — the edge POSTs an empty body to the link, best effort
//! and without retry.
//!
//! The POST goes through the route's targets (the link's path and query; a relative link is
//! resolved against the client's request), signed like every origin request, so an origin can
//! trust it. Pushpin only sends it for HTTP holds; gripmesh also honours the header on a
//! WebSocket origin's acceptance (the OPEN answer, or the passthrough `101`), so "tell me when
//! the client left" works on every transport.

use crate::EdgeInner;
use crate::authz::Authorized;
use crate::metrics::EdgeMetrics;
use http::HeaderMap;
use routes::Route;
use std::sync::Arc;
use std::time::Duration;

/// Time allowed for the whole gone request (once it may start).
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// Gone requests in flight at once per edge; the rest wait their turn. A drain or a mass
/// revocation ends thousands of connections at once: without a bound each would open an
/// origin request at the same moment.
pub(crate) const MAX_CONCURRENT_GONE: usize = 64;

/// Sends the gone request when dropped.
pub(crate) struct GoneLink {
    edge: Arc<EdgeInner>,
    route: Arc<Route>,
    /// Origin path of the link.
    path: String,
    /// `Host` (and the authorization's headers) as for the client's request.
    headers: HeaderMap,
    authorized: Option<Arc<Authorized>>,
}

impl GoneLink {
    /// A gone link `url` given in answer to a request for `base_path` (origin namespace).
    pub(crate) fn new(
        edge: Arc<EdgeInner>,
        route: Arc<Route>,
        base_path: &str,
        url: &str,
        client_headers: &HeaderMap,
        authorized: Option<Arc<Authorized>>,
    ) -> GoneLink {
        let mut headers = HeaderMap::new();
        if let Some(host) = client_headers.get(http::header::HOST) {
            headers.insert(http::header::HOST, crate::headers::detach(host));
        }
        GoneLink {
            edge,
            route,
            path: crate::origin::link_path(base_path, url),
            headers,
            authorized,
        }
    }
}

impl std::fmt::Debug for GoneLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoneLink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for GoneLink {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let edge = self.edge.clone();
        let route = self.route.clone();
        let authorized = self.authorized.take();
        let mut req = crate::origin::OriginRequest::post_empty(
            std::mem::take(&mut self.path),
            std::mem::take(&mut self.headers),
        );
        let tracker = self.edge.gone_tasks.clone();
        rt.spawn(tracker.track_future(async move {
            let Ok(_permit) = edge.gone_permits.acquire().await else {
                return;
            };
            let sent = tokio::time::timeout(
                GONE_TIMEOUT,
                crate::origin::ask(&edge, &route, &mut req, authorized.as_deref(), &[]),
            )
            .await;
            match sent {
                Ok(Ok((resp, _))) if resp.status().is_success() => {
                    EdgeMetrics::gone("sent");
                    // Pushpin expects an empty answer; the body is read and dropped.
                    let _ = crate::origin::collect_limited(resp.into_body(), 64 * 1024).await;
                }
                Ok(Ok((resp, _))) => {
                    EdgeMetrics::gone("rejected");
                    tracing::debug!(status = %resp.status(), "gone link answered with an error");
                }
                Ok(Err(err)) => {
                    EdgeMetrics::gone("failed");
                    tracing::debug!(error = %err, "gone link request failed");
                }
                Err(_) => {
                    EdgeMetrics::gone("failed");
                    tracing::debug!("gone link request timed out");
                }
            }
        }));
    }
}
