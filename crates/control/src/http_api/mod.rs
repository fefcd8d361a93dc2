//! The HTTP publish listener: the route table, dispatch, and the accepted answers.
//!
//! Every path the listener answers is declared once in [`ROUTES`] and matched by `matchit`
//! (the router axum uses). Status codes and bodies are Pushpin 1.36's (docs/protocol.md,
//! "Publishing"); every refusal, an unknown path included, is an [`ApiError`].

mod endpoints;
mod request;

use crate::Inner;
use crate::error::ApiError;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use runtime::server::{Body, text};
use std::sync::{Arc, LazyLock};

/// What a path of the publish listener names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/`: Pushpin's banner, any method.
    Root,
    /// `/publish/`: a `{"items":[...]}` batch.
    Publish,
    /// `/publish/<channel>/`: the body is one item's content for that channel.
    PublishChannel,
    /// `/routes/`: the route table (GET, PUT).
    Routes,
    /// `/recover/`: every edge recovers.
    Recover,
    /// `/refresh/`: WebSocket-over-HTTP refresh of a connection or a channel.
    Refresh,
    /// `/authz/revoke`: a credential revocation.
    Revoke,
}

/// Every path of the publish listener, with and without the trailing slash where Pushpin
/// takes both. Anything else is `404 Not Found`.
const ROUTES: &[(&str, Endpoint)] = &[
    ("/", Endpoint::Root),
    ("/publish", Endpoint::Publish),
    ("/publish/", Endpoint::Publish),
    // A catch-all never matches empty, so `/publish/` stays the batch endpoint.
    ("/publish/{*channel}", Endpoint::PublishChannel),
    ("/routes", Endpoint::Routes),
    ("/routes/", Endpoint::Routes),
    ("/recover", Endpoint::Recover),
    ("/recover/", Endpoint::Recover),
    ("/refresh", Endpoint::Refresh),
    ("/refresh/", Endpoint::Refresh),
    ("/authz/revoke", Endpoint::Revoke),
];

/// [`ROUTES`] as a router, built on first use.
static ROUTER: LazyLock<matchit::Router<Endpoint>> = LazyLock::new(|| {
    let mut router = matchit::Router::new();
    for (path, endpoint) in ROUTES {
        router
            .insert(*path, *endpoint)
            .expect("ROUTES holds valid, distinct patterns (the route_table test builds it)");
    }
    router
});

/// The endpoint a path names and, for `/publish/<channel>/`, the channel (percent-decoded).
fn route(path: &str) -> Result<(Endpoint, Option<String>), ApiError> {
    let found = ROUTER.at(path).map_err(|_| ApiError::NotFound)?;
    let channel = match found.params.get("channel") {
        Some(raw) => Some(channel_name(raw)?),
        None => None,
    };
    Ok((*found.value, channel))
}

/// The channel of `/publish/<raw>` (one optional trailing slash): one non-empty,
/// percent-decoded path segment, or `400 Invalid channel.`.
fn channel_name(raw: &str) -> Result<String, ApiError> {
    let raw = raw.strip_suffix('/').unwrap_or(raw);
    if raw.is_empty() || raw.contains('/') {
        return Err(ApiError::InvalidChannel { item: None });
    }
    runtime::server::percent_decode(raw)
        .filter(|c| !c.is_empty())
        .ok_or(ApiError::InvalidChannel { item: None })
}

/// What the listener answers with when it accepts a request (refusals are [`ApiError`]s).
enum Reply {
    Text(String),
    Json(String),
    Published {
        json: bool,
        receipts: Option<String>,
    },
}

impl Reply {
    fn into_response(self) -> Response<Body> {
        match self {
            Reply::Text(body) => text(StatusCode::OK, body),
            Reply::Json(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Reply::Published { json: false, .. } => {
                Reply::Text("Published\n".into()).into_response()
            }
            Reply::Published {
                json: true,
                receipts,
            } => Reply::Json(match receipts {
                Some(items) => format!("{{\"message\":\"Published\",\"items\":{items}}}\n"),
                None => "{\"message\":\"Published\"}\n".to_owned(),
            })
            .into_response(),
        }
    }
}

/// Handles one request on the publish listener. Boxed so the server sees one `Send` type.
/// `loopback_only`: the API is unauthenticated on a loopback address (see [`crate::browser`]).
pub(crate) fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    loopback_only: bool,
) -> futures_util::future::BoxFuture<'static, Response<Body>> {
    Box::pin(async move {
        match dispatch(&inner, req, loopback_only).await {
            Ok(reply) => reply.into_response(),
            Err(err) => err.into_response(),
        }
    })
}

async fn dispatch(
    inner: &Inner,
    req: Request<Incoming>,
    loopback_only: bool,
) -> Result<Reply, ApiError> {
    crate::browser::check(req.headers(), req.uri(), loopback_only)?;
    let (endpoint, channel) = route(req.uri().path())?;
    match endpoint {
        Endpoint::Root => Ok(Reply::Text("Pushpin API\n".into())),
        Endpoint::Publish | Endpoint::PublishChannel => {
            endpoints::publish(inner, req, channel).await
        }
        Endpoint::Routes => endpoints::routes(inner, req).await,
        Endpoint::Recover => endpoints::recover(inner, req).await,
        Endpoint::Refresh => endpoints::refresh(inner, req).await,
        Endpoint::Revoke => endpoints::revoke(inner, req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(path: &str) -> Option<String> {
        match route(path) {
            Ok((Endpoint::PublishChannel, channel)) => channel,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn refused(path: &str) -> &'static str {
        match route(path) {
            Err(err) => err.reason(),
            Ok(found) => panic!("{path}: {found:?}"),
        }
    }

    #[test]
    fn route_table() {
        for (path, endpoint) in ROUTES {
            if *endpoint != Endpoint::PublishChannel {
                assert_eq!(route(path).ok(), Some((*endpoint, None)), "{path}");
            }
        }
        assert_eq!(refused("/authz/revoke/"), "not_found");
        assert_eq!(refused("/publishx"), "not_found");
        assert_eq!(refused("/routes//"), "not_found");
        assert_eq!(refused(""), "not_found");
    }

    #[test]
    fn channel_paths() {
        assert_eq!(channel("/publish/a%20b/").as_deref(), Some("a b"));
        assert_eq!(channel("/publish/abc").as_deref(), Some("abc"));
        assert_eq!(channel("/publish/a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(refused("/publish/a/b/"), "invalid_channel");
        assert_eq!(refused("/publish/a/b"), "invalid_channel");
        assert_eq!(refused("/publish//"), "invalid_channel");
        assert_eq!(refused("/publish/a//"), "invalid_channel");
        assert_eq!(refused("/other"), "not_found");
    }
}
