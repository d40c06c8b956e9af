//! Config -> App: every step that can fail on files, secrets or URLs runs once, here, before any
//! port is bound (`--check` runs exactly this). Only this module reads the whole `Config`; each
//! runtime part gets its own section or settings.

use crate::admin::{Admin, Readiness};
use crate::config::{Config, PartialResults};
use crate::discovery::Discovery;
use crate::dispatch::Handlers;
use crate::grpc::{Forwarder, RoutingLimits};
use crate::listen::Server;
use crate::metrics::Metrics;
use crate::policy::{Allowlist, Authenticator, LogBudget, Secrets, Target, UpstreamCredentials};
use crate::rest::Rest;
use crate::tls::{self, ServerTls, UpstreamTls};
use crate::upstream::{BrokerTargets, Pool, PoolSettings};
use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A proxy built from its configuration, with every file and secret loaded; not yet bound.
pub struct App {
    config: Config,
    server_tls: Option<(Arc<ServerTls>, Duration)>,
    upstream_tls: Option<Arc<UpstreamTls>>,
    auth: Arc<Authenticator>,
    credentials: UpstreamCredentials,
    instance: http::HeaderValue,
    rest: Option<Arc<Rest>>,
    brokers: Option<Arc<BrokerTargets>>,
    metrics: Arc<Metrics>,
    discovery: Option<Arc<Discovery>>,
}

impl App {
    /// Builds the proxy, reading `password_env` secrets from the environment.
    pub fn build(config: &Config) -> anyhow::Result<App> {
        App::build_with(config, &Secrets::from_env())
    }

