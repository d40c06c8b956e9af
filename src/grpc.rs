//! Forwarding of gRPC calls: find the target (first `Submit` message or headers), take a pooled
//! upstream connection, and stream headers, messages and trailers through unchanged, enforcing
//! `grpc-timeout`. Upstream failures become gRPC statuses, mid-stream as error trailers.

use crate::auth::{Authenticator, Upstream};
use crate::error::{ProxyError, Source};
use crate::pool::{Lease, Origin, Pool};
use crate::rest::Rest;
use crate::route::{self, Target};
use crate::tls::ClientIdentity;
use crate::wire;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use tracing::Instrument;

/// The method whose first message names its target server.
pub const SUBMIT_PATH: &str = "/org.apache.pinot.common.proto.PinotQueryServer/Submit";
/// The broker's query method (Pinot 1.4+), sent to `[broker] grpc_port` when no target is named.
pub const BROKER_SUBMIT_PATH: &str = "/org.apache.pinot.common.proto.PinotQueryBroker/Submit";

/// Response body type served to callers.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, crate::BoxError>;

/// Headers that belong to one hop, or to the proxy itself, and are not forwarded.
const DROPPED_HEADERS: [&str; 12] = [
    "connection",
    "proxy-authorization",
    // The first message may be rewritten; HTTP/2 needs no length.
    "content-length",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "forward_host",
    "forward-host",
    "forward_port",
    "forward-port",
];

/// Each proxy adds its instance id to this header; a request that already carries ours has
/// been routed back to us (a target naming the proxy itself) and is refused.
pub const VIA_HEADER: &str = "pinot-proxy-via";

/// Bounds on reading first messages for routing, which happens before the call is
/// forwarded (and, when credentials are inside the message, before it is authenticated).
#[derive(Clone)]
pub struct RoutingLimits {
    /// Largest first message read.
    pub max_message_bytes: u32,
    /// Time the client has to send it.
    pub timeout: Duration,
    /// Bytes all first messages being read may hold at once.
    pub budget: Arc<tokio::sync::Semaphore>,
    pub budget_bytes: u32,
}

/// One client connection's share of the routing budget: its first messages being read may hold
/// at most one largest message at once, so a single connection cannot take the whole budget.
/// Put into each request's extensions by the connection that carries it.
#[derive(Clone)]
pub struct ConnectionShare(pub Arc<tokio::sync::Semaphore>);

impl ConnectionShare {
    pub fn new(limits: &RoutingLimits) -> ConnectionShare {
        ConnectionShare(Arc::new(tokio::sync::Semaphore::new(
            limits.max_message_bytes as usize,
        )))
    }
}

/// A random id for this proxy process, sent in [`VIA_HEADER`].
pub fn instance_id() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    HeaderValue::try_from(format!("{random:016x}")).expect("hex digits are a valid header value")
}

/// Whether `headers` show the request already passed through the proxy with `instance`.
pub fn came_through(headers: &HeaderMap, instance: &HeaderValue) -> bool {
    headers
        .get_all(VIA_HEADER)
        .iter()
        .any(|via| via.as_bytes() == instance.as_bytes())
}

/// Forwards gRPC calls to the servers they name.
#[derive(Clone)]
pub struct Forwarder {
    pool: Pool<RequestBody>,
    limits: RoutingLimits,
    instance: HeaderValue,
    auth: Arc<Authenticator>,
    upstream_auth: Upstream,
    rest: Option<Arc<Rest>>,
}

impl Forwarder {
    pub fn new(
        pool: Pool<RequestBody>,
        limits: RoutingLimits,
        auth: Arc<Authenticator>,
        upstream_auth: Upstream,
        rest: Option<Arc<Rest>>,
        instance: HeaderValue,
    ) -> Forwarder {
        Forwarder {
            pool,
            limits,
            instance,
            auth,
            upstream_auth,
            rest,
        }
    }

