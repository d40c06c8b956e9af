//! The TOML configuration: schema, defaults and cross-field validation, one file per section.
//! Only this module reads TOML, and it imports no runtime module: files, secrets and sockets are
//! opened by `app.rs`, which turns a `Config` into a running proxy.

mod admin;
mod auth;
mod rest;
mod server;
mod servers;
mod tls;

pub use admin::{AdminConfig, LogConfig, LogFormat};
#[cfg(test)]
pub use auth::UserConfig;
pub use auth::{parse_sha256, AuthConfig, GrpcPolicy, RestPolicy, Secret, UpstreamAuthConfig};
pub use rest::{parse_urls, Component, ComponentConfig, RestConfig, RouteConfig, UpstreamUrl};
pub use server::ServerConfig;
pub use servers::{AllowEntry, Host, PartialResults, ServersConfig};
pub use tls::{ServerTlsConfig, UpstreamTlsConfig};

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The whole configuration file.
pub struct Config {
    /// The listening side: where callers connect.
    pub server: ServerConfig,
    /// The Pinot servers calls may be forwarded to.
    pub servers: ServersConfig,
    /// The Pinot controllers REST calls go to.
    #[serde(default)]
    pub controller: Option<ComponentConfig>,
    /// The Pinot brokers REST (and broker gRPC) calls go to.
    #[serde(default)]
    pub broker: Option<ComponentConfig>,
    /// REST routing and timeouts.
    #[serde(default)]
    pub rest: RestConfig,
    /// What callers must present.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The admin listener: health, readiness, metrics. Off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// Warnings found while validating (e.g. an allowlist open to every address), for the
    /// caller to log once logging is set up.
    #[serde(skip)]
    pub warnings: Vec<String>,
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
        let mut config: Config = toml::from_str(text).map_err(|err| toml_error(text, &err))?;
        config.validate()?;
        config.warnings = config.warnings_found();
        Ok(config)
    }

    /// What is allowed but probably not meant.
    fn warnings_found(&self) -> Vec<String> {
        self.servers
            .allow
            .iter()
            .filter_map(|entry| match entry {
                AllowEntry::Net(net) if net.prefix_len() == 0 => Some(format!(
                    "servers.allow entry {net} lets callers reach every address, public ones \
                     included"
                )),
                AllowEntry::Suffix(suffix) if !suffix[1..].contains('.') => Some(format!(
                    "servers.allow entry *{suffix} is a wildcard over a whole top-level domain"
                )),
                _ => None,
            })
            .collect()
    }

    /// Rules serde cannot express.
    fn validate(&self) -> anyhow::Result<()> {
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
        rest::validate(self)?;
        if self.auth.grpc == GrpcPolicy::ClientCert
            && self
                .server
                .tls
                .as_ref()
                .and_then(|tls| tls.client_ca_file.as_ref())
                .is_none()
        {
            bail!("auth.grpc = \"client-cert\" needs server.tls.client_ca_file");
        }
        self.auth.validate()?;
        // The proxy's own credentials must not be lent to callers nobody checked.
        let injects = |auth: &UpstreamAuthConfig| auth.username.is_some();
        if injects(&self.servers.auth) && self.auth.grpc == GrpcPolicy::None {
            bail!(
                "servers.auth sends credentials to Pinot, but auth.grpc = \"none\" would let any \
                 caller use them; set auth.grpc to \"required\" or \"client-cert\""
            );
        }
        for (section, component) in [("controller", &self.controller), ("broker", &self.broker)] {
            let rest_open = self.auth.rest == RestPolicy::None;
            if component.as_ref().is_some_and(|c| injects(&c.auth)) && rest_open {
                bail!(
                    "{section}.auth sends credentials to Pinot, but auth.rest = \"none\" would let \
                     any caller use them; set auth.rest = \"required\""
                );
            }
        }
        self.servers.auth.validate("servers.auth")?;
        self.servers
            .validate_discovery(self.controller.is_some())
            .map_err(anyhow::Error::msg)?;
        Ok(())
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
