//! `[servers] discover`: the Pinot servers calls may reach, read from the controller
//! (`GET /instances`, then `GET /instances/{name}` per server) at start and every
//! `discover_interval_ms`. The set is swapped whole, so a refresh never blocks a call, and a
//! failed read keeps the last good list.

use crate::config::{ComponentConfig, RestConfig, ServersConfig, UpstreamTlsConfig, UpstreamUrl};
use crate::http::VIA_HEADER;
use crate::metrics::{Metrics, ResultLabels};
use crate::policy::allowlist::{LiveServers, ServerSet};
use crate::policy::target::Host;
use crate::policy::{Secrets, Target, UpstreamCredentials};
use crate::tls::{self, UpstreamTls};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Instance details read at once, each on its own keep-alive connection.
const CONCURRENCY: usize = 8;
/// Largest `GET /instances` answer read (about 100 000 instance names).
const MAX_LIST_BYTES: usize = 16 << 20;
/// Largest `GET /instances/{name}` answer read.
const MAX_INSTANCE_BYTES: usize = 1 << 20;
/// Until the first list is read, retry this often (or every interval, when shorter).
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Most server names one log line lists.
const LOGGED_NAMES: usize = 20;

/// The discovered servers, how they are read, and how the last reads went.
pub(crate) struct Discovery {
    live: Arc<LiveServers>,
    controller: Controller,
    tags: Option<Vec<String>>,
    interval: Duration,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    last_success: Option<Instant>,
    last_error: Option<String>,
    /// The last read failed: an outage is logged once, and its end once.
    failing: bool,
}

/// How discovery stands, for `/readyz` and `/debug/targets`.
pub(crate) struct Status {
    pub(crate) loaded: bool,
    pub(crate) servers: usize,
    /// Time since the last good read.
    pub(crate) age_ms: Option<u128>,
    /// Why the last read failed, when it did.
    pub(crate) last_error: Option<String>,
}

/// How the controller is reached: its URLs in order, TLS, credentials, time limits.
struct Controller {
    urls: Vec<UpstreamUrl>,
    tls: Option<Arc<UpstreamTls>>,
    server_name: Option<ServerName<'static>>,
    credentials: UpstreamCredentials,
    via: HeaderValue,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// A connection to the controller, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Sender = SendRequest<Empty<Bytes>>;

/// `GET /instances/{name}`, the keys read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    host_name: String,
    enabled: bool,
    /// -1 when the server has no gRPC port.
    #[serde(default = "no_port")]
    grpc_port: i64,
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// `"true"` when the server was taken out of queries.
    #[serde(default)]
    queries_disabled: Option<serde_json::Value>,
}

fn no_port() -> i64 {
    -1
}

#[derive(Deserialize)]
struct InstanceList {
    instances: Vec<String>,
}

