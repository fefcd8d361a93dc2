//! The HTTP hold kinds. A request routed here is authorized, proxied to the origin, and its
//! answer relayed or acted on: a response hold (long-poll, [`response_hold`]) or a stream
//! hold ([`stream_hold`], its body in [`stream_body`], next links in [`next_link`]), both
//! starting from the initial response ([`initial`]). Conflicting `prev-id`s and hints
//! re-request the origin, a bounded number of times.

mod answer;
mod filters;
mod initial;
mod next_link;
mod response_hold;
mod stream_body;
mod stream_hold;

use crate::EdgeInner;
use crate::authz::Authorized;
use crate::error::ProxyError;
use crate::gone::GoneLink;
use crate::origin::{OriginRequest, ReqBody};
use answer::GripAnswer;
use bytes::Bytes;
use grip::instruct::HoldMode;
use http::{Request, Response};
use hyper::body::Incoming;
use next_link::NextFetcher;
use response_hold::HoldOutcome;
use routes::Route;
use runtime::server::{Body, full};
use std::net::SocketAddr;
use std::sync::Arc;
use stream_hold::StreamExtras;

/// Re-requests of one held request (prev-id conflicts, hints) before giving up with 502.
const MAX_REREQUESTS: usize = 5;

/// The plain-HTTP part of a request: authz, origin, GRIP. `body_override` replaces the
/// client's body (JSON-P).
pub(crate) async fn proxy_http(
    edge: Arc<EdgeInner>,
    req: Request<Incoming>,
    peer: SocketAddr,
    route: Route,
    body_override: Option<Bytes>,
) -> Result<Response<Body>, ProxyError> {
    let abort = req
        .extensions()
        .get::<runtime::server::ConnInfo>()
        .map(|c| c.abort.clone());
    let authorized =
        match crate::authz::gate(&edge, &route, req.method(), req.uri(), req.headers(), peer).await
        {
            crate::authz::Gate::Pass(a) => a,
            crate::authz::Gate::Reject(resp) => return Err(ProxyError::Refused(Box::new(resp))),
        };
    let (parts, body) = runtime::body::client_body(req).into_parts();
    // Stream holds on HTTP/1.1 are chunked: usage bytes count the chunk framing.
    let chunked = parts.version == http::Version::HTTP_11;
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let origin_req = OriginRequest {
        method: parts.method.clone(),
        path: route.rewrite_path(path_and_query),
        headers: parts.headers,
        body: match body_override {
            Some(b) => ReqBody::Buffered(b),
            None => ReqBody::new(body, edge.config.max_instruct_body).await?,
        },
    };
    Exchange {
        edge,
        route,
        origin_req,
        authorized,
        abort,
        chunked,
        gone: None,
    }
    .run()
    .await
}

/// One client request and its requests to the origin.
struct Exchange {
    edge: Arc<EdgeInner>,
    route: Route,
    origin_req: OriginRequest,
    authorized: Option<Arc<Authorized>>,
    abort: Option<tokio_util::sync::CancellationToken>,
    /// The client speaks HTTP/1.1 (a stream's body is chunked).
    chunked: bool,
    /// The first answer's gone link; re-requests keep it (Pushpin's rule). A response hold
    /// sends it when the exchange ends, whichever way (the client leaving drops the future).
    gone: Option<GoneLink>,
}

