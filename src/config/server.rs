//! `[server]`: the listening side, where callers connect, and its limits.

use super::ServerTlsConfig;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for gRPC (HTTP/2 with TLS or h2c prior knowledge) and HTTP/1.1.
    pub listen: SocketAddr,
    /// Largest first request message read to find the target of a `Submit` call, in bytes.
    /// A larger one is refused with RESOURCE_EXHAUSTED. Trino's are a few kilobytes.
    #[serde(default = "defaults::max_routing_message_bytes")]
    pub max_routing_message_bytes: u32,
    /// Most client connections open at once; more wait in the listen backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Time a new client connection (after its TLS handshake) has to start its first request,
    /// in milliseconds; also the time HTTP/1.1 request headers must arrive in.
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A client connection with no request in flight for this long is closed, in milliseconds.
    #[serde(default = "defaults::client_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Time a client has to send the first message of a `Submit` call, in milliseconds.
    #[serde(default = "defaults::first_message_timeout_ms")]
    pub first_message_timeout_ms: u64,
    /// Bytes all first messages being read for routing may hold at once; a call that would
    /// exceed it is refused with RESOURCE_EXHAUSTED. At least `max_routing_message_bytes`.
    #[serde(default = "defaults::routing_buffer_bytes")]
    pub routing_buffer_bytes: u32,
    /// Most concurrent streams one client connection may open (HTTP/2 SETTINGS).
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// On SIGTERM or SIGINT, how long calls in flight may take to finish before the process exits.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// HTTP/2 PING interval on client connections, in milliseconds, so a vanished client's
    /// calls are cancelled upstream; 0 turns it off. A client has 20 s to answer.
    #[serde(default = "defaults::keepalive_interval_ms")]
    pub keepalive_interval_ms: u64,
    /// How often TLS certificate, key and CA files are reread, in milliseconds (also on SIGHUP).
    #[serde(default = "defaults::tls_reload_interval_ms")]
    pub tls_reload_interval_ms: u64,
    /// TLS on the listening port; plaintext (h2c and HTTP/1.1) when absent.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

mod defaults {
    pub fn max_routing_message_bytes() -> u32 {
        16 * 1024 * 1024
    }
    pub fn first_message_timeout_ms() -> u64 {
        10_000
    }
    pub fn routing_buffer_bytes() -> u32 {
        64 * 1024 * 1024
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_concurrent_streams() -> u32 {
        1024
    }
    pub fn shutdown_grace_ms() -> u64 {
        30_000
    }
    pub fn header_timeout_ms() -> u64 {
        30_000
    }
    pub fn client_idle_timeout_ms() -> u64 {
        600_000
    }
    pub fn keepalive_interval_ms() -> u64 {
        60_000
    }
    pub fn tls_reload_interval_ms() -> u64 {
        2_000
    }
}
