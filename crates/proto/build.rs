//! Generates the gRPC code from `proto/gripmesh/v1/*.proto` with the vendored `protoc`, so
//! building needs no system protoc.

use std::path::PathBuf;

/// The files compiled here. `bus.proto` is mirrored by hand in `crates/bus` and left out.
const PROTOS: &[&str] = &[
    "gripmesh/v1/publish.proto",
    "gripmesh/v1/routes.proto",
    "gripmesh/v1/authz.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let mut config = prost_build::Config::new();
    // The encoded descriptors, for gRPC server reflection (`grpcurl list`).
    config.file_descriptor_set_path(
        PathBuf::from(std::env::var("OUT_DIR")?).join("gripmesh_descriptor.bin"),
    );
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Deterministic iteration for meta and headers; control converts them to BTreeMaps anyway.
    config.btree_map(["."]);
    // Payloads are shared into the bus encoding without copying.
    config.bytes(["."]);

    tonic_prost_build::configure()
        // Servers for control and the sidecar; clients for the edge (Authorization.Check,
        // over a plain hyper HTTP/2 client, so no tonic transport is needed).
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_with_config(config, protos.as_slice(), &[root])?;
    Ok(())
}
