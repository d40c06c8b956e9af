//! `[server]`: the listening side, where callers connect, and its limits.

use super::ServerTlsConfig;
use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for gRPC (HTTP/2 with TLS or h2c prior knowledge) and HTTP/1.1: `IP:port`
    /// (IPv6 in brackets) or `localhost:port` (127.0.0.1). Other host names are refused, never
    /// looked up: the address a proxy binds must not depend on DNS.
    #[serde(deserialize_with = "deserialize_listen")]
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
    /// On SIGTERM or SIGINT, how long the port keeps accepting while `/readyz` already says
    /// 503, in milliseconds, so Kubernetes takes the pod out of the Service's endpoints before
    /// connections are asked to close. 0: no delay.
    #[serde(default = "defaults::drain_delay_ms")]
    pub drain_delay_ms: u64,
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

fn deserialize_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// `server.listen`: an IP socket address, or `localhost` with a port. Pure: no name is resolved.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let example =
        "\"0.0.0.0:8096\" listens on every interface, \"127.0.0.1:8096\" on this machine only";
    if text.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "server.listen needs a port (IPv6 in brackets: \"[::1]:8096\"); {example}"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("server.listen must be IP:port; {example}"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "server.listen: the port must be a number from 0 to 65535; {example}"
        ));
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "server.listen: an IPv6 address goes in brackets, as in \"[{host}]:{port}\""
        ));
    }
    Err(format!(
        "server.listen takes an IP address (host names other than localhost are not looked \
         up): use \"0.0.0.0:{port}\" to listen on every interface, \"127.0.0.1:{port}\" for \
         this machine only"
    ))
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
    pub fn drain_delay_ms() -> u64 {
        5_000
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_table() {
        let ok = |text: &str, addr: &str| {
            assert_eq!(parse_listen(text), Ok(addr.parse().unwrap()), "{text}");
        };
        ok("127.0.0.1:8096", "127.0.0.1:8096");
        ok("0.0.0.0:0", "0.0.0.0:0");
        ok("[::]:8096", "[::]:8096");
        ok("[::1]:8096", "[::1]:8096");
        // Regression: `localhost:8096` was refused as "invalid socket address syntax".
        ok("localhost:8096", "127.0.0.1:8096");
        ok("LocalHost:1", "127.0.0.1:1");
        let err = |text: &str, needle: &str| match parse_listen(text) {
            Ok(addr) => panic!("{text} parsed as {addr}"),
            Err(message) => {
                assert!(message.contains("server.listen"), "{text}: {message}");
                assert!(message.contains(needle), "{text}: {message}");
            }
        };
        err(
            "pinot-proxy:8096",
            "\"0.0.0.0:8096\" to listen on every interface",
        );
        err("example.com:443", "not looked up");
        err("localhost", "IP:port");
        err("127.0.0.1", "needs a port");
        err("::1", "needs a port");
        err("::1:8096", "brackets");
        err("localhost:http", "0 to 65535");
        err("localhost:65536", "0 to 65535");
        err(":8096", "0.0.0.0:8096");
        err("", "IP:port");
    }
}
