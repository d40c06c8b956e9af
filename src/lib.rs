//! pinot-proxy: one endpoint in front of an Apache Pinot cluster. It forwards each gRPC call to
//! the Pinot server the caller names, through pooled HTTP/2 connections.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
mod idle;
pub mod pool;
pub mod rest;
pub mod route;
pub mod serve;
pub mod tls;
pub mod token;
pub mod wire;

/// Pinot's protobuf messages (`proto/server.proto`).
pub mod proto {
    include!(concat!(
        env!("OUT_DIR"),
        "/org.apache.pinot.common.proto.rs"
    ));
}

pub use config::Config;
pub use serve::Server;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Binds and serves `config` until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    Server::bind(&config).await?.run(shutdown).await
}
