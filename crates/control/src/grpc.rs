//! The gRPC API (`proto/gripmesh/v1/publish.proto`, `routes.proto`): `gripmesh.v1.Publisher`
//! and `gripmesh.v1.RouteService`, with the HTTP API's validation rules and publish auth.
//!
//! Publishing: a batch is converted and validated whole ([`crate::items`]) before anything is
//! published (one bad item ⇒ `INVALID_ARGUMENT` naming the item's index, nothing published), then published in
//! order through the same path as `POST /publish/`. `PublishStream` answers each request with
//! one reply and reports a bad request in that reply, keeping the stream open.

use crate::Inner;
use crate::error::ApiError;
use crate::items::convert_batch;
use crate::routes::RoutesVersion;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream};
use proto::v1 as pb;
use proto::v1::publisher_server::{self, Publisher, PublisherServer};
use proto::v1::revocation_server::{self, Revocation, RevocationServer};
use proto::v1::route_service_server::{self, RouteService, RouteServiceServer};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::{Request, Response, Status, Streaming};

/// Checks the publish auth against the call's `authorization` metadata (a refusal is
/// counted and becomes `UNAUTHENTICATED`).
fn authorize<T>(inner: &Inner, req: &Request<T>) -> Result<(), Status> {
    let authorization = req.metadata().get("authorization").map(|v| v.as_bytes());
    if inner.config.auth.allows(authorization) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized.into_status())
    }
}

/// `gripmesh.v1.Publisher`.
#[derive(Clone)]
struct PublishApi {
    inner: Arc<Inner>,
    /// `gripmesh_control_publish_items_total{api="grpc"}`.
    items: metrics::Counter,
    /// Ends open `PublishStream` calls so the server can drain.
    shutdown: CancellationToken,
}

impl PublishApi {
    fn new(inner: Arc<Inner>, shutdown: CancellationToken) -> PublishApi {
        PublishApi {
            inner,
            items: metrics::counter!("gripmesh_control_publish_items_total", "api" => "grpc"),
            shutdown,
        }
    }

    /// Validates and publishes one request; the error is the one `Publish` fails with.
    /// Returns the count and the per-item receipts (empty when no item has history).
    async fn publish_request(
        &self,
        req: pb::PublishRequest,
    ) -> Result<(u32, Vec<pb::ItemReceipt>), ApiError> {
        let items = convert_batch(req.items)?;
        if let Some(index) = crate::publish::overlong_channel(&self.inner, &items) {
            return Err(ApiError::InvalidChannel { item: Some(index) });
        }
        let seqs = crate::publish::publish_items(&self.inner, &items).await?;
        self.items.increment(items.len() as u64);
        let receipts = if seqs.iter().any(Option::is_some) {
            items
                .iter()
                .zip(&seqs)
                .map(|(item, seq)| pb::ItemReceipt {
                    channel: item.channel.clone(),
                    id: item.id.clone().unwrap_or_default(),
                    seq: seq.unwrap_or(0),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok((u32::try_from(items.len()).unwrap_or(u32::MAX), receipts))
    }

    /// The replies of a `PublishStream` call: one per request, in order, each request handled
    /// before the next is read. Ends after the last request, on shutdown, or with the status of
    /// a request that could not be received.
    fn reply_stream<S>(&self, requests: S) -> BoxStream<'static, Result<pb::PublishReply, Status>>
    where
        S: Stream<Item = Result<pb::PublishRequest, Status>> + Send + 'static,
    {
        struct State {
            api: PublishApi,
            requests: BoxStream<'static, Result<pb::PublishRequest, Status>>,
            index: u64,
            done: bool,
        }
        let state = State {
            api: self.clone(),
            requests: requests.boxed(),
            index: 0,
            done: false,
        };
        futures_util::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                () = st.api.shutdown.cancelled() => return None,
                next = st.requests.next() => next?,
            };
            let req = match next {
                Ok(req) => req,
                Err(status) => {
                    st.done = true;
                    return Some((Err(status), st));
                }
            };
            let request_index = st.index;
            st.index += 1;
            let reply = match st.api.publish_request(req).await {
                Ok((accepted, items)) => pb::PublishReply {
                    accepted,
                    request_index,
                    items,
                    ..Default::default()
                },
                Err(err) => {
                    let status = err.into_status();
                    pb::PublishReply {
                        accepted: 0,
                        error: status.message().to_owned(),
                        error_code: u32::try_from(i32::from(status.code())).unwrap_or(2),
                        request_index,
                        items: Vec::new(),
                    }
                }
            };
            Some((Ok(reply), st))
        })
        .boxed()
    }
}

