//! The listening side: accept connections (at most `server.max_connections`), the TLS
//! handshake and the caller's certificate identity, HTTP/2 (h2c prior knowledge, or ALPN) and
//! HTTP/1.1 on one port, closing idle connections (`idle.rs`), and draining on shutdown.

mod idle;
mod tls;

use crate::admin::{Admin, Readiness};
use crate::dispatch::Handlers;
use crate::grpc::Forwarder;
use crate::http::Peer;
use crate::metrics::Metrics;
use crate::policy::LogBudget;
use crate::tls::{ClientIdentity, ReloadStatus, ServerTls};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use idle::{Activity, Tracked};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound, not yet serving proxy.
pub struct Server {
    pub(crate) listener: TcpListener,
    pub(crate) handlers: Handlers,
    pub(crate) tls: Option<(Arc<ServerTls>, Duration)>,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) grace: Duration,
    /// `server.header_timeout_ms` and `server.idle_timeout_ms`.
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Failed TLS handshakes are logged at most 10 lines a second.
    pub(crate) handshake_log: Arc<std::sync::Mutex<LogBudget>>,
    /// One permit per open client connection.
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// `server.drain_delay_ms`: how long the port keeps accepting after the shutdown signal.
    pub(crate) drain_delay: Duration,
    /// What `/readyz` says.
    pub(crate) readiness: Readiness,
    /// The admin listener, when `[admin]` is configured.
    pub(crate) admin: Option<Admin>,
    pub(crate) metrics: Arc<Metrics>,
    /// Background tasks of this server stop when it is dropped.
    pub(crate) _alive: Arc<()>,
}

/// Counters of a running proxy.
#[derive(Clone)]
pub struct Stats {
    forwarder: Forwarder,
}

impl Stats {
    /// Connections to Pinot servers opened since start.
    pub fn upstream_connections_opened(&self) -> u64 {
        self.forwarder.connections_opened()
    }

    /// `Submit` answers passed on without the partial-result check (`servers.partial_results`):
    /// compressed, too large, or not a DataTable this proxy reads.
    pub fn unchecked_answers(&self) -> u64 {
        self.forwarder.unchecked_answers()
    }
}

impl Server {
    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Reload progress of the listener's TLS files, when TLS is on.
    pub fn tls_reloads(&self) -> Option<tokio::sync::watch::Receiver<ReloadStatus>> {
        self.tls.as_ref().map(|(tls, _)| tls.subscribe())
    }

    /// Counters of the running proxy.
    pub fn stats(&self) -> Stats {
        Stats {
            forwarder: self.handlers.forwarder.clone(),
        }
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// Serves until `shutdown` completes. Then `/readyz` answers 503 at once while the port
    /// keeps accepting for `server.drain_delay_ms` (so Kubernetes takes the pod out of its
    /// endpoints), then stops accepting, asks every connection to close (HTTP/2 GOAWAY) and
    /// waits up to `server.shutdown_grace_ms` for calls in flight. Connections still open then
    /// are closed, which clients report as UNAVAILABLE.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        let admin_addr = self.admin_addr();
        // Ready before the admin port answers its first probe: everything fallible is done.
        self.readiness.serving();
        let _admin = self.admin.take().map(|admin| AbortOnDrop(admin.spawn()));
        let (drain_delay, readiness) = (self.drain_delay, self.readiness.clone());
        let shutdown = async move {
            shutdown.await;
            readiness.draining();
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis() as u64,
                "shutdown signal: not ready any more, still accepting for the drain delay"
            );
            tokio::time::sleep(drain_delay).await;
        };
        tokio::pin!(shutdown);
        match admin_addr {
            Some(admin) => tracing::info!(listen = %self.local_addr(), %admin, "serving"),
            None => tracing::info!(listen = %self.local_addr(), admin = "off", "serving"),
        }
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
                    let failures = self.metrics.tls_handshake_failures.clone();
                    tokio::spawn(async move {
                        let log_budget = || match handshake_log.lock() {
                            Ok(mut budget) => budget.take(),
                            Err(_) => None,
                        };
                        match tls::accept(acceptor, stream, timeout).await {
                            Ok(stream) => {
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
                            Err(tls::Refused::TimedOut) => {
                                failures.inc();
                                if let Some(suppressed) = log_budget() {
                                    tracing::info!(
                                        %peer,
                                        timeout_ms = timeout.as_millis() as u64,
                                        suppressed,
                                        "TLS handshake timed out"
                                    )
                                }
                            }
                            Err(err) => {
                                failures.inc();
                                if let Some(suppressed) = log_budget() {
                                    tracing::info!(%peer, error = %err, suppressed, "TLS handshake failed")
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

/// Aborts a task when dropped: the admin listener lives as long as `run`.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
        let (rest_requests, share) = handlers.connection_state();
        let peer = Arc::new(Peer {
            addr: self.peer,
            tls,
            rest_requests: Arc::new(tokio::sync::Semaphore::new(rest_requests)),
        });
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