    /// A new client connection's share of the routing budget.
    pub fn connection_share(&self) -> ConnectionShare {
        ConnectionShare::new(&self.limits)
    }

    pub fn pool(&self) -> &Pool<RequestBody> {
        &self.pool
    }

    /// Forwards one call; every failure is answered as a gRPC status.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let method = crate::error::echo(request.uri().path());
        let span = tracing::info_span!(
            "grpc",
            grpc.method = %method,
            target = tracing::field::Empty,
        );
        let mut record = CallRecord::new(method, span.clone());
        match self
            .try_forward(request, peer, &mut record)
            .instrument(span)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                record.finish_with_error(&err);
                err.to_response::<ProxyBody>()
            }
        }
    }

    async fn try_forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        record: &mut CallRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let deadline = match request.headers().get("grpc-timeout") {
            // A deadline already spent (`0n`) ends the call before any upstream work.
            Some(value) => match parse_timeout(value)? {
                Duration::ZERO => return Err(ProxyError::DeadlineExceeded(0)),
                timeout => Some(Instant::now() + timeout),
            },
            None => None,
        };
        let (mut parts, mut body) = request.into_parts();
        let header_target = route::target_from_headers(&parts.headers)?;
        let looped = came_through(&parts.headers, &self.instance);

        let identity = parts.extensions.get::<ClientIdentity>().cloned();
        let share = parts.extensions.get::<ConnectionShare>().cloned();
        let mut prefix = None;
        let mut origin = Origin::Caller;
        let target = if parts.uri.path() == SUBMIT_PATH {
            // Credentials in the headers (or a client certificate) are checked before anything
            // is read; only credentials inside the message make it wait for the message.
            let in_body = self
                .auth
                .grpc_credentials_in_body(&parts.headers, identity.as_ref());
            if !in_body {
                self.authenticate(&parts.headers, None, identity.as_ref(), peer)?;
            }
            let first =
                with_deadline(deadline, self.read_first_message(&mut body, share)).await??;
            let request = match first.decode() {
                Some(request) => Some(request.map_err(|err| {
                    ProxyError::BadMessage(format!("cannot decode ServerRequest: {err}"))
                })?),
                None if header_target.is_some() => {
                    if !matches!(self.upstream_auth, Upstream::PassThrough) {
                        return Err(ProxyError::BadMessage(
                            "the first message is compressed, so the proxy cannot replace the \
                             credentials in it; send it uncompressed"
                                .into(),
                        ));
                    }
                    None
                }
                None => {
                    return Err(ProxyError::BadMessage(
                        "the first message is compressed, so its FORWARD_HOST cannot be read; \
                         send forward_host and forward_port headers"
                            .into(),
                    ))
                }
            };
            let metadata = request.as_ref().map(|request| &request.metadata);
            if in_body {
                self.authenticate(&parts.headers, metadata, identity.as_ref(), peer)?;
            }
            let body_target = match metadata {
                Some(metadata) => route::target_from_metadata(metadata)?,
                None => None,
            };
            // Any spelling: a server that reads keys case-insensitively must not see the
            // caller's credentials either.
            let has_authorization = metadata.is_some_and(|m| {
                m.keys()
                    .any(|key| key.eq_ignore_ascii_case("authorization"))
            });
            prefix = Some(self.with_upstream_credentials(first, has_authorization)?);
            body_target.or(header_target)
        } else {
            self.authenticate(&parts.headers, None, identity.as_ref(), peer)?;
            if header_target.is_none() && parts.uri.path() == BROKER_SUBMIT_PATH {
                origin = Origin::Configured;
                self.rest
                    .as_ref()
                    .and_then(|rest| rest.broker_grpc_target())
            } else {
                header_target
            }
        }
        .ok_or(ProxyError::NoTarget)?;
        record.set_target(&target);
        if looped {
            return Err(ProxyError::NotAllowed {
                target: target.to_string(),
                reason: "it is this proxy itself (the request came back through it)".into(),
            });
        }
        parts.headers.append(VIA_HEADER, self.instance.clone());
        if let Some(at) = deadline {
            // The server gets what is left, not what the caller started with.
            let left = at.saturating_duration_since(Instant::now());
            parts.headers.insert("grpc-timeout", encode_timeout(left));
        }

        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        parts.uri = Uri::try_from(format!("http://{target}{path}"))
            .map_err(|err| ProxyError::BadTarget(format!("{target}{path}: {err}")))?;
        for name in DROPPED_HEADERS {
            parts.headers.remove(name);
        }
        self.upstream_auth.apply(&mut parts.headers);
        strip_te(&mut parts.headers);
        let mut upstream_request = Request::from_parts(
            parts,
            RequestBody {
                prefix,
                inner: body,
                bytes: record.bytes_in.clone(),
            },
        );

        // A pooled connection can close between checkout and send; a request it never took
        // is sent once more on a fresh connection.
        let mut retried = false;
        let (response, lease) = loop {
            let lease = with_deadline(deadline, self.pool.checkout(&target, origin)).await??;
            let mut sender = lease.sender();
            match with_deadline(deadline, sender.try_send_request(upstream_request)).await? {
                Ok(response) => break (response, lease),
                Err(mut err) => match err.take_message() {
                    Some(request) if !retried => {
                        tracing::debug!(error = %err.error(), "pooled connection closed; retrying");
                        retried = true;
                        upstream_request = request;
                    }
                    _ => {
                        return Err(ProxyError::StreamFailed {
                            target: target.to_string(),
                            reason: err.into_error().to_string(),
                        })
                    }
                },
            }
        };
        let (parts, body) = response.into_parts();
        if let Some(status) = parts.headers.get("grpc-status") {
            record.status = Some(status_string(status));
        }
        let body = ForwardBody {
            inner: Some(body),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into()))),
            target,
            record: std::mem::replace(record, CallRecord::empty()),
            _lease: lease,
        };
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}