#[tonic::async_trait]
impl Publisher for PublishApi {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        authorize(&self.inner, &request)?;
        let (accepted, items) = self
            .publish_request(request.into_inner())
            .await
            .map_err(ApiError::into_status)?;
        Ok(Response::new(pb::PublishReply {
            accepted,
            items,
            ..Default::default()
        }))
    }

    type PublishStreamStream = BoxStream<'static, Result<pb::PublishReply, Status>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        authorize(&self.inner, &request)?;
        Ok(Response::new(self.reply_stream(request.into_inner())))
    }
}

/// `gripmesh.v1.RouteService`.
struct RouteApi {
    inner: Arc<Inner>,
    /// Ends open `Watch` calls so the server can drain.
    shutdown: CancellationToken,
}

fn route_table(v: &RoutesVersion) -> pb::RouteTable {
    let routes = routes::RouteTable::parse(&v.text)
        .map(|t| {
            t.routes()
                .iter()
                .map(|r| pb::RouteEntry {
                    id: r.id.clone(),
                    line: u32::try_from(r.line).unwrap_or(u32::MAX),
                })
                .collect()
        })
        .unwrap_or_default();
    pb::RouteTable {
        version: v.version,
        text: v.text.clone(),
        routes,
    }
}

impl RouteApi {
    /// The current table, then the table after every change, until shutdown or until the
    /// store goes away.
    fn watch_stream(&self) -> BoxStream<'static, Result<pb::RouteTable, Status>> {
        let rx = self.inner.routes.watch();
        let shutdown = self.shutdown.clone();
        futures_util::stream::unfold(
            (rx, shutdown, true),
            |(mut rx, shutdown, first)| async move {
                if !first {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return None,
                        changed = rx.changed() => changed.ok()?,
                    }
                }
                let table = route_table(&rx.borrow_and_update());
                Some((Ok(table), (rx, shutdown, false)))
            },
        )
        .boxed()
    }
}

#[tonic::async_trait]
impl RouteService for RouteApi {
    async fn list(
        &self,
        request: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::RouteTable>, Status> {
        authorize(&self.inner, &request)?;
        Ok(Response::new(route_table(
            &self.inner.routes.current().await,
        )))
    }

    async fn put(
        &self,
        request: Request<pb::PutRoutesRequest>,
    ) -> Result<Response<pb::RouteTable>, Status> {
        authorize(&self.inner, &request)?;
        let v = self
            .inner
            .routes
            .put(request.into_inner().text)
            .await
            .map_err(|err| ApiError::from(err).into_status())?;
        tracing::info!(version = v.version, "route table replaced through gRPC");
        Ok(Response::new(route_table(&v)))
    }

    type WatchStream = BoxStream<'static, Result<pb::RouteTable, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        authorize(&self.inner, &request)?;
        Ok(Response::new(self.watch_stream()))
    }
}

/// `gripmesh.v1.Revocation`: the gRPC form of `POST /authz/revoke`.
struct RevocationApi {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl Revocation for RevocationApi {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        authorize(&self.inner, &request)?;
        let req = request.into_inner();
        let hash = crate::revoke::requested_hash(Some(&req.credential), Some(&req.credential_hash))
            .ok_or_else(|| ApiError::InvalidRevocation.into_status())?;
        self.inner
            .revocations
            .revoke(&hash)
            .await
            .map_err(|err| ApiError::from(err).into_status())?;
        Ok(Response::new(pb::RevokeReply {
            credential_hash: hash,
        }))
    }
}

/// Routes calls to the services by the service part of the path (`/<service>/<method>`);
/// anything else is [`ApiError::NotFound`] (`UNIMPLEMENTED` "Not Found", counted like every
/// refusal). `R1`/`R2` are the v1 and v1alpha server reflection services (unnameable types).
///
/// Hand-rolled rather than tonic's `service::Routes` (feature `router`), measured on the
/// 2-core build machine: that feature adds axum, axum-core and mime (about 16 s of compile
/// time, and it changes the features of tokio, hyper, serde and others, so the whole
/// workspace rebuilds), puts axum's boxed per-call route service in front of every publish,
/// and its fallback answers an unknown service with an empty message that bypasses
/// [`ApiError`], and `/<service>/` (no method) differently from the generated services.
#[derive(Clone)]
struct GrpcRouter<R1, R2> {
    publisher: PublisherServer<PublishApi>,
    routes: RouteServiceServer<RouteApi>,
    revocation: RevocationServer<RevocationApi>,
    reflection_v1: R1,
    reflection_v1alpha: R2,
}

