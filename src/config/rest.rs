//! `[controller]`, `[broker]` and `[rest]`: the Pinot components REST calls go to, their URLs,
//! and REST routing, timeouts and limits.

use super::{Config, UpstreamAuthConfig, UpstreamTlsConfig};
use anyhow::bail;
use http::Uri;
use serde::Deserialize;

/// One Pinot component reached over REST (`[controller]`, `[broker]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Base URLs of the component's instances, e.g.
    /// `"http://pinot-controller-0.pinot-controller-headless:9000"`; requests are spread across
    /// them round robin. At least one. `https://` URLs use TLS with `tls` (system roots when
    /// it is absent). A path after the host (`http://host:9000/pinot`) is put in front of
    /// every forwarded path.
    pub urls: Vec<String>,
    /// TLS for `https://` URLs, with the same keys as `[servers.tls]`.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Credentials sent to this component instead of the caller's (which are removed unless
    /// `pass_through`).
    #[serde(default)]
    pub auth: UpstreamAuthConfig,
    /// Broker only: the brokers' gRPC port (Pinot 1.4+, `pinot.broker.grpc.port`). When set,
    /// `PinotQueryBroker/Submit` calls go to the brokers' hosts on this port, round robin.
    #[serde(default)]
    pub grpc_port: Option<u16>,
}

/// `[rest]`: routing, timeouts and connection reuse for REST calls.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Time from receiving a request until the upstream's response has ended, in milliseconds.
    /// Without a response head by then the caller gets 504; a response body still streaming
    /// then is cut. Default: 300000 (5 min), the same as Trino's own REST timeout.
    pub request_timeout_ms: u64,
    /// Time to open a TCP connection to one URL, in milliseconds. A URL that does not connect
    /// in time counts as down, like one that refuses. Default: 5000.
    pub connect_timeout_ms: u64,
    /// How long a URL that failed to connect is skipped, in milliseconds. Default: 5000.
    pub backoff_ms: u64,
    /// An idle keep-alive connection to a URL is closed after this long, in milliseconds.
    /// Keep it below Pinot's own idle timeout (its Grizzly server closes idle connections
    /// after 30 s) so a request is never sent on a connection Pinot is closing. Default: 20000.
    pub idle_timeout_ms: u64,
    /// Most idle keep-alive connections kept per URL (0: none are kept). Default: 32.
    pub max_idle_per_url: usize,
    /// Most requests in flight to each component (controller, broker) at once; each holds
    /// one upstream connection. More are answered 503 at once. At least 1. Default: 256.
    pub max_requests_per_component: usize,
    /// Most REST requests one client connection may have in flight at once (an HTTP/2
    /// client can open many streams). More are answered 503 at once. At least 1. Default: 32.
    pub max_requests_per_connection: usize,
    /// Extra routes, `[[rest.routes]]` with `prefix` and `to`. They are checked before the
    /// built-in table; among them the longest matching prefix wins. Default: none.
    pub routes: Vec<RouteConfig>,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            request_timeout_ms: 300_000,
            connect_timeout_ms: 5_000,
            backoff_ms: 5_000,
            idle_timeout_ms: 20_000,
            max_idle_per_url: 32,
            max_requests_per_component: 256,
            max_requests_per_connection: 32,
            routes: Vec::new(),
        }
    }
}

/// One `[[rest.routes]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix starting with `/`, matched at a path-segment boundary: `/tables/t` matches
    /// `/tables/t` and `/tables/t/schema`, not `/tables/t2`. `/` alone matches every path.
    pub prefix: String,
    /// Where matching requests go: `"controller"` or `"broker"`.
    pub to: Component,
}

/// A Pinot component REST calls go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Controller,
    Broker,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Controller => "controller",
            Component::Broker => "broker",
        }
    }
}

