//! The dispatcher: one client request is normalized, routed, and handed to the WebSocket
//! side (`ws`) or the HTTP hold kinds (`http`), with JSON-P or CORS around the latter; a
//! failure becomes the client's answer in `error`.

use crate::EdgeInner;
use crate::error::ProxyError;
use crate::headers::content_type_is;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use routes::RouteRequest;
use runtime::server::Body;
use std::net::SocketAddr;
use std::sync::Arc;

/// Handles one client request end to end.
///
/// Boxed so the server loop sees one concrete `Send` future type.
pub(crate) fn handle(
    edge: Arc<EdgeInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> futures_util::future::BoxFuture<'static, Response<Body>> {
    use tracing::Instrument;
    // Every event of this connection carries its id and (once known) its route id.
    let id = edge
        .next_conn_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("conn", id, %peer, route = tracing::field::Empty);
    Box::pin(handle_inner(edge, req, peer).instrument(span))
}

async fn handle_inner(
    edge: Arc<EdgeInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match proxy(edge, req, peer).await {
        Ok(resp) => resp,
        Err(err) => {
            if err.is_client_fault() {
                tracing::debug!(%peer, %method, %path, error = %err, "request refused");
            } else {
                tracing::warn!(%peer, %method, %path, error = %err, "request failed");
            }
            err.into_response()
        }
    }
}

fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    crate::origin::strip_port(&raw).to_ascii_lowercase()
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn proxy(
    edge: Arc<EdgeInner>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ProxyError> {
    let host = request_host(&req);
    let ws = is_websocket_upgrade(req.headers());
    let tls = req
        .extensions()
        .get::<runtime::server::ConnInfo>()
        .is_some_and(|c| c.tls);
    // The client's own claim is not trusted; the edge says what it saw (Pushpin's default).
    let forwarded_proto = HeaderName::from_static("x-forwarded-proto");
    req.headers_mut().remove(&forwarded_proto);
    if tls {
        req.headers_mut()
            .insert(forwarded_proto, HeaderValue::from_static("https"));
    }
    // Route, authorize and proxy one spelling of the path (docs/protocol.md, "Limits and bad input").
    if let Some(uri) = normalized_uri(req.uri())? {
        *req.uri_mut() = uri;
    }
    let table = edge.routes.load();
    let route = table
        .resolve(&RouteRequest {
            host: &host,
            path: req.uri().path(),
            ws,
            tls,
        })
        .ok_or_else(|| ProxyError::NoRoute(host.clone()))?
        .clone();
    drop(table);
    tracing::Span::current().record("route", route.id.as_str());
    if ws {
        return Ok(crate::ws::handle(edge, req, route, peer).await);
    }
    if route.targets.iter().any(|t| t.over_http)
        && content_type_is(req.headers(), grip::wsevents::CONTENT_TYPE)
    {
        return Err(ProxyError::EventsForbidden);
    }

    // JSON-P (routes with `aco`, as in Pushpin) replaces CORS for the request it applies to.
    let jsonp = if route.aco {
        match crate::jsonp::apply_request(&route.jsonp, &mut req) {
            Ok(j) => j,
            Err(msg) => return Err(ProxyError::Jsonp(msg.to_string())),
        }
    } else {
        None
    };
    let (jsonp, body_override) = match jsonp {
        Some((j, body)) => (Some(j), body),
        None => (None, None),
    };
    let cors =
        (route.aco && jsonp.is_none()).then(|| crate::cors::Cors::from_request(req.headers()));
    let mut resp = match crate::http::proxy_http(edge, req, peer, route, body_override).await {
        Ok(resp) => resp,
        Err(err) if err.is_answer() => err.into_response(),
        Err(err) => return Err(err),
    };
    if let Some(cors) = cors {
        cors.apply(resp.headers_mut());
    }
    if let Some(jsonp) = jsonp {
        resp = jsonp.wrap(resp).await;
    }
    Ok(resp)
}

/// The request URI with its path in canonical form ([`routes::path::normalize`]), or `None`
/// when it already is; a path that cannot be made canonical is the client's error.
fn normalized_uri(uri: &Uri) -> Result<Option<Uri>, ProxyError> {
    let path = uri.path();
    let canonical =
        routes::path::normalize(path).map_err(|e| ProxyError::BadRequest(format!("path: {e}")))?;
    if canonical == path {
        return Ok(None);
    }
    let pq = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(pq)
            .map_err(|e| ProxyError::BadRequest(format!("path: {e}")))?,
    );
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|e| ProxyError::BadRequest(format!("path: {e}")))
}
