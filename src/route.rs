//! Which Pinot server a call names, and whether it may be reached: target parsing from request
//! metadata or headers, and the allowlist. Pure, no I/O; resolution results are checked here too.

use crate::error::{echo, ProxyError};
use http::HeaderMap;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Keys Trino puts into `ServerRequest.metadata`.
pub const FORWARD_HOST_KEY: &str = "FORWARD_HOST";
pub const FORWARD_PORT_KEY: &str = "FORWARD_PORT";
/// Header names that also name the target; the hyphenated forms survive ingress-nginx.
pub const FORWARD_HOST_HEADERS: [&str; 2] = ["forward_host", "forward-host"];
pub const FORWARD_PORT_HEADERS: [&str; 2] = ["forward_port", "forward-port"];

/// A host the caller named: a host name (lower case, no trailing dot) or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A Pinot server to forward to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
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

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Target {
    /// Parses a host and a decimal port as a caller sends them.
    pub fn parse(host: &str, port: &str) -> Result<Target, ProxyError> {
        let host = Host::parse(host)?;
        let port = match port.trim().parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(ProxyError::BadTarget(format!(
                    "port \"{}\" is not a number from 1 to 65535",
                    echo(port)
                )))
            }
        };
        Ok(Target { host, port })
    }
}

impl Host {
    /// Accepts a DNS host name or an IP address in canonical form (IPv6 with or without
    /// brackets); refuses anything a resolver might read as a number in another form.
    pub fn parse(raw: &str) -> Result<Host, ProxyError> {
        let bad = |why: &str| ProxyError::BadTarget(format!("host \"{}\" {why}", echo(raw)));
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

/// Reads the target from the `ServerRequest.metadata` map; `None` when it names none.
pub fn target_from_metadata(
    metadata: &HashMap<String, String>,
) -> Result<Option<Target>, ProxyError> {
    match (
        metadata.get(FORWARD_HOST_KEY),
        metadata.get(FORWARD_PORT_KEY),
    ) {
        (None, None) => Ok(None),
        (Some(host), Some(port)) => Target::parse(host, port).map(Some),
        (Some(_), None) => Err(ProxyError::BadTarget(format!(
            "{FORWARD_HOST_KEY} is set but {FORWARD_PORT_KEY} is missing"
        ))),
        (None, Some(_)) => Err(ProxyError::BadTarget(format!(
            "{FORWARD_PORT_KEY} is set but {FORWARD_HOST_KEY} is missing"
        ))),
    }
}

/// Reads the target from `forward_host`/`forward_port` (or hyphenated) headers.
pub fn target_from_headers(headers: &HeaderMap) -> Result<Option<Target>, ProxyError> {
    let find = |names: [&str; 2]| -> Result<Option<&str>, ProxyError> {
        for name in names {
            if let Some(value) = headers.get(name) {
                return value.to_str().map(Some).map_err(|_| {
                    ProxyError::BadTarget(format!("header {name} is not visible ASCII"))
                });
            }
        }
        Ok(None)
    };
    match (find(FORWARD_HOST_HEADERS)?, find(FORWARD_PORT_HEADERS)?) {
        (None, None) => Ok(None),
        (Some(host), Some(port)) => Target::parse(host, port).map(Some),
        (Some(_), None) => Err(ProxyError::BadTarget(
            "header forward_host is set but forward_port is missing".into(),
        )),
        (None, Some(_)) => Err(ProxyError::BadTarget(
            "header forward_port is set but forward_host is missing".into(),
        )),
    }
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
                 block ({})",
                err.to_string().trim_start_matches("invalid target: ")
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

/// Which targets the proxy may forward to. Nothing is allowed by default.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
    ports: Option<Vec<u16>>,
}

/// Address ranges a host name may resolve to only when an allow entry inside them names them:
/// this host, link-local (cloud metadata services), unspecified, multicast and broadcast, and
/// IPv6 forms that embed IPv4 addresses (IPv4-compatible, NAT64, 6to4).
const SPECIAL_NETS: [&str; 13] = [
    "127.0.0.0/8",
    "169.254.0.0/16",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "fe80::/10",
    "::/96",
    "ff00::/8",
    "64:ff9b::/96",
    "2002::/16",
    "fd00:ec2::254/128",
    "::/128",
];

impl Allowlist {
    pub fn new(entries: Vec<AllowEntry>, ports: Option<Vec<u16>>) -> Allowlist {
        Allowlist { entries, ports }
    }

    /// Checks the name or IP literal and the port; resolved addresses are checked separately.
    pub fn check(&self, target: &Target) -> Result<(), ProxyError> {
        let deny = |reason: String| ProxyError::NotAllowed {
            target: target.to_string(),
            reason,
        };
        if let Some(ports) = &self.ports {
            if !ports.contains(&target.port) {
                return Err(deny(format!(
                    "port {} is not in servers.ports",
                    target.port
                )));
            }
        }
        let allowed = match &target.host {
            Host::Name(name) => self.entries.iter().any(|entry| match entry {
                AllowEntry::Name(allowed) => allowed == name,
                AllowEntry::Suffix(suffix) => {
                    name.len() > suffix.len() && name.ends_with(suffix.as_str())
                }
                AllowEntry::Net(_) => false,
            }),
            Host::Ip(ip) => self.covers(*ip) && self.address_allowed(*ip),
        };
        if allowed {
            Ok(())
        } else {
            Err(deny("no servers.allow entry matches".into()))
        }
    }

    /// Checks an address a target resolved to: loopback, link-local and unspecified addresses
    /// (also IPv4-mapped) pass only when an IP/CIDR entry lying inside such a range covers them.
    pub fn check_resolved(&self, target: &Target, ip: IpAddr) -> Result<(), ProxyError> {
        if self.address_allowed(ip) {
            Ok(())
        } else {
            Err(ProxyError::NotAllowed {
                target: target.to_string(),
                reason: format!(
                    "it resolves to {ip}, a loopback, link-local or unspecified address that no \
                     IP/CIDR entry names"
                ),
            })
        }
    }

    fn covers(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets().any(|net| net.contains(&ip))
    }

    fn address_allowed(&self, ip: IpAddr) -> bool {
        static SPECIAL: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
            SPECIAL_NETS
                .iter()
                .map(|net| net.parse().expect("SPECIAL_NETS are valid CIDR blocks"))
                .collect()
        });
        let ip = ip.to_canonical();
        let mut special = SPECIAL
            .iter()
            .filter(|range| range.contains(&ip))
            .peekable();
        special.peek().is_none()
            || special.any(|range| {
                self.nets()
                    .any(|net| net.contains(&ip) && range.contains(net))
            })
    }