impl Forwarder {
    fn authenticate(
        &self,
        headers: &HeaderMap,
        metadata: Option<&HashMap<String, String>>,
        identity: Option<&ClientIdentity>,
        peer: SocketAddr,
    ) -> Result<(), ProxyError> {
        self.auth
            .check_grpc(headers, metadata, identity, peer)
            .map_err(|err| ProxyError::Unauthenticated(err.to_string()))
    }

    /// The bytes to send for the first message: the original ones, unless the caller's
    /// `authorization` must be removed from its metadata or the proxy's put in. Then only the
    /// metadata entries change, at the byte level, so fields this proxy does not know survive;
    /// the bytes read after the message follow unchanged.
    fn with_upstream_credentials(
        &self,
        first: FirstMessage,
        has_authorization: bool,
    ) -> Result<Bytes, ProxyError> {
        let inject = match &self.upstream_auth {
            Upstream::PassThrough => return Ok(first.bytes),
            Upstream::Strip if !has_authorization => return Ok(first.bytes),
            Upstream::Strip => None,
            Upstream::Inject(value) => Some(value.as_bytes()),
        };
        let message = &first.bytes[5..5 + first.length];
        let rewritten =
            wire::replace_map_entry(message, 1, b"authorization", inject).map_err(|err| {
                ProxyError::BadMessage(format!("cannot rewrite ServerRequest: {err}"))
            })?;
        let rest = &first.bytes[5 + first.length..];
        let mut bytes = BytesMut::with_capacity(5 + rewritten.len() + rest.len());
        bytes.extend_from_slice(&[0]);
        bytes.extend_from_slice(&(rewritten.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&rewritten);
        bytes.extend_from_slice(rest);
        Ok(bytes.freeze())
    }

    /// Reads request frames until the first length-prefixed message is complete, within the
    /// routing limits.
    async fn read_first_message(
        &self,
        body: &mut Incoming,
        share: Option<ConnectionShare>,
    ) -> Result<FirstMessage, ProxyError> {
        let limits = &self.limits;
        let timeout = limits.timeout;
        tokio::time::timeout(timeout, read_first_message(body, limits, share))
            .await
            .unwrap_or_else(|_| {
                Err(ProxyError::BadMessage(format!(
                    "the first request message did not arrive within {} ms \
                     (server.first_message_timeout_ms)",
                    timeout.as_millis()
                )))
            })
    }
}

/// Runs `future` until the call's deadline, if it has one.
async fn with_deadline<T>(
    deadline: Option<Instant>,
    future: impl Future<Output = T>,
) -> Result<T, ProxyError> {
    match deadline {
        None => Ok(future.await),
        Some(at) => {
            let started = Instant::now();
            tokio::time::timeout_at(at.into(), future)
                .await
                .map_err(|_| ProxyError::DeadlineExceeded(started.elapsed().as_millis()))
        }
    }
}

/// Keeps `te: trailers` (gRPC needs it) and drops any other `te` value, which is hop-by-hop.
fn strip_te(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(http::header::TE)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers.remove(http::header::TE);
    if trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Encodes a `grpc-timeout` value: at most 8 digits, in the finest unit that fits.
pub fn encode_timeout(left: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let value = [
        (left.as_micros(), "u"),
        (left.as_millis(), "m"),
        (u128::from(left.as_secs()), "S"),
        (u128::from(left.as_secs() / 60), "M"),
    ]
    .into_iter()
    .find(|(amount, _)| *amount <= MAX)
    .map_or_else(
        || format!("{}H", (left.as_secs() / 3600).min(MAX as u64)),
        |(amount, unit)| format!("{amount}{unit}"),
    );
    HeaderValue::try_from(value).expect("digits and a unit are a valid header value")
}

/// Parses `grpc-timeout`: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &HeaderValue) -> Result<Duration, ProxyError> {
    let bad = || {
        ProxyError::BadTimeout(crate::error::echo(&String::from_utf8_lossy(
            value.as_bytes(),
        )))
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    })
}

