//! `gripmesh`: the subcommands, their flags (command line, `GRIPMESH_*` environment, `--config`
//! file) and the wiring of the tiers (docs/architecture.md). The binary (src/main.rs) is
//! [`main`]; the in-process test tier (tests/inproc) starts [`tiers::standalone`] from the same
//! flags, parsed by the same [`cli::Cli`].

pub mod cli;
mod common;
mod config_file;
mod ctl;
mod demo;
mod entry;
mod process;
mod status;
pub mod tiers;
mod usage;

pub use common::Fatal;
pub use entry::main;
