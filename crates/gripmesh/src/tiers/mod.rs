//! `standalone`, `edge`, `control` and `authz`: one module per tier's wiring, made of the same
//! building blocks (configuration from flags, stores, followers, servers) and the same
//! [`Process`](crate::process::Process).

mod authz;
mod control;
mod edge;
mod follow;
mod serve;
mod setup;
pub mod standalone;
mod stores;

pub use authz::authz;
pub use control::control;
pub use edge::edge;
pub(crate) use follow::spawn_authz_tasks;
pub(crate) use serve::{serve_control, serve_edge};
pub(crate) use setup::prepare_key_buckets;
pub use standalone::standalone;
pub(crate) use stores::{follow_store, run_control_stores};
