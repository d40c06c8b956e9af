//! `[servers]`: the Pinot servers calls may reach (allow entries, ports), how connections to
//! them behave, and the syntax of a host name, shared by allow entries and the targets callers
//! name.

use super::{UpstreamAuthConfig, UpstreamTlsConfig};
use crate::error::echo;
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

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
    pub tls: Option<UpstreamTlsConfig>,
    /// Credentials sent to the Pinot servers (in the `Submit` request's metadata).
    #[serde(default)]
    pub auth: UpstreamAuthConfig,
    /// What to do when a Pinot server reports errors (an execution timeout, a missing segment)
    /// in the last message of a `Submit` answer, whose status is still OK: "fail" ends the call
    /// with an error naming the server and Pinot's message, so Trino cannot return a partial
    /// result; "pass" forwards everything untouched. Default: "fail".
    #[serde(default)]
    pub partial_results: PartialResults,
    /// Learn the servers calls may reach from the Pinot controller (`[controller] urls`):
    /// every enabled server taking queries is allowed on its gRPC port, besides `allow`.
    #[serde(default)]
    pub discover: bool,
    /// How often the controller's instance list is read, in milliseconds.
    #[serde(default = "defaults::discover_interval_ms")]
    pub discover_interval_ms: u64,
    /// Time limit of each request to the controller while reading the list, in milliseconds.
    #[serde(default = "defaults::discover_timeout_ms")]
    pub discover_timeout_ms: u64,
    /// Only servers carrying one of these Helix tags (e.g. `DefaultTenant_OFFLINE`) are
    /// learnt; any server when absent.
    #[serde(default)]
    pub discover_tags: Option<Vec<String>>,
    /// Connect to a discovered server's own gRPC port whatever port the caller named, when
    /// exactly one discovered server has the named host (Trino sends one port for all).
    #[serde(default)]
    pub use_discovered_port: bool,
}

/// `servers.partial_results`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialResults {
    #[default]
    Fail,
    Pass,
}

/// One `servers.allow` entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum AllowEntry {
    /// An exact host name.
    Name(String),
    /// `*.suffix`: any name ending in `.suffix`, at a label boundary. Stored as `.suffix`.
    Suffix(String),
    /// An IP address or CIDR block.
    Net(IpNet),
}

impl FromStr for AllowEntry {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let text = raw.trim();
        if let Some(suffix) = text.strip_prefix("*.") {
            return match Host::parse(suffix) {
                Ok(Host::Name(name)) => Ok(AllowEntry::Suffix(format!(".{name}"))),
                _ => Err(format!(
                    "allow entry {raw:?}: the part after \"*.\" must be a host name"
                )),
            };
        }
        if text.contains('/') {
            let net = text
                .parse::<IpNet>()
                .map_err(|_| format!("allow entry {raw:?} is not a valid CIDR block"))?;
            // `10.1.2.3/8` would silently mean all of 10.0.0.0/8: say so instead.
            if net.trunc() != net {
                return Err(format!(
                    "allow entry {raw:?} has bits set past its prefix length; write {}",
                    net.trunc()
                ));
            }
            return Ok(AllowEntry::Net(net));
        }
        match Host::parse(text) {
            Ok(Host::Ip(ip)) => Ok(AllowEntry::Net(IpNet::from(ip))),
            Ok(Host::Name(name)) => Ok(AllowEntry::Name(name)),
            Err(err) => Err(format!(
                "allow entry {raw:?} is not a host name, \"*.suffix\", IP address or CIDR \
                 block ({err})"
            )),
        }
    }
}

impl TryFrom<String> for AllowEntry {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl ServersConfig {
    /// Rules of the `discover*` keys; `controller` says whether `[controller] urls` exist.
    pub fn validate_discovery(&self, controller: bool) -> Result<(), String> {
        if !self.discover {
            if self.discover_tags.is_some() {
                return Err("servers.discover_tags needs servers.discover = true".into());
            }
            if self.use_discovered_port {
                return Err("servers.use_discovered_port needs servers.discover = true".into());
            }
            return Ok(());
        }
        if !controller {
            return Err(
                "servers.discover = true needs [controller] urls: the server list is \
                        read from the Pinot controller"
                    .into(),
            );
        }
        if self.discover_interval_ms == 0 {
            return Err("servers.discover_interval_ms must be greater than 0".into());
        }
        if self.discover_timeout_ms == 0 {
            return Err("servers.discover_timeout_ms must be greater than 0".into());
        }
        match &self.discover_tags {
            Some(tags) if tags.is_empty() => Err(
                "servers.discover_tags is empty, which matches no server; leave it out to learn \
                 every server"
                    .into(),
            ),
            Some(tags) if tags.iter().any(|tag| tag.trim().is_empty()) => {
                Err("servers.discover_tags: a tag is empty".into())
            }
            _ => Ok(()),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// A host the caller named: a host name (lower case, no trailing dot) or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// Accepts a DNS host name or an IP address in canonical form (IPv6 with or without
    /// brackets); refuses anything a resolver might read as a number in another form.
    pub fn parse(raw: &str) -> Result<Host, String> {
        let bad = |why: &str| format!("host \"{}\" {why}", echo(raw));
        let text = raw.trim();
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'));
        if let Some(inner) = unbracketed {
            return inner
                .parse::<std::net::Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| bad("is not an IPv6 address"));
        }
        if let Ok(ip) = IpAddr::from_str(text) {
            return Ok(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if name.len() > 253 {
            return Err(bad("is longer than 253 characters"));
        }
        let labels: Vec<&str> = name.split('.').collect();
        for label in &labels {
            let valid = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(bad("is not a valid host name"));
            }
        }
        // A name whose last label is a number would be read as an IPv4 address in a
        // non-canonical form (`0x7f.1`, `2130706433`, `127.1`) by some resolvers.
        let last = labels.last().copied().unwrap_or_default();
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        if numeric {
            return Err(bad("is not a canonical IP address"));
        }
        Ok(Host::Name(name))
    }
}

mod defaults {
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
    pub fn discover_interval_ms() -> u64 {
        30_000
    }
    pub fn discover_timeout_ms() -> u64 {
        10_000
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(servers: &str, controller: bool) -> Result<Config, String> {
        let controller = if controller {
            "[controller]\nurls = [\"http://pinot-controller:9000\"]\n"
        } else {
            ""
        };
        Config::parse(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n{servers}\n{controller}"
        ))
        .map_err(|err| format!("{err:#}"))
    }

    #[test]
    fn discovery_keys_default_and_need_a_controller() {
        let config = parse("discover = true", true).unwrap();
        assert!(config.servers.discover);
        assert_eq!(config.servers.discover_interval_ms, 30_000);
        assert_eq!(config.servers.discover_timeout_ms, 10_000);
        assert!(!config.servers.use_discovered_port);
        let err = parse("discover = true", false).unwrap_err();
        assert!(
            err.contains("servers.discover") && err.contains("[controller] urls"),
            "{err}"
        );
        for (keys, named) in [
            ("use_discovered_port = true", "servers.use_discovered_port"),
            ("discover_tags = [\"T\"]", "servers.discover_tags"),
            (
                "discover = true\ndiscover_tags = []",
                "servers.discover_tags",
            ),
            (
                "discover = true\ndiscover_interval_ms = 0",
                "servers.discover_interval_ms",
            ),
            (
                "discover = true\ndiscover_timeout_ms = 0",
                "servers.discover_timeout_ms",
            ),
        ] {
            let err = parse(keys, true).unwrap_err();
            assert!(err.contains(named), "{keys}: {err}");
        }
    }
}