    fn nets(&self) -> impl Iterator<Item = &IpNet> {
        self.entries.iter().filter_map(|entry| match entry {
            AllowEntry::Net(net) => Some(net),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str], ports: Option<Vec<u16>>) -> Allowlist {
        Allowlist::new(entries.iter().map(|e| e.parse().unwrap()).collect(), ports)
    }

    fn target(host: &str, port: u16) -> Target {
        Target::parse(host, &port.to_string()).unwrap()
    }

    #[test]
    fn host_parsing_table() {
        let cases: &[(&str, Option<Host>)] = &[
            (
                "pinot-server-0.svc",
                Some(Host::Name("pinot-server-0.svc".into())),
            ),
            (
                "Pinot-Server-0.SVC.",
                Some(Host::Name("pinot-server-0.svc".into())),
            ),
            ("10.1.2.3", Some(Host::Ip("10.1.2.3".parse().unwrap()))),
            ("::1", Some(Host::Ip("::1".parse().unwrap()))),
            ("[::1]", Some(Host::Ip("::1".parse().unwrap()))),
            ("0x7f.1", None),
            ("127.1", None),
            ("2130706433", None),
            ("0177.0.0.1", None),
            ("010.1.2.3", None),
            ("", None),
            ("a..b", None),
            ("-a.b", None),
            ("a b", None),
            ("host:8090", None),
            ("[127.0.0.1]", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(Host::parse(raw).ok(), expected.clone(), "host {raw:?}");
        }
    }

    #[test]
    fn port_must_be_decimal_and_nonzero() {
        assert_eq!(Target::parse("a", "8090").unwrap().port, 8090);
        for bad in ["", "0", "65536", "-1", "0x1f", "80a"] {
            assert!(Target::parse("a", bad).is_err(), "port {bad:?}");
        }
    }

    #[test]
    fn wildcard_matches_at_dot_boundary_only() {
        let list = allow(&["*.a.b"], None);
        assert!(list.check(&target("x.a.b", 1)).is_ok());
        assert!(list.check(&target("y.x.a.b", 1)).is_ok());
        assert!(list.check(&target("xa.b", 1)).is_err());
        assert!(list.check(&target("a.b", 1)).is_err());
    }

    #[test]
    fn exact_names_ips_and_cidrs() {
        let list = allow(&["pinot", "10.0.0.0/8", "192.168.1.5", "fd00::/8"], None);
        assert!(list.check(&target("pinot", 1)).is_ok());
        assert!(list.check(&target("pinot2", 1)).is_err());
        assert!(list.check(&target("10.200.3.4", 1)).is_ok());
        assert!(list.check(&target("::ffff:10.200.3.4", 1)).is_ok());
        assert!(list.check(&target("11.0.0.1", 1)).is_err());
        assert!(list.check(&target("192.168.1.5", 1)).is_ok());
        assert!(list.check(&target("192.168.1.6", 1)).is_err());
        assert!(list.check(&target("fd12::1", 1)).is_ok());
        // Host names never match IP entries and IPs never match name entries.
        assert!(allow(&["10.0.0.1"], None)
            .check(&target("pinot", 1))
            .is_err());
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        assert!(allow(&[], None).check(&target("pinot", 8090)).is_err());
        assert!(allow(&[], None).check(&target("10.0.0.1", 8090)).is_err());
    }

    #[test]
    fn ports_restrict_when_given() {
        let list = allow(&["pinot"], Some(vec![8090, 8096]));
        assert!(list.check(&target("pinot", 8090)).is_ok());
        assert!(list.check(&target("pinot", 9000)).is_err());
    }

    #[test]
    fn special_addresses_need_an_explicit_entry() {
        let t = target("pinot", 8090);
        let wide = allow(&["pinot", "0.0.0.0/0", "::/0"], None);
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                wide.check_resolved(&t, ip).is_err(),
                "{ip} allowed by a catch-all"
            );
        }
        assert!(wide.check_resolved(&t, "10.1.1.1".parse().unwrap()).is_ok());
        assert!(wide.check(&target("127.0.0.1", 1)).is_err());
        let explicit = allow(&["127.0.0.1", "169.254.0.0/16"], None);
        assert!(explicit
            .check_resolved(&t, "127.0.0.1".parse().unwrap())
            .is_ok());
        assert!(explicit
            .check_resolved(&t, "::ffff:127.0.0.1".parse().unwrap())
            .is_ok());
        assert!(explicit
            .check_resolved(&t, "127.0.0.2".parse().unwrap())
            .is_err());
        assert!(explicit
            .check_resolved(&t, "169.254.1.1".parse().unwrap())
            .is_ok());
        assert!(explicit.check(&target("127.0.0.1", 1)).is_ok());
    }

