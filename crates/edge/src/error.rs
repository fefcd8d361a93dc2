//! Why a request failed, and so what the client gets: every HTTP-side failure of the edge is a
//! [`ProxyError`] and every failed WebSocket handshake a [`WsError`], each turned into the
//! client's answer here and nowhere else (the auth gate's answers, shared by both, are built by
//! `authz` and passed through).
//!
//! Counting: each refusal is counted once, where it is decided — key limits in
//! `gripmesh_edge_key_limited_total` by `authz` (admission, expiry) and `keys` (quota), origin
//! failures in `gripmesh_edge_origin_requests_total` by `origin`, slow consumers in
//! `gripmesh_edge_messages_dropped_total` by the hold — never again when answered here.

use crate::origin::AskError;
use crate::registry::SubscribeError;
use http::{Response, StatusCode};
use runtime::server::{Body, text};

/// What went wrong, and so what the client gets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no route for host {0}")]
    NoRoute(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("client sent websocket-events")]
    EventsForbidden,
    #[error("bus: {0}")]
    Unavailable(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body too large for a GRIP hold")]
    TooLargeForGrip,
    /// The client's request body failed (timed out or malformed): its fault, not the origin's.
    #[error("client request body: {0:?}")]
    ClientBody(runtime::body::BodyFault),
    /// A JSON-P request the route cannot serve (the reason is the client's answer).
    #[error("json-p: {0}")]
    Jsonp(String),
    /// The auth gate refused the request; its answer (built by `authz`) goes out as is.
    #[error("refused by the auth gate ({})", .0.status())]
    Refused(Box<Response<Body>>),
    /// A held request's credential was revoked while it waited.
    #[error("credential revoked during the hold")]
    Revoked,
    /// A held request's credential expired while it waited.
    #[error("credential expired during the hold")]
    Expired,
    /// A held request's key spent its message quota while it waited.
    #[error("key quota spent during the hold")]
    QuotaExceeded,
}

impl ProxyError {
    /// The client's answer.
    pub(crate) fn into_response(self) -> Response<Body> {
        match self {
            ProxyError::NoRoute(host) => text(
                StatusCode::BAD_GATEWAY,
                format!("No route for host: {host}\n"),
            ),
            ProxyError::BadGateway(_) => {
                text(StatusCode::BAD_GATEWAY, "Error while proxying to origin.\n")
            }
            ProxyError::EventsForbidden => text(
                StatusCode::FORBIDDEN,
                "Client not allowed to send WebSocket events directly.\n",
            ),
            ProxyError::Unavailable(_) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable.\n")
            }
            ProxyError::BadRequest(_) => text(StatusCode::BAD_REQUEST, "Bad request.\n"),
            ProxyError::TooLargeForGrip => text(
                StatusCode::BAD_REQUEST,
                "Request too large to accept GRIP instruct.\n",
            ),
            ProxyError::ClientBody(fault) => fault.response(),
            ProxyError::Jsonp(msg) => text(StatusCode::BAD_REQUEST, format!("{msg}\n")),
            ProxyError::Refused(resp) => *resp,
            ProxyError::Revoked => text(StatusCode::FORBIDDEN, "Credential revoked.\n"),
            ProxyError::Expired => text(StatusCode::UNAUTHORIZED, crate::authz::CREDENTIAL_EXPIRED),
            ProxyError::QuotaExceeded => {
                text(StatusCode::TOO_MANY_REQUESTS, crate::authz::QUOTA_EXCEEDED)
            }
        }
    }

    /// True for refusals answered as an origin's answer would be: CORS and JSON-P still
    /// apply to them, and they are not logged as failures (the auth gate, or a hold closed
    /// for its credential or key).
    pub(crate) fn is_answer(&self) -> bool {
        matches!(
            self,
            ProxyError::Refused(_)
                | ProxyError::Revoked
                | ProxyError::Expired
                | ProxyError::QuotaExceeded
        )
    }

    /// True for the client's own mistakes (logged at debug, not as failures).
    pub(crate) fn is_client_fault(&self) -> bool {
        matches!(
            self,
            ProxyError::NoRoute(_)
                | ProxyError::EventsForbidden
                | ProxyError::BadRequest(_)
                | ProxyError::ClientBody(_)
                | ProxyError::Jsonp(_)
        )
    }
}

impl From<AskError> for ProxyError {
    fn from(e: AskError) -> ProxyError {
        match e {
            AskError::BadGateway(msg) => ProxyError::BadGateway(msg),
            AskError::ClientBody(fault) => ProxyError::ClientBody(fault),
        }
    }
}

impl From<SubscribeError> for ProxyError {
    fn from(e: SubscribeError) -> ProxyError {
        if e.invalid_channel {
            ProxyError::BadGateway(e.to_string())
        } else {
            ProxyError::Unavailable(e.to_string())
        }
    }
}

/// Errors that end a WebSocket handshake with a plain error response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    #[error("bad handshake: {0}")]
    BadRequest(&'static str),
    #[error("{0}")]
    BadGateway(String),
    #[error("bus: {0}")]
    Unavailable(String),
}

impl WsError {
    /// The handshake's answer.
    pub(crate) fn into_response(self) -> Response<Body> {
        match self {
            WsError::BadRequest(_) => text(StatusCode::BAD_REQUEST, "Bad WebSocket handshake.\n"),
            WsError::BadGateway(_) => {
                text(StatusCode::BAD_GATEWAY, "Error while proxying to origin.\n")
            }
            WsError::Unavailable(_) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable.\n")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(e: ProxyError) -> (StatusCode, String) {
        body_of(e.into_response()).await
    }

    async fn body_of(resp: Response<Body>) -> (StatusCode, String) {
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn holds_closed_for_their_credential_or_key_answer_as_before() {
        assert_eq!(
            answer(ProxyError::Revoked).await,
            (StatusCode::FORBIDDEN, "Credential revoked.\n".to_owned())
        );
        assert_eq!(
            answer(ProxyError::Expired).await,
            (StatusCode::UNAUTHORIZED, "Credential expired.\n".to_owned())
        );
        assert_eq!(
            answer(ProxyError::QuotaExceeded).await,
            (
                StatusCode::TOO_MANY_REQUESTS,
                "Message quota exceeded for this key.\n".to_owned()
            )
        );
        assert_eq!(
            answer(ProxyError::Jsonp("Invalid callback parameter.".into())).await,
            (
                StatusCode::BAD_REQUEST,
                "Invalid callback parameter.\n".to_owned()
            )
        );
        assert!(ProxyError::Revoked.is_answer() && !ProxyError::Jsonp(String::new()).is_answer());
    }

    #[tokio::test]
    async fn failed_handshakes_answer_plainly_without_their_cause() {
        assert_eq!(
            body_of(WsError::BadRequest("no key").into_response()).await,
            (
                StatusCode::BAD_REQUEST,
                "Bad WebSocket handshake.\n".to_owned()
            )
        );
        assert_eq!(
            body_of(WsError::BadGateway("connect refused".into()).into_response()).await,
            (
                StatusCode::BAD_GATEWAY,
                "Error while proxying to origin.\n".to_owned()
            )
        );
        assert_eq!(
            body_of(WsError::Unavailable("nats down".into()).into_response()).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable.\n".to_owned()
            )
        );
    }
}
