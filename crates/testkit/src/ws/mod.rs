//! WebSocket test helpers.
//!
//! - [`WsConn`]: one end of a WebSocket connection (tokio-tungstenite). [`WsConn::connect`]
//!   opens a client connection with custom handshake headers; [`WsConn::try_connect`] returns
//!   the HTTP status, headers and complete body when the handshake is refused.
//!   [`WsOrigin::accept`] hands out the origin's end of proxied connections.
//! - [`RawWs`]: a client on raw TCP that completes the handshake and then writes hand-crafted
//!   (possibly invalid) frames, for bad-input tests.
//! - [`WsEvent`], [`encode_events`], [`decode_events`]: the `application/websocket-events`
//!   encoding of WebSocket-over-HTTP, written independently of the code under test.
//! - [`WohOrigin`]: a WebSocket-over-HTTP origin (on top of [`Origin`](crate::Origin)) whose
//!   handler sees the decoded events of each request; [`echo_reply`] is the standard GRIP echo
//!   behaviour.
//! - [`WsOrigin`]: a plain WebSocket origin for GRIP WebSocket passthrough, accepting with or
//!   without the `grip` extension, or refusing the handshake.

mod conn;
mod events;
mod origin;
mod raw;
mod woh;

use std::time::Duration;

pub use conn::{Recv, WsConn, WsConnectError, WsRejection};
pub use events::{WsEvent, decode_events, encode_events, events_response, grip_events_response};
pub use origin::{WsHandshake, WsOrigin, WsOriginMode};
pub use raw::{RawRead, RawWs, encode_frame, opcode};
pub use woh::{WohOrigin, WohRequest, echo_events, echo_reply};

/// Content-Type (and Accept) of WebSocket-over-HTTP requests and responses.
pub const EVENTS_CONTENT_TYPE: &str = "application/websocket-events";

/// Limit for a whole client handshake (long enough for an edge to time out a hanging origin).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest message the test clients accept (well above any edge limit under test).
const CLIENT_MAX_MESSAGE: usize = 64 << 20;

/// Bytes as text for messages and assertions (invalid UTF-8 replaced).
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
