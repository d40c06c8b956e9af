//! Fast fake Pinot servers: h2c listeners on 127.0.0.1:0 that answer `Submit` with pre-encoded
//! response messages (one shared `Bytes` per message size, cloned for every message sent) and
//! count the connections they accept, so the bench can tell whether connections are reused.

use crate::pinot::{ServerRequest, ServerResponse};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;

/// Request metadata key naming the response the fake server streams: `<count>x<bytes>`.
pub const RESPONSE_KEY: &str = "benchResponse";

/// Frames a protobuf message as one gRPC message (uncompressed).
pub fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message.encode(&mut buf).expect("capacity reserved");
    buf.freeze()
}

/// Pre-encoded response messages, shared by every server and call.
pub struct Payloads {
    data: HashMap<usize, Bytes>,
    end: Bytes,
}

impl Payloads {
    /// Encodes one `data` message for each payload size, and the closing `metadata` message.
    pub fn new(sizes: &[usize]) -> Payloads {
        Payloads {
            data: sizes
                .iter()
                .map(|&size| (size, data_message(size)))
                .collect(),
            end: grpc_frame(&ServerResponse {
                metadata: HashMap::from([
                    ("responseType".to_string(), "metadata".to_string()),
                    ("numDocsScanned".to_string(), "1000".to_string()),
                ]),
                payload: clean_datatable(),
            }),
        }
    }

    /// The framed `data` message of this payload size (encoded now if it was not planned).
    fn data(&self, size: usize) -> Bytes {
        self.data
            .get(&size)
            .cloned()
            .unwrap_or_else(|| data_message(size))
    }

    /// Bytes of response body a call for `count` messages of `size` receives.
    pub fn response_len(&self, count: u64, size: usize) -> u64 {
        count * self.data(size).len() as u64 + self.end.len() as u64
    }
}

/// The DataTable of a Pinot server's last message when the query went well: version 3, no
/// rows, an empty exceptions section and one metadata entry (numDocsScanned), so the proxy's
/// partial-result check does all its work.
fn clean_datatable() -> Vec<u8> {
    let exceptions = 0i32.to_be_bytes();
    let end = 52 + exceptions.len() as i32;
    let header = [3, 0, 0, 52, 4, end, 0, end, 0, end, 0, end, 0];
    let mut out: Vec<u8> = header.iter().flat_map(|v: &i32| v.to_be_bytes()).collect();
    out.extend(exceptions);
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

fn data_message(size: usize) -> Bytes {
    grpc_frame(&ServerResponse {
        metadata: HashMap::from([("responseType".to_string(), "data".to_string())]),
        payload: vec![0x5a; size],
    })
}

/// What one fake server counted.
#[derive(Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub calls: AtomicU64,
}

impl Stats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.accepted() - self.closed.load(Ordering::Relaxed)
    }
}

/// A listening fake server; dropping it stops accepting (open connections are left to the
/// runtime's shutdown).
pub struct FakeServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts `count` fake servers on 127.0.0.1, each on its own port.
pub async fn start(count: usize, payloads: &Arc<Payloads>) -> std::io::Result<Vec<FakeServer>> {
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let accept = tokio::spawn(accept_loop(listener, stats.clone(), payloads.clone()));
        servers.push(FakeServer {
            addr,
            stats,
            accept,
        });
    }
    Ok(servers)
}

async fn accept_loop(listener: TcpListener, stats: Arc<Stats>, payloads: Arc<Payloads>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (stats, payloads) = (stats.clone(), payloads.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn({
                let stats = stats.clone();
                move |request| answer(request, stats.clone(), payloads.clone())
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            stats.closed.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// Reads the request, then streams the messages its metadata asks for and status OK.
async fn answer(
    request: Request<Incoming>,
    stats: Arc<Stats>,
    payloads: Arc<Payloads>,
) -> Result<Response<ResponseStream>, Infallible> {
    stats.calls.fetch_add(1, Ordering::Relaxed);
    let (count, size) = match read_spec(request).await {
        Ok(spec) => spec,
        Err(message) => return Ok(trailers_only(3, &message)),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = ResponseStream {
        message: payloads.data(size),
        left: count,
        end: Some(payloads.end.clone()),
        trailers: Some(trailers),
    };
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .expect("static response parts"))
}

async fn read_spec(request: Request<Incoming>) -> Result<(u64, usize), String> {
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("reading the request: {err}"))?
        .to_bytes();
    if body.len() < 5 || body[0] != 0 {
        return Err("not one uncompressed gRPC message".into());
    }
    let request = ServerRequest::decode(&body[5..]).map_err(|err| err.to_string())?;
    let spec = request
        .metadata
        .get(RESPONSE_KEY)
        .ok_or_else(|| format!("no {RESPONSE_KEY} in metadata"))?;
    let parsed = spec
        .split_once('x')
        .and_then(|(count, size)| Some((count.parse().ok()?, size.parse().ok()?)));
    parsed.ok_or_else(|| format!("bad {RESPONSE_KEY} {spec:?}"))
}

fn trailers_only(code: u32, message: &str) -> Response<ResponseStream> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", code)
        .header(
            "grpc-message",
            HeaderValue::from_str(message).unwrap_or(HeaderValue::from_static("bad request")),
        )
        .body(ResponseStream {
            message: Bytes::new(),
            left: 0,
            end: None,
            trailers: None,
        })
        .expect("valid response parts")
}

/// `left` copies of one framed message, the closing message, then the trailers.
pub struct ResponseStream {
    message: Bytes,
    left: u64,
    end: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = if self.left > 0 {
            self.left -= 1;
            Frame::data(self.message.clone())
        } else if let Some(end) = self.end.take() {
            Frame::data(end)
        } else if let Some(trailers) = self.trailers.take() {
            Frame::trailers(trailers)
        } else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.end.is_none() && self.trailers.is_none()
    }
}
