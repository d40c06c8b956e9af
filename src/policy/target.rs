//! Which Pinot server a call names: `FORWARD_HOST`/`FORWARD_PORT` in the `Submit` request's
//! metadata, or `forward_host`/`forward_port` headers. Pure, no I/O.

pub use crate::config::Host;
use crate::error::{echo, Error};
use http::HeaderMap;
use std::collections::HashMap;
use std::fmt;

/// Keys Trino puts into `ServerRequest.metadata`.
pub const FORWARD_HOST_KEY: &str = "FORWARD_HOST";
pub const FORWARD_PORT_KEY: &str = "FORWARD_PORT";
/// Header names that also name the target; the hyphenated forms survive ingress-nginx.
pub const FORWARD_HOST_HEADERS: [&str; 2] = ["forward_host", "forward-host"];
pub const FORWARD_PORT_HEADERS: [&str; 2] = ["forward_port", "forward-port"];

/// A Pinot server to forward to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Target {
    /// Parses a host and a decimal port as a caller sends them.
    pub fn parse(host: &str, port: &str) -> Result<Target, Error> {
        let host = Host::parse(host).map_err(Error::BadTarget)?;
        let port = match port.trim().parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(Error::BadTarget(format!(
                    "port \"{}\" is not a number from 1 to 65535",
                    echo(port)
                )))
            }
        };
        Ok(Target { host, port })
    }
}

/// Reads the target from the `ServerRequest.metadata` map; `None` when it names none.
pub(crate) fn from_metadata(metadata: &HashMap<String, String>) -> Result<Option<Target>, Error> {
    match (
        metadata.get(FORWARD_HOST_KEY),
        metadata.get(FORWARD_PORT_KEY),
    ) {
        (None, None) => Ok(None),
        (Some(host), Some(port)) => Target::parse(host, port).map(Some),
        (Some(_), None) => Err(Error::BadTarget(format!(
            "{FORWARD_HOST_KEY} is set but {FORWARD_PORT_KEY} is missing"
        ))),
        (None, Some(_)) => Err(Error::BadTarget(format!(
            "{FORWARD_PORT_KEY} is set but {FORWARD_HOST_KEY} is missing"
        ))),
    }
}

/// Reads the target from `forward_host`/`forward_port` (or hyphenated) headers.
pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Target>, Error> {
    let find = |names: [&str; 2]| -> Result<Option<&str>, Error> {
        for name in names {
            if let Some(value) = headers.get(name) {
                return value
                    .to_str()
                    .map(Some)
                    .map_err(|_| Error::BadTarget(format!("header {name} is not visible ASCII")));
            }
        }
        Ok(None)
    };
    match (find(FORWARD_HOST_HEADERS)?, find(FORWARD_PORT_HEADERS)?) {
        (None, None) => Ok(None),
        (Some(host), Some(port)) => Target::parse(host, port).map(Some),
        (Some(_), None) => Err(Error::BadTarget(
            "header forward_host is set but forward_port is missing".into(),
        )),
        (None, Some(_)) => Err(Error::BadTarget(
            "header forward_port is set but forward_host is missing".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn targets_from_metadata_and_headers() {
        let mut md = HashMap::new();
        assert_eq!(from_metadata(&md).unwrap(), None);
        md.insert(FORWARD_HOST_KEY.to_string(), "pinot-0".to_string());
        assert!(from_metadata(&md).is_err());
        md.insert(FORWARD_PORT_KEY.to_string(), "8090".to_string());
        assert_eq!(from_metadata(&md).unwrap(), Some(target("pinot-0", 8090)));

        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers).unwrap(), None);
        headers.insert("forward-host", "pinot-1".parse().unwrap());
        headers.insert("forward_port", "8096".parse().unwrap());
        assert_eq!(
            from_headers(&headers).unwrap(),
            Some(target("pinot-1", 8096))
        );
    }

    proptest::proptest! {
        #[test]
        fn target_parsing_never_panics(host in "\\PC{0,80}", port in "\\PC{0,8}") {
            let _ = Target::parse(&host, &port);
            let _ = host.parse::<crate::config::AllowEntry>();
        }
    }
}
