//! Compiles `proto/` with protox (pure Rust), so a build needs no `protoc`.
//! The same descriptor set is written out for server reflection.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "mps/population/v1/population_registry.proto",
    "moj/civilstatus/v1/birth_registration.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let file_descriptors = protox::compile(PROTOS, [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("file_descriptor_set.bin"),
        file_descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
