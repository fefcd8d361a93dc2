//! The one place a control-API failure becomes a client answer.
//!
//! Every handler of the HTTP publish listener and of the gRPC services returns an [`ApiError`]
//! when it refuses a request; [`ApiError::into_response`] (HTTP status + body) and
//! [`ApiError::into_status`] (gRPC code + message) are the only conversions, and each counts the
//! refusal once in `gripmesh_control_publish_rejected_total{reason}`. The client text is the
//! `Display` of the error: the HTTP body is that text and a newline (Pushpin's bodies, see
//! `docs/protocol.md`), the gRPC message is the same text. Internal causes (a bus or store
//! error) are logged, never sent.

use crate::browser::Refusal;
use crate::items::BatchError;
use http::{HeaderValue, StatusCode, header};
use runtime::body::BodyFault;
use runtime::server::{Body, text};
use tonic::{Code, Status};

/// Why a control API request is refused. `Display` is the text the client gets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A browser's cross-site request (403).
    #[error("Cross-site requests are refused.")]
    CrossSite,
    /// A non-loopback `Host` on an unauthenticated loopback API: DNS rebinding (403).
    #[error("Host not allowed: the unauthenticated control API answers loopback names only.")]
    Host,
    /// Missing or wrong publish credentials (401).
    #[error("Unauthorized.")]
    Unauthorized,
    /// No such endpoint (404).
    #[error("Not Found")]
    NotFound,
    /// The endpoint does not take this method (405 with `Allow`).
    #[error("Method not allowed: {method}.")]
    MethodNotAllowed {
        /// The request's method.
        method: http::Method,
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// `Accept` names neither text nor JSON (406).
    #[error("Not Acceptable. Supported formats are text/plain and application/json.")]
    NotAcceptable,
    /// The body is over the endpoint's limit (413, connection closed).
    #[error("Request body too large.")]
    TooLarge,
    /// The body stalled (408) or was malformed or cut short (400); connection closed.
    #[error("{}", .0.text())]
    Body(BodyFault),
    /// A publish body that is not a valid `{"items":[...]}` document (400, Pushpin's text).
    #[error("{0}")]
    Publish(#[from] grip::publish::PublishError),
    /// A gRPC batch with a bad item (the first one's index and problem).
    #[error("{0}")]
    Item(#[from] BatchError),
    /// A channel name over `--max-channel-length`, or an unusable `/publish/<channel>/` (400).
    /// `item` is the index of the gRPC batch item (HTTP names none).
    #[error("{}Invalid channel.", item.map(|i| format!("item {i}: ")).unwrap_or_default())]
    InvalidChannel {
        /// Index of the offending item in a gRPC batch.
        item: Option<usize>,
    },
    /// A JSON body that does not parse (revoke, refresh) (400).
    #[error("Body is not valid JSON.")]
    NotJson,
    /// A JSON body without the fields the endpoint needs (400).
    #[error("Invalid format: expected {0}")]
    InvalidFormat(&'static str),
    /// A revocation that names neither a credential nor a hash of one (400).
    #[error(
        "Invalid format: expected {{\"credential\": \"...\"}} or {{\"credential_hash\": \"<sha-256 hex>\"}}"
    )]
    InvalidRevocation,
    /// A route table with an error (400; nothing changed).
    #[error("Invalid routes: {0}")]
    InvalidRoutes(String),
    /// `--routes FILE` owns the table (409).
    #[error("Routes are managed by a file.")]
    RoutesFileManaged,
    /// The route table could not be written (503). The cause is logged only.
    #[error("Route store unavailable.")]
    RouteStoreUnavailable(String),
    /// The bus (or the revocation bucket on it) refused a write (503). The cause is logged only.
    #[error("Bus unavailable.")]
    BusUnavailable(String),
    /// The history store refused a batch (503). The cause is logged only.
    #[error("History unavailable.")]
    HistoryUnavailable(String),
    /// The publish queue is at its bound (503; [`crate::outbox`]).
    #[error("Publish queue full.")]
    QueueFull,
}

impl ApiError {
    /// The `reason` label this refusal is counted under (one of
    /// [`crate::metrics::REJECT_REASONS`]).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ApiError::CrossSite => "cross_site",
            ApiError::Host => "host",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::NotAcceptable => "not_acceptable",
            ApiError::TooLarge => "too_large",
            ApiError::Body(BodyFault::Timeout) => "body_timeout",
            ApiError::Body(BodyFault::Malformed) => "bad_request",
            ApiError::Publish(err) => err.kind(),
            ApiError::Item(_) => "invalid_item",
            ApiError::InvalidChannel { .. } => "invalid_channel",
            ApiError::NotJson => "not_json",
            ApiError::InvalidFormat(_) | ApiError::InvalidRevocation => "invalid_format",
            ApiError::InvalidRoutes(_) => "invalid_routes",
            ApiError::RoutesFileManaged => "routes_file_managed",
            ApiError::RouteStoreUnavailable(_) => "route_store_unavailable",
            ApiError::BusUnavailable(_) => "bus_unavailable",
            ApiError::HistoryUnavailable(_) => "history_unavailable",
            ApiError::QueueFull => "queue_full",
        }
    }

    /// The HTTP status.
    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            ApiError::CrossSite | ApiError::Host => StatusCode::FORBIDDEN,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(fault) => fault.status(),
            ApiError::Publish(_)
            | ApiError::Item(_)
            | ApiError::InvalidChannel { .. }
            | ApiError::NotJson
            | ApiError::InvalidFormat(_)
            | ApiError::InvalidRevocation
            | ApiError::InvalidRoutes(_) => StatusCode::BAD_REQUEST,
            ApiError::RoutesFileManaged => StatusCode::CONFLICT,
            ApiError::RouteStoreUnavailable(_)
            | ApiError::BusUnavailable(_)
            | ApiError::HistoryUnavailable(_)
            | ApiError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code.
    pub(crate) fn grpc_code(&self) -> Code {
        match self {
            ApiError::CrossSite | ApiError::Host => Code::PermissionDenied,
            ApiError::Unauthorized => Code::Unauthenticated,
            ApiError::NotFound | ApiError::MethodNotAllowed { .. } => Code::Unimplemented,
            ApiError::TooLarge => Code::ResourceExhausted,
            ApiError::Body(BodyFault::Timeout) => Code::DeadlineExceeded,
            ApiError::NotAcceptable
            | ApiError::Body(BodyFault::Malformed)
            | ApiError::Publish(_)
            | ApiError::Item(_)
            | ApiError::InvalidChannel { .. }
            | ApiError::NotJson
            | ApiError::InvalidFormat(_)
            | ApiError::InvalidRevocation
            | ApiError::InvalidRoutes(_) => Code::InvalidArgument,
            ApiError::RoutesFileManaged => Code::FailedPrecondition,
            ApiError::RouteStoreUnavailable(_)
            | ApiError::BusUnavailable(_)
            | ApiError::HistoryUnavailable(_)
            | ApiError::QueueFull => Code::Unavailable,
        }
    }

    /// Counts the refusal and logs an internal cause (5xx); called once per refusal by the two
    /// conversions below.
    fn record(&self) {
        crate::metrics::ControlMetrics::rejected(self.reason());
        match self {
            ApiError::RouteStoreUnavailable(cause)
            | ApiError::BusUnavailable(cause)
            | ApiError::HistoryUnavailable(cause) => {
                tracing::warn!(error = %cause, reason = self.reason(), "control request failed");
            }
            _ => {}
        }
    }

    /// The HTTP answer (counted).
    pub(crate) fn into_response(self) -> http::Response<Body> {
        self.record();
        let mut resp = text(self.http_status(), format!("{self}\n"));
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            // The rest of the body is not read: the connection cannot be reused.
            ApiError::TooLarge | ApiError::Body(_) => {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }

    /// The gRPC status (counted).
    pub(crate) fn into_status(self) -> Status {
        self.record();
        Status::new(self.grpc_code(), self.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::CrossSite => ApiError::CrossSite,
            Refusal::Host => ApiError::Host,
        }
    }
}