impl Discovery {
    /// `None` unless `servers.discover` is on; loads `[controller]` TLS files and credentials.
    pub(crate) fn new(
        servers: &ServersConfig,
        controller: Option<&ComponentConfig>,
        rest: &RestConfig,
        via: HeaderValue,
        secrets: &Secrets,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Discovery>> {
        let (true, Some(component)) = (servers.discover, controller) else {
            return Ok(None);
        };
        let urls = crate::config::parse_urls("controller", &component.urls)?;
        let https = urls.iter().any(|url| url.origin.starts_with("https:"));
        let tls_config = match (&component.tls, https) {
            (Some(tls_config), _) => Some(tls_config.clone()),
            (None, true) => Some(UpstreamTlsConfig::default()),
            (None, false) => None,
        };
        let tls = tls_config
            .as_ref()
            .map(|config| tls::upstream_tls(config, "controller.tls", tls::ALPN_HTTP1, metrics))
            .transpose()?;
        let server_name = match tls_config.and_then(|config| config.server_name) {
            Some(name) => Some(ServerName::try_from(name)?),
            None => None,
        };
        Ok(Some(Discovery {
            live: Arc::new(LiveServers::default()),
            controller: Controller {
                urls,
                tls,
                server_name,
                credentials: UpstreamCredentials::resolve(
                    &component.auth,
                    "controller.auth",
                    secrets,
                )?,
                via,
                connect_timeout: Duration::from_millis(rest.connect_timeout_ms),
                request_timeout: Duration::from_millis(servers.discover_timeout_ms),
            },
            tags: servers.discover_tags.clone(),
            interval: Duration::from_millis(servers.discover_interval_ms),
            state: Mutex::new(State::default()),
            metrics: metrics.clone(),
        }))
    }

    /// The live set the allowlist reads.
    pub(crate) fn live(&self) -> Arc<LiveServers> {
        self.live.clone()
    }

    /// The TLS config for `https://` controller URLs, for the reloader.
    pub(crate) fn tls(&self) -> Option<Arc<UpstreamTls>> {
        self.controller.tls.clone()
    }

    pub(crate) fn status(&self) -> Status {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Status {
            loaded: state.last_success.is_some(),
            servers: self.live.get().map_or(0, |set| set.len()),
            age_ms: state.last_success.map(|at| at.elapsed().as_millis()),
            last_error: state.last_error.clone(),
        }
    }

    /// Reads the list now and then every interval, until `alive` is gone.
    pub(crate) fn spawn(self: Arc<Self>, alive: Weak<()>) {
        tokio::spawn(async move {
            loop {
                self.refresh().await;
                let wait = if self.status().loaded {
                    self.interval
                } else {
                    self.interval.min(FIRST_RETRY)
                };
                tokio::time::sleep(wait).await;
                if alive.strong_count() == 0 {
                    return;
                }
            }
        });
    }

    /// One read, from the first controller URL that answers in full.
    async fn refresh(&self) {
        let mut errors = Vec::new();
        for url in &self.controller.urls {
            match self.controller.read(url, self.tags.as_deref()).await {
                Ok(servers) => return self.succeeded(servers, url),
                Err(err) => errors.push(format!("{}: {err}", url.display)),
            }
        }
        self.failed(errors.join("; "));
    }

    fn succeeded(&self, servers: Vec<Target>, url: &UpstreamUrl) {
        let set = ServerSet::new(servers);
        let count = set.len();
        let previous = self.live.replace(set);
        let current = self.live.get().unwrap_or_default();
        self.metrics
            .discovery_refreshes
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        self.metrics.discovered_servers.set(count as i64);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.discovery_last_success.set(now.as_secs_f64());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_success = Some(Instant::now());
        state.last_error = None;
        if std::mem::take(&mut state.failing) {
            tracing::info!(controller = %url.display, servers = count, "server list read again from the controller");
        }
        drop(state);
        let Some(previous) = previous else {
            tracing::info!(
                controller = %url.display,
                servers = count,
                list = %names(&current.targets()),
                "server list loaded from the controller"
            );
            return;
        };
        let added: Vec<Target> = current
            .targets()
            .into_iter()
            .filter(|target| !previous.contains(target))
            .collect();
        let removed: Vec<Target> = previous
            .targets()
            .into_iter()
            .filter(|target| !current.contains(target))
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(
                servers = count,
                added = %names(&added),
                removed = %names(&removed),
                "server list changed"
            );
        }
    }

    fn failed(&self, error: String) {
        self.metrics
            .discovery_refreshes
            .get_or_create(&ResultLabels { result: "failed" })
            .inc();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.failing {
            state.failing = true;
            if state.last_success.is_some() {
                tracing::warn!(error = %error, "cannot read the server list from the controller; keeping the last good list until it answers");
            } else {
                tracing::warn!(error = %error, "cannot read the server list from the controller; calls to servers outside servers.allow fail until it answers");
            }
        }
        state.last_error = Some(error);
    }
}

/// Up to [`LOGGED_NAMES`] targets, comma separated.
fn names(targets: &[Target]) -> String {
    let mut out: Vec<String> = targets
        .iter()
        .take(LOGGED_NAMES)
        .map(Target::to_string)
        .collect();
    if targets.len() > LOGGED_NAMES {
        out.push(format!("... ({} in all)", targets.len()));
    }
    out.join(", ")
}

