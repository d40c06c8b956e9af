//! The listening side: accept connections, serve HTTP/2 (h2c prior knowledge) and HTTP/1.1 on
//! one port, dispatch gRPC to the forwarder, and drain connections on shutdown.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::grpc::{Forwarder, ProxyBody, RoutingLimits};
use crate::idle::{Activity, Tracked};
use crate::rest::{Peer, Rest};
use crate::tls::{self, ClientIdentity, ServerTls, UpstreamTls};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound, not yet serving proxy.
pub struct Server {
    listener: TcpListener,
    handlers: Handlers,
    tls: Option<(Arc<ServerTls>, Duration)>,
    upstream_tls: Option<Arc<UpstreamTls>>,
    builder: auto::Builder<TokioExecutor>,
    grace: Duration,
    /// `server.header_timeout_ms` and `server.idle_timeout_ms`.
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Failed TLS handshakes are logged at most 10 lines a second.
    handshake_log: Arc<std::sync::Mutex<crate::auth::LogBudget>>,
    /// One permit per open client connection.
    connections: Arc<tokio::sync::Semaphore>,
    /// Background tasks of this server stop when it is dropped.
    _alive: Arc<()>,
}

impl Server {
    /// Everything startup can fail on before binding: TLS files, secrets, URLs. `--check`
    /// runs this, so a config it calls ok also starts.
    pub fn check(config: &Config) -> anyhow::Result<()> {
        Prepared::new(config).map(drop)
    }

    /// Binds the listening socket and builds the upstream pool.
    pub async fn bind(config: &Config) -> anyhow::Result<Server> {
        use anyhow::Context;
        // Everything that can fail on bad files comes first, so a bad config binds no port.
        let Prepared {
            tls,
            upstream_tls,
            auth,
            upstream_auth,
            instance,
            rest,
        } = Prepared::new(config)?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;

        let mut reloadable: Vec<Arc<dyn tls::Reload>> = Vec::new();
        if let Some((server_tls, _)) = &tls {
            reloadable.push(server_tls.clone());
        }
        if let Some(upstream_tls) = &upstream_tls {
            reloadable.push(upstream_tls.clone());
        }
        if let Some(rest) = &rest {
            reloadable.extend(rest.tls_configs());
        }
        let alive = Arc::new(());
        tls::spawn_reloader(
            reloadable,
            Duration::from_millis(config.server.tls_reload_interval_ms),
            Arc::downgrade(&alive),
        );
        auth.warn_if_open();
        let pool =
            crate::pool::Pool::new(&config.servers, config.allowlist(), upstream_tls.clone());
        let limits = RoutingLimits {
            max_message_bytes: config.server.max_routing_message_bytes,
            timeout: Duration::from_millis(config.server.first_message_timeout_ms),
            budget: Arc::new(tokio::sync::Semaphore::new(
                config.server.routing_buffer_bytes as usize,
            )),
            budget_bytes: config.server.routing_buffer_bytes,
        };
        let forwarder = Forwarder::new(
            pool,
            limits,
            auth.clone(),
            upstream_auth,
            rest.clone(),
            instance,
        );
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // HTTP/1.1 connections that do not finish their headers in time are closed.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(config.server.header_timeout_ms));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.server.max_concurrent_streams);
        if config.server.keepalive_interval_ms > 0 {
            builder
                .http2()
                .keep_alive_interval(Duration::from_millis(config.server.keepalive_interval_ms))
                .keep_alive_timeout(Duration::from_secs(20));
        }
        Ok(Server {
            listener,
            handlers: Handlers {
                forwarder,
                rest,
                auth,
            },
            tls,
            upstream_tls,
            builder,
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
            handshake_log: Arc::new(std::sync::Mutex::new(crate::auth::LogBudget::new())),
            header_timeout: Duration::from_millis(config.server.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
            _alive: alive,
            connections: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The listener's TLS config, when TLS is on (to watch reloads).
    pub fn server_tls(&self) -> Option<&Arc<ServerTls>> {
        self.tls.as_ref().map(|(tls, _)| tls)
    }

    /// The TLS config for Pinot servers, when TLS to them is on (to watch reloads).
    pub fn upstream_tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.upstream_tls.as_ref()
    }

    /// The forwarder, for inspecting the upstream pool.
    pub fn forwarder(&self) -> &Forwarder {
        &self.handlers.forwarder
    }

    /// Serves until `shutdown` completes, then stops accepting, asks every connection to close
    /// (HTTP/2 GOAWAY) and waits up to the grace period for calls in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        tracing::info!(listen = %self.local_addr(), "serving");
        loop {
            // At the connection limit, new connections wait in the listen backlog.
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                _permit: permit,
                builder: self.builder.clone(),
                handlers: self.handlers.clone(),
                watcher: graceful.watcher(),
                peer,
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
            };
            match &self.tls {
                None => {
                    tokio::spawn(connection.serve(stream, false, None));
                }
                Some((tls, timeout)) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.get());
                    let timeout = *timeout;
                    let handshake_log = self.handshake_log.clone();
                    tokio::spawn(async move {
                        let log_budget = || match handshake_log.lock() {
                            Ok(mut budget) => budget.take(),
                            Err(_) => None,
                        };
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let identity = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .and_then(|cert| ClientIdentity::from_certificate(cert));
                                // A client that negotiated h2 speaks HTTP/2 from its first
                                // byte: a bad preface gets GOAWAY, not an HTTP/1.1 answer.
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                let connection = Connection {
                                    builder: if h2 {
                                        connection.builder.clone().http2_only()
                                    } else {
                                        connection.builder.clone()
                                    },
                                    ..connection
                                };
                                connection.serve(stream, true, identity).await
                            }
                            Ok(Err(err)) => {
                                if let Some(suppressed) = log_budget() {
                                    tracing::info!(%peer, error = %err, suppressed, "TLS handshake failed")
                                }
                            }
                            Err(_) => {
                                if let Some(suppressed) = log_budget() {
                                    tracing::info!(
                                        %peer,
                                        timeout_ms = timeout.as_millis() as u64,
                                        suppressed,
                                        "TLS handshake timed out"
                                    )
                                }
                            }
                        }
                    });
                }
            }
        }
        drop(self.listener);
        tracing::info!(grace_ms = self.grace.as_millis() as u64, "shutting down");
        match tokio::time::timeout(self.grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("grace period over with calls still in flight"),
        }
        Ok(())
    }
}

