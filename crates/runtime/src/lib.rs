//! Process plumbing shared by every tier: signals, health and readiness, tracing and metrics
//! initialisation, the admin server, a small HTTP/1 server loop with graceful shutdown, and
//! routes-file loading and watching (shared by edge and control).

pub mod admin;
pub mod body;
pub mod client;
pub mod fdlimit;
pub mod file_watch;
pub mod health;
pub mod routes_file;
pub mod server;
pub mod signal;
pub mod telemetry;
pub mod tls;

pub use health::Health;
