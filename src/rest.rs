//! REST forwarding of Trino's controller and broker calls. Each request is routed by its path
//! (a built-in table, overridden by `[[rest.routes]]`) to one URL of that component, round robin
//! with back-off and one retry, through keep-alive HTTP/1.1 pools; bodies stream both ways.

use crate::auth::UpstreamAuthConfig;
use crate::error::Source;
use crate::grpc::ProxyBody;
use crate::tls::{Reload, UpstreamTls, UpstreamTlsConfig};
use crate::{BoxError, Config};
use anyhow::bail;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use tracing::Instrument;

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

/// Path prefixes served by the broker; every other path goes to the controller.
/// From Pinot's broker resources: `PinotClientRequest` (`/query/sql`, `/query`,
/// `/query/timeseries`, `/query/compare`, `DELETE /query/{id}`, `/timeseries/api/v1/...`),
/// `PinotBrokerDebug` and `ResponseStoreResource` (cursors).
pub const BROKER_PREFIXES: [&str; 7] = [
    "/query",
    "/timeseries",
    "/debug/routingTable",
    "/debug/routingTableWithOptionalSegments",
    "/debug/timeBoundary",
    "/debug/serverRoutingStats",
    "/responseStore",
];

/// Checks the REST sections of a config; errors name the key.
pub fn validate(config: &Config) -> anyhow::Result<()> {
    for (section, component) in [
        ("controller", &config.controller),
        ("broker", &config.broker),
    ] {
        if let Some(component) = component {
            parse_urls(section, &component.urls)?;
            component.auth.resolve(&format!("{section}.auth"))?;
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

/// Whether `prefix` matches `path` at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The component a path goes to: the longest matching user route, else the built-in table.
pub fn route(routes: &[RouteConfig], path: &str) -> Component {
    let user = routes
        .iter()
        .filter(|route| prefix_matches(&route.prefix, path))
        .max_by_key(|route| route.prefix.len())
        .map(|route| route.to);
    user.unwrap_or_else(|| {
        if BROKER_PREFIXES
            .iter()
            .any(|prefix| prefix_matches(prefix, path))
        {
            Component::Broker
        } else {
            Component::Controller
        }
    })
}

/// A configured upstream URL, split for building request URIs.
#[derive(Debug)]
struct UpstreamUrl {
    /// As configured, without a trailing `/`: for logs and error messages.
    display: String,
    /// `http://host:port` or `https://host:port`.
    origin: String,
    /// Path put in front of every request path; empty or starting with `/`, no trailing `/`.
    base_path: String,
}

fn parse_urls(section: &str, urls: &[String]) -> anyhow::Result<Vec<UpstreamUrl>> {
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

/// Opens upstream connections: TCP, then TLS for `https://` URLs with the component's
/// (reloadable) TLS config.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    tls: Option<(
        Arc<UpstreamTls>,
        Option<rustls::pki_types::ServerName<'static>>,
    )>,
}

fn connector(
    config: &RestConfig,
    tls: Option<(
        Arc<UpstreamTls>,
        Option<rustls::pki_types::ServerName<'static>>,
    )>,
) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    // https URIs reach this connector too; it does the TLS itself.
    http.enforce_http(false);
    Connector { http, tls }
}

/// A connection to a REST upstream, plain or TLS.
enum MaybeTls {
    Plain(TokioIo<tokio::net::TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeTls;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MaybeTls, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            if uri.scheme_str() != Some("https") {
                return Ok(MaybeTls::Plain(tcp));
            }
            let (config, name) = tls.ok_or("https URL without a TLS config")?;
            let name = match name {
                Some(name) => name,
                None => {
                    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                    rustls::pki_types::ServerName::try_from(host.to_owned())?
                }
            };
            let stream = tokio_rustls::TlsConnector::from(config.get())
                .connect(name, tcp.into_inner())
                .await
                .map_err(|err| format!("TLS handshake failed: {err}"))?;
            Ok(MaybeTls::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl hyper_util::client::legacy::connect::Connection for MaybeTls {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Forwards REST requests to the controller or broker.
pub struct Rest {
    /// This proxy's id in `pinot-proxy-via`, to refuse requests that loop back to it.
    instance: HeaderValue,
    controller: Option<Upstreams>,
    broker: Option<Upstreams>,
    routes: Vec<RouteConfig>,
    request_timeout: Duration,
    backoff: Duration,
    max_requests_per_component: usize,
    max_requests_per_connection: usize,
    /// Back-off deadlines are kept as milliseconds since this instant, in atomics.
    epoch: Instant,
}

/// What the listening side knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// Whether the client connected with TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// This connection's REST requests in flight, bounded by `rest.max_requests_per_connection`.
    pub rest_requests: Arc<tokio::sync::Semaphore>,
}

/// The URLs of one component, the round-robin state, and how to reach them.
struct Upstreams {
    urls: Vec<Upstream>,
    next: AtomicUsize,
    client: Client<Connector, AttemptBody>,
    tls: Option<Arc<UpstreamTls>>,
    credentials: crate::auth::Upstream,
    grpc_port: Option<u16>,
    /// Requests in flight to this component, bounded by `rest.max_requests_per_component`.
    in_flight: Arc<tokio::sync::Semaphore>,
}

struct Upstream {
    url: UpstreamUrl,
    /// Milliseconds since `Rest::epoch` until which this URL is skipped; 0 when up.
    down_until_ms: AtomicU64,
}

impl Upstreams {
    /// The order to try URLs in: those up, round robin, then those backed off, soonest back
    /// first, as a last resort rather than failing without trying.
    fn candidates(&self, now_ms: u64) -> Vec<usize> {
        let count = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..count)
            .map(|offset| (start + offset) % count)
            .partition(|&index| self.urls[index].down_until_ms.load(Ordering::Relaxed) <= now_ms);
        down.sort_by_key(|&index| self.urls[index].down_until_ms.load(Ordering::Relaxed));
        up.append(&mut down);
        up
    }
}

impl Rest {
    /// `None` when neither a controller nor a broker is configured.
    pub fn new(config: &Config, instance: HeaderValue) -> anyhow::Result<Option<Rest>> {
        if config.controller.is_none() && config.broker.is_none() {
            return Ok(None);
        }
        let rest = &config.rest;
        let upstreams = |section: &'static str, component: &ComponentConfig| {
            let urls = parse_urls(section, &component.urls)?;
            let tls = match (
                &component.tls,
                urls.iter().any(|url| url.origin.starts_with("https:")),
            ) {
                (Some(tls_config), _) => Some((tls_config.clone(), true)),
                (None, true) => Some((UpstreamTlsConfig::default(), true)),
                (None, false) => None,
            };
            let tls = match tls {
                Some((tls_config, _)) => {
                    let key = if section == "broker" {
                        "broker.tls"
                    } else {
                        "controller.tls"
                    };
                    let name = match &tls_config.server_name {
                        Some(name) => Some(rustls::pki_types::ServerName::try_from(name.clone())?),
                        None => None,
                    };
                    Some((
                        crate::tls::upstream_tls(&tls_config, key, crate::tls::ALPN_HTTP1)?,
                        name,
                    ))
                }
                None => None,
            };
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_millis(rest.idle_timeout_ms))
                .pool_max_idle_per_host(rest.max_idle_per_url)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector(rest, tls.clone()));
            anyhow::Ok(Upstreams {
                urls: urls
                    .into_iter()
                    .map(|url| Upstream {
                        url,
                        down_until_ms: AtomicU64::new(0),
                    })
                    .collect(),
                next: AtomicUsize::new(0),
                in_flight: Arc::new(tokio::sync::Semaphore::new(rest.max_requests_per_component)),
                client,
                tls: tls.map(|(tls, _)| tls),
                credentials: component.auth.resolve(&format!("{section}.auth"))?,
                grpc_port: component.grpc_port,
            })
        };
        let controller = match &config.controller {
            Some(c) => Some(upstreams("controller", c)?),
            None => None,
        };
        let broker = match &config.broker {
            Some(c) => Some(upstreams("broker", c)?),
            None => None,
        };
        Ok(Some(Rest {
            instance,
            controller,
            broker,
            routes: rest.routes.clone(),
            request_timeout: Duration::from_millis(rest.request_timeout_ms),
            backoff: Duration::from_millis(rest.backoff_ms),
            max_requests_per_component: rest.max_requests_per_component,
            max_requests_per_connection: rest.max_requests_per_connection,
            epoch: Instant::now(),
        }))
    }

    /// `rest.max_requests_per_connection`, for each client connection's [`Peer`].
    pub fn max_requests_per_connection(&self) -> usize {
        self.max_requests_per_connection
    }

    /// Forwards one request; failures are HTTP errors with a JSON body.
    pub async fn handle(&self, request: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let deadline = Instant::now() + self.request_timeout;
        let span = tracing::info_span!(
            "rest",
            method = %request.method(),
            path = %request.uri().path(),
        );
        let mut record = Record::new(request.method(), request.uri().path());
        let result = self
            .forward(request, peer, deadline, &mut record)
            .instrument(span)
            .await;
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                record.status = Some(parts.status.as_u16());
                let body = ResponseBody {
                    inner: Some(body),
                    deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
                    timeout_ms: self.request_timeout.as_millis(),
                    record,
                };
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(err) => {
                let response = err.to_response(&record.path);
                record.fail(&err, response.status());
                response
            }
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
        deadline: Instant,
        record: &mut Record,
    ) -> Result<Response<Incoming>, RestError> {
        if request.method() == Method::CONNECT {
            return Err(RestError::BadRequest(
                "CONNECT is not supported: this port forwards REST calls to Pinot".into(),
            ));
        }
        let path = request.uri().path();
        if !path.starts_with('/') {
            return Err(RestError::BadRequest(format!(
                "request target \"{}\" is not a path",
                crate::error::echo(path)
            )));
        }
        let component = route(&self.routes, path);
        record.component = Some(component);
        if crate::grpc::came_through(request.headers(), &self.instance) {
            return Err(RestError::Loop { component });
        }
        let upstreams = match component {
            Component::Controller => self.controller.as_ref(),
            Component::Broker => self.broker.as_ref(),
        }
        .ok_or(RestError::NotConfigured {
            component,
            method: request.method().clone(),
            path: path.to_owned(),
        })?;
        // Both held until the response has been sent (they live in the record).
        let per_connection = peer.rest_requests.clone().try_acquire_owned().map_err(|_| {
            RestError::Busy {
                component,
                limit: format!(
                    "this client connection has rest.max_requests_per_connection = {} requests in flight",
                    self.max_requests_per_connection
                ),
            }
        })?;
        let per_component = upstreams
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| RestError::Busy {
                component,
                limit: format!(
                    "rest.max_requests_per_component = {} requests are in flight to the {}",
                    self.max_requests_per_component,
                    component.name()
                ),
            })?;
        record.held = vec![per_connection, per_component];

        let (parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let mut headers = forwarded_headers(&parts, peer);
        upstreams.credentials.apply(&mut headers);
        headers.append(crate::grpc::VIA_HEADER, self.instance.clone());
        let idempotent = is_idempotent(&parts.method);
        let slot = Arc::new(BodySlot::new(body));

        let now_ms = self.now_ms();
        let candidates = upstreams.candidates(now_ms);
        let mut causes: Vec<String> = Vec::new();
        let mut all_connect_failures = true;
        let mut attempt: u8 = 0;
        let mut index = candidates[0];
        loop {
            let upstream = &upstreams.urls[index];
            record.upstream = Some(upstream.url.display.clone());
            let uri = format!(
                "{}{}{}",
                upstream.url.origin, upstream.url.base_path, path_and_query
            );
            let uri = Uri::try_from(uri).map_err(|err| {
                RestError::BadRequest(format!("cannot forward {path_and_query:?}: {err}"))
            })?;
            let mut upstream_request = Request::new(AttemptBody::new(slot.clone(), attempt));
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = uri;
            // Pinot's REST servers speak HTTP/1.1 whatever the caller used.
            *upstream_request.version_mut() = Version::HTTP_11;
            *upstream_request.headers_mut() = headers.clone();

            let sent = tokio::time::timeout_at(
                deadline.into(),
                upstreams.client.request(upstream_request),
            )
            .await;
            let err = match sent {
                Ok(Ok(response)) => {
                    upstream.down_until_ms.store(0, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(err)) => err,
                Err(_elapsed) => {
                    return Err(RestError::Timeout {
                        component,
                        url: upstream.url.display.clone(),
                        timeout_ms: self.request_timeout.as_millis(),
                    })
                }
            };
            if let Some(reason) = slot.client_error() {
                return Err(RestError::ClientBody(reason));
            }
            let cause = error_chain(&err);
            let connect_failed = err.is_connect();
            if connect_failed {
                let backoff_ms = self.backoff.as_millis() as u64;
                upstream.down_until_ms.store(
                    self.now_ms().saturating_add(backoff_ms).max(1),
                    Ordering::Relaxed,
                );
                tracing::warn!(
                    component = %component.name(),
                    upstream = %upstream.url.display,
                    backoff_ms,
                    error = %cause,
                    "cannot connect; skipping this URL for the back-off period"
                );
            } else {
                all_connect_failures = false;
            }
            causes.push(format!("{}: {cause}", upstream.url.display));

            // Retry once, and only when the upstream cannot have acted on the request: nothing
            // connected, or a method that is safe to repeat. Either way the body must still be
            // unread, or there is nothing left to send.
            let next = match candidates.get(1) {
                Some(&other) => Some(other),
                // With one URL, a broken keep-alive connection is worth one more try there;
                // a URL that just refused to connect is not.
                None if !connect_failed => Some(index),
                None => None,
            };
            let may_retry = attempt == 0 && (connect_failed || idempotent);
            match next {
                Some(next) if may_retry && slot.hand_to(attempt + 1) => {
                    tracing::debug!(error = %cause, "retrying on another URL");
                    attempt += 1;
                    index = next;
                }
                _ if all_connect_failures => {
                    return Err(RestError::Unreachable {
                        component,
                        causes: causes.join("; "),
                    })
                }
                _ => {
                    return Err(RestError::Upstream {
                        component,
                        causes: causes.join("; "),
                    })
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The TLS configs of `https://` upstreams, for the reloader.
    pub fn tls_configs(&self) -> Vec<Arc<dyn Reload>> {
        [&self.controller, &self.broker]
            .into_iter()
            .flatten()
            .filter_map(|upstreams| upstreams.tls.clone())
            .map(|tls| tls as Arc<dyn Reload>)
            .collect()
    }

    /// The next broker to send a `PinotQueryBroker/Submit` call to, round robin, when
    /// `[broker] grpc_port` is set.
    pub fn broker_grpc_target(&self) -> Option<crate::route::Target> {
        let broker = self.broker.as_ref()?;
        let port = broker.grpc_port?;
        let index = broker.next.fetch_add(1, Ordering::Relaxed) % broker.urls.len();
        let origin = &broker.urls[index].url.origin;
        let host = origin.split_once("://")?.1.rsplit_once(':')?.0;
        crate::route::Target::parse(host, &port.to_string()).ok()
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// An error and all its causes, without the legacy client's own "client error (Kind)" line.
fn error_chain(err: &hyper_util::client::legacy::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Headers that belong to one connection, not to the request or response, and are never
/// forwarded (RFC 9110 section 7.6.1), plus `expect`, which the listening side already answers,
/// and `http2-settings` of an h2c upgrade.
const HOP_BY_HOP: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
    HeaderName::from_static("http2-settings"),
];

/// Removes hop-by-hop headers and the headers the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The headers sent upstream: the caller's minus hop-by-hop ones and `Host` (the upstream's
/// own is set from its URL), plus `X-Forwarded-For`, `-Proto` and `-Host`.
fn forwarded_headers(parts: &http::request::Parts, peer: &Peer) -> HeaderMap {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    let original_host = headers.remove(header::HOST).or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });

    // HTTP/2 callers may split cookies over several fields; HTTP/1.1 wants one (RFC 9113 8.2.3).
    let cookies: Vec<&[u8]> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if cookies.len() > 1 {
        if let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..])) {
            headers.insert(header::COOKIE, joined);
        }
    }

    let client_ip = peer.addr.ip().to_canonical().to_string();
    let earlier: Vec<&[u8]> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let mut chain = earlier.join(&b", "[..]);
    if !chain.is_empty() {
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(client_ip.as_bytes());
    let forwarded_for = HeaderValue::from_bytes(&chain)
        .or_else(|_| HeaderValue::from_str(&client_ip))
        .ok();
    if let Some(value) = forwarded_for {
        headers.insert("x-forwarded-for", value);
    }
    // This hop's view: the proxy cannot tell whether a caller's own X-Forwarded-Proto/-Host
    // come from a trusted load balancer, so it states what it saw itself.
    let proto = if peer.tls { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    match original_host {
        Some(host) => {
            headers.insert("x-forwarded-host", host);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
    headers
}

/// An error the proxy answers itself, as an HTTP status with a JSON body.
#[derive(Debug, thiserror::Error)]
enum RestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{method} {path} goes to the {} but no [{}] section is configured", component.name(), component.name())]
    NotConfigured {
        component: Component,
        method: Method,
        path: String,
    },
    #[error("no {} reachable: {causes}", component.name())]
    Unreachable {
        component: Component,
        causes: String,
    },
    #[error("{} failed before responding: {causes}", component.name())]
    Upstream {
        component: Component,
        causes: String,
    },
    #[error("{} {url}: no response within {timeout_ms} ms (rest.request_timeout_ms)", component.name())]
    Timeout {
        component: Component,
        url: String,
        timeout_ms: u128,
    },
    #[error("reading the request body from the client failed: {0}")]
    ClientBody(String),
    #[error("too many requests: {limit}; try again later")]
    Busy { component: Component, limit: String },
    #[error("the request came back through this proxy: a [{}] URL points at the proxy itself", component.name())]
    Loop { component: Component },
}

impl RestError {
    fn status(&self) -> StatusCode {
        match self {
            RestError::BadRequest(_) | RestError::ClientBody(_) => StatusCode::BAD_REQUEST,
            // A missing section is a configuration mistake that retrying will not fix, so it
            // is not 503; 502 says "the gateway has nowhere valid to send this".
            RestError::NotConfigured { .. } | RestError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            RestError::Unreachable { .. } | RestError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RestError::Loop { .. } => StatusCode::LOOP_DETECTED,
        }
    }

    fn source_side(&self) -> Source {
        match self {
            RestError::BadRequest(_) | RestError::ClientBody(_) => Source::Client,
            RestError::NotConfigured { .. } | RestError::Loop { .. } | RestError::Busy { .. } => {
                Source::Proxy
            }
            RestError::Unreachable { .. }
            | RestError::Upstream { .. }
            | RestError::Timeout { .. } => Source::Upstream,
        }
    }

    fn component(&self) -> Option<Component> {
        match self {
            RestError::BadRequest(_) | RestError::ClientBody(_) => None,
            RestError::NotConfigured { component, .. }
            | RestError::Unreachable { component, .. }
            | RestError::Upstream { component, .. }
            | RestError::Timeout { component, .. }
            | RestError::Busy { component, .. }
            | RestError::Loop { component } => Some(*component),
        }
    }

    fn to_response(&self, path: &str) -> Response<ProxyBody> {
        crate::error::json_error::<http_body_util::Full<Bytes>>(
            self.status(),
            &self.to_string(),
            self.component().map(Component::name),
            path,
        )
        .map(|body| body.map_err(|never| match never {}).boxed_unsync())
    }
}

/// The caller's request body, held so that a retry can still send it when the first attempt
/// never read any of it. Only the attempt that owns the slot may take the body.
struct BodySlot {
    state: Mutex<SlotState>,
    client_failed: Mutex<Option<String>>,
    /// Whether the caller's body was empty from the start, for attempts that have not taken it.
    end_stream: bool,
    size_hint: SizeHint,
}

struct SlotState {
    body: Option<Incoming>,
    owner: u8,
}

impl BodySlot {
    fn new(body: Incoming) -> BodySlot {
        BodySlot {
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
            state: Mutex::new(SlotState {
                body: Some(body),
                owner: 0,
            }),
            client_failed: Mutex::new(None),
        }
    }

    /// Gives the untouched body to attempt `attempt`; false when an attempt already read it.
    fn hand_to(&self, attempt: u8) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.body.is_some() {
            state.owner = attempt;
            true
        } else {
            false
        }
    }

    fn take(&self, attempt: u8) -> Option<Incoming> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.owner == attempt {
            state.body.take()
        } else {
            None
        }
    }

    fn client_error(&self) -> Option<String> {
        self.client_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The request body of one upstream attempt: takes the caller's body from the slot when the
/// upstream first asks for data, and passes its frames through as they come.
struct AttemptBody {
    slot: Arc<BodySlot>,
    attempt: u8,
    body: Option<Incoming>,
    done: bool,
}

impl AttemptBody {
    fn new(slot: Arc<BodySlot>, attempt: u8) -> AttemptBody {
        AttemptBody {
            slot,
            attempt,
            body: None,
            done: false,
        }
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.body.is_none() {
            this.body = this.slot.take(this.attempt);
            if this.body.is_none() {
                // Only reachable by an attempt that was given up on: it must not send anything.
                this.done = true;
                return Poll::Ready(Some(Err("request body was handed to a retry".into())));
            }
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(err)) => {
                this.done = true;
                let reason = err.to_string();
                *this
                    .slot
                    .client_failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(reason);
                Poll::Ready(Some(Err(err.into())))
            }
            None => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => self.done || body.is_end_stream(),
            None => self.done || self.slot.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.slot.size_hint,
        }
    }
}

/// The response body sent to the caller: the upstream's frames as they come, cut with an error
/// when the request timeout passes. Dropping it (the caller went away) drops the upstream
/// response, which closes that upstream connection.
struct ResponseBody {
    inner: Option<Incoming>,
    deadline: Pin<Box<Sleep>>,
    timeout_ms: u128,
    record: Record,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.inner = None;
            let reason = format!(
                "response body not finished within {} ms (rest.request_timeout_ms)",
                this.timeout_ms
            );
            this.record.outcome = Outcome::Failed(Source::Upstream, reason.clone());
            return Poll::Ready(Some(Err(reason.into())));
        }
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes_out += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                this.inner = None;
                let reason = format!("response body from upstream failed: {err}");
                this.record.outcome = Outcome::Failed(Source::Upstream, reason);
                Poll::Ready(Some(Err(err.into())))
            }
            None => {
                this.inner = None;
                this.record.outcome = Outcome::Done;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that is empty from the start may be dropped without ever being polled.
        if matches!(self.record.outcome, Outcome::InFlight)
            && self.inner.as_ref().is_some_and(Body::is_end_stream)
        {
            self.record.outcome = Outcome::Done;
        }
    }
}

/// One request's log line, written once when it ends, fails or is dropped by the caller.
struct Record {
    method: Method,
    path: String,
    component: Option<Component>,
    upstream: Option<String>,
    status: Option<u16>,
    started: Instant,
    bytes_out: u64,
    outcome: Outcome,
    /// Request limits' permits, returned when the response has been sent.
    held: Vec<tokio::sync::OwnedSemaphorePermit>,
}

enum Outcome {
    InFlight,
    Done,
    Failed(Source, String),
}

impl Record {
    fn new(method: &Method, path: &str) -> Record {
        Record {
            method: method.clone(),
            path: crate::error::echo(path),
            component: None,
            upstream: None,
            status: None,
            started: Instant::now(),
            bytes_out: 0,
            outcome: Outcome::InFlight,
            held: Vec::new(),
        }
    }

    fn fail(&mut self, err: &RestError, status: StatusCode) {
        self.status = Some(status.as_u16());
        self.outcome = Outcome::Failed(err.source_side(), err.to_string());
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let component = self.component.map_or("none", Component::name);
        let upstream = self.upstream.as_deref().unwrap_or("none");
        let status = self
            .status
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (method, path, bytes_out) = (&self.method, &self.path, self.bytes_out);
        match &self.outcome {
            Outcome::Done => tracing::info!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                "rest request"
            ),
            Outcome::InFlight => tracing::info!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                outcome = "cancelled by client",
                "rest request"
            ),
            Outcome::Failed(Source::Client, error) => tracing::info!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                side = %Source::Client, %error,
                "rest request failed"
            ),
            Outcome::Failed(side, error) => tracing::warn!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                %side, %error,
                "rest request failed"
            ),
        }
    }
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

    #[test]
    fn built_in_routes() {
        let cases = [
            ("/query/sql", Component::Broker),
            ("/query", Component::Broker),
            ("/query/timeseries", Component::Broker),
            ("/query/12345", Component::Broker),
            ("/timeseries/api/v1/query_range", Component::Broker),
            ("/debug/routingTable/airlineStats", Component::Broker),
            ("/debug/routingTable/sql", Component::Broker),
            (
                "/debug/routingTableWithOptionalSegments/t",
                Component::Broker,
            ),
            ("/debug/timeBoundary/airlineStats", Component::Broker),
            ("/debug/serverRoutingStats", Component::Broker),
            ("/responseStore/123/results", Component::Broker),
            ("/tables", Component::Controller),
            ("/tables/t/schema", Component::Controller),
            ("/tables/t/instances", Component::Controller),
            ("/instances/Broker_b_8099", Component::Controller),
            ("/schemas/t", Component::Controller),
            ("/segments/t", Component::Controller),
            ("/health", Component::Controller),
            ("/debug/tables/t", Component::Controller),
            ("/queries", Component::Controller),
            ("/querysomething", Component::Controller),
            ("/sql", Component::Controller),
            ("/", Component::Controller),
            ("//query/sql", Component::Controller),
        ];
        for (path, expected) in cases {
            assert_eq!(route(&[], path), expected, "{path}");
        }
    }

    #[test]
    fn user_routes_win_longest_first_at_segment_boundaries() {
        let routes = [
            RouteConfig {
                prefix: "/debug".into(),
                to: Component::Controller,
            },
            RouteConfig {
                prefix: "/tables/special".into(),
                to: Component::Broker,
            },
            RouteConfig {
                prefix: "/tables/special/schema".into(),
                to: Component::Controller,
            },
        ];
        let cases = [
            // A user route beats a longer built-in one.
            ("/debug/routingTable/t", Component::Controller),
            ("/tables/special", Component::Broker),
            ("/tables/special/instances", Component::Broker),
            ("/tables/special/schema", Component::Controller),
            ("/tables/specialty", Component::Controller),
            ("/query/sql", Component::Broker),
        ];
        for (path, expected) in cases {
            assert_eq!(route(&routes, path), expected, "{path}");
        }
        let everything = [RouteConfig {
            prefix: "/".into(),
            to: Component::Broker,
        }];
        assert_eq!(route(&everything, "/tables"), Component::Broker);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other"),
            ("x-private", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "websocket"),
            ("authorization", "Basic dTpw"),
            ("accept", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization"]);
    }

    #[test]
    fn errors_are_json_with_the_component() {
        let err = RestError::Unreachable {
            component: Component::Controller,
            causes: "http://c:9000: tcp connect error: \"refused\"".into(),
        };
        let response = err.to_response("/tables");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            err.to_string(),
            "no controller reachable: http://c:9000: tcp connect error: \"refused\""
        );
        let missing = RestError::NotConfigured {
            component: Component::Broker,
            method: Method::POST,
            path: "/query/sql".into(),
        };
        assert_eq!(missing.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            missing.to_string(),
            "POST /query/sql goes to the broker but no [broker] section is configured"
        );
    }

    #[test]
    fn candidates_skip_backed_off_urls_and_keep_them_as_a_last_resort() {
        let config = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n[controller]\n\
             urls = [\"http://c0:9000\", \"http://c1:9000\", \"http://c2:9000\"]\n",
        )
        .unwrap();
        let rest = Rest::new(&config, crate::grpc::instance_id())
            .unwrap()
            .unwrap();
        let upstreams = rest.controller.as_ref().unwrap();
        assert_eq!(upstreams.candidates(10), [0, 1, 2]);
        assert_eq!(upstreams.candidates(10), [1, 2, 0]);
        upstreams.urls[0]
            .down_until_ms
            .store(500, Ordering::Relaxed);
        upstreams.urls[1]
            .down_until_ms
            .store(300, Ordering::Relaxed);
        assert_eq!(upstreams.candidates(10), [2, 1, 0]);
        // After the back-off the URL is up again.
        assert_eq!(upstreams.candidates(400), [1, 2, 0]);
    }
}
