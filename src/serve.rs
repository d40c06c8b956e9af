//! The listening side: accept connections, serve HTTP/2 (h2c prior knowledge) and HTTP/1.1 on
//! one port, dispatch gRPC to the forwarder, and drain connections on shutdown.

use crate::config::Config;
use crate::error::http_error;
use crate::grpc::{Forwarder, ProxyBody};
use crate::rest::{Peer, Rest};
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
    builder: auto::Builder<TokioExecutor>,
    grace: Duration,
}

impl Server {
    /// Binds the listening socket and builds the upstream pool.
    pub async fn bind(config: &Config) -> anyhow::Result<Server> {
        use anyhow::Context;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let pool = crate::pool::Pool::new(&config.servers, config.allowlist());
        let forwarder = Forwarder::new(pool, config.server.max_routing_message_bytes);
        let rest = Rest::new(config)?.map(Arc::new);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.server.max_concurrent_streams);
        Ok(Server {
            listener,
            handlers: Handlers { forwarder, rest },
            builder,
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
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
            let handlers = self.handlers.clone();
            let peer_info = Arc::new(Peer {
                addr: peer,
                tls: false,
            });
            let service = service_fn(move |request| {
                let handlers = handlers.clone();
                let peer = peer_info.clone();
                async move { Ok::<_, Infallible>(handlers.dispatch(request, &peer).await) }
            });
            let connection = self
                .builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%peer, error = %err, "client connection ended with an error");
                }
            });
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

/// What serves a request, by protocol.
#[derive(Clone)]
struct Handlers {
    forwarder: Forwarder,
    rest: Option<Arc<Rest>>,
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
                return self.forwarder.forward(request).await;
            }
            return plain_error(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "gRPC needs HTTP/2");
        }
        match &self.rest {
            Some(rest) => rest.handle(request, peer).await,
            None => plain_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no route for {} {}: no [controller] or [broker] is configured, and this \
                     port forwards gRPC calls (content-type application/grpc)",
                    request.method(),
                    request.uri().path()
                ),
            ),
        }
    }
}

fn plain_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    http_error::<http_body_util::Full<bytes::Bytes>>(status, message)
        .map(|body| body.map_err(|never| match never {}).boxed_unsync())
}