/// The part of `ServerRequest` (proto/server.proto) routing and auth read: its metadata map.
/// Decoding only this skips allocating the SQL text and segment lists of every call, while
/// the other fields are still checked to be well-formed.
#[derive(Clone, PartialEq, prost::Message)]
struct RequestMetadata {
    #[prost(map = "string, string", tag = "1")]
    metadata: HashMap<String, String>,
}

/// The first gRPC message of a request, as the bytes read from the client.
struct FirstMessage {
    /// Its share of the routing budget, returned when the message is sent on.
    _reserved: Reservation,
    /// Everything read from the body so far, forwarded as is ahead of the rest.
    bytes: Bytes,
    compressed: bool,
    length: usize,
}

impl FirstMessage {
    /// Decodes the message; `None` when it is compressed.
    fn decode(&self) -> Option<Result<RequestMetadata, prost::DecodeError>> {
        if self.compressed {
            return None;
        }
        Some(RequestMetadata::decode(&self.bytes[5..5 + self.length]))
    }
}

/// Reads request frames until the first length-prefixed message is complete. Memory is
/// reserved as data arrives (not as the length prefix declares), from the budget all calls
/// share and from the connection's own share.
async fn read_first_message(
    body: &mut Incoming,
    limits: &RoutingLimits,
    share: Option<ConnectionShare>,
) -> Result<FirstMessage, ProxyError> {
    let limit = limits.max_message_bytes;
    let mut buf = BytesMut::new();
    let mut reserved = Reservation::default();
    let mut needed = 5usize;
    let mut header: Option<(bool, usize)> = None;
    loop {
        if header.is_none() && buf.len() >= 5 {
            let compressed = match buf[0] {
                0 => false,
                1 => true,
                flag => {
                    return Err(ProxyError::BadMessage(format!(
                        "compressed-flag byte is {flag}, not 0 or 1"
                    )))
                }
            };
            let length = (&buf[1..5]).get_u32();
            if length > limit {
                return Err(ProxyError::MessageTooLarge {
                    size: length.into(),
                    limit: limit.into(),
                });
            }
            header = Some((compressed, length as usize));
            needed = 5 + length as usize;
        }
        if let Some((compressed, length)) = header {
            if buf.len() >= needed {
                return Ok(FirstMessage {
                    _reserved: reserved,
                    bytes: buf.freeze(),
                    compressed,
                    length,
                });
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    reserved.grow(data.len(), limits, share.as_ref())?;
                    buf.extend_from_slice(&data);
                } else {
                    return Err(ProxyError::BadMessage(
                        "trailers arrived before the first message was complete".into(),
                    ));
                }
            }
            Some(Err(err)) => return Err(ProxyError::ClientStream(err.to_string())),
            None => {
                return Err(ProxyError::BadMessage(format!(
                    "request ended after {} of {needed} bytes of the first message",
                    buf.len()
                )))
            }
        }
    }
}

