//! Generates the bus wire types from `proto/gripmesh/v1/bus.proto` with the vendored `protoc`
//! (no system protoc needed), so the schema and the Rust types cannot drift.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("gripmesh/v1/bus.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Payloads and bodies are shared without copying.
    config.bytes(["."]);
    config.compile_protos(&[proto], &[root])?;
    Ok(())
}
