//! Test fixtures: fake Pinot and echo gRPC servers on 127.0.0.1:0 that report what they
//! received, a raw HTTP/2 client, and an in-process proxy.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pinot_proxy::{App, Config, Secrets, Server, Stats};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub mod pinot {
    include!(concat!(
        env!("OUT_DIR"),
        "/test/org.apache.pinot.common.proto.rs"
    ));
}
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/test/pinotproxy.test.rs"));
}

use echo::echo_server::{Echo, EchoServer};
use echo::EchoMessage;
use pinot::pinot_query_server_server::{PinotQueryServer, PinotQueryServerServer};
use pinot::{ServerRequest, ServerResponse};

pub const SUBMIT: &str = "/org.apache.pinot.common.proto.PinotQueryServer/Submit";
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// Upper bound for anything a test waits on, so a broken proxy fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// A counter a test can wait on without sleeping.
#[derive(Clone)]
pub struct Counter(Arc<watch::Sender<usize>>);

impl Counter {
    pub fn new() -> Counter {
        Counter(Arc::new(watch::channel(0).0))
    }
    pub fn add(&self) {
        self.0.send_modify(|n| *n += 1);
    }
    pub fn get(&self) -> usize {
        *self.0.borrow()
    }
    /// Waits until the count reaches `n`; panics after [`WAIT`].
    pub async fn wait_for(&self, n: usize) {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|count| *count >= n))
            .await
            .unwrap_or_else(|_| panic!("count stayed at {} below {n}", self.get()))
            .expect("counter alive");
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A request's headers and message bytes, as a fake server received them.
pub type SeenRequest = (HashMap<String, String>, Vec<u8>);

