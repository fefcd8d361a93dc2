//! Test-only helpers for black-box tests of the `gripmesh` binary.
//!
//! - [`Gripmesh`]: launches the real binary on ephemeral loopback ports and parses its startup
//!   protocol (`listening <name> <addr>` lines, then `ready`), capturing stderr.
//! - [`Origin`] / [`RawOrigin`]: scriptable fake origins that record every request.
//! - [`http_request`], [`StreamClient`], [`raw_exchange`]: clients for one-shot requests, held
//!   streams read incrementally, and deliberately malformed HTTP.
//! - [`publish()`], [`publish_raw`]: the HTTP publish API.
//! - [`metric_value`], [`wait_metric_at_least`]: Prometheus scrapes of the admin listener.
//!
//! Everything binds `127.0.0.1:0`, so tests can run in parallel.

mod body;
mod client;
pub mod cluster;
mod metrics;
mod nats;
mod origin;
mod process;
mod publish;
pub mod pushpin;
mod tempdir;
mod wait;
pub mod ws;

pub use body::{BodyChunk, KitBody};
pub use client::{
    HttpResponse, StreamClient, StreamEnd, http_get, http_request, raw_exchange, raw_status,
    try_http_request,
};
pub use metrics::{
    metric_value, parse_metric, scrape_metrics, wait_metric, wait_metric_at_least,
    wait_metric_at_most,
};
pub use nats::{NatsServer, NatsServerOptions};
pub use origin::{
    Origin, OriginResponse, RawOrigin, RecordedRequest, ScriptedOrigin, ScriptedRequest, Step,
    query_param,
};
pub use process::{Gripmesh, STANDALONE_ARGS, Signal, run, run_with_env};
pub use publish::{publish, publish_raw, publish_stream, publish_with_auth};
pub use tempdir::TempDir;
pub use wait::{most_within, wait_until};

/// The default patience for "eventually" conditions in tests (delivery, metrics, reloads).
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
