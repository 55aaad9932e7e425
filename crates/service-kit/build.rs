//! Compiles the kit's own Echo test service with protox (pure Rust, no `protoc`).
//! The proto lives inside the kit, not in the repo's public `proto/` contract tree.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let file_descriptors = protox::compile(["kit/echo/v1/echo.proto"], [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("echo_descriptor_set.bin"),
        file_descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