/// The routing memory one first message holds, returned when it is dropped.
#[derive(Default)]
struct Reservation {
    budget: Option<tokio::sync::OwnedSemaphorePermit>,
    share: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Reservation {
    fn grow(
        &mut self,
        bytes: usize,
        limits: &RoutingLimits,
        share: Option<&ConnectionShare>,
    ) -> Result<(), ProxyError> {
        let Ok(bytes) = u32::try_from(bytes) else {
            return Err(ProxyError::RoutingBudget(limits.budget_bytes));
        };
        if bytes == 0 {
            return Ok(());
        }
        if let Some(share) = share {
            let permit = share
                .0
                .clone()
                .try_acquire_many_owned(bytes)
                .map_err(|_| ProxyError::ConnectionRoutingShare(limits.max_message_bytes))?;
            merge(&mut self.share, permit);
        }
        let permit = limits
            .budget
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| ProxyError::RoutingBudget(limits.budget_bytes))?;
        merge(&mut self.budget, permit);
        Ok(())
    }
}

fn merge(
    held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    more: tokio::sync::OwnedSemaphorePermit,
) {
    match held {
        Some(held) => held.merge(more),
        None => *held = Some(more),
    }
}

/// The request body sent upstream: the bytes read for routing, then the rest of the client's.
pub struct RequestBody {
    prefix: Option<Bytes>,
    inner: Incoming,
    bytes: Arc<AtomicU64>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            self.bytes.fetch_add(prefix.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(Some(data))) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + prefix);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// The response body sent to the caller: the upstream's frames as they come, ended with error
/// trailers when the upstream stream breaks or the deadline passes. Dropping it (the caller
/// cancelled) drops the upstream response, which resets the upstream stream.
struct ForwardBody {
    inner: Option<Incoming>,
    deadline: Option<Pin<Box<Sleep>>>,
    target: Target,
    record: CallRecord,
    _lease: Lease<RequestBody>,
}

impl ForwardBody {
    fn fail(&mut self, err: ProxyError) -> Poll<Option<Result<Frame<Bytes>, crate::BoxError>>> {
        self.inner = None;
        self.deadline = None;
        self.record.finish_with_error(&err);
        Poll::Ready(Some(Ok(Frame::trailers(err.status_headers()))))
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                let elapsed = this.record.started.elapsed().as_millis();
                return this.fail(ProxyError::DeadlineExceeded(elapsed));
            }
        }
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes_out += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(status) = trailers.get("grpc-status") {
                        this.record.status = Some(status_string(status));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                let err = ProxyError::StreamFailed {
                    target: this.target.to_string(),
                    reason: err.to_string(),
                };
                this.fail(err)
            }
            None => {
                this.inner = None;
                this.record.ended = true;
                Poll::Ready(None)
            }
        }
    }

    // An upstream answer that ended with its HEADERS frame (a status and no message, as
    // Pinot sends `NOT_FOUND: Table not found`) must leave as one HEADERS frame too: hyper
    // would otherwise send the headers open and end the stream with an empty DATA frame,
    // which grpc-java rejects as INTERNAL.
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }
}

