//! Compiles `proto/souk/v1/*.proto` with protox (a protobuf compiler written in Rust), so a
//! fresh machine needs no system `protoc`. The encoded file descriptor set is written beside the
//! generated code for consumers that serve reflection (the gRPC server). With the `grpc`
//! feature, tonic's service stubs (server traits and clients) are generated into the same
//! module as the messages.

use std::{env, fs, path::PathBuf};

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "souk/v1/envelope.proto",
    "souk/v1/common.proto",
    "souk/v1/profile.proto",
    "souk/v1/listing.proto",
    "souk/v1/rating.proto",
    "souk/v1/sync.proto",
    "souk/v1/message.proto",
    "souk/v1/api.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{file}");
    }
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("souk_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(descriptors, config)?;
    #[cfg(not(feature = "grpc"))]
    config.compile_fds(descriptors)?;
    Ok(())
}
