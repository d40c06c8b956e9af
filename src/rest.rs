//! REST forwarding of Trino's controller and broker calls, routed by path.

use crate::grpc::ProxyBody;
use crate::Config;
use http::{Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;

/// One Pinot component reached over REST (`[controller]`, `[broker]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Base URLs of the component's instances; requests are spread across them.
    pub urls: Vec<String>,
}

/// `[rest]`: routing and timeouts for REST calls.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {}

/// Checks the REST sections of a config.
pub fn validate(_config: &Config) -> anyhow::Result<()> {
    Ok(())
}

/// Forwards REST requests to the controller or broker.
pub struct Rest {}

/// What the listening side knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// Whether the client connected with TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

impl Rest {
    /// `None` when neither a controller nor a broker is configured.
    pub fn new(config: &Config) -> anyhow::Result<Option<Rest>> {
        let _ = config;
        Ok(None)
    }

    /// Forwards one request; failures are HTTP errors.
    pub async fn handle(&self, request: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let _ = (request, peer);
        unimplemented!()
    }
}
