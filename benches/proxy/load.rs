//! The load client: raw hyper HTTP/2 `Submit` calls with pre-encoded requests, one client
//! connection per target server (as Trino keeps), a fixed number of calls in flight, and
//! per-call latency from sending the request to reading its trailers.

use crate::fake::{grpc_frame, RESPONSE_KEY};
use crate::pinot::ServerRequest;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub const SUBMIT: &str = "/org.apache.pinot.common.proto.PinotQueryServer/Submit";

/// How a call reaches its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to the fake server: the physical limit of this machine.
    Direct,
    /// Through pinot-proxy, target in `forward_host` / `forward_port` headers.
    ProxyHeader,
    /// Through pinot-proxy, target in the request's `FORWARD_HOST` / `FORWARD_PORT` metadata
    /// (what Trino sends).
    ProxyBody,
    /// Through nginx `grpc_pass grpc://$http_forward_host:$http_forward_port`.
    Nginx,
}

impl Route {
    pub const ALL: [Route; 4] = [
        Route::Direct,
        Route::ProxyHeader,
        Route::ProxyBody,
        Route::Nginx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::ProxyHeader => "proxy-header",
            Route::ProxyBody => "proxy-body",
            Route::Nginx => "nginx",
        }
    }

    pub fn is_proxy(self) -> bool {
        matches!(self, Route::ProxyHeader | Route::ProxyBody)
    }
}

type ReqBody = Full<Bytes>;

/// One client HTTP/2 connection, reopened when it has closed.
pub struct Conn {
    addr: SocketAddr,
    sender: Mutex<SendRequest<ReqBody>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        Ok(Conn {
            addr,
            sender: Mutex::new(handshake(addr).await?),
        })
    }

    async fn sender(&self) -> anyhow::Result<SendRequest<ReqBody>> {
        let sender = self.sender.lock().expect("not poisoned").clone();
        if !sender.is_closed() {
            return Ok(sender);
        }
        let fresh = handshake(self.addr).await?;
        *self.sender.lock().expect("not poisoned") = fresh.clone();
        Ok(fresh)
    }
}

async fn handshake(addr: SocketAddr) -> anyhow::Result<SendRequest<ReqBody>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(tcp))
        .await
        .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One prepared call: where it goes, its headers and its encoded request message.
pub struct CallSpec {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Response body bytes a complete answer has.
    pub expected: u64,
}

impl CallSpec {
    /// A Trino-like `Submit` for `server`, sent to `front` (the server itself when direct).
    pub fn new(
        route: Route,
        front: SocketAddr,
        server: SocketAddr,
        response: (u64, usize),
        expected: u64,
    ) -> CallSpec {
        let mut metadata: HashMap<String, String> = [
            ("requestId", "0"),
            ("brokerId", "unknown"),
            ("enableTrace", "false"),
            ("enableStreaming", "true"),
            ("payloadType", "sql"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        metadata.insert(
            RESPONSE_KEY.to_string(),
            format!("{}x{}", response.0, response.1),
        );
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        let host = server.ip().to_string();
        let port = server.port().to_string();
        match route {
            Route::Direct => {}
            Route::ProxyHeader | Route::Nginx => {
                headers.insert("forward_host", host.parse().expect("an IP is a header"));
                headers.insert("forward_port", port.parse().expect("digits are a header"));
            }
            Route::ProxyBody => {
                metadata.insert("FORWARD_HOST".into(), host);
                metadata.insert("FORWARD_PORT".into(), port);
            }
        }
        let request = ServerRequest {
            metadata,
            sql: "SELECT col1, col2, col3 FROM benchTable LIMIT 1000000".into(),
            segments: (0..4).map(|i| format!("benchTable_OFFLINE_{i}")).collect(),
            ..Default::default()
        };
        CallSpec {
            uri: format!("http://{front}{SUBMIT}")
                .parse()
                .expect("a valid URI"),
            headers,
            body: grpc_frame(&request),
            expected,
        }
    }
}

/// Makes one call and reads its whole response, at most `rate` bytes per second when given.
/// Returns the response body bytes.
pub async fn call(conn: &Conn, spec: &CallSpec, rate: Option<f64>) -> anyhow::Result<u64> {
    let mut sender = conn.sender().await?;
    let mut request = Request::post(spec.uri.clone()).body(Full::new(spec.body.clone()))?;
    *request.headers_mut() = spec.headers.clone();
    let response = sender.send_request(request).await?;
    if response.status() != http::StatusCode::OK {
        bail!("HTTP status {}", response.status());
    }
    if let Some(status) = response.headers().get("grpc-status") {
        let message = response.headers().get("grpc-message");
        bail!("trailers-only grpc-status {status:?}: {message:?}");
    }
    let started = Instant::now();
    let mut body = response.into_body();
    let mut bytes = 0u64;
    let mut status = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                bytes += data.len() as u64;
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(bytes as f64 / rate);
                    // Sleeping only when well ahead keeps timer overhead off the read path.
                    if due > Instant::now() + Duration::from_millis(5) {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
            }
            Err(frame) => {
                if let Some(trailers) = frame.trailers_ref() {
                    status = trailers.get("grpc-status").cloned();
                    if status.as_ref().is_some_and(|s| s != "0") {
                        bail!("grpc-status {status:?}: {:?}", trailers.get("grpc-message"));
                    }
                }
            }
        }
    }
    if status.is_none() {
        bail!("stream ended without grpc-status after {bytes} bytes");
    }
    if bytes != spec.expected {
        bail!("got {bytes} response bytes, expected {}", spec.expected);
    }
    Ok(bytes)
}