impl From<bus::history::HistoryError> for ApiError {
    fn from(err: bus::history::HistoryError) -> Self {
        ApiError::HistoryUnavailable(err.to_string())
    }
}

impl From<crate::PutError> for ApiError {
    fn from(err: crate::PutError) -> Self {
        match err {
            crate::PutError::Invalid(e) => ApiError::InvalidRoutes(e.to_string()),
            crate::PutError::FileManaged => ApiError::RoutesFileManaged,
            crate::PutError::Unavailable(e) => ApiError::RouteStoreUnavailable(e),
        }
    }
}

impl From<bus::kv::KvError> for ApiError {
    /// A revocation that could not be written.
    fn from(err: bus::kv::KvError) -> Self {
        ApiError::BusUnavailable(err.to_string())
    }
}

impl From<crate::outbox::Refused> for ApiError {
    fn from(r: crate::outbox::Refused) -> Self {
        match r {
            crate::outbox::Refused::Bus(e) => e.into(),
            crate::outbox::Refused::Full => ApiError::QueueFull,
        }
    }
}

impl From<bus::BusError> for ApiError {
    fn from(err: bus::BusError) -> Self {
        ApiError::BusUnavailable(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::ItemError;
    use crate::metrics::REJECT_REASONS;
    use http_body_util::BodyExt;

    async fn http(err: ApiError) -> (StatusCode, http::HeaderMap, String) {
        let resp = err.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("full body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).expect("utf-8"),
        )
    }

    /// The HTTP answers are the documented (Pushpin's) ones.
    #[tokio::test]
    async fn http_answers() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::CrossSite,
                403,
                "Cross-site requests are refused.\n",
            ),
            (ApiError::Unauthorized, 401, "Unauthorized.\n"),
            (ApiError::NotFound, 404, "Not Found\n"),
            (
                ApiError::NotAcceptable,
                406,
                "Not Acceptable. Supported formats are text/plain and application/json.\n",
            ),
            (ApiError::TooLarge, 413, "Request body too large.\n"),
            (
                ApiError::Body(BodyFault::Timeout),
                408,
                "Request body timed out.\n",
            ),
            (
                ApiError::Body(BodyFault::Malformed),
                400,
                "Malformed request body.\n",
            ),
            (
                grip::publish::PublishError::NotJson.into(),
                400,
                "Body is not valid JSON.\n",
            ),
            (
                grip::publish::PublishError::Invalid("x".into()).into(),
                400,
                "Invalid format: x\n",
            ),
            (
                ApiError::InvalidChannel { item: None },
                400,
                "Invalid channel.\n",
            ),
            (ApiError::NotJson, 400, "Body is not valid JSON.\n"),
            (
                ApiError::InvalidRevocation,
                400,
                "Invalid format: expected {\"credential\": \"...\"} or {\"credential_hash\": \"<sha-256 hex>\"}\n",
            ),
            (
                ApiError::InvalidFormat("{\"cid\": \"...\"}"),
                400,
                "Invalid format: expected {\"cid\": \"...\"}\n",
            ),
            (
                ApiError::InvalidRoutes("not UTF-8.".into()),
                400,
                "Invalid routes: not UTF-8.\n",
            ),
            (
                ApiError::RoutesFileManaged,
                409,
                "Routes are managed by a file.\n",
            ),
            (
                ApiError::RouteStoreUnavailable("secret detail".into()),
                503,
                "Route store unavailable.\n",
            ),
            (
                ApiError::BusUnavailable("nats://user:pw@host".into()),
                503,
                "Bus unavailable.\n",
            ),
            (
                ApiError::HistoryUnavailable("stream gone".into()),
                503,
                "History unavailable.\n",
            ),
        ];
        for (err, status, body) in cases {
            let (s, headers, b) = http(err).await;
            assert_eq!((s.as_u16(), b.as_str()), (status, body));
            assert_eq!(
                headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
                Some(&b"text/plain"[..])
            );
        }
    }

    #[tokio::test]
    async fn http_headers() {
        let (_, headers, body) = http(ApiError::MethodNotAllowed {
            method: http::Method::GET,
            allow: "POST",
        })
        .await;
        assert_eq!(body, "Method not allowed: GET.\n");
        assert_eq!(
            headers.get(header::ALLOW).map(HeaderValue::as_bytes),
            Some(&b"POST"[..])
        );
        for err in [ApiError::TooLarge, ApiError::Body(BodyFault::Malformed)] {
            let (_, headers, _) = http(err).await;
            assert_eq!(
                headers.get(header::CONNECTION).map(HeaderValue::as_bytes),
                Some(&b"close"[..])
            );
        }
        let (_, headers, _) = http(ApiError::Unauthorized).await;
        assert!(headers.get(header::CONNECTION).is_none());
    }

    /// gRPC gets the same text (no newline), the item index where there is one, and never an
    /// internal cause.
    #[test]
    fn grpc_statuses() {
        let cases: Vec<(ApiError, Code, &str)> = vec![
            (
                ApiError::Unauthorized,
                Code::Unauthenticated,
                "Unauthorized.",
            ),
            (
                ApiError::InvalidChannel { item: Some(3) },
                Code::InvalidArgument,
                "item 3: Invalid channel.",
            ),
            (
                BatchError {
                    index: 1,
                    error: ItemError::StreamEmpty,
                }
                .into(),
                Code::InvalidArgument,
                "item 1: http_stream has neither content nor close",
            ),
            (
                ApiError::InvalidRoutes("line 2: bad".into()),
                Code::InvalidArgument,
                "Invalid routes: line 2: bad",
            ),
            (
                ApiError::RoutesFileManaged,
                Code::FailedPrecondition,
                "Routes are managed by a file.",
            ),
            (
                ApiError::BusUnavailable("nats://user:pw@host refused".into()),
                Code::Unavailable,
                "Bus unavailable.",
            ),
            (
                ApiError::HistoryUnavailable("x".into()),
                Code::Unavailable,
                "History unavailable.",
            ),
            (
                ApiError::RouteStoreUnavailable("x".into()),
                Code::Unavailable,
                "Route store unavailable.",
            ),
        ];
        for (err, code, message) in cases {
            let status = err.into_status();
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn every_reason_is_registered() {
        let all = [
            ApiError::CrossSite,
            ApiError::Host,
            ApiError::Unauthorized,
            ApiError::NotFound,
            ApiError::MethodNotAllowed {
                method: http::Method::GET,
                allow: "POST",
            },
            ApiError::NotAcceptable,
            ApiError::TooLarge,
            ApiError::Body(BodyFault::Timeout),
            ApiError::Body(BodyFault::Malformed),
            grip::publish::PublishError::NotJson.into(),
            grip::publish::PublishError::NotObject.into(),
            grip::publish::PublishError::Invalid(String::new()).into(),
            ApiError::InvalidChannel { item: None },
            ApiError::NotJson,
            ApiError::InvalidFormat(""),
            ApiError::InvalidRevocation,
            ApiError::InvalidRoutes(String::new()),
            ApiError::RoutesFileManaged,
            ApiError::RouteStoreUnavailable(String::new()),
            ApiError::BusUnavailable(String::new()),
            ApiError::HistoryUnavailable(String::new()),
            ApiError::QueueFull,
        ];
        for err in &all {
            assert!(REJECT_REASONS.contains(&err.reason()), "{err:?}");
        }
        for reason in REJECT_REASONS {
            assert!(all.iter().any(|e| e.reason() == *reason), "{reason} unused");
        }
    }
}