    #[test]
    fn allow_entries_reject_garbage() {
        for bad in ["10.0.0.0/33", "*.", "*.1.2", "a b", "0x7f.1", "*"] {
            assert!(bad.parse::<AllowEntry>().is_err(), "entry {bad:?}");
        }
    }

    #[test]
    fn targets_from_metadata_and_headers() {
        let mut md = HashMap::new();
        assert_eq!(target_from_metadata(&md).unwrap(), None);
        md.insert(FORWARD_HOST_KEY.to_string(), "pinot-0".to_string());
        assert!(target_from_metadata(&md).is_err());
        md.insert(FORWARD_PORT_KEY.to_string(), "8090".to_string());
        assert_eq!(
            target_from_metadata(&md).unwrap(),
            Some(target("pinot-0", 8090))
        );

        let mut headers = HeaderMap::new();
        assert_eq!(target_from_headers(&headers).unwrap(), None);
        headers.insert("forward-host", "pinot-1".parse().unwrap());
        headers.insert("forward_port", "8096".parse().unwrap());
        assert_eq!(
            target_from_headers(&headers).unwrap(),
            Some(target("pinot-1", 8096))
        );
    }

    proptest::proptest! {
        #[test]
        fn target_parsing_never_panics(host in "\\PC{0,80}", port in "\\PC{0,8}") {
            let _ = Target::parse(&host, &port);
            let _ = host.parse::<AllowEntry>();
        }
    }
}