/// The calls of one route in one workload: a connection and a prepared call per server.
pub struct Client {
    targets: Vec<(Conn, CallSpec)>,
}

impl Client {
    pub async fn new(
        route: Route,
        front: Option<SocketAddr>,
        servers: &[SocketAddr],
        response: (u64, usize),
        expected: u64,
    ) -> anyhow::Result<Client> {
        let mut targets = Vec::with_capacity(servers.len());
        for &server in servers {
            let front = match route {
                Route::Direct => server,
                _ => front.context("no front address")?,
            };
            let conn = Conn::connect(front).await?;
            targets.push((
                conn,
                CallSpec::new(route, front, server, response, expected),
            ));
        }
        Ok(Client { targets })
    }
}

/// What one fixed-duration run measured.
#[derive(Default)]
pub struct RunResult {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub bytes: u64,
    pub wall: Duration,
    /// Latency of each successful call, in microseconds.
    pub latencies_us: Vec<u32>,
}

/// Keeps `concurrency` calls in flight, spread round-robin over the client's servers, until
/// `duration` has passed (calls started before then are waited for).
pub async fn run_for(client: &Arc<Client>, concurrency: usize, duration: Duration) -> RunResult {
    let started = Instant::now();
    let deadline = started + duration;
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                let mut result = RunResult::default();
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let (conn, spec) = &client.targets[n % client.targets.len()];
                    let began = Instant::now();
                    match call(conn, spec, None).await {
                        Ok(bytes) => {
                            result.calls += 1;
                            result.bytes += bytes;
                            let us = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            result.latencies_us.push(us);
                        }
                        Err(err) => {
                            result.errors += 1;
                            result.first_error.get_or_insert_with(|| format!("{err:#}"));
                            // A broken route must not turn into a busy loop.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut total = RunResult::default();
    for worker in workers {
        let result = worker.await.expect("load worker panicked");
        total.calls += result.calls;
        total.errors += result.errors;
        total.bytes += result.bytes;
        total.latencies_us.extend(result.latencies_us);
        if total.first_error.is_none() {
            total.first_error = result.first_error;
        }
    }
    total.wall = started.elapsed();
    total
}

/// Starts calls at a fixed `rate` per second (open loop, so a slow route does not slow the
/// offered load), at most `max_in_flight` at once, until `duration` has passed. Latency counts
/// from each call's send; a call that had to wait for a free slot is counted in `late`.
pub async fn run_paced(
    client: &Arc<Client>,
    rate: f64,
    max_in_flight: usize,
    duration: Duration,
) -> (RunResult, u64) {
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut calls = tokio::task::JoinSet::new();
    let mut total = RunResult::default();
    let mut late = 0;
    for n in 0u64.. {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        if due >= started + duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                late += 1;
                slots.clone().acquire_owned().await.expect("never closed")
            }
        };
        let client = client.clone();
        calls.spawn(async move {
            let (conn, spec) = &client.targets[n as usize % client.targets.len()];
            let began = Instant::now();
            let outcome = call(conn, spec, None).await;
            drop(slot);
            let us = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
            outcome
                .map(|bytes| (bytes, us))
                .map_err(|err| format!("{err:#}"))
        });
        while let Some(done) = calls.try_join_next() {
            record(&mut total, done.expect("call task panicked"));
        }
    }
    while let Some(done) = calls.join_next().await {
        record(&mut total, done.expect("call task panicked"));
    }
    total.wall = started.elapsed();
    (total, late)
}

fn record(total: &mut RunResult, outcome: Result<(u64, u32), String>) {
    match outcome {
        Ok((bytes, us)) => {
            total.calls += 1;
            total.bytes += bytes;
            total.latencies_us.push(us);
        }
        Err(err) => {
            total.errors += 1;
            total.first_error.get_or_insert(err);
        }
    }
}

/// One call through the client's first server, reading at `rate` bytes per second.
pub async fn slow_call(client: &Client, rate: f64) -> anyhow::Result<u64> {
    let (conn, spec) = &client.targets[0];
    call(conn, spec, Some(rate)).await
}
