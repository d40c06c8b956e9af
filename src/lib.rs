//! pinot-proxy: one endpoint in front of an Apache Pinot cluster. It forwards each gRPC call to
//! the Pinot server the caller names, through pooled HTTP/2 connections, and each REST call to
//! the controller or broker its path belongs to. The public API is small: load a [`Config`],
//! build an [`App`], bind it into a [`Server`] and run it (or call [`run`]).
#![forbid(unsafe_code)]

mod access_log;
mod admin;
mod app;
mod config;
mod discovery;
mod dispatch;
mod error;
mod grpc;
mod http;
mod listen;
mod metrics;
mod policy;
pub mod probe;
mod respond;
mod rest;
mod tls;
mod upstream;

/// Pinot's protobuf messages (`proto/server.proto`). Generated; the proxy itself decodes only
/// what it routes by, and tests build the rest.
#[allow(dead_code)]
mod proto {
    include!(concat!(
        env!("OUT_DIR"),
        "/org.apache.pinot.common.proto.rs"
    ));
}

pub use app::App;
pub use config::{Config, LogConfig, LogFormat};
pub use listen::{Server, Stats};
pub use policy::{token, Secrets};
pub use tls::ReloadStatus;

/// Builds, binds and serves `config` until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    App::build(&config)?.bind().await?.run(shutdown).await
}
