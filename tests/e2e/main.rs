//! Black-box end-to-end tests of the `gripmesh` binary (`gripmesh standalone`).
//!
//! Every test starts its own process on ephemeral loopback ports, its own fake origins and its
//! own clients, so tests are independent and run in parallel (cargo-nextest runs each test in
//! its own process). Case numbers refer to the conformance cases in `pushpin.md` §5.

mod bad_input;
mod common;
mod jwt;
mod keepalive;
mod passthrough;
mod process;
mod publish_api;
mod pygrip;
mod response_hold;
mod routing;
mod stream;