/// What a fake server saw.
#[derive(Clone, Default)]
pub struct Seen {
    /// Connections accepted and closed.
    pub accepted: Counter,
    pub closed: Counter,
    /// Response streams dropped before they finished: the call was cancelled.
    pub cancelled: Counter,
    /// Bytes a flooding server has produced (handed to its HTTP/2 stack).
    pub produced: Arc<std::sync::atomic::AtomicU64>,
    /// Requests received, with their metadata headers.
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Seen {
    fn record(&self, headers: &tonic::metadata::MetadataMap, message: Vec<u8>) {
        let headers = headers
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect();
        self.requests.lock().unwrap().push((headers, message));
    }
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    pub fn last_headers(&self) -> HashMap<String, String> {
        self.requests
            .lock()
            .unwrap()
            .last()
            .expect("a request")
            .0
            .clone()
    }
    pub fn last_message(&self) -> Vec<u8> {
        self.requests
            .lock()
            .unwrap()
            .last()
            .expect("a request")
            .1
            .clone()
    }
}

/// A TCP stream that counts its closing.
pub struct CountedStream {
    inner: TcpStream,
    closed: Counter,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.closed.add();
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for CountedStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// A running fake server; dropping it stops it.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Seen,
    _stop: oneshot::Sender<()>,
}

impl FakeServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Starts a tonic server with the fake Pinot and echo services on 127.0.0.1:0.
pub async fn start_fake(name: &str) -> FakeServer {
    start_fake_on(name, 0).await
}

/// Starts the fake server on a given port (0 for any), e.g. to restart one.
pub async fn start_fake_on(name: &str, port: u16) -> FakeServer {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = {
        let seen = seen.clone();
        async_incoming(listener, seen)
    };
    let pinot = FakePinot {
        name: name.to_string(),
        seen: seen.clone(),
    };
    let echo = FakeEcho { seen: seen.clone() };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                PinotQueryServerServer::new(pinot)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                EchoServer::new(echo)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    FakeServer {
        addr,
        seen,
        _stop: stop,
    }
}

fn async_incoming(
    listener: TcpListener,
    seen: Seen,
) -> impl Stream<Item = std::io::Result<CountedStream>> {
    futures_util::stream::unfold((listener, seen), |(listener, seen)| async move {
        let accepted = listener.accept().await.map(|(inner, _)| {
            seen.accepted.add();
            CountedStream {
                inner,
                closed: seen.closed.clone(),
            }
        });
        Some((accepted, (listener, seen)))
    })
}

/// Deterministic payload bytes for block `index` of the stream seeded with `seed`.
pub fn block(seed: u64, index: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_add(1);
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A Pinot DataTable (version 3, as Pinot 0.x sends it) with no rows, the given exceptions
/// (code, message) and one metadata entry (`numDocsScanned` = 1000).
pub fn datatable(exceptions: &[(i32, &str)]) -> Vec<u8> {
    let mut section = (exceptions.len() as i32).to_be_bytes().to_vec();
    for (code, message) in exceptions {
        section.extend(code.to_be_bytes());
        section.extend((message.len() as i32).to_be_bytes());
        section.extend(message.as_bytes());
    }
    let end = 52 + section.len() as i32;
    let header = [
        3,
        0,
        0,
        52,
        section.len() as i32,
        end,
        0,
        end,
        0,
        end,
        0,
        end,
        0,
    ];
    let mut out: Vec<u8> = header.iter().flat_map(|v: &i32| v.to_be_bytes()).collect();
    out.extend(section);
    // Metadata: one entry, key id 2 (numDocsScanned), a long.
    let metadata = [
        &1i32.to_be_bytes()[..],
        &2i32.to_be_bytes(),
        &1000i64.to_be_bytes(),
    ]
    .concat();
    out.extend((metadata.len() as i32).to_be_bytes());
    out.extend(metadata);
    out
}

/// The 52-byte header of a version 3 DataTable holding `rows` rows (and no sections).
pub fn datatable_rows(rows: i32) -> Vec<u8> {
    let header = [3, rows, 1, 52, 0, 52, 0, 52, 0, 52, 0, 52, 0];
    header.iter().flat_map(|v: &i32| v.to_be_bytes()).collect()
}

/// A stream that counts itself as cancelled when dropped before it ended.
struct Guarded<S> {
    inner: Pin<Box<S>>,
    done: bool,
    cancelled: Counter,
}

impl<S: Stream<Item = Result<T, Status>>, T> Stream for Guarded<S> {
    type Item = Result<T, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.add();
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn guarded<T: 'static, S>(seen: &Seen, stream: S) -> BoxStream<T>
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    Box::pin(Guarded {
        inner: Box::pin(stream),
        done: false,
        cancelled: seen.cancelled.clone(),
    })
}

/// A fake Pinot server. The request's `sql` says what to do:
/// `blocks:<count>:<size>:<seed>` streams that many data blocks then a metadata response;
/// `slow:<count>:<gap_ms>` streams small blocks with gaps between them;
/// `hang` sends one block and then nothing; `fail:<code>:<after>` fails after some blocks.
struct FakePinot {
    name: String,
    seen: Seen,
}

fn response(kind: &str, server: &str, payload: Vec<u8>) -> ServerResponse {
    ServerResponse {
        metadata: HashMap::from([
            ("responseType".to_string(), kind.to_string()),
            ("server".to_string(), server.to_string()),
        ]),
        payload,
    }
}

#[tonic::async_trait]
impl PinotQueryServer for FakePinot {
    type SubmitStream = BoxStream<ServerResponse>;

    async fn submit(
        &self,
        request: Request<ServerRequest>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        use prost::Message;
        self.seen
            .record(request.metadata(), request.get_ref().encode_to_vec());
        let sql = request.get_ref().sql.clone();
        let name = self.name.clone();
        let parts: Vec<&str> = sql.split(':').collect();
        let num = |i: usize| {
            parts
                .get(i)
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let stream: BoxStream<ServerResponse> = match parts[0] {
            "blocks" => {
                let (count, size, seed) = (num(1), num(2) as usize, num(3));
                let items = (0..count)
                    .map(move |i| Ok(response("data", &name, block(seed, i, size))))
                    .chain(std::iter::once(Ok(response(
                        "metadata",
                        &self.name,
                        vec![],
                    ))))
                    .collect::<Vec<_>>();
                guarded(&self.seen, tokio_stream::iter(items))
            }
            // `pinot:<count>:<code>:<message>`: `count` data blocks, then a metadata message whose
            // DataTable carries Pinot's exception `code` (none when 0), as a Pinot server
            // reports a timeout or a missing segment: with status OK.
            "pinot" => {
                let (count, code) = (num(1), num(2) as i32);
                let message = parts
                    .get(3..)
                    .map(|rest| rest.join(":"))
                    .unwrap_or_default();
                let exceptions = if code == 0 {
                    vec![]
                } else {
                    vec![(code, message.as_str())]
                };
                // Only `responseType`, as Pinot sends: one map entry encodes one way, so
                // answers can be compared byte for byte.
                let pinot = |kind: &str, payload| ServerResponse {
                    metadata: HashMap::from([("responseType".to_string(), kind.to_string())]),
                    payload,
                };
                // Each data block: a DataTable header saying 10 rows, then filler bytes.
                let rows = |i| [datatable_rows(10), block(5, i, 1000)].concat();
                let items = (0..count)
                    .map(|i| Ok(pinot("data", rows(i))))
                    .chain(std::iter::once(Ok(pinot(
                        "metadata",
                        datatable(&exceptions),
                    ))))
                    .collect::<Vec<_>>();
                guarded(&self.seen, tokio_stream::iter(items))
            }
            "slow" => {
                let (count, gap) = (num(1), Duration::from_millis(num(2)));
                let stream = futures_util::stream::unfold(0, move |i| {
                    let name = name.clone();
                    async move {
                        if i > count {
                            return None;
                        }
                        if i > 0 {
                            tokio::time::sleep(gap).await;
                        }
                        let kind = if i == count { "metadata" } else { "data" };
                        Some((Ok(response(kind, &name, block(7, i, 64))), i + 1))
                    }
                });
                guarded(&self.seen, stream)
            }
            "hang" => {
                let first = tokio_stream::iter(vec![Ok(response("data", &name, block(1, 0, 32)))]);
                guarded(&self.seen, first.chain(futures_util::stream::pending()))
            }
            "fail" => {
                let code = tonic::Code::from(num(1) as i32);
                let after = num(2);
                let mut items: Vec<Result<ServerResponse, Status>> = (0..after)
                    .map(|i| Ok(response("data", &name, block(3, i, 100))))
                    .collect();
                let mut status = Status::new(code, "fake failure");
                status
                    .metadata_mut()
                    .insert("x-fake-trailer", "after-data".parse().unwrap());
                items.push(Err(status));
                guarded(&self.seen, tokio_stream::iter(items))
            }
            other => {
                return Err(Status::invalid_argument(format!("unknown command {other}")));
            }
        };
        Ok(Response::new(stream))
    }
}

use futures_util::StreamExt;

/// The echo service: every RPC kind, with custom headers and trailers.
struct FakeEcho {
    seen: Seen,
}

fn echo_status(code: u32) -> Status {
    let mut status = Status::new(tonic::Code::from(code as i32), "echo failure");
    status
        .metadata_mut()
        .insert("x-echo-trailer", "trailer-value".parse().unwrap());
    status
}

#[tonic::async_trait]
impl Echo for FakeEcho {
    async fn unary(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        self.seen
            .record(request.metadata(), request.get_ref().data.clone());
        let message = request.into_inner();
        if message.fail_code != 0 {
            return Err(echo_status(message.fail_code));
        }
        let mut response = Response::new(message);
        response
            .metadata_mut()
            .insert("x-echo-header", "header-value".parse().unwrap());
        Ok(response)
    }

    type ServerStreamStream = BoxStream<EchoMessage>;

    async fn server_stream(
        &self,
        request: Request<EchoMessage>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        self.seen
            .record(request.metadata(), request.get_ref().data.clone());
        let message = request.into_inner();
        let mut items: Vec<Result<EchoMessage, Status>> = (0..message.count)
            .map(|_| {
                Ok(EchoMessage {
                    data: message.data.clone(),
                    ..Default::default()
                })
            })
            .collect();
        if message.fail_code != 0 {
            items.push(Err(echo_status(message.fail_code)));
        }
        Ok(Response::new(guarded(
            &self.seen,
            tokio_stream::iter(items),
        )))
    }

    async fn client_stream(
        &self,
        request: Request<tonic::Streaming<EchoMessage>>,
    ) -> Result<Response<EchoMessage>, Status> {
        let headers = request.metadata().clone();
        let mut stream = request.into_inner();
        let mut data = Vec::new();
        while let Some(message) = stream.message().await? {
            data.extend_from_slice(&message.data);
        }
        self.seen.record(&headers, data.clone());
        Ok(Response::new(EchoMessage {
            data,
            ..Default::default()
        }))
    }

    type BidiStream = BoxStream<EchoMessage>;

    async fn bidi(
        &self,
        request: Request<tonic::Streaming<EchoMessage>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        self.seen.record(request.metadata(), Vec::new());
        let stream = request.into_inner().map(|message| {
            message.map(|m| EchoMessage {
                data: m.data,
                ..Default::default()
            })
        });
        Ok(Response::new(guarded(&self.seen, stream)))
    }
}

/// The secrets every in-process proxy can read by `password_env` name; tests never touch the
/// process environment, which other test threads read at the same time.
pub const TEST_SECRETS: [(&str, &str); 5] = [
    ("PINOT_PROXY_TEST_SERVER_PASSWORD", "pinot-pass"),
    ("PINOT_PROXY_TEST_INJECT_PASSWORD", "pw"),
    ("PINOT_PROXY_TEST_CONTROLLER_PASSWORD", "c-pass"),
    ("PINOT_PROXY_TEST_BROKER_PASSWORD", "b-pass"),
    ("PINOT_PROXY_TEST_USER_PASSWORD", "user-pass"),
];

/// Builds and binds a proxy from `config`, with [`TEST_SECRETS`].
pub async fn bind(config: &Config) -> anyhow::Result<Server> {
    App::build_with(config, &Secrets::from_pairs(TEST_SECRETS))?
        .bind()
        .await
}

/// A proxy running in-process.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    pub stats: Stats,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    pub fn connections_opened(&self) -> u64 {
        self.stats.upstream_connections_opened()
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Signals shutdown and waits for the proxy to finish draining.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.done.take().unwrap())
            .await
            .expect("proxy stops")
            .expect("proxy task")
    }
}

