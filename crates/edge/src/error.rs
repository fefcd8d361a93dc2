//! Why an HTTP request failed, and so what the client gets: every HTTP-side failure of the
//! edge is a [`ProxyError`], turned into the client's answer here and nowhere else.

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
        }
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