type HttpBody = tonic::body::Body;
type RouterFuture = BoxFuture<'static, Result<http::Response<HttpBody>, Infallible>>;

/// A generated tonic service as the router calls it.
trait GrpcService:
    Service<
        http::Request<HttpBody>,
        Response = http::Response<HttpBody>,
        Error = Infallible,
        Future = RouterFuture,
    > + Clone
    + Send
    + 'static
{
}

impl<T> GrpcService for T where
    T: Service<
            http::Request<HttpBody>,
            Response = http::Response<HttpBody>,
            Error = Infallible,
            Future = RouterFuture,
        > + Clone
        + Send
        + 'static
{
}

impl<R1: GrpcService, R2: GrpcService> Service<http::Request<HttpBody>> for GrpcRouter<R1, R2> {
    type Response = http::Response<HttpBody>;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated services are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<HttpBody>) -> Self::Future {
        let service = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        match service {
            publisher_server::SERVICE_NAME => self.publisher.call(req),
            route_service_server::SERVICE_NAME => self.routes.call(req),
            revocation_server::SERVICE_NAME => self.revocation.call(req),
            REFLECTION_V1 => self.reflection_v1.call(req),
            REFLECTION_V1ALPHA => self.reflection_v1alpha.call(req),
            _ => Box::pin(std::future::ready(Ok(ApiError::NotFound
                .into_status()
                .into_http()))),
        }
    }
}

const REFLECTION_V1: &str = tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME;
const REFLECTION_V1ALPHA: &str =
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME;

/// The services reflection advertises: the ones this listener serves (the sidecar's
/// `Authorization` is in the same descriptor set but not served here).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .with_service_name(publisher_server::SERVICE_NAME)
        .with_service_name(route_service_server::SERVICE_NAME)
        .with_service_name(revocation_server::SERVICE_NAME)
}

/// Builds the router; `None` only if the compiled-in descriptors were unusable (a build bug).
fn router(
    inner: Arc<Inner>,
    shutdown: CancellationToken,
) -> Option<GrpcRouter<impl GrpcService, impl GrpcService>> {
    // The publish body limit bounds every decoded message, as it bounds HTTP bodies.
    let limit = inner.config.max_body;
    let reflection_v1 = reflection().with_service_name(REFLECTION_V1).build_v1();
    // v1alpha for older clients (grpcurl falls back to it; Python's grpcio-reflection uses it).
    let reflection_v1alpha = reflection()
        .with_service_name(REFLECTION_V1ALPHA)
        .build_v1alpha();
    let (reflection_v1, reflection_v1alpha) = match (reflection_v1, reflection_v1alpha) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "gRPC reflection: bad compiled-in descriptors");
            return None;
        }
    };
    Some(GrpcRouter {
        publisher: PublisherServer::new(PublishApi::new(inner.clone(), shutdown.clone()))
            .max_decoding_message_size(limit),
        routes: RouteServiceServer::new(RouteApi {
            inner: inner.clone(),
            shutdown,
        })
        .max_decoding_message_size(limit),
        revocation: RevocationServer::new(RevocationApi { inner }),
        reflection_v1,
        reflection_v1alpha,
    })
}