/// Starts a proxy allowing 127.0.0.1, with extra `[server]` and `[servers]` keys.
pub async fn start_proxy(server_keys: &str, servers_keys: &str) -> Proxy {
    start_proxy_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_delay_ms = 0\n{server_keys}\n\
         [servers]\nallow = [\"127.0.0.1\"]\n{servers_keys}\n"
    ))
    .await
}

/// A tonic channel to `addr` with large message limits.
pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

pub fn pinot_client(
    channel: tonic::transport::Channel,
) -> pinot::pinot_query_server_client::PinotQueryServerClient<tonic::transport::Channel> {
    pinot::pinot_query_server_client::PinotQueryServerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn echo_client(
    channel: tonic::transport::Channel,
) -> echo::echo_client::EchoClient<tonic::transport::Channel> {
    echo::echo_client::EchoClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A `ServerRequest` as Trino builds it, naming `port` on 127.0.0.1.
pub fn trino_request(sql: &str, port: u16) -> ServerRequest {
    ServerRequest {
        metadata: HashMap::from([
            ("FORWARD_HOST".to_string(), "127.0.0.1".to_string()),
            ("FORWARD_PORT".to_string(), port.to_string()),
            ("requestId".to_string(), "0".to_string()),
            ("brokerId".to_string(), "unknown".to_string()),
            ("enableTrace".to_string(), "false".to_string()),
            ("enableStreaming".to_string(), "true".to_string()),
            ("payloadType".to_string(), "sql".to_string()),
        ]),
        sql: sql.to_string(),
        segments: vec!["segment_0".to_string()],
        ..Default::default()
    }
}

/// Runs a Submit and collects every response, or the status it ended with.
pub async fn submit_all(
    channel: tonic::transport::Channel,
    request: ServerRequest,
) -> Result<Vec<ServerResponse>, Status> {
    let mut stream = pinot_client(channel).submit(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(response) = stream.message().await? {
        out.push(response);
    }
    Ok(out)
}

/// What a raw HTTP/2 gRPC call got back.
pub struct RawResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
    /// Whether the response HEADERS frame itself ended the stream (a trailers-only answer),
    /// as strict clients such as grpc-java require when no message follows.
    pub ended_with_headers: bool,
}

impl RawResponse {
    /// `grpc-status` from the trailers, or from the headers of a trailers-only response.
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_string())
    }
    pub fn grpc_message(&self) -> String {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| self.headers.get("grpc-message"))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// Frames `message` as one gRPC length-prefixed message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Sends one gRPC request with a raw HTTP/2 client and reads the whole response.
pub async fn raw_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawResponse {
    let tcp = TcpStream::connect(addr).await.unwrap();
    raw_call_on(tcp, path, headers, body).await.unwrap()
}

/// [`raw_call`] on a connected stream (e.g. TLS); an error when the HTTP/2 exchange fails.
pub async fn raw_call_on<I>(
    io: I,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<RawResponse, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let addr = "proxy";
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await?;
    let (parts, body) = response.into_parts();
    let ended_with_headers = http_body::Body::is_end_stream(&body);
    let collected = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("response ends")?;
    let trailers = collected.trailers().cloned();
    Ok(RawResponse {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
        ended_with_headers,
    })
}

/// How a bare HTTP/2 test server answers.
#[derive(Clone, Copy, PartialEq)]
pub enum Raw {
    /// Never answers.
    Stall,
    /// Sends headers and one message, then nothing.
    StallAfterFirst,
    /// Reads the whole request body and sends it back unchanged, then `grpc-status: 0`.
    Echo,
    /// Streams 1 MiB data frames without end, counting the bytes handed to HTTP/2 in
    /// `Seen::produced`.
    Flood,
    /// Answers as Pinot's server does for a missing table: one HEADERS frame carrying
    /// `grpc-status: 5` and `grpc-message: Table not found` with END_STREAM, no message.
    TrailersOnly,
}

/// A bare HTTP/2 server (no gRPC library) that records request headers and counts requests
/// dropped before they finished.
pub async fn start_raw_server(mode: Raw) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let server_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => return,
            };
            server_seen.accepted.add();
            let seen = server_seen.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    raw_answer(mode, seen.clone(), request)
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    // Only what each mode sends, so a test sees what the proxy adds.
                    .auto_date_header(false)
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    FakeServer {
        addr,
        seen,
        _stop: stop,
    }
}

type RawBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

pub async fn raw_answer(
    mode: Raw,
    seen: Seen,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<RawBody>, std::convert::Infallible> {
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    let guard = DropCounter(seen.cancelled.clone());
    let response = http::Response::builder().header("content-type", "application/grpc");
    match mode {
        Raw::Stall => {
            seen.requests.lock().unwrap().push((headers, Vec::new()));
            let _held = &guard;
            std::future::pending::<()>().await;
            unreachable!()
        }
        Raw::StallAfterFirst => {
            seen.requests.lock().unwrap().push((headers, Vec::new()));
            let first = futures_util::stream::iter(vec![Ok(http_body::Frame::data(Bytes::from(
                frame(b"first"),
            )))]);
            let body = first.chain(futures_util::stream::pending()).map(move |f| {
                let _held = &guard;
                f
            });
            Ok(response
                .body(BodyExt::boxed(http_body_util::StreamBody::new(body)))
                .unwrap())
        }
        Raw::Flood => {
            seen.requests.lock().unwrap().push((headers, Vec::new()));
            let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
            let produced = seen.produced.clone();
            let body = futures_util::stream::repeat(chunk).map(move |chunk| {
                let _held = &guard;
                produced.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(http_body::Frame::data(chunk))
            });
            Ok(response
                .body(BodyExt::boxed(http_body_util::StreamBody::new(body)))
                .unwrap())
        }
        Raw::TrailersOnly => {
            seen.requests.lock().unwrap().push((headers, Vec::new()));
            std::mem::forget(guard);
            Ok(response
                .header("grpc-status", "5")
                .header("grpc-message", "Table not found")
                .body(BodyExt::boxed(http_body_util::Empty::new()))
                .unwrap())
        }
        Raw::Echo => {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            seen.requests.lock().unwrap().push((headers, body.to_vec()));
            std::mem::forget(guard);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = vec![
                Ok(http_body::Frame::data(body)),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            Ok(response
                .body(BodyExt::boxed(http_body_util::StreamBody::new(
                    futures_util::stream::iter(frames),
                )))
                .unwrap())
        }
    }
}

struct DropCounter(Counter);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.add();
    }
}

