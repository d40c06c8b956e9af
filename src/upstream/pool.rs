//! Upstream HTTP/2 connections, one map entry per target server: calls to the same server share
//! a connection until its stream limit, concurrent first calls share one connection attempt,
//! idle connections are closed, a broken one is replaced on the next call, and a server that
//! leaves the discovered list loses its connections once their calls end.

use super::connect;
use super::Origin;
use crate::config::UpstreamTlsConfig;
use crate::error::Error;
use crate::metrics::{Metrics, ReasonLabels};
use crate::policy::{Allowlist, Target};
use crate::tls::UpstreamTls;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use hyper::client::conn::http2::SendRequest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How the pool opens and keeps connections (from `[servers]`).
#[derive(Clone, Debug)]
pub(crate) struct PoolSettings {
    /// Time to resolve a name and open a connection.
    pub(crate) connect_timeout: Duration,
    /// A connection with no call in flight for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// HTTP/2 PING interval while calls are open.
    pub(crate) keepalive: Option<Duration>,
    /// Most distinct servers with open connections at once.
    pub(crate) max_targets: usize,
}

/// The pooled connections to all target servers.
pub(crate) struct Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B> {
    slots: Mutex<HashMap<Target, Slot<B>>>,
    allowlist: Allowlist,
    tls: Option<(Arc<UpstreamTls>, UpstreamTlsConfig)>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    keepalive: Option<Duration>,
    max_targets: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
}

struct Slot<B> {
    conns: Vec<Arc<Conn<B>>>,
    connecting: Option<Connecting<B>>,
    /// Connections opened to this target while it has been in the pool.
    opened: u64,
    /// Why the last connection attempt failed, if it did.
    last_error: Option<String>,
    /// Named by the configuration (a broker): kept whatever the allowlist says.
    configured: bool,
}

impl<B> Slot<B> {
    fn new() -> Slot<B> {
        Slot {
            conns: Vec::new(),
            connecting: None,
            opened: 0,
            last_error: None,
            configured: false,
        }
    }
}

/// One target of the pool, for `/debug/targets`.
#[derive(Debug)]
pub(crate) struct TargetState {
    pub(crate) target: String,
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) opened: u64,
    pub(crate) last_error: Option<String>,
}

type Connecting<B> = Shared<BoxFuture<'static, Result<Arc<Conn<B>>, Error>>>;

/// One HTTP/2 connection to a server.
pub(crate) struct Conn<B> {
    sender: SendRequest<B>,
    /// The server's stream limit for this connection.
    max_streams: Arc<AtomicUsize>,
    in_flight: AtomicUsize,
    /// Milliseconds since the pool's epoch when the last call on it ended.
    last_used_ms: AtomicU64,
}

/// The right to run one call on a connection; the call counts as in flight until it is dropped.
pub(crate) struct Lease<B> {
    conn: Arc<Conn<B>>,
    pool: Weak<Inner<B>>,
}

impl<B: http_body::Body + 'static> Conn<B> {
    fn has_capacity(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < self.max_streams.load(Ordering::Relaxed)
    }
}

impl<B> Lease<B>
where
    B: http_body::Body + Send + 'static,
{
    /// A handle to send the call's request on.
    pub(crate) fn sender(&self) -> SendRequest<B> {
        self.conn.sender.clone()
    }
}

impl<B> Drop for Lease<B> {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(pool) = self.pool.upgrade() {
            let now = pool.epoch.elapsed().as_millis() as u64;
            self.conn.last_used_ms.store(now, Ordering::Relaxed);
        }
    }
}

