//! The TOML configuration: schema, defaults and cross-field validation. Unknown keys are errors.

use crate::route::{AllowEntry, Allowlist};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listening side: where callers connect.
    pub server: ServerConfig,
    /// The Pinot servers calls may be forwarded to.
    pub servers: ServersConfig,
    /// The Pinot controllers REST calls go to.
    #[serde(default)]
    pub controller: Option<crate::rest::ComponentConfig>,
    /// The Pinot brokers REST (and broker gRPC) calls go to.
    #[serde(default)]
    pub broker: Option<crate::rest::ComponentConfig>,
    /// REST routing and timeouts.
    #[serde(default)]
    pub rest: crate::rest::RestConfig,
    /// What callers must present.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
}

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
    pub tls: Option<crate::tls::ServerTlsConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServersConfig {
    /// Host names, `*.suffix` wildcards, IP addresses and CIDR blocks a caller may name.
    /// Nothing is allowed when empty.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Ports a caller may name; any port when absent.
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    /// Time to resolve a server's name and open its connection, in milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// An upstream connection with no call in flight for this long is closed, in milliseconds.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// HTTP/2 PING interval on upstream connections with calls open, in milliseconds, to find
    /// a server that vanished without closing; 0 turns it off. Pinot servers (grpc-java)
    /// treat pings more often than every 5 minutes without data as abuse, so keep it at
    /// 300000 or more unless the servers set `permitKeepAliveTime` lower.
    #[serde(default = "defaults::servers_keepalive_interval_ms")]
    pub keepalive_interval_ms: u64,
    /// Most distinct servers with open connections at once.
    #[serde(default = "defaults::max_targets")]
    pub max_targets: usize,
    /// TLS to the Pinot servers; plaintext h2c when absent.
    #[serde(default)]
    pub tls: Option<crate::tls::UpstreamTlsConfig>,
    /// Credentials sent to the Pinot servers (in the `Submit` request's metadata).
    #[serde(default)]
    pub auth: crate::auth::UpstreamAuthConfig,
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
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn idle_timeout_ms() -> u64 {
        300_000
    }
    pub fn max_targets() -> usize {
        1024
    }
    pub fn servers_keepalive_interval_ms() -> u64 {
        300_000
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

impl Config {
    /// Reads, parses and validates a config file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|err| toml_error(text, &err))?;
        config.validate()?;
        Ok(config)
    }

    /// Rules serde cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        const MIN_ROUTING: u32 = 5;
        const MAX_ROUTING: u32 = 128 * 1024 * 1024;
        let routing = self.server.max_routing_message_bytes;
        if !(MIN_ROUTING..=MAX_ROUTING).contains(&routing) {
            bail!("server.max_routing_message_bytes = {routing}: must be from {MIN_ROUTING} to {MAX_ROUTING}");
        }
        if self.server.routing_buffer_bytes < routing {
            bail!(
                "server.routing_buffer_bytes = {}: must be at least server.max_routing_message_bytes ({routing})",
                self.server.routing_buffer_bytes
            );
        }
        if self.server.max_connections == 0 {
            bail!("server.max_connections must be at least 1");
        }
        if self.server.max_concurrent_streams == 0 {
            bail!("server.max_concurrent_streams must be at least 1");
        }
        if let Some(ports) = &self.servers.ports {
            if ports.contains(&0) {
                bail!("servers.ports: 0 is not a port");
            }
            if ports.is_empty() {
                bail!("servers.ports is empty, which allows no port; leave it out to allow any");
            }
        }
        for entry in &self.servers.allow {
            match entry {
                crate::route::AllowEntry::Net(net) if net.prefix_len() == 0 => tracing::warn!(
                    entry = %net,
                    "servers.allow lets callers reach every address, public ones included"
                ),
                crate::route::AllowEntry::Suffix(suffix) if !suffix[1..].contains('.') => {
                    tracing::warn!(
                        entry = %format!("*{suffix}"),
                        "servers.allow has a wildcard over a whole top-level domain"
                    )
                }
                _ => {}
            }
        }
        for (key, value) in [
            (
                "servers.connect_timeout_ms",
                self.servers.connect_timeout_ms,
            ),
            ("servers.idle_timeout_ms", self.servers.idle_timeout_ms),
            (
                "server.first_message_timeout_ms",
                self.server.first_message_timeout_ms,
            ),
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
            (
                "server.tls_reload_interval_ms",
                self.server.tls_reload_interval_ms,
            ),
        ] {
            if value == 0 {
                bail!("{key} must be greater than 0");
            }
        }
        if self.servers.max_targets == 0 {
            bail!("servers.max_targets must be at least 1");
        }
        if let Some(tls) = &self.server.tls {
            if tls.handshake_timeout_ms == 0 {
                bail!("server.tls.handshake_timeout_ms must be greater than 0");
            }
        }
        if let Some(tls) = &self.servers.tls {
            tls.validate("servers.tls")?;
        }
        crate::rest::validate(self)?;
        if self.auth.grpc == crate::auth::GrpcPolicy::ClientCert
            && self
                .server
                .tls
                .as_ref()
                .and_then(|tls| tls.client_ca_file.as_ref())
                .is_none()
        {
            bail!("auth.grpc = \"client-cert\" needs server.tls.client_ca_file");
        }
        crate::auth::Authenticator::new(&self.auth)?;
        // The proxy's own credentials must not be lent to callers nobody checked.
        let injects = |auth: &crate::auth::UpstreamAuthConfig| auth.username.is_some();
        if injects(&self.servers.auth) && self.auth.grpc == crate::auth::GrpcPolicy::None {
            bail!(
                "servers.auth sends credentials to Pinot, but auth.grpc = \"none\" would let any \
                 caller use them; set auth.grpc to \"required\" or \"client-cert\""
            );
        }
        for (section, component) in [("controller", &self.controller), ("broker", &self.broker)] {
            let rest_open = self.auth.rest == crate::auth::RestPolicy::None;
            if component.as_ref().is_some_and(|c| injects(&c.auth)) && rest_open {
                bail!(
                    "{section}.auth sends credentials to Pinot, but auth.rest = \"none\" would let \
                     any caller use them; set auth.rest = \"required\""
                );
            }
        }
        self.servers.auth.resolve("servers.auth")?;
        Ok(())
    }

    pub fn allowlist(&self) -> Allowlist {
        Allowlist::new(self.servers.allow.clone(), self.servers.ports.clone())
    }
}

/// One line naming where the error is and the text there: `line 3: listen = "x": <message>`.
fn toml_error(text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim_end();
    match err.span() {
        // A span over several lines is a whole table (a missing key): its first line says nothing.
        Some(span) if !span.is_empty() && !text[span.clone()].contains('\n') => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            anyhow::anyhow!("line {line_no}: {line}: {message}")
        }
        _ => anyhow::anyhow!("{message}"),
    }
}

impl ServersConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_optional_keys() {
        let config =
            Config::parse("[server]\nlisten = \"127.0.0.1:0\"\n[servers]\nallow = [\"*.svc\"]\n")
                .unwrap();
        assert_eq!(config.server.max_routing_message_bytes, 16 * 1024 * 1024);
        assert_eq!(config.servers.connect_timeout_ms, 5_000);
        assert_eq!(config.servers.ports, None);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:0\"\nlsten = 1\n[servers]\n")
            .unwrap_err();
        assert!(format!("{err:#}").contains("lsten"), "{err:#}");
    }
}
