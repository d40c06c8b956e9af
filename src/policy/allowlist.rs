//! Which targets the proxy may forward to: `servers.allow` names, wildcards and CIDR blocks,
//! `servers.ports`, the servers the controller lists (`servers.discover`, a live set swapped
//! whole on each refresh), and the addresses a name resolves to. Nothing is allowed by default.

use super::target::{Host, Target};
use crate::config::AllowEntry;
use crate::error::Error;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Which targets the proxy may forward to. Nothing is allowed by default.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
    ports: Option<Vec<u16>>,
    /// The servers the controller lists, when `servers.discover` is on.
    discovered: Option<Arc<LiveServers>>,
    /// `servers.use_discovered_port`.
    map_port: bool,
}

/// The Pinot servers the controller lists as taking queries, by host: each host's gRPC ports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerSet {
    by_host: HashMap<Host, Vec<u16>>,
}

impl ServerSet {
    pub fn new(servers: impl IntoIterator<Item = Target>) -> ServerSet {
        let mut by_host: HashMap<Host, Vec<u16>> = HashMap::new();
        for server in servers {
            by_host.entry(server.host).or_default().push(server.port);
        }
        for ports in by_host.values_mut() {
            ports.sort_unstable();
            ports.dedup();
        }
        ServerSet { by_host }
    }

    /// How many servers (host and port) it holds.
    pub fn len(&self) -> usize {
        self.by_host.values().map(Vec::len).sum()
    }

    /// Whether it holds exactly this server.
    pub fn contains(&self, target: &Target) -> bool {
        self.by_host
            .get(&target.host)
            .is_some_and(|ports| ports.contains(&target.port))
    }

