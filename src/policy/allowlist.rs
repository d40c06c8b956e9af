//! Which targets the proxy may forward to: `servers.allow` names, wildcards and CIDR blocks,
//! `servers.ports`, and the addresses a name resolves to. Nothing is allowed by default.

use super::target::{Host, Target};
use crate::config::AllowEntry;
use crate::error::Error;
use ipnet::IpNet;
use std::net::IpAddr;

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
    pub fn check(&self, target: &Target) -> Result<(), Error> {
        let deny = |reason: String| Error::NotAllowed {
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
    pub fn check_resolved(&self, target: &Target, ip: IpAddr) -> Result<(), Error> {
        if self.address_allowed(ip) {
            Ok(())
        } else {
            Err(Error::NotAllowed {
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
}
