//! The admin listener (`[admin] listen`), plain HTTP/1.1 for Kubernetes and Prometheus:
//! `/livez` (the process runs), `/readyz` (200 once serving, and the server list read when
//! `servers.discover` is on; 503 while starting or draining), `/metrics` (Prometheus text) and
//! `/debug/targets` (the upstream pool and the discovery state, as JSON).

use crate::discovery::Discovery;
use crate::grpc::Forwarder;
use crate::http::{BoxError, ProxyBody};
use crate::metrics::Metrics;
use crate::respond::json_string;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Whether the proxy should get traffic: not while starting, yes while serving, not again once
/// it drains.
#[derive(Clone, Debug, Default)]
pub(crate) struct Readiness(Arc<AtomicU8>);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub(crate) fn serving(&self) {
        // A drain that began before serving did is not undone.
        let _ = self
            .0
            .compare_exchange(STARTING, SERVING, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    fn state(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting",
            SERVING => "ready",
            _ => "draining",
        }
    }
}

/// A bound admin listener.
pub(crate) struct Admin {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    readiness: Readiness,
    metrics: Arc<Metrics>,
    forwarder: Forwarder,
    discovery: Option<Arc<Discovery>>,
}

impl Admin {
    pub(crate) async fn bind(
        addr: SocketAddr,
        readiness: Readiness,
        metrics: Arc<Metrics>,
        forwarder: Forwarder,
        discovery: Option<Arc<Discovery>>,
    ) -> anyhow::Result<Admin> {
        use anyhow::Context;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin.listen: cannot listen on {addr}"))?;
        Ok(Admin {
            listener,
            state: Arc::new(State {
                readiness,
                metrics,
                forwarder,
                discovery,
            }),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until the returned task is aborted.
    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = self.listener.accept().await else {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let state = self.state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let response = state.answer(&request);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }
}

impl State {
    fn answer(&self, request: &Request<Incoming>) -> Response<ProxyBody> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        }
        match request.uri().path() {
            "/livez" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.readiness.state() {
                // Ready only once the servers calls may reach are known.
                "ready" if self.discovery.as_ref().is_some_and(|d| !d.status().loaded) => {
                    text(StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
                }
                "ready" => text(StatusCode::OK, "ready\n".into()),
                state => text(StatusCode::SERVICE_UNAVAILABLE, format!("{state}\n")),
            },
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            "/debug/targets" => json(self.targets()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin port serves /livez, /readyz, /metrics and /debug/targets\n"
                    .into(),
            ),
        }
    }

    /// `{"targets": [{"target", "connections", "in_flight", "opened", "last_error"}]}`, and
    /// with `servers.discover`, `"discovery": {"servers", "age_ms", "last_error"}` (`age_ms`:
    /// since the last good read, `null` before the first).
    fn targets(&self) -> String {
        let targets: Vec<String> = self
            .forwarder
            .targets()
            .iter()
            .map(|t| {
                format!(
                    "{{\"target\":{},\"connections\":{},\"in_flight\":{},\"opened\":{},\"last_error\":{}}}",
                    json_string(&t.target),
                    t.connections,
                    t.in_flight,
                    t.opened,
                    t.last_error.as_deref().map_or("null".into(), json_string),
                )
            })
            .collect();
        let discovery = match &self.discovery {
            Some(discovery) => {
                let status = discovery.status();
                format!(
                    ",\"discovery\":{{\"servers\":{},\"age_ms\":{},\"last_error\":{}}}",
                    status.servers,
                    status.age_ms.map_or("null".into(), |ms| ms.to_string()),
                    status
                        .last_error
                        .as_deref()
                        .map_or("null".into(), json_string),
                )
            }
            None => String::new(),
        };
        format!("{{\"targets\":[{}]{discovery}}}\n", targets.join(","))
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(body: String) -> Response<ProxyBody> {
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
