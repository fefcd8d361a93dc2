//! In-process behaviour tests: `gripmesh standalone` (edge, control and the embedded authorizer
//! over the in-memory bus) started inside the test's process by the library's wiring, the code
//! the binary runs (see sandbox.rs), on `127.0.0.1:0` listeners. Nothing is spawned, so
//! these tests take milliseconds. Tests that need a real process (signals, exit codes, output,
//! restarts), NATS or other programs are in tests/e2e.
//!
//! The helpers (origins, publishing, survivor clients) are tests/e2e's own files, included
//! here; `crate::launch` is what differs between the two tiers. Every test starts its own
//! gripmesh, origins and clients; cargo-nextest runs each test in its own process, so the
//! process-wide metrics recorder and log subscriber are each test's own.

// Shared with tests/e2e: this tier uses part of them.
#[allow(dead_code)]
#[path = "../e2e/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../e2e/jwt.rs"]
mod jwt;
#[allow(dead_code)]
#[path = "../e2e/ws_common.rs"]
mod ws_common;

mod launch;
mod sandbox;

mod bad_input;
mod keepalive;
mod origin_reuse;
mod passthrough;
mod response_hold;
mod stream;
mod ws;
mod ws_api_gateway;
mod ws_bad_input;
mod ws_passthrough;
