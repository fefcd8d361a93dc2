//! The bus wire types, generated from `proto/gripmesh/v1/bus.proto` (see `build.rs`): the
//! schema is the single source; [`crate::payload`] and [`crate::records`] convert and seal.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/gripmesh.v1.rs"));
