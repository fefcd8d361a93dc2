//! Black-box end-to-end tests of the `gripmesh` binary (`gripmesh standalone`, and the tiers
//! on NATS): what needs a real process (signals, exit codes, output, restarts), NATS or other
//! programs. Behaviour that does not is tested in process, in tests/inproc.
//!
//! Every test starts its own process on ephemeral loopback ports, its own fake origins and its
//! own clients, so tests are independent and run in parallel (cargo-nextest runs each test in
//! its own process). Pushpin behaviour they pin down is summarised in docs/protocol.md, "Pushpin compatibility".

mod admin_page;
mod authz;
mod cli;
mod client_tls;
mod clients_doc;
mod cluster;
mod cluster_state;
// Shared with tests/inproc, where the tests using some of their helpers moved.
#[allow(dead_code)]
mod common;
mod dashboards_alerts;
mod demo;
mod dropin;
mod faults;
mod gateway;
mod grpc;
mod history;
mod history_cluster;
mod hostile_clients;
mod hostile_control_api;
mod jwt;
mod key_limits;
mod key_limits_cluster;
mod launch;
mod metrics_zero;
mod node;
mod operations;
mod parity_common;
mod parity_filters;
mod parity_gone;
mod parity_jsonp;
mod parity_recover;
mod parity_ws_control;
mod process;
mod publish_api;
mod pygrip;
mod readme;
mod reflection;
mod routing;
mod slow_consumers;
mod usage;
#[allow(dead_code)]
mod ws_common;
mod ws_lifecycle;
mod ws_py;
