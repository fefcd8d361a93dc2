//! The gRPC contract of gripmesh (`proto/gripmesh/v1`), generated with tonic and prost.
//!
//! - [`v1::publisher_server`]: `gripmesh.v1.Publisher` (`Publish`, `PublishStream`).
//! - [`v1::route_service_server`]: `gripmesh.v1.RouteService` (`List`, `Put`, `Watch`).
//! - [`v1::authorization_server`] / [`v1::authorization_client`]: the auth sidecar's `Check`.
//! - [`v1::revocation_server`]: `gripmesh.v1.Revocation` (`Revoke`).
//!
//! The `.proto` files are the interface for clients in any language.

/// Package `gripmesh.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("gripmesh.v1");
}

/// The encoded `FileDescriptorSet` of every compiled `.proto` file, served by gRPC server
/// reflection so `grpcurl` and other generic clients need no `.proto` files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gripmesh_descriptor.bin"));