/// The parts of a server built from files and secrets, before anything is bound.
struct Prepared {
    tls: Option<(Arc<ServerTls>, Duration)>,
    upstream_tls: Option<Arc<UpstreamTls>>,
    auth: Arc<Authenticator>,
    upstream_auth: crate::auth::Upstream,
    instance: http::HeaderValue,
    rest: Option<Arc<Rest>>,
}

impl Prepared {
    fn new(config: &Config) -> anyhow::Result<Prepared> {
        let tls = match &config.server.tls {
            Some(tls_config) => {
                Some((tls::server_tls(tls_config)?, tls_config.handshake_timeout()))
            }
            None => None,
        };
        let upstream_tls = config
            .servers
            .tls
            .as_ref()
            .map(|tls_config| tls::upstream_tls(tls_config, "servers.tls", tls::ALPN_H2))
            .transpose()?;
        let auth = Arc::new(Authenticator::new(&config.auth)?);
        let upstream_auth = config.servers.auth.resolve("servers.auth")?;
        let instance = crate::grpc::instance_id();
        let rest = Rest::new(config, instance.clone())?.map(Arc::new);
        Ok(Prepared {
            tls,
            upstream_tls,
            auth,
            upstream_auth,
            instance,
            rest,
        })
    }
}

/// One accepted client connection, ready to be served over plaintext or TLS.
struct Connection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    builder: auto::Builder<TokioExecutor>,
    handlers: Handlers,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Connection {
    async fn serve<I>(self, io: I, tls: bool, identity: Option<ClientIdentity>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let handlers = self.handlers;
        let rest_requests = handlers
            .rest
            .as_ref()
            .map_or(1, |rest| rest.max_requests_per_connection());
        let peer = Arc::new(Peer {
            addr: self.peer,
            tls,
            rest_requests: Arc::new(tokio::sync::Semaphore::new(rest_requests)),
        });
        let share = handlers.forwarder.connection_share();
        let activity = Activity::new();
        let idle = activity
            .clone()
            .idle_for(self.header_timeout, self.idle_timeout);
        let service = service_fn(move |mut request: Request<Incoming>| {
            let handlers = handlers.clone();
            let peer = peer.clone();
            let in_flight = activity.start();
            if let Some(identity) = &identity {
                request.extensions_mut().insert(identity.clone());
            }
            request.extensions_mut().insert(share.clone());
            async move {
                let response = handlers.dispatch(request, &peer).await;
                Ok::<_, Infallible>(response.map(|inner| {
                    Tracked {
                        inner,
                        _in_flight: in_flight,
                    }
                    .boxed_unsync()
                }))
            }
        });
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        tokio::select! {
            result = self.watcher.watch(connection) => if let Err(err) = result {
                tracing::debug!(peer = %self.peer, error = %err, "client connection ended with an error");
            },
            // No request in flight: nothing is cut by closing it.
            () = idle => tracing::debug!(peer = %self.peer, "closing an idle client connection"),
        }
    }
}

/// What serves a request, by protocol.
#[derive(Clone)]
struct Handlers {
    forwarder: Forwarder,
    rest: Option<Arc<Rest>>,
    auth: Arc<Authenticator>,
}

impl Handlers {
    /// Sends gRPC (`content-type: application/grpc*`) to the forwarder and anything else to REST.
    async fn dispatch(&self, request: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        if is_grpc {
            if request.version() == Version::HTTP_2 {
                return self.forwarder.forward(request, peer.addr).await;
            }
            return json_error(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2",
                request.uri().path(),
            );
        }
        if let Err(err) = self.auth.check_rest(request.headers(), peer.addr) {
            let path = crate::error::echo(request.uri().path());
            // A refused request gets its access-log line too (fields as in rest's records).
            tracing::info!(
                method = %request.method(), %path, component = "none", upstream = "none",
                status = 401, duration_ms = 0, bytes_out = 0, side = %crate::error::Source::Client,
                error = %err, "rest request failed"
            );
            let mut response = json_error(StatusCode::UNAUTHORIZED, &err.to_string(), &path);
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"pinot-proxy\""),
            );
            return response;
        }
        match &self.rest {
            Some(rest) => rest.handle(request, peer).await,
            None => json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no route for {} {}: no [controller] or [broker] is configured, and this \
                     port forwards gRPC calls (content-type application/grpc)",
                    request.method(),
                    crate::error::echo(request.uri().path())
                ),
                request.uri().path(),
            ),
        }
    }
}

/// A JSON answer the proxy makes itself, for a request to `path`.
fn json_error(status: StatusCode, message: &str, path: &str) -> Response<ProxyBody> {
    crate::error::json_error::<http_body_util::Full<bytes::Bytes>>(status, message, None, path)
        .map(|body| body.map_err(|never| match never {}).boxed_unsync())
}