fn status_string(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// One call's log line, written when the call ends, fails or is dropped by the caller.
struct CallRecord {
    method: String,
    target: Option<String>,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    status: Option<String>,
    ended: bool,
    error: Option<(Source, String)>,
    span: Option<tracing::Span>,
    logged: bool,
}

impl CallRecord {
    fn new(method: String, span: tracing::Span) -> CallRecord {
        CallRecord {
            method,
            target: None,
            started: Instant::now(),
            bytes_in: Arc::default(),
            bytes_out: 0,
            status: None,
            ended: false,
            error: None,
            span: Some(span),
            logged: false,
        }
    }

    fn empty() -> CallRecord {
        CallRecord {
            method: String::new(),
            target: None,
            started: Instant::now(),
            bytes_in: Arc::default(),
            bytes_out: 0,
            status: None,
            ended: false,
            error: None,
            span: None,
            logged: true,
        }
    }

    fn set_target(&mut self, target: &Target) {
        let name = target.to_string();
        if let Some(span) = &self.span {
            span.record("target", name.as_str());
        }
        self.target = Some(name);
    }

    fn finish_with_error(&mut self, err: &ProxyError) {
        self.status = Some(err.code().as_str().to_owned());
        self.error = Some((err.source_side(), err.to_string()));
        self.ended = true;
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if self.logged {
            return;
        }
        let _entered = self.span.as_ref().map(|span| span.enter());
        let status = match (&self.status, self.ended) {
            (Some(status), _) => status.as_str(),
            (None, true) => "none",
            (None, false) => "cancelled by client",
        };
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let target = self.target.as_deref().unwrap_or("-");
        match &self.error {
            Some((Source::Upstream | Source::Proxy, error)) => tracing::warn!(
                grpc.method = %self.method, target, grpc.status = status, duration_ms,
                bytes_in, bytes_out = self.bytes_out, error = %error, "call failed"
            ),
            Some((Source::Client, error)) => tracing::info!(
                grpc.method = %self.method, target, grpc.status = status, duration_ms,
                bytes_in, bytes_out = self.bytes_out, error = %error, "call refused"
            ),
            None => tracing::info!(
                grpc.method = %self.method, target, grpc.status = status, duration_ms,
                bytes_in, bytes_out = self.bytes_out, "call"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parsing_table() {
        let ok = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (text, expected) in ok {
            let value = HeaderValue::from_static(text);
            assert_eq!(parse_timeout(&value).unwrap(), expected, "{text}");
        }
        for bad in [
            "",
            "m",
            "10",
            "123456789m",
            "1.5S",
            "-1S",
            "1s",
            "1 S",
            "１S",
        ] {
            let value = HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static("x"));
            assert!(parse_timeout(&value).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoded_timeouts_parse_back_within_one_unit() {
        for left in [
            Duration::ZERO,
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(200_000),
            Duration::from_secs(100_000_000 * 60),
            Duration::MAX,
        ] {
            let encoded = encode_timeout(left);
            let parsed = parse_timeout(&encoded).unwrap();
            assert!(parsed <= left, "{left:?} -> {encoded:?}");
        }
        assert_eq!(encode_timeout(Duration::from_millis(250)), "250000u");
    }

    proptest::proptest! {
        #[test]
        fn timeout_parsing_never_panics(text in "\\PC{0,12}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let _ = parse_timeout(&value);
            }
        }

        #[test]
        fn encoding_always_parses(micros in 0u64..u64::MAX) {
            let left = Duration::from_micros(micros);
            proptest::prop_assert!(parse_timeout(&encode_timeout(left)).unwrap() <= left);
        }
    }
}