    /// Builds the proxy with secrets from `secrets`.
    pub fn build_with(config: &Config, secrets: &Secrets) -> anyhow::Result<App> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let metrics = Arc::new(Metrics::new());
        let server_tls = match &config.server.tls {
            Some(tls_config) => Some((
                tls::server_tls(tls_config, &metrics)?,
                Duration::from_millis(tls_config.handshake_timeout_ms),
            )),
            None => None,
        };
        let upstream_tls = config
            .servers
            .tls
            .as_ref()
            .map(|tls_config| tls::upstream_tls(tls_config, "servers.tls", tls::ALPN_H2, &metrics))
            .transpose()?;
        let auth = Arc::new(Authenticator::new(&config.auth, secrets, metrics.clone())?);
        let credentials =
            UpstreamCredentials::resolve(&config.servers.auth, "servers.auth", secrets)?;
        let instance = crate::http::instance_id();
        let rest = Rest::new(
            &config.rest,
            config.controller.as_ref(),
            config.broker.as_ref(),
            instance.clone(),
            secrets,
            &metrics,
        )?
        .map(Arc::new);
        let brokers = broker_targets(config).map(Arc::new);
        let discovery = Discovery::new(
            &config.servers,
            config.controller.as_ref(),
            &config.rest,
            instance.clone(),
            secrets,
            &metrics,
        )?
        .map(Arc::new);
        Ok(App {
            config: config.clone(),
            server_tls,
            upstream_tls,
            auth,
            credentials,
            instance,
            rest,
            brokers,
            metrics,
            discovery,
        })
    }

    /// Binds the listening socket and starts the background work (TLS reloads, idle
    /// upstream connections).
    pub async fn bind(self) -> anyhow::Result<Server> {
        let App {
            config,
            server_tls,
            upstream_tls,
            auth,
            credentials,
            instance,
            rest,
            brokers,
            metrics,
            discovery,
        } = self;
        let server = &config.server;
        let listener = TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", server.listen))?;

        let mut reloadable: Vec<Arc<dyn tls::Reload>> = Vec::new();
        if let Some((server_tls, _)) = &server_tls {
            reloadable.push(server_tls.clone());
        }
        if let Some(upstream_tls) = &upstream_tls {
            reloadable.push(upstream_tls.clone());
        }
        if let Some(rest) = &rest {
            reloadable.extend(rest.tls_configs());
        }
        if let Some(tls) = discovery.as_ref().and_then(|d| d.tls()) {
            reloadable.push(tls);
        }
        let alive = Arc::new(());
        tls::spawn_reloader(
            reloadable,
            Duration::from_millis(server.tls_reload_interval_ms),
            Arc::downgrade(&alive),
        );
        auth.warn_if_open();
        if let Some(discovery) = &discovery {
            discovery.clone().spawn(Arc::downgrade(&alive));
        }

        let servers = &config.servers;
        let pool = Pool::new(
            PoolSettings {
                connect_timeout: Duration::from_millis(servers.connect_timeout_ms),
                idle_timeout: Duration::from_millis(servers.idle_timeout_ms),
                keepalive: (servers.keepalive_interval_ms > 0)
                    .then(|| Duration::from_millis(servers.keepalive_interval_ms)),
                max_targets: servers.max_targets,
            },
            match &discovery {
                Some(discovery) => Allowlist::new(servers.allow.clone(), servers.ports.clone())
                    .with_discovery(discovery.live(), servers.use_discovered_port),
                None => Allowlist::new(servers.allow.clone(), servers.ports.clone()),
            },
            upstream_tls.zip(servers.tls.clone()),
            metrics.clone(),
        );
        let limits = RoutingLimits {
            max_message_bytes: server.max_routing_message_bytes,
            timeout: Duration::from_millis(server.first_message_timeout_ms),
            budget: Arc::new(tokio::sync::Semaphore::new(
                server.routing_buffer_bytes as usize,
            )),
            budget_bytes: server.routing_buffer_bytes,
        };
        let forwarder = Forwarder {
            pool,
            limits,
            instance,
            auth: auth.clone(),
            credentials,
            brokers,
            guard_partial_results: servers.partial_results == PartialResults::Fail,
            audit_sql_max_bytes: config.log.audit.then_some(config.log.audit_sql_max_bytes),
            metrics: metrics.clone(),
        };

        let mut builder = auto::Builder::new(TokioExecutor::new());
        // HTTP/1.1 connections that do not finish their headers in time are closed.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(server.header_timeout_ms));
        // A gRPC answer carries the headers its server sent and nothing the proxy invents.
        builder
            .http2()
            .timer(TokioTimer::new())
            .auto_date_header(false)
            .max_concurrent_streams(server.max_concurrent_streams);
        if server.keepalive_interval_ms > 0 {
            builder
                .http2()
                .keep_alive_interval(Duration::from_millis(server.keepalive_interval_ms))
                .keep_alive_timeout(Duration::from_secs(20));
        }
        let readiness = Readiness::default();
        let admin = match &config.admin {
            Some(admin) => Some(
                Admin::bind(
                    admin.listen,
                    readiness.clone(),
                    metrics.clone(),
                    forwarder.clone(),
                    discovery,
                )
                .await?,
            ),
            None => None,
        };
        Ok(Server {
            listener,
            drain_delay: Duration::from_millis(server.drain_delay_ms),
            readiness,
            admin,
            handlers: Handlers {
                forwarder,
                rest,
                auth,
                metrics: metrics.clone(),
            },
            metrics,
            tls: server_tls,
            builder,
            grace: Duration::from_millis(server.shutdown_grace_ms),
            handshake_log: Arc::new(std::sync::Mutex::new(LogBudget::new())),
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            _alive: alive,
            connections: Arc::new(tokio::sync::Semaphore::new(server.max_connections)),
        })
    }
}

/// The brokers' gRPC endpoints: each `[broker]` URL's host on `grpc_port`, when it is set.
fn broker_targets(config: &Config) -> Option<BrokerTargets> {
    let broker = config.broker.as_ref()?;
    let port = broker.grpc_port?.to_string();
    let urls = crate::config::parse_urls("broker", &broker.urls).ok()?;
    let targets = urls
        .iter()
        .filter_map(|url| {
            let host = url.origin.split_once("://")?.1.rsplit_once(':')?.0;
            Target::parse(host, &port).ok()
        })
        .collect();
    BrokerTargets::new(targets)
}
