//! Black-box end-to-end tests of the `gripmesh` binary (`gripmesh standalone`).
//!
//! Every test starts its own process on ephemeral loopback ports, its own fake origins and its
//! own clients, so tests are independent and run in parallel (cargo-nextest runs each test in
//! its own process). Case numbers refer to the conformance cases in `pushpin.md` §5.

mod admin_page;
mod authz;
mod bad_input;
mod cli;
mod clients_doc;
mod cluster;
mod cluster_state;
mod common;
mod demo;
mod dropin;
mod faults;
mod gateway;
mod grpc;
mod hardening_client;
mod hardening_control;
mod history;
mod history_cluster;
mod jwt;
mod keepalive;
mod key_limits;
mod key_limits_cluster;
mod metrics_zero;
mod node;
mod origin_reuse;
mod parity_common;
mod parity_filters;
mod parity_gone;
mod parity_jsonp;
mod parity_recover;
mod parity_ws_control;
mod passthrough;
mod process;
mod production;
mod production_assets;
mod production_slow;
mod production_tls;
mod publish_api;
mod pygrip;
mod readme;
mod reflection;
mod response_hold;
mod routing;
mod stream;
mod usage;
mod ws;
mod ws_article;
mod ws_bad_input;
mod ws_common;
mod ws_lifecycle;
mod ws_passthrough;
mod ws_py;
