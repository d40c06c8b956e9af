//! Compiles the protobuf files with protox, a pure-Rust compiler, so the build needs no `protoc`.
//!
//! The library gets Pinot's message types and a tonic client for its service (in `OUT_DIR`):
//! the forwarding path uses only the messages, `pinot-proxy probe` the client. The tests also
//! get tonic clients and servers for Pinot's service and a test echo service (in
//! `OUT_DIR/test`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let test_out = out.join("test");
    std::fs::create_dir_all(&test_out)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");

    let pinot = protox::compile(["proto/server.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(pinot.clone())?;
    for fds in [
        pinot,
        protox::compile(["tests/proto/echo.proto"], ["tests/proto"])?,
    ] {
        tonic_prost_build::configure()
            .out_dir(&test_out)
            .compile_fds(fds)?;
    }
    Ok(())
}