/// See [`crate::Control::serve_grpc`].
pub(crate) async fn serve(inner: Arc<Inner>, listener: TcpListener, shutdown: CancellationToken) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let Some(svc) = router(inner, shutdown.clone()) else {
        return;
    };
    let result = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(svc, incoming, shutdown.cancelled_owned())
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, "gRPC server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{BatchError, ItemError, convert_item};
    use crate::{Control, ControlConfig, PublishAuth, RouteStore};
    use bus::{Bus, BusError, BusState, MemoryBus};
    use bytes::Bytes;
    use grip::publish::{
        Formats, HttpResponseFormat, HttpStreamFormat, PublishItem, ResponseAction,
        WsMessageFormat, WsMessageType,
    };
    use pb::ws_message_format::Payload;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use tonic::Code;

    const WAIT: Duration = Duration::from_secs(5);

    fn stream_item(channel: &str, content: &str) -> pb::Item {
        pb::Item {
            channel: channel.into(),
            http_stream: Some(pb::HttpStreamFormat {
                content: Bytes::copy_from_slice(content.as_bytes()),
                close: false,
            }),
            ..Default::default()
        }
    }

    fn ws(payload: Option<Payload>, close: bool, code: u32, reason: &str) -> pb::Item {
        pb::Item {
            channel: "c".into(),
            ws_message: Some(pb::WsMessageFormat {
                payload,
                close,
                close_code: code,
                close_reason: reason.into(),
            }),
            ..Default::default()
        }
    }

    fn response(code: u32) -> pb::Item {
        pb::Item {
            channel: "c".into(),
            http_response: Some(pb::HttpResponseFormat {
                code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn err(item: pb::Item) -> ItemError {
        convert_item(item).expect_err("item should be refused")
    }

    // ---- conversion: every error

    #[test]
    fn empty_channel_is_refused() {
        let mut item = stream_item("", "x");
        assert_eq!(err(item.clone()), ItemError::EmptyChannel);
        item.channel = "c".into();
        assert!(convert_item(item).is_ok());
    }

    #[test]
    fn an_item_needs_a_format() {
        let item = pb::Item {
            channel: "c".into(),
            id: "1".into(),
            ..Default::default()
        };
        assert_eq!(err(item), ItemError::NoFormats);
    }

    #[test]
    fn response_codes() {
        for bad in [1, 99, 1000, 65_536, u32::MAX] {
            assert_eq!(
                err(response(bad)),
                ItemError::ResponseCode(bad),
                "code {bad}"
            );
        }
        for (given, sent) in [(0, 200), (100, 100), (404, 404), (999, 999)] {
            let item = convert_item(response(given)).expect("valid code");
            let r = item.formats.http_response.expect("response format");
            assert_eq!(r.code, sent, "code {given}");
        }
    }

    #[test]
    fn http_stream_needs_exactly_content_or_close() {
        let mut item = stream_item("c", "");
        assert_eq!(err(item.clone()), ItemError::StreamEmpty);
        item.http_stream = Some(pb::HttpStreamFormat {
            content: Bytes::from_static(b"x"),
            close: true,
        });
        assert_eq!(err(item.clone()), ItemError::StreamContentAndClose);
        item.http_stream = Some(pb::HttpStreamFormat {
            content: Bytes::new(),
            close: true,
        });
        let stream = convert_item(item)
            .expect("close is valid")
            .formats
            .http_stream;
        assert_eq!(stream, Some(HttpStreamFormat::Close));
    }

    #[test]
    fn ws_message_errors() {
        assert_eq!(err(ws(None, false, 0, "")), ItemError::WsEmpty);
        assert_eq!(
            err(ws(Some(Payload::Text("x".into())), true, 0, "")),
            ItemError::WsPayloadAndClose
        );
        assert_eq!(
            err(ws(Some(Payload::Binary(Bytes::new())), true, 1000, "")),
            ItemError::WsPayloadAndClose
        );
        assert_eq!(
            err(ws(None, true, 65_536, "")),
            ItemError::WsCloseCode(65_536)
        );
        assert_eq!(
            err(ws(Some(Payload::Text("x".into())), false, 1000, "")),
            ItemError::WsCloseFieldsWithoutClose
        );
        assert_eq!(
            err(ws(Some(Payload::Text("x".into())), false, 0, "bye")),
            ItemError::WsCloseFieldsWithoutClose
        );
    }

    #[test]
    fn ws_message_forms() {
        let conv = |item| convert_item(item).expect("valid").formats.ws_message;
        assert_eq!(
            conv(ws(Some(Payload::Text(String::new())), false, 0, "")),
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Text,
                content: Bytes::new()
            })
        );
        assert_eq!(
            conv(ws(
                Some(Payload::Binary(Bytes::from_static(b"\0\xff"))),
                false,
                0,
                ""
            )),
            Some(WsMessageFormat::Send {
                kind: WsMessageType::Binary,
                content: Bytes::from_static(b"\0\xff")
            })
        );
        assert_eq!(
            conv(ws(None, true, 0, "")),
            Some(WsMessageFormat::Close {
                code: None,
                reason: String::new()
            })
        );
        assert_eq!(
            conv(ws(None, true, 4001, "gone")),
            Some(WsMessageFormat::Close {
                code: Some(4001),
                reason: "gone".into()
            })
        );
    }

    #[test]
    fn full_item_converts_field_by_field() {
        let item = pb::Item {
            channel: "news".into(),
            id: "7".into(),
            prev_id: "6".into(),
            meta: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            no_seq: true,
            http_response: Some(pb::HttpResponseFormat {
                code: 201,
                reason: "Made".into(),
                headers: BTreeMap::from([
                    ("X-B".to_owned(), "2".to_owned()),
                    ("X-A".to_owned(), "1".to_owned()),
                ]),
                body: Bytes::from_static(b"body"),
            }),
            http_stream: Some(pb::HttpStreamFormat {
                content: Bytes::from_static(b"chunk"),
                close: false,
            }),
            ws_message: Some(pb::WsMessageFormat {
                payload: Some(Payload::Text("hi".into())),
                ..Default::default()
            }),
        };
        let expected = PublishItem {
            channel: "news".into(),
            id: Some("7".into()),
            prev_id: Some("6".into()),
            meta: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            no_seq: true,
            formats: Formats {
                http_response: Some(HttpResponseFormat {
                    action: ResponseAction::Send,
                    code: 201,
                    reason: Some("Made".into()),
                    headers: vec![("X-A".into(), "1".into()), ("X-B".into(), "2".into())],
                    body: Bytes::from_static(b"body"),
                }),
                http_stream: Some(HttpStreamFormat::Send(Bytes::from_static(b"chunk"))),
                ws_message: Some(WsMessageFormat::Send {
                    kind: WsMessageType::Text,
                    content: Bytes::from_static(b"hi"),
                }),
                content_filters: Default::default(),
            },
        };
        assert_eq!(convert_item(item), Ok(expected));
    }

    #[test]
    fn empty_strings_mean_absent() {
        // `response(0)` leaves id, prev_id, reason and body at their proto3 defaults.
        let converted = convert_item(response(0)).expect("valid");
        assert_eq!((converted.id, converted.prev_id), (None, None));
        let r = converted.formats.http_response.expect("response");
        assert_eq!((r.reason, r.body), (None, Bytes::new()));
    }

    #[test]
    fn batch_error_names_the_first_bad_item() {
        let batch = vec![
            stream_item("a", "1"),
            stream_item("b", ""),
            stream_item("", "3"),
        ];
        let e = convert_batch(batch).expect_err("batch refused");
        assert_eq!(
            e,
            BatchError {
                index: 1,
                error: ItemError::StreamEmpty
            }
        );
        assert!(e.to_string().starts_with("item 1: "), "{e}");
        assert_eq!(convert_batch(vec![]), Ok(vec![]));
    }

    // ---- services over a MemoryBus

    /// In-memory route and revocation stores; the route table is seeded with
    /// `* 127.0.0.1:1` (version 1) before this returns.
    async fn stores(shutdown: &CancellationToken) -> (RouteStore, crate::RevocationStore) {
        let state: Arc<dyn bus::kv::StateStore> = Arc::new(bus::kv::MemoryState::new());
        let codec = bus::records::RecordCodec::default();
        let routes = RouteStore::new(
            state.clone(),
            codec.clone(),
            1,
            crate::RoutesSource::Api {
                seed: "* 127.0.0.1:1\n".into(),
            },
        );
        tokio::spawn({
            let (routes, stop) = (routes.clone(), shutdown.clone());
            async move { routes.run(stop).await }
        });
        routes
            .watch()
            .wait_for(|v| v.version > 0)
            .await
            .expect("seeded");
        let revocations =
            crate::RevocationStore::new(state, codec, std::time::Duration::from_secs(60), 1);
        (routes, revocations)
    }

    struct Fixture {
        control: Control,
        bus: MemoryBus,
        shutdown: CancellationToken,
    }

    impl Fixture {
        async fn new(auth: PublishAuth) -> Fixture {
            let bus = MemoryBus::new();
            let shutdown = CancellationToken::new();
            let (routes, revocations) = stores(&shutdown).await;
            let config = ControlConfig {
                auth,
                ..ControlConfig::default()
            };
            Fixture {
                control: Control::new(config, Arc::new(bus.clone()), routes, revocations),
                bus,
                shutdown,
            }
        }

        fn publisher(&self) -> PublishApi {
            PublishApi::new(self.control.inner.clone(), self.shutdown.clone())
        }

        fn routes(&self) -> RouteApi {
            RouteApi {
                inner: self.control.inner.clone(),
                shutdown: self.shutdown.clone(),
            }
        }

        async fn subscribe(&self, channel: &str) -> bus::Subscription {
            self.bus
                .subscribe(bus::subject::channel_subject(channel))
                .await
                .expect("memory bus subscribe")
        }
    }

    /// The next item on a subscription (decoded).
    async fn next_item(sub: &mut bus::Subscription) -> PublishItem {
        let payload = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("an item within the wait")
            .expect("subscription open");
        bus::payload::decode(payload).expect("valid payload").0
    }

    fn content(item: &PublishItem) -> Bytes {
        match &item.formats.http_stream {
            Some(HttpStreamFormat::Send(b)) => b.clone(),
            other => panic!("not stream content: {other:?}"),
        }
    }

    fn with_auth<T>(msg: T, value: &str) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("authorization", value.parse().expect("ascii metadata"));
        req
    }

    #[tokio::test]
    async fn publish_delivers_the_batch_in_order() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let mut sub = fx.subscribe("c").await;
        let req = pb::PublishRequest {
            items: vec![stream_item("c", "one"), stream_item("c", "two")],
        };
        let reply = fx
            .publisher()
            .publish(Request::new(req))
            .await
            .expect("published")
            .into_inner();
        assert_eq!(
            (reply.accepted, reply.error.as_str(), reply.error_code),
            (2, "", 0)
        );
        assert_eq!(content(&next_item(&mut sub).await), "one");
        assert_eq!(content(&next_item(&mut sub).await), "two");
    }

    #[tokio::test]
    async fn invalid_batch_is_refused_whole() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let mut sub = fx.subscribe("c").await;
        let api = fx.publisher();
        let bad = pb::PublishRequest {
            items: vec![stream_item("c", "not-sent"), response(5)],
        };
        let status = api
            .publish(Request::new(bad))
            .await
            .expect_err("invalid batch");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("item 1: "),
            "{}",
            status.message()
        );
        // The next thing on the channel is the marker: the valid first item was not published.
        let marker = pb::PublishRequest {
            items: vec![stream_item("c", "marker")],
        };
        api.publish(Request::new(marker)).await.expect("marker");
        assert_eq!(content(&next_item(&mut sub).await), "marker");
    }

    /// A channel over `--max-channel-length` refuses the batch whole (it could make a bus
    /// subject NATS drops the connection over).
    #[tokio::test]
    async fn overlong_channel_is_refused() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let mut sub = fx.subscribe("c").await;
        let api = fx.publisher();
        let long = "x".repeat(ControlConfig::default().max_channel_length + 1);
        let bad = pb::PublishRequest {
            items: vec![stream_item("c", "not-sent"), stream_item(&long, "x")],
        };
        let status = api
            .publish(Request::new(bad))
            .await
            .expect_err("overlong channel");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "item 1: Invalid channel.");
        let at_limit = "y".repeat(ControlConfig::default().max_channel_length);
        let ok = pb::PublishRequest {
            items: vec![stream_item(&at_limit, "fits"), stream_item("c", "marker")],
        };
        api.publish(Request::new(ok)).await.expect("at the limit");
        assert_eq!(content(&next_item(&mut sub).await), "marker");
    }

    #[tokio::test]
    async fn publish_auth() {
        let fx = Fixture::new(PublishAuth::Token("secret".into())).await;
        let api = fx.publisher();
        let req = || pb::PublishRequest {
            items: vec![stream_item("c", "x")],
        };
        let missing = api
            .publish(Request::new(req()))
            .await
            .expect_err("no token");
        assert_eq!(missing.code(), Code::Unauthenticated);
        let wrong = api
            .publish(with_auth(req(), "Bearer nope"))
            .await
            .expect_err("wrong token");
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let ok = api
            .publish(with_auth(req(), "Bearer secret"))
            .await
            .expect("right token");
        assert_eq!(ok.into_inner().accepted, 1);

        let routes = fx.routes();
        let denied = routes
            .list(Request::new(pb::ListRoutesRequest {}))
            .await
            .expect_err("routes need the token too");
        assert_eq!(denied.code(), Code::Unauthenticated);
        let denied = routes
            .put(Request::new(pb::PutRoutesRequest {
                text: "* 127.0.0.1:2\n".into(),
            }))
            .await
            .expect_err("routes need the token too");
        assert_eq!(denied.code(), Code::Unauthenticated);
        assert_eq!(fx.control.routes().current().await.version, 1);
        routes
            .list(with_auth(pb::ListRoutesRequest {}, "Bearer secret"))
            .await
            .expect("token accepted");
    }

    #[tokio::test]
    async fn stream_replies_once_per_request_and_survives_bad_requests() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let mut sub = fx.subscribe("c").await;
        let requests = futures_util::stream::iter(vec![
            Ok(pb::PublishRequest {
                items: vec![stream_item("c", "a"), stream_item("c", "b")],
            }),
            Ok(pb::PublishRequest {
                items: vec![stream_item("c", "skipped"), ws(None, false, 0, "")],
            }),
            Ok(pb::PublishRequest { items: vec![] }),
            Ok(pb::PublishRequest {
                items: vec![stream_item("c", "c")],
            }),
        ]);
        let replies: Vec<_> = fx.publisher().reply_stream(requests).collect().await;
        let replies: Vec<pb::PublishReply> = replies
            .into_iter()
            .map(|r| r.expect("replies, not statuses"))
            .collect();
        assert_eq!(replies.len(), 4);
        let summary: Vec<(u64, u32, u32)> = replies
            .iter()
            .map(|r| (r.request_index, r.accepted, r.error_code))
            .collect();
        assert_eq!(summary, vec![(0, 2, 0), (1, 0, 3), (2, 0, 0), (3, 1, 0)]);
        assert!(
            replies[1].error.starts_with("item 1: "),
            "{}",
            replies[1].error
        );
        assert!(
            replies
                .iter()
                .enumerate()
                .all(|(i, r)| i == 1 || r.error.is_empty())
        );
        for expected in ["a", "b", "c"] {
            assert_eq!(content(&next_item(&mut sub).await), expected);
        }
    }

    #[tokio::test]
    async fn stream_ends_with_the_status_of_a_broken_request() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let requests = futures_util::stream::iter(vec![
            Ok(pb::PublishRequest {
                items: vec![stream_item("c", "a")],
            }),
            Err(Status::out_of_range("too large")),
            Ok(pb::PublishRequest {
                items: vec![stream_item("c", "never")],
            }),
        ]);
        let replies: Vec<_> = fx.publisher().reply_stream(requests).collect().await;
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].as_ref().map(|r| r.accepted).ok(), Some(1));
        assert_eq!(
            replies[1].as_ref().map_err(Status::code).err(),
            Some(Code::OutOfRange)
        );
    }

    #[tokio::test]
    async fn stream_ends_on_shutdown() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let mut replies = fx.publisher().reply_stream(futures_util::stream::pending());
        fx.shutdown.cancel();
        let end = tokio::time::timeout(WAIT, replies.next()).await;
        assert!(matches!(end, Ok(None)), "stream should end: {end:?}");
    }

    /// A bus that refuses everything.
    struct DownBus(tokio::sync::watch::Sender<BusState>);

    impl Bus for DownBus {
        fn publish(&self, _: String, _: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
            Box::pin(async { Err(BusError::Unavailable("down".into())) })
        }
        fn subscribe(&self, _: String) -> BoxFuture<'_, Result<bus::Subscription, BusError>> {
            Box::pin(async { Err(BusError::Unavailable("down".into())) })
        }
        fn state(&self) -> tokio::sync::watch::Receiver<BusState> {
            self.0.subscribe()
        }
    }

    #[tokio::test]
    async fn bus_failure_is_unavailable() {
        let down = DownBus(tokio::sync::watch::Sender::new(BusState::Disconnected));
        let (routes, revocations) = stores(&CancellationToken::new()).await;
        let control = Control::new(
            ControlConfig::default(),
            Arc::new(down),
            routes,
            revocations,
        );
        let api = PublishApi::new(control.inner.clone(), CancellationToken::new());
        let req = || pb::PublishRequest {
            items: vec![stream_item("c", "x")],
        };
        let status = api
            .publish(Request::new(req()))
            .await
            .expect_err("bus down");
        assert_eq!(status.code(), Code::Unavailable);
        let replies: Vec<_> = api
            .reply_stream(futures_util::stream::iter(vec![Ok(req())]))
            .collect()
            .await;
        let reply = replies[0].as_ref().expect("a reply, not a status");
        assert_eq!(
            (reply.accepted, reply.error_code),
            (0, Code::Unavailable as u32)
        );
        assert!(!reply.error.is_empty());
    }

    /// A connected bus whose publishes never complete (a subscriber that never reads).
    struct StuckBus(tokio::sync::watch::Sender<BusState>);

    impl Bus for StuckBus {
        fn publish(&self, _: String, _: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
            Box::pin(std::future::pending())
        }
        fn subscribe(&self, _: String) -> BoxFuture<'_, Result<bus::Subscription, BusError>> {
            Box::pin(std::future::pending())
        }
        fn state(&self) -> tokio::sync::watch::Receiver<BusState> {
            self.0.subscribe()
        }
    }

    /// A publish is answered once queued, whatever the bus is doing; at the queue's bound it
    /// is refused with UNAVAILABLE instead of the queue growing.
    #[tokio::test]
    async fn publish_never_waits_on_the_bus_and_the_queue_is_bounded() {
        let stuck = StuckBus(tokio::sync::watch::Sender::new(BusState::Connected));
        let (routes, revocations) = stores(&CancellationToken::new()).await;
        let control = Control::new(
            ControlConfig::default(),
            Arc::new(stuck),
            routes,
            revocations,
        );
        let api = PublishApi::new(control.inner.clone(), CancellationToken::new());
        let batch = |n: usize| pb::PublishRequest {
            items: (0..n).map(|i| stream_item("c", &i.to_string())).collect(),
        };
        let reply = tokio::time::timeout(WAIT, api.publish(Request::new(batch(1))))
            .await
            .expect("answered while the bus is stuck")
            .expect("accepted");
        assert_eq!(reply.into_inner().accepted, 1);
        // Fill the queue to its item bound (the first item is stuck in the bus).
        let rest = crate::outbox::MAX_ITEMS - 1;
        let reply = api.publish(Request::new(batch(rest))).await.expect("fits");
        assert_eq!(reply.into_inner().accepted as usize, rest);
        let full = api
            .publish(Request::new(batch(1)))
            .await
            .expect_err("queue full");
        assert_eq!(full.code(), Code::Unavailable);
        assert_eq!(full.message(), "Publish queue full.");
    }

    // ---- RouteService

    #[tokio::test]
    async fn routes_list_put_and_watch() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let api = fx.routes();
        let mut watch = api.watch_stream();
        let first = watch.next().await.expect("initial").expect("table");
        assert_eq!((first.version, first.text.as_str()), (1, "* 127.0.0.1:1\n"));
        assert_eq!(first.routes.len(), 1);
        assert_eq!(first.routes[0].line, 1);

        let bad = api
            .put(Request::new(pb::PutRoutesRequest {
                text: "* 127.0.0.1:2\n* nonsense-without-port\n".into(),
            }))
            .await
            .expect_err("bad table");
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("line 2: "), "{}", bad.message());
        let listed = api
            .list(Request::new(pb::ListRoutesRequest {}))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed, first);

        let put = api
            .put(Request::new(pb::PutRoutesRequest {
                text: "# two\n* 127.0.0.1:2\n".into(),
            }))
            .await
            .expect("good table")
            .into_inner();
        assert!(put.version > 1);
        assert_eq!(
            put.routes.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2]
        );
        let listed = api
            .list(Request::new(pb::ListRoutesRequest {}))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed, put);
        let next = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("change within the wait")
            .expect("stream open")
            .expect("table");
        assert_eq!(next, put);

        fx.shutdown.cancel();
        let end = tokio::time::timeout(WAIT, watch.next()).await;
        assert!(matches!(end, Ok(None)), "watch should end on shutdown");
    }

    #[tokio::test]
    async fn unknown_services_are_unimplemented() {
        let fx = Fixture::new(PublishAuth::Open).await;
        let mut router =
            router(fx.control.inner.clone(), fx.shutdown.clone()).expect("descriptors");
        let req = http::Request::builder()
            .method("POST")
            .uri("/gripmesh.v1.Nope/Call")
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())
            .expect("request");
        let resp = router.call(req).await.expect("infallible");
        let status = Status::from_header_map(resp.headers()).expect("grpc-status header");
        assert_eq!(status.code(), Code::Unimplemented);
    }
}
