//! `Grip-Link: <url>; rel=next` on stream holds: after `timeout` seconds without activity on
//! the connection's channels, or on an `http-stream` `hint` publish, the edge GETs the link
//! from the origin and appends the answer's body to the stream (Pushpin's reliable streaming).

use crate::EdgeInner;
use crate::authz::Authorized;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use grip::instruct::NextLink;
use http::HeaderMap;
use routes::Route;
use std::sync::Arc;

/// Largest next-link body appended to a stream.
const MAX_NEXT_BODY: usize = 1_000_000;

/// What a next-link fetch needs, captured when the hold starts.
pub(super) struct NextFetcher {
    pub(crate) edge: Arc<EdgeInner>,
    pub(crate) route: Arc<Route>,
    /// The client's request headers (Host, credentials), as for the first request.
    pub(crate) headers: HeaderMap,
    /// Path (in the origin's namespace) of the request that produced the link.
    pub(crate) base_path: String,
    pub(crate) authorized: Option<Arc<Authorized>>,
}

/// A fetched link: the body to append and the next link (the answer's own, else the same).
pub(super) type Fetched = Result<(Bytes, NextLink), String>;

impl NextFetcher {
    /// GETs `link` through the route's targets.
    pub(super) fn fetch(self: &Arc<Self>, link: NextLink) -> BoxFuture<'static, Fetched> {
        self.fetch_with_last(link, Vec::new())
    }

    /// GETs `link` with `Grip-Last: <channel>; last-id=<id>` headers (a resume that history
    /// could not serve: the origin re-syncs the stream).
    pub(super) fn fetch_with_last(
        self: &Arc<Self>,
        link: NextLink,
        grip_last: Vec<(String, String)>,
    ) -> BoxFuture<'static, Fetched> {
        let this = self.clone();
        Box::pin(async move {
            let path = crate::origin::link_path(&this.base_path, &link.url);
            let mut req = crate::origin::OriginRequest::get(path, this.headers.clone());
            let (resp, _) = crate::origin::ask(
                &this.edge,
                &this.route,
                &mut req,
                this.authorized.as_deref(),
                &grip_last,
            )
            .await
            .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("next link answered {}", resp.status()));
            }
            let next = grip::instruct::parse_headers(resp.headers())
                .ok()
                .and_then(|i| i.next_link)
                .unwrap_or(link);
            let body = crate::origin::collect_limited(resp.into_body(), MAX_NEXT_BODY).await?;
            Ok((body, next))
        })
    }
}