/// Checks the REST sections of a config; errors name the key.
pub(super) fn validate(config: &Config) -> anyhow::Result<()> {
    for (section, component) in [
        ("controller", &config.controller),
        ("broker", &config.broker),
    ] {
        if let Some(component) = component {
            parse_urls(section, &component.urls)?;
            component.auth.validate(&format!("{section}.auth"))?;
            if let Some(tls) = &component.tls {
                tls.validate(&format!("{section}.tls"))?;
            }
            match (section, component.grpc_port) {
                ("controller", Some(_)) => {
                    bail!("controller.grpc_port: only [broker] takes a gRPC port")
                }
                (_, Some(0)) => bail!("{section}.grpc_port: 0 is not a port"),
                _ => {}
            }
        }
    }
    let rest = &config.rest;
    for (key, value) in [
        ("rest.request_timeout_ms", rest.request_timeout_ms),
        ("rest.connect_timeout_ms", rest.connect_timeout_ms),
        ("rest.backoff_ms", rest.backoff_ms),
        ("rest.idle_timeout_ms", rest.idle_timeout_ms),
    ] {
        if value == 0 {
            bail!("{key} must be greater than 0");
        }
    }
    for (key, value) in [
        (
            "rest.max_requests_per_component",
            rest.max_requests_per_component,
        ),
        (
            "rest.max_requests_per_connection",
            rest.max_requests_per_connection,
        ),
    ] {
        if value == 0 {
            bail!("{key} must be at least 1");
        }
    }
    for (index, route) in rest.routes.iter().enumerate() {
        let key = format!("rest.routes[{index}]");
        check_prefix(&route.prefix)
            .map_err(|reason| anyhow::anyhow!("{key}.prefix = {:?}: {reason}", route.prefix))?;
        if let Some(first) = rest.routes[..index]
            .iter()
            .position(|earlier| earlier.prefix == route.prefix)
        {
            bail!(
                "{key}.prefix = {:?}: rest.routes[{first}] has the same prefix",
                route.prefix
            );
        }
        let configured = match route.to {
            Component::Controller => config.controller.is_some(),
            Component::Broker => config.broker.is_some(),
        };
        if !configured {
            let name = route.to.name();
            bail!("{key}.to = \"{name}\", but there is no [{name}] section with urls");
        }
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if !prefix.starts_with('/') {
        return Err("must start with /");
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err("must not end with / (prefixes match whole path segments)");
    }
    if prefix.contains(['?', '#']) || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a plain path, without query, fragment or spaces");
    }
    Ok(())
}

/// A configured upstream URL, split for building request URIs.
#[derive(Debug)]
pub struct UpstreamUrl {
    /// As configured, without a trailing `/`: for logs and error messages.
    pub display: String,
    /// `http://host:port` or `https://host:port`.
    pub origin: String,
    /// Path put in front of every request path; empty or starting with `/`, no trailing `/`.
    pub base_path: String,
}

pub fn parse_urls(section: &str, urls: &[String]) -> anyhow::Result<Vec<UpstreamUrl>> {
    if urls.is_empty() {
        bail!("{section}.urls is empty: list at least one URL, e.g. urls = [\"http://pinot-{section}:{}\"]",
            if section == "broker" { 8099 } else { 9000 });
    }
    urls.iter()
        .enumerate()
        .map(|(index, url)| {
            parse_url(url)
                .map_err(|reason| anyhow::anyhow!("{section}.urls[{index}] = {url:?}: {reason}"))
        })
        .collect()
}

