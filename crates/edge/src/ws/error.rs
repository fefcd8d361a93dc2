//! Errors that end a WebSocket handshake with a plain error response, and that response.

use http::StatusCode;
use runtime::server::{Body, text};

/// Errors that end the handshake with a plain error response.
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
    pub(crate) fn into_response(self) -> http::Response<Body> {
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