    /// Every server, sorted.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .by_host
            .iter()
            .flat_map(|(host, ports)| {
                ports.iter().map(|&port| Target {
                    host: host.clone(),
                    port,
                })
            })
            .collect();
        targets.sort_by_key(|target| target.to_string());
        targets
    }

    /// The server `target` names, on its discovered port when `map_port` and the host is
    /// unique; else why it is not one.
    fn admit(&self, target: &Target, map_port: bool) -> Result<Target, String> {
        match self.by_host.get(&target.host).map(Vec::as_slice) {
            None => Err("the controller lists no server on that host".into()),
            Some(ports) if ports.contains(&target.port) => Ok(target.clone()),
            Some(&[port]) if map_port => Ok(Target {
                host: target.host.clone(),
                port,
            }),
            Some(ports) => Err(format!(
                "the controller lists that host with gRPC port {}",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The current [`ServerSet`], `None` until the first list is read; replaced whole, so a
/// reader never waits for a refresh. Subscribers hear of every change.
#[derive(Debug)]
pub struct LiveServers {
    current: watch::Sender<Option<Arc<ServerSet>>>,
}

impl Default for LiveServers {
    fn default() -> Self {
        LiveServers {
            current: watch::Sender::new(None),
        }
    }
}

impl LiveServers {
    /// The set in use now; `None` before the first list.
    pub fn get(&self) -> Option<Arc<ServerSet>> {
        self.current.borrow().clone()
    }

    /// Puts `set` in use; returns the one it replaces. Subscribers are told only of changes.
    pub fn replace(&self, set: ServerSet) -> Option<Arc<ServerSet>> {
        let mut previous = None;
        self.current.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&set);
            previous = current.clone();
            if changed {
                *current = Some(Arc::new(set));
            }
            changed
        });
        previous
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ServerSet>>> {
        self.current.subscribe()
    }
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
        Allowlist {
            entries,
            ports,
            discovered: None,
            map_port: false,
        }
    }

    /// Also allows the servers in `live` (`servers.discover`); `map_port` is
    /// `servers.use_discovered_port`.
    pub fn with_discovery(self, live: Arc<LiveServers>, map_port: bool) -> Allowlist {
        Allowlist {
            discovered: Some(live),
            map_port,
            ..self
        }
    }

    /// Hears of every change to the discovered servers; `None` without discovery.
    pub fn subscribe(&self) -> Option<watch::Receiver<Option<Arc<ServerSet>>>> {
        self.discovered.as_ref().map(|live| live.subscribe())
    }

    /// The server to connect to for `target`, or why not: a discovered server (on its own
    /// gRPC port with `use_discovered_port`), or one `allow` and `ports` let through. Before
    /// the first list, a target the static entries refuse is "not loaded yet".
    pub fn admit(&self, target: &Target) -> Result<Target, Error> {
        let Some(live) = &self.discovered else {
            return self.check(target).map(|()| target.clone());
        };
        let current = live.get();
        let mut why_not = None;
        if let Some(set) = &current {
            match set.admit(target, self.map_port) {
                Ok(found) => return self.discovered_address(found),
                Err(reason) => why_not = Some(reason),
            }
        }
        match (self.check(target), why_not) {
            (Ok(()), _) => Ok(target.clone()),
            (Err(_), None) => Err(Error::DiscoveryNotLoaded),
            (Err(Error::NotAllowed { target, reason }), Some(why_not)) => Err(Error::NotAllowed {
                target,
                reason: format!("{reason}, and {why_not}"),
            }),
            (Err(err), Some(_)) => Err(err),
        }
    }

    /// A discovered server named by an IP literal still passes the special-range check.
    fn discovered_address(&self, found: Target) -> Result<Target, Error> {
        match found.host {
            Host::Ip(ip) if !self.address_allowed(ip) => Err(Error::NotAllowed {
                target: found.to_string(),
                reason: format!(
                    "the controller lists it at {ip}, a loopback, link-local or unspecified \
                     address that no IP/CIDR entry names"
                ),
            }),
            _ => Ok(found),
        }
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

    fn discovering(
        entries: &[&str],
        ports: Option<Vec<u16>>,
        map_port: bool,
    ) -> (Allowlist, Arc<LiveServers>) {
        let live = Arc::new(LiveServers::default());
        (
            allow(entries, ports).with_discovery(live.clone(), map_port),
            live,
        )
    }

    #[test]
    fn discovered_servers_are_allowed_on_their_port_only() {
        let (list, live) = discovering(&[], None, false);
        let err = list.admit(&target("pinot-0.svc", 8090)).unwrap_err();
        assert!(matches!(err, Error::DiscoveryNotLoaded), "{err}");
        live.replace(ServerSet::new([
            target("Pinot-0.svc", 8090),
            target("10.1.1.1", 8091),
        ]));
        assert_eq!(
            list.admit(&target("PINOT-0.svc", 8090)).unwrap(),
            target("pinot-0.svc", 8090)
        );
        assert!(list.admit(&target("10.1.1.1", 8091)).is_ok());
        let err = list
            .admit(&target("pinot-0.svc", 8091))
            .unwrap_err()
            .to_string();
        assert!(err.contains("with gRPC port 8090"), "{err}");
        let err = list
            .admit(&target("pinot-1.svc", 8090))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no servers.allow entry") && err.contains("no server on that host"),
            "{err}"
        );
        // A discovered loopback address needs an IP/CIDR entry, as a resolved one does.
        live.replace(ServerSet::new([target("127.0.0.1", 8090)]));
        assert!(list.admit(&target("127.0.0.1", 8090)).is_err());
    }

    #[test]
    fn static_entries_and_discovery_combine() {
        let (list, live) = discovering(&["static.svc", "127.0.0.1"], Some(vec![1]), false);
        // Static targets pass before the first list, others wait for it.
        assert!(list.admit(&target("static.svc", 1)).is_ok());
        assert!(matches!(
            list.admit(&target("127.0.0.1", 2)),
            Err(Error::DiscoveryNotLoaded)
        ));
        live.replace(ServerSet::new([target("127.0.0.1", 2)]));
        // `ports` restricts the static entries only; the IP entry lets the loopback through.
        assert!(list.admit(&target("127.0.0.1", 2)).is_ok());
        assert!(list.admit(&target("127.0.0.1", 3)).is_err());
        assert!(list.admit(&target("static.svc", 1)).is_ok());
    }

    #[test]
    fn discovered_port_replaces_the_named_one_when_the_host_is_unique() {
        let (list, live) = discovering(&[], None, true);
        live.replace(ServerSet::new([
            target("a.svc", 8091),
            target("b.svc", 8092),
            target("b.svc", 8093),
        ]));
        assert_eq!(
            list.admit(&target("a.svc", 8090)).unwrap(),
            target("a.svc", 8091)
        );
        assert_eq!(
            list.admit(&target("b.svc", 8093)).unwrap(),
            target("b.svc", 8093)
        );
        assert!(list.admit(&target("b.svc", 8090)).is_err());
    }

    #[test]
    fn replacing_an_equal_set_tells_no_subscriber() {
        let live = LiveServers::default();
        let mut changes = live.subscribe();
        assert!(live.replace(ServerSet::new([target("a.svc", 1)])).is_none());
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert!(live.replace(ServerSet::new([target("a.svc", 1)])).is_some());
        assert!(!changes.has_changed().unwrap());
        live.replace(ServerSet::new([]));
        assert!(changes.has_changed().unwrap());
    }

    #[test]
    fn allow_entries_reject_garbage() {
        for bad in ["10.0.0.0/33", "*.", "*.1.2", "a b", "0x7f.1", "*"] {
            assert!(bad.parse::<AllowEntry>().is_err(), "entry {bad:?}");
        }
    }
}