/// Starts a proxy from complete config text (every section written out by the test).
pub async fn start_proxy_config(text: &str) -> Proxy {
    let config = Config::parse(text).expect("test config");
    let server = bind(&config).await.expect("bind");
    let addr = server.local_addr();
    let admin = server.admin_addr();
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Proxy {
        addr,
        admin,
        stats,
        stop: Some(stop),
        done: Some(done),
    }
}

/// One HTTP/1.1 GET on a connected stream (plain or TLS); the whole response.
pub async fn http1_get_on<I>(io: I, path: &str, headers: &[(&str, &str)]) -> http::Response<Bytes>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get(path).header("host", "proxy");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(http_body_util::Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("response ends")
        .unwrap()
        .to_bytes();
    http::Response::from_parts(parts, body)
}

/// [`http1_get_on`] a new plaintext connection to `addr`.
pub async fn http1_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<Bytes> {
    http1_get_on(TcpStream::connect(addr).await.unwrap(), path, headers).await
}

/// Installs a global `tracing` subscriber (info and up) writing into the returned buffer. A
/// global one, since a thread-local one races with other tests' threads over tracing's
/// per-callsite interest cache and can miss events; so once per test binary.
pub fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    captured
}

/// Log output captured in memory, for a global `tracing` subscriber.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// One instance a [`FakeController`] lists, as `GET /instances/{name}` describes it.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The Helix id: `Server_<host>_<port>`, `Broker_...`.
    pub name: String,
    pub host: String,
    pub grpc_port: i64,
    pub enabled: bool,
    pub queries_disabled: bool,
    pub tags: Vec<String>,
}