impl Controller {
    /// The servers calls may reach, as the controller at `url` lists them.
    async fn read(
        &self,
        url: &UpstreamUrl,
        tags: Option<&[String]>,
    ) -> Result<Vec<Target>, String> {
        let mut first = self.open(url).await?;
        let list = self
            .get(&mut first, url, "/instances", MAX_LIST_BYTES)
            .await?
            .ok_or("GET /instances: HTTP 404 Not Found")?;
        let list: InstanceList = serde_json::from_slice(&list)
            .map_err(|err| format!("GET /instances: not an instance list: {err}"))?;
        let names: Vec<String> = list
            .instances
            .into_iter()
            .filter(|name| name.starts_with("Server_"))
            .collect();
        let workers = CONCURRENCY.min(names.len()).max(1);
        let queue = Mutex::new(names.into_iter());
        let mut first = Some(first);
        let reads = (0..workers).map(|_| self.worker(url, first.take(), &queue, tags));
        let found = futures_util::future::try_join_all(reads).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Reads instances from `queue` until it is empty, on one connection.
    async fn worker(
        &self,
        url: &UpstreamUrl,
        mut conn: Option<Sender>,
        queue: &Mutex<std::vec::IntoIter<String>>,
        tags: Option<&[String]>,
    ) -> Result<Vec<Target>, String> {
        let mut found = Vec::new();
        loop {
            let Some(name) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                return Ok(found);
            };
            let sender = match &mut conn {
                Some(sender) if !sender.is_closed() => sender,
                _ => conn.insert(self.open(url).await?),
            };
            let path = format!("/instances/{}", encode(&name));
            // Gone since the list was read: nothing to allow.
            let Some(body) = self.get(sender, url, &path, MAX_INSTANCE_BYTES).await? else {
                continue;
            };
            let instance: Instance = serde_json::from_slice(&body)
                .map_err(|err| format!("GET {path}: not an instance: {err}"))?;
            if let Some(target) = eligible(&name, instance, tags) {
                found.push(target);
            }
        }
    }