impl Exchange {
    /// Asks the origin (again, while a response hold says so) and answers the client.
    async fn run(mut self) -> Result<Response<Body>, ProxyError> {
        let mut grip_last: Vec<(String, String)> = Vec::new();
        for _attempt in 0..=MAX_REREQUESTS {
            let (resp, target) = crate::origin::ask(
                &self.edge,
                &self.route,
                &mut self.origin_req,
                self.authorized.as_deref(),
                &grip_last,
            )
            .await?;
            if self.route.no_grip || !grip::instruct::is_grip_response(resp.headers()) {
                return Ok(answer::relay(resp, false));
            }
            let answer = answer::read_grip(resp, self.edge.config.max_instruct_body).await?;
            if answer.instruct.hold.is_some() && self.origin_req.body.is_streamed() {
                return Err(ProxyError::TooLargeForGrip);
            }
            let channels = answer::channels_for(&self.edge, &self.route, target, &answer.instruct);
            self.keep_gone_link(&answer);
            match answer.instruct.hold {
                None => return no_hold(answer),
                Some(HoldMode::Response) => {
                    match self
                        .response_hold(answer, channels, grip_last.is_empty())
                        .await?
                    {
                        HoldOutcome::Done(resp) => return Ok(resp),
                        HoldOutcome::ReRequest(last) => {
                            tracing::debug!("re-requesting the origin (prev-id conflict or hint)");
                            grip_last = last;
                        }
                    }
                }
                Some(HoldMode::Stream) => return self.stream_hold(answer, channels).await,
            }
        }
        Err(ProxyError::BadGateway("too many re-requests".into()))
    }

    /// Takes the gone link of the first answer that holds.
    fn keep_gone_link(&mut self, answer: &GripAnswer) {
        if self.gone.is_none()
            && answer.instruct.hold.is_some()
            && let Some(url) = &answer.instruct.gone_link
        {
            self.gone = Some(GoneLink::new(
                self.edge.clone(),
                Arc::new(self.route.clone()),
                &self.origin_req.path,
                url,
                &self.origin_req.headers,
                self.authorized.clone(),
            ));
        }
    }

    /// Holds the request until a publish or its timeout (`&mut`: the exchange is `Send`, not
    /// `Sync`, and lives across the wait).
    async fn response_hold(
        &mut self,
        answer: GripAnswer,
        channels: Vec<String>,
        first_attempt: bool,
    ) -> Result<HoldOutcome, ProxyError> {
        let origin_body = match answer.body {
            Some(b) => answer::read_limited(b, self.edge.config.max_instruct_body).await?,
            None => Bytes::new(),
        };
        response_hold::response_hold(
            &self.edge,
            answer.parts,
            &answer.instruct,
            origin_body,
            channels,
            self.authorized.clone(),
            &self.route,
            first_attempt,
        )
        .await
    }

    /// Holds the request as a stream; the exchange's authorization, abort token and gone
    /// link go with it.
    async fn stream_hold(
        mut self,
        answer: GripAnswer,
        channels: Vec<String>,
    ) -> Result<Response<Body>, ProxyError> {
        let fetcher = answer.instruct.next_link.is_some().then(|| {
            Arc::new(NextFetcher {
                edge: self.edge.clone(),
                route: Arc::new(self.route.clone()),
                headers: self.origin_req.headers.clone(),
                base_path: self.origin_req.path.clone(),
                authorized: self.authorized.clone(),
            })
        });
        let prefix = self.route.prefix.clone().unwrap_or_default();
        let filters = filters::hold_filters(&answer.instruct, &prefix, &channels);
        let extras = StreamExtras {
            route_id: self.route.id.clone(),
            chunked: self.chunked,
            authorized: self.authorized.take(),
            fetcher,
            abort: self.abort.take(),
            prefix,
            filters,
            gone: self.gone.take(),
        };
        let GripAnswer {
            parts,
            instruct,
            body,
        } = answer;
        stream_hold::stream_hold(self.edge.clone(), parts, instruct, body, channels, extras).await
    }
}

/// An answer with instructions but no hold: its own body relayed, or the instructions'
/// response.
fn no_hold(answer: GripAnswer) -> Result<Response<Body>, ProxyError> {
    match answer.body {
        Some(body) => Ok(answer::relay(
            Response::from_parts(answer.parts, body),
            true,
        )),
        None => {
            let (status, hdrs, body) =
                initial::initial_response(&answer.parts, &answer.instruct, Bytes::new());
            initial::build_response(status, &answer.instruct.status, hdrs, full(body))
        }
    }
}