impl Instance {
    /// An enabled server taking queries on `grpc_port`, tagged `DefaultTenant_OFFLINE`.
    pub fn server(host: &str, grpc_port: u16) -> Instance {
        Instance {
            // Pinot's id carries the netty port, not the gRPC one.
            name: format!("Server_{host}_{}", 10_000 + u32::from(grpc_port)),
            host: host.to_string(),
            grpc_port: i64::from(grpc_port),
            enabled: true,
            queries_disabled: false,
            tags: vec!["DefaultTenant_OFFLINE".to_string()],
        }
    }

    fn json(&self) -> String {
        let tags: Vec<String> = self.tags.iter().map(|t| format!("\"{t}\"")).collect();
        let disabled = if self.queries_disabled {
            ",\"queriesDisabled\":\"true\""
        } else {
            ""
        };
        format!(
            "{{\"instanceName\":\"{}\",\"hostName\":\"{}\",\"enabled\":{},\"port\":\"8098\",\
             \"tags\":[{}],\"pools\":null,\"grpcPort\":{},\"adminPort\":8097{disabled}}}",
            self.name,
            self.host,
            self.enabled,
            tags.join(","),
            self.grpc_port
        )
    }
}

/// How a [`FakeController`] answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ControllerMode {
    Normal,
    /// 503 to everything, as a controller that is down.
    Down,
    /// 200 with a body that is not JSON.
    Garbage,
}