fn parse_url(url: &str) -> Result<UpstreamUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|err| format!("not a URL ({err}); write e.g. \"http://pinot-controller:9000\""))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => ("http", 80),
        Some("https") => ("https", 443),
        Some(other) => {
            return Err(format!(
                "scheme {other}:// is not supported; use http:// or https://"
            ))
        }
        None => return Err("must start with http:// or https://".into()),
    };
    let authority = uri.authority().ok_or_else(|| "has no host".to_string())?;
    if authority.as_str().contains('@') {
        return Err("must not contain credentials (user:password@)".into());
    }
    if authority.host().is_empty() {
        return Err("has no host".into());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err("must not have a query string or fragment".into());
    }
    // `Authority::port_u16` reads an out-of-range port as no port at all, so parse it here.
    let port = match authority.as_str().rsplit_once(':') {
        Some((_, port)) if !port.contains(']') => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("port {port:?} is not a port from 1 to 65535")),
        },
        _ => default_port,
    };
    let base_path = uri.path().trim_end_matches('/').to_string();
    let origin = format!("{scheme}://{}:{port}", authority.host());
    Ok(UpstreamUrl {
        display: url.trim_end_matches('/').to_string(),
        origin,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n";

    fn parse(extra: &str) -> anyhow::Result<Config> {
        Config::parse(&format!("{BASE}{extra}"))
    }

    fn error(extra: &str) -> String {
        format!("{:#}", parse(extra).expect_err("config should be refused"))
    }

    #[test]
    fn defaults_when_rest_is_absent_or_partial() {
        let config = parse("[controller]\nurls = [\"http://c:9000\"]\n").unwrap();
        assert_eq!(config.rest.request_timeout_ms, 300_000);
        assert_eq!(config.rest.backoff_ms, 5_000);
        assert_eq!(config.rest.connect_timeout_ms, 5_000);
        assert!(config.rest.routes.is_empty());
        let config =
            parse("[broker]\nurls = [\"http://b:8099\"]\n[rest]\nbackoff_ms = 7\n").unwrap();
        assert_eq!(config.rest.backoff_ms, 7);
        assert_eq!(config.rest.request_timeout_ms, 300_000);
        assert_eq!(config.rest.idle_timeout_ms, 20_000);
    }

    #[test]
    fn url_errors_name_the_key_and_the_fix() {
        let cases = [
            (
                "[controller]\nurls = [\"https://c:9000\"]\n[controller.tls]\ncert_file = \"c.crt\"\n",
                "controller.tls: cert_file and key_file go together",
            ),
            (
                "[controller]\nurls = [\"http://c:9000\"]\ngrpc_port = 8090\n",
                "controller.grpc_port: only [broker] takes a gRPC port",
            ),
            (
                "[broker]\nurls = []\n",
                "broker.urls is empty: list at least one URL",
            ),
            (
                "[controller]\nurls = [\"pinot-controller:9000\"]\n",
                "controller.urls[0] = \"pinot-controller:9000\": must start with http://",
            ),
            (
                "[controller]\nurls = [\"http://c:9000/?x=1\"]\n",
                "controller.urls[0] = \"http://c:9000/?x=1\": must not have a query string",
            ),
            (
                "[controller]\nurls = [\"http://user:pw@c:9000\"]\n",
                "must not contain credentials",
            ),
            (
                "[controller]\nurls = [\"ftp://c\"]\n",
                "controller.urls[0] = \"ftp://c\": scheme ftp:// is not supported",
            ),
            (
                "[controller]\nurls = [\"http://c:99999\"]\n",
                "controller.urls[0] = \"http://c:99999\": port \"99999\" is not a port",
            ),
            (
                "[controller]\nurls = [\"http:// c\"]\n",
                "controller.urls[0] = \"http:// c\": not a URL",
            ),
            ("[controller]\n", "missing field `urls`"),
            (
                "[controller]\nurl = [\"http://c\"]\n",
                "unknown field `url`",
            ),
        ];
        for (extra, expected) in cases {
            let message = error(extra);
            assert!(message.contains(expected), "{extra}\n  got: {message}");
        }
    }

    #[test]
    fn rest_errors_name_the_key() {
        let controller = "[controller]\nurls = [\"http://c:9000\"]\n";
        let cases = [
            (
                "[rest]\nrequest_timeout_ms = 0\n",
                "rest.request_timeout_ms must be greater than 0",
            ),
            (
                "[rest]\nbackoff_ms = 0\n",
                "rest.backoff_ms must be greater than 0",
            ),
            ("[rest]\ntimeout_ms = 5\n", "unknown field `timeout_ms`"),
            (
                "[[rest.routes]]\nprefix = \"/x\"\nto = \"borker\"\n",
                "unknown variant `borker`, expected `controller` or `broker`",
            ),
            (
                "[[rest.routes]]\nprefix = \"x\"\nto = \"controller\"\n",
                "rest.routes[0].prefix = \"x\": must start with /",
            ),
            (
                "[[rest.routes]]\nprefix = \"/x/\"\nto = \"controller\"\n",
                "rest.routes[0].prefix = \"/x/\": must not end with /",
            ),
            (
                "[[rest.routes]]\nprefix = \"/x?a\"\nto = \"controller\"\n",
                "must be a plain path",
            ),
            (
                "[[rest.routes]]\nprefix = \"/x\"\nto = \"broker\"\n",
                "rest.routes[0].to = \"broker\", but there is no [broker] section",
            ),
            (
                "[[rest.routes]]\nprefix = \"/x\"\nto = \"controller\"\n\
                 [[rest.routes]]\nprefix = \"/x\"\nto = \"controller\"\n",
                "rest.routes[1].prefix = \"/x\": rest.routes[0] has the same prefix",
            ),
            (
                "[[rest.routes]]\nprefix = \"/x\"\nto = \"controller\"\nweight = 1\n",
                "unknown field `weight`",
            ),
        ];
        for (extra, expected) in cases {
            let message = error(&format!("{controller}{extra}"));
            assert!(message.contains(expected), "{extra}\n  got: {message}");
        }
    }

    #[test]
    fn urls_keep_a_base_path_and_default_port() {
        let url = parse_url("http://pinot-controller:9000/").unwrap();
        assert_eq!(url.origin, "http://pinot-controller:9000");
        assert_eq!(url.base_path, "");
        assert_eq!(url.display, "http://pinot-controller:9000");
        let url = parse_url("http://gateway/pinot/controller/").unwrap();
        assert_eq!(url.origin, "http://gateway:80");
        assert_eq!(url.base_path, "/pinot/controller");
        let url = parse_url("http://[::1]:9000").unwrap();
        assert_eq!(url.origin, "http://[::1]:9000");
        let url = parse_url("http://[::1]").unwrap();
        assert_eq!(url.origin, "http://[::1]:80");
        assert!(parse_url("http://c:0").unwrap_err().contains("port \"0\""));
    }
}