    /// A new HTTP/1.1 connection to `url`.
    async fn open(&self, url: &UpstreamUrl) -> Result<Sender, String> {
        let uri: Uri = url.origin.parse().map_err(|err| format!("{err}"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let limit = self.connect_timeout;
        let late = || {
            format!(
                "no connection within {} ms (rest.connect_timeout_ms)",
                limit.as_millis()
            )
        };
        let tcp = tokio::time::timeout(limit, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| late())?
            .map_err(|err| format!("cannot connect: {err}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if https {
            let tls = self.tls.as_ref().ok_or("https URL without a TLS config")?;
            let name = match &self.server_name {
                Some(name) => name.clone(),
                None => ServerName::try_from(host.clone())
                    .map_err(|err| format!("TLS server name {host}: {err}"))?,
            };
            let connecting = tokio_rustls::TlsConnector::from(tls.get()).connect(name, tcp);
            let stream = tokio::time::timeout(limit, connecting)
                .await
                .map_err(|_| late())?
                .map_err(|err| format!("TLS handshake failed: {err}"))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| format!("HTTP/1.1 handshake failed: {err}"))?;
        // Ends when the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// `GET path` on `sender`: the body of a 200, `None` for a 404, else an error.
    async fn get(
        &self,
        sender: &mut Sender,
        url: &UpstreamUrl,
        path: &str,
        limit: usize,
    ) -> Result<Option<Bytes>, String> {
        let fetch = async {
            sender
                .ready()
                .await
                .map_err(|err| format!("connection closed: {err}"))?;
            let authority = url.origin.split_once("://").map_or("", |(_, rest)| rest);
            let mut request = Request::get(format!("{}{path}", url.base_path))
                .header(header::HOST, authority)
                .header(header::ACCEPT, "application/json")
                .body(Empty::new())
                .map_err(|err| err.to_string())?;
            self.credentials.apply(request.headers_mut());
            request.headers_mut().append(VIA_HEADER, self.via.clone());
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| err.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|err| format!("reading the answer: {err}"))?
                .to_bytes();
            match status {
                StatusCode::OK => Ok(Some(body)),
                StatusCode::NOT_FOUND => Ok(None),
                status => {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                    Err(format!(
                        "HTTP {status}: {}",
                        crate::error::echo(text.trim())
                    ))
                }
            }
        };
        let limit_ms = self.request_timeout.as_millis();
        tokio::time::timeout(self.request_timeout, fetch)
            .await
            .map_err(|_| {
                format!("GET {path}: no answer within {limit_ms} ms (servers.discover_timeout_ms)")
            })?
            .map_err(|err: String| format!("GET {path}: {err}"))
    }
}

/// The server an instance is, when calls may reach it: enabled, taking queries, with a gRPC
/// port, carrying one of `tags` (when given), and a host name that parses. The host comes
/// from `hostName`, never from the instance id, whose host part may hold `_`.
fn eligible(name: &str, instance: Instance, tags: Option<&[String]>) -> Option<Target> {
    let skip = |why: &str| {
        tracing::debug!(instance = %crate::error::echo(name), "server not allowed: {why}");
        None
    };
    let queries_disabled = match &instance.queries_disabled {
        Some(serde_json::Value::Bool(disabled)) => *disabled,
        Some(serde_json::Value::String(text)) => text.eq_ignore_ascii_case("true"),
        _ => false,
    };
    if !instance.enabled {
        return skip("disabled");
    }
    if queries_disabled {
        return skip("queries disabled");
    }
    let Ok(port) = u16::try_from(instance.grpc_port) else {
        return skip("no gRPC port");
    };
    if port == 0 {
        return skip("no gRPC port");
    }
    if let Some(tags) = tags {
        let carried = instance.tags.unwrap_or_default();
        if !carried.iter().any(|tag| tags.contains(tag)) {
            return skip("none of servers.discover_tags");
        }
    }
    // Older Pinot releases stored the id's prefix in hostName too; Pinot's own routing
    // (`ServerInstance`) strips it the same way.
    let host_name = instance.host_name.strip_prefix("Server_");
    match Host::parse(host_name.unwrap_or(&instance.host_name)) {
        Ok(host) => Some(Target { host, port }),
        Err(err) => skip(&err),
    }
}

/// `name` as one path segment.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(json: &str) -> Instance {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn eligible_servers_take_queries_on_a_grpc_port() {
        let name = "Server_pinot-server-0.pinot-server-headless.pinot.svc.cluster.local_8098";
        let base = r#""hostName":"Pinot-Server-0.pinot-server-headless.pinot.svc.cluster.local","port":"8098""#;
        let found = eligible(
            name,
            instance(&format!(
                r#"{{{base},"enabled":true,"grpcPort":8090,"tags":["T_OFFLINE"]}}"#
            )),
            None,
        );
        assert_eq!(
            found.unwrap().to_string(),
            "pinot-server-0.pinot-server-headless.pinot.svc.cluster.local:8090"
        );
        for refused in [
            r#""enabled":false,"grpcPort":8090"#,
            r#""enabled":true,"grpcPort":-1"#,
            r#""enabled":true"#,
            r#""enabled":true,"grpcPort":8090,"queriesDisabled":"true""#,
            r#""enabled":true,"grpcPort":8090,"queriesDisabled":true"#,
        ] {
            let json = format!("{{{base},{refused}}}");
            assert!(eligible(name, instance(&json), None).is_none(), "{json}");
        }
        let json =
            format!(r#"{{{base},"enabled":true,"grpcPort":8090,"queriesDisabled":"false"}}"#);
        assert!(eligible(name, instance(&json), None).is_some());
        let prefixed = r#"{"hostName":"Server_10.1.2.3","enabled":true,"grpcPort":8090}"#;
        let found = eligible("Server_10.1.2.3_8098", instance(prefixed), None);
        assert_eq!(found.unwrap().to_string(), "10.1.2.3:8090");
        let tagged = format!(r#"{{{base},"enabled":true,"grpcPort":8090,"tags":["A_OFFLINE"]}}"#);
        let wanted = ["B_OFFLINE".to_string()];
        assert!(eligible(name, instance(&tagged), Some(&wanted)).is_none());
        let wanted = ["B_OFFLINE".to_string(), "A_OFFLINE".to_string()];
        assert!(eligible(name, instance(&tagged), Some(&wanted)).is_some());
    }

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(encode("Server_a-b.c_8098"), "Server_a-b.c_8098");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