impl<B> Pool<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Creates the pool and starts its idle-connection reaper (stops when the pool is dropped).
    pub(crate) fn new(
        settings: PoolSettings,
        allowlist: Allowlist,
        tls: Option<(Arc<UpstreamTls>, UpstreamTlsConfig)>,
        metrics: Arc<Metrics>,
    ) -> Pool<B> {
        let inner = Arc::new(Inner {
            slots: Mutex::new(HashMap::new()),
            allowlist,
            tls,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            keepalive: settings.keepalive,
            max_targets: settings.max_targets,
            epoch: Instant::now(),
            metrics,
        });
        if let Some(mut changes) = inner.allowlist.subscribe() {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    match weak.upgrade() {
                        Some(inner) => inner.forget_refused(),
                        None => return,
                    }
                }
            });
        }
        let weak = Arc::downgrade(&inner);
        let period =
            (inner.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(inner) => inner.close_idle(),
                    None => return,
                }
            }
        });
        Pool { inner }
    }

    /// How many upstream connections the pool has opened since it started.
    pub(crate) fn connections_opened(&self) -> u64 {
        self.inner.metrics.upstream_connections_opened.get()
    }

    /// Every target in the pool now, sorted by name.
    pub(crate) fn snapshot(&self) -> Vec<TargetState> {
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut targets: Vec<TargetState> = slots
            .iter()
            .map(|(target, slot)| TargetState {
                target: target.to_string(),
                connections: slot.conns.len(),
                in_flight: slot
                    .conns
                    .iter()
                    .map(|conn| conn.in_flight.load(Ordering::Relaxed))
                    .sum(),
                opened: slot.opened,
                last_error: slot.last_error.clone(),
            })
            .collect();
        targets.sort_by(|a, b| a.target.cmp(&b.target));
        targets
    }

    /// A connection to `target` with room for one more stream, opened if needed.
    /// The allowlist is checked first: a refused target never causes a lookup or connection;
    /// it may name another port (`servers.use_discovered_port`), which is then the one used.
    /// A `Configured` target (one the operator named, like a broker) skips it.
    pub(crate) async fn checkout(
        &self,
        target: &Target,
        origin: Origin,
    ) -> Result<Lease<B>, Error> {
        let admitted;
        let target = match origin {
            Origin::Caller => {
                admitted = self.inner.allowlist.admit(target)?;
                &admitted
            }
            Origin::Configured => target,
        };
        let connecting = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            if !slots.contains_key(target) && slots.len() >= self.inner.max_targets {
                self.inner.evict_one_idle(&mut slots)?;
            }
            let slot = slots.entry(target.clone()).or_insert_with(Slot::new);
            slot.configured |= origin == Origin::Configured;
            slot.conns.retain(|conn| !conn.sender.is_closed());
            let best = slot
                .conns
                .iter()
                .filter(|conn| conn.has_capacity())
                .min_by_key(|conn| conn.in_flight.load(Ordering::Relaxed));
            if let Some(conn) = best {
                return Ok(self.inner.lease(conn.clone()));
            }
            slot.connecting
                .get_or_insert_with(|| {
                    // Its own task, so the attempt finishes and frees the slot even when every
                    // caller waiting on it has gone away.
                    let attempt =
                        tokio::spawn(Inner::open(self.inner.clone(), target.clone(), origin));
                    let name = target.to_string();
                    async move {
                        attempt.await.unwrap_or_else(|err| {
                            Err(Error::Unreachable {
                                target: name,
                                reason: format!("connection attempt failed: {err}"),
                            })
                        })
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let conn = connecting.await?;
        Ok(self.inner.lease(conn))
    }
}

impl<B> Inner<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn lease(self: &Arc<Self>, conn: Arc<Conn<B>>) -> Lease<B> {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            conn,
            pool: Arc::downgrade(self),
        }
    }

    /// Opens a connection and files it (or the failure) in the target's slot.
    async fn open(self: Arc<Self>, target: Target, origin: Origin) -> Result<Arc<Conn<B>>, Error> {
        let result = tokio::time::timeout(self.connect_timeout, self.connect(&target, origin))
            .await
            .unwrap_or_else(|_| {
                self.metrics
                    .upstream_connect_failures
                    .get_or_create(&ReasonLabels { reason: "timeout" })
                    .inc();
                Err(Error::Unreachable {
                    target: target.to_string(),
                    reason: format!(
                        "no connection within {} ms (servers.connect_timeout_ms)",
                        self.connect_timeout.as_millis()
                    ),
                })
            });
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&target) {
            slot.connecting = None;
            match &result {
                Ok(conn) => {
                    slot.conns.push(conn.clone());
                    slot.opened += 1;
                    slot.last_error = None;
                }
                // Kept, without connections, until the next idle sweep: /debug/targets shows why.
                Err(err) => slot.last_error = Some(err.to_string()),
            }
        }
        result
    }

    async fn connect(&self, target: &Target, origin: Origin) -> Result<Arc<Conn<B>>, Error> {
        let allowlist = (origin == Origin::Caller).then_some(&self.allowlist);
        let tls = self
            .tls
            .as_ref()
            .map(|(tls, config)| (tls.as_ref(), config));
        let (sender, max_streams) =
            connect::connect(target, allowlist, tls, self.keepalive, &self.metrics).await?;
        self.metrics.upstream_connections_opened.inc();
        tracing::debug!(target = %target, "upstream connection opened");
        Ok(Arc::new(Conn {
            sender,
            max_streams,
            in_flight: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
        }))
    }
}

impl<B: http_body::Body + 'static> Inner<B> {
    fn is_idle(&self, conn: &Conn<B>, now_ms: u64) -> bool {
        conn.in_flight.load(Ordering::Relaxed) == 0
            && now_ms.saturating_sub(conn.last_used_ms.load(Ordering::Relaxed))
                >= self.idle_timeout.as_millis() as u64
    }

    /// Drops connections idle for longer than the idle timeout, and closed ones.
    fn close_idle(&self) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|target, slot| {
            slot.conns.retain(|conn| {
                let keep = !conn.sender.is_closed() && !self.is_idle(conn, now_ms);
                if !keep {
                    tracing::debug!(target = %target, "closing idle upstream connection");
                }
                keep
            });
            !slot.conns.is_empty() || slot.connecting.is_some()
        });
    }

    /// Drops the targets the allowlist no longer admits as they are (a server that left the
    /// discovered list): connections with no call in flight close now, the others as soon as
    /// their last call ends (each call's lease holds its connection).
    fn forget_refused(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|target, slot| {
            let keep =
                slot.configured || self.allowlist.admit(target).is_ok_and(|to| &to == target);
            if !keep {
                tracing::info!(
                    target = %target,
                    connections = slot.conns.len(),
                    "server no longer allowed; closing its connections as their calls end"
                );
            }
            keep
        });
    }

    /// Makes room for a new target by dropping the least recently used target with no call in
    /// flight; fails when every target is busy.
    fn evict_one_idle(&self, slots: &mut HashMap<Target, Slot<B>>) -> Result<(), Error> {
        let victim = slots
            .iter()
            .filter(|(_, slot)| {
                slot.connecting.is_none()
                    && slot
                        .conns
                        .iter()
                        .all(|conn| conn.in_flight.load(Ordering::Relaxed) == 0)
            })
            .min_by_key(|(_, slot)| {
                slot.conns
                    .iter()
                    .map(|conn| conn.last_used_ms.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0)
            })
            .map(|(target, _)| target.clone());
        match victim {
            Some(target) => {
                slots.remove(&target);
                Ok(())
            }
            None => Err(Error::TooManyTargets(self.max_targets)),
        }
    }
}
