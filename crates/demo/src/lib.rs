//! The scenario of "Real-Time API Management with Apigee and Fanout", on one machine, for
//! `gripmesh demo`:
//!
//! - [`gateway`]: a mock API gateway (an Apigee stand-in) that accepts the API key
//!   [`API_KEY`] from `?apikey=` or `X-Api-Key`, answers `200` with the developer app and API
//!   product as headers, and an Apigee-style `401` JSON fault otherwise. The auth sidecar asks
//!   it (forward-auth) before a client reaches the origin.
//! - [`origin`]: the trades backend. WebSocket-over-HTTP clients are accepted in GRIP mode and
//!   subscribed to [`CHANNEL`]; plain `GET`s become a stream hold on the same channel (SSE on
//!   [`SSE_CHANNEL`] with `Accept: text/event-stream`).
//! - [`trades`]: a publisher that posts one fake trade per second to the publish API.
//!
//! The binary wires these to an in-process standalone stack (edge + control + embedded
//! sidecar); this crate has no dependency on the tiers themselves.

pub mod gateway;
pub mod origin;
pub mod trades;

/// The one API key the mock gateway accepts.
pub const API_KEY: &str = "demo-key";

/// The developer app the gateway reports for [`API_KEY`] (`X-Developer-App`).
pub const DEVELOPER_APP: &str = "demo-app";

/// The API product the gateway reports for [`API_KEY`] (`X-Api-Product`).
pub const API_PRODUCT: &str = "trades";

/// Concurrent connections the mock gateway grants [`API_KEY`] (`Gripmesh-Max-Connections`).
pub const MAX_CONNECTIONS: u32 = 10;

/// Messages per hour the mock gateway grants [`API_KEY`] (`Gripmesh-Message-Quota`).
pub const MESSAGE_QUOTA: &str = "10000/1h";

/// The channel WebSocket and HTTP-stream clients are subscribed to.
pub const CHANNEL: &str = "trades";

/// The channel SSE clients are subscribed to (the same trades, framed as SSE events).
pub const SSE_CHANNEL: &str = "trades-sse";

/// The path the trades feed is served on (the article's `/authenticated/trades`).
pub const FEED_PATH: &str = "/authenticated/trades";

/// The route prefix that requires authorization.
pub const AUTH_PREFIX: &str = "/authenticated/";

/// The route table of the demo: the authenticated feed through the sidecar to the trades
/// origin at `origin` (`127.0.0.1:PORT`, WebSocket-over-HTTP), everything else to the built-in
/// test origin.
pub fn routes(origin: &str) -> String {
    format!("*,path_beg={AUTH_PREFIX},authz,aco {origin},over_http\n*,aco test\n")
}