/// A fake Pinot controller on 127.0.0.1:0 (HTTP/1.1, keep-alive): `GET /instances` lists
/// the instances the test sets (and a broker and a controller), `GET /instances/{name}`
/// describes one. It records every `Authorization` header and counts list requests.
pub struct FakeController {
    pub addr: SocketAddr,
    pub instances: Arc<Mutex<Vec<Instance>>>,
    pub mode: Arc<Mutex<ControllerMode>>,
    /// The `Authorization` header of every request (`-` when absent).
    pub authorization: Arc<Mutex<Vec<String>>>,
    /// `GET /instances` requests answered.
    pub lists: Counter,
    _stop: oneshot::Sender<()>,
}

impl FakeController {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn set(&self, instances: Vec<Instance>) {
        *self.instances.lock().unwrap() = instances;
    }
    pub fn set_mode(&self, mode: ControllerMode) {
        *self.mode.lock().unwrap() = mode;
    }
    /// Waits until a whole refresh has run after this call: the second list request from
    /// now on starts only once the first one's refresh ended.
    pub async fn next_refresh(&self) {
        let now = self.lists.get();
        self.lists.wait_for(now + 2).await;
    }
}

pub async fn start_controller(instances: Vec<Instance>) -> FakeController {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let controller = FakeController {
        addr,
        instances: Arc::new(Mutex::new(instances)),
        mode: Arc::new(Mutex::new(ControllerMode::Normal)),
        authorization: Arc::default(),
        lists: Counter::new(),
        _stop: stop,
    };
    let (instances, mode, authorization, lists) = (
        controller.instances.clone(),
        controller.mode.clone(),
        controller.authorization.clone(),
        controller.lists.clone(),
    );
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => return,
            };
            let (instances, mode, authorization, lists) = (
                instances.clone(),
                mode.clone(),
                authorization.clone(),
                lists.clone(),
            );
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let seen = request
                        .headers()
                        .get("authorization")
                        .map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string());
                    authorization.lock().unwrap().push(seen);
                    let path = request.uri().path().to_string();
                    let listed = instances.lock().unwrap().clone();
                    let (status, body) = match *mode.lock().unwrap() {
                        ControllerMode::Down => (503, "{\"error\":\"down\"}".to_string()),
                        ControllerMode::Garbage => (200, "<html>not json</html>".to_string()),
                        ControllerMode::Normal if path == "/instances" => {
                            let mut names: Vec<String> =
                                listed.iter().map(|i| format!("\"{}\"", i.name)).collect();
                            names.push("\"Broker_127.0.0.1_8099\"".into());
                            names.push("\"Controller_127.0.0.1_9000\"".into());
                            (200, format!("{{\"instances\":[{}]}}", names.join(",")))
                        }
                        ControllerMode::Normal => {
                            let name = path.strip_prefix("/instances/").unwrap_or_default();
                            match listed.iter().find(|i| i.name == name) {
                                Some(instance) => (200, instance.json()),
                                None => (404, "{\"code\":404}".to_string()),
                            }
                        }
                    };
                    if path == "/instances" {
                        lists.add();
                    }
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    controller
}
