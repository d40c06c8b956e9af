//! gRPC forwarding, as named phases: `deadline` (from `grpc-timeout`), `route` (authenticate the
//! caller and find the target: first `Submit` message or headers), `prepare` (the upstream
//! request), `send` (on a pooled connection), then the response streams back through
//! [`body::ForwardBody`] unchanged, ended with error trailers if the upstream breaks.

mod body;
mod datatable;
mod first_message;
mod guard;
mod rewrite;
mod timeout;

pub(crate) use first_message::{ConnectionShare, RoutingLimits};

use crate::access_log::{Audit, CallRecord};
use crate::error::{echo, echo_bounded, Error};
use crate::http::{came_through, strip_hop_by_hop_keep_te_trailers, ProxyBody, VIA_HEADER};
use crate::metrics::Metrics;
use crate::policy::{target, token, Authenticator, Target, UpstreamCredentials};
use crate::respond;
use crate::tls::ClientIdentity;
use crate::upstream::{BrokerTargets, Origin, Pool};
use body::{ForwardBody, RequestBody};
use bytes::Bytes;
use guard::Guard;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeout::with_deadline;
use tracing::Instrument;

/// The method whose first message names its target server.
pub(crate) const SUBMIT_PATH: &str = "/org.apache.pinot.common.proto.PinotQueryServer/Submit";
/// The broker's query method (Pinot 1.4+), sent to `[broker] grpc_port` when no target is named.
pub(crate) const BROKER_SUBMIT_PATH: &str =
    "/org.apache.pinot.common.proto.PinotQueryBroker/Submit";

/// Request headers that are the proxy's own business, beyond the hop-by-hop ones.
const DROPPED_HEADERS: [&str; 6] = [
    // The first message may be rewritten; HTTP/2 needs no length.
    "content-length",
    "host",
    "forward_host",
    "forward-host",
    "forward_port",
    "forward-port",
];

/// Forwards gRPC calls to the servers they name.
#[derive(Clone)]
pub(crate) struct Forwarder {
    pub(crate) pool: Pool<RequestBody>,
    pub(crate) limits: RoutingLimits,
    /// This proxy's id in `pinot-proxy-via`.
    pub(crate) instance: HeaderValue,
    pub(crate) auth: Arc<Authenticator>,
    /// What the servers get in place of the caller's credentials.
    pub(crate) credentials: UpstreamCredentials,
    /// Where `PinotQueryBroker/Submit` calls that name no target go.
    pub(crate) brokers: Option<Arc<BrokerTargets>>,
    /// `servers.partial_results = "fail"`: `Submit` answers whose last message carries Pinot's
    /// exceptions end with an error.
    pub(crate) guard_partial_results: bool,
    /// `log.audit`: the SQL quoted in audit lines is cut at this many bytes; `None`: no audit.
    pub(crate) audit_sql_max_bytes: Option<usize>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Where a call goes, and what goes first: the bytes read to route it, possibly rewritten.
struct Routed {
    target: Target,
    origin: Origin,
    prefix: Option<Bytes>,
    audit: Option<Box<Audit>>,
}

impl Forwarder {
    /// A new client connection's share of the routing budget.
    pub(crate) fn connection_share(&self) -> ConnectionShare {
        ConnectionShare::new(&self.limits)
    }

    /// `Submit` answers passed through without the partial-result check.
    pub(crate) fn unchecked_answers(&self) -> u64 {
        self.metrics.partial_results_unchecked.get()
    }

    /// The upstream pool's targets, for `/debug/targets`.
    pub(crate) fn targets(&self) -> Vec<crate::upstream::TargetState> {
        self.pool.snapshot()
    }

    /// Upstream connections opened since start.
    pub(crate) fn connections_opened(&self) -> u64 {
        self.pool.connections_opened()
    }

    /// Forwards one call; every failure is answered as a gRPC status.
    pub(crate) async fn forward(
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
        let label = match request.uri().path() {
            SUBMIT_PATH => "PinotQueryServer/Submit",
            BROKER_SUBMIT_PATH => "PinotQueryBroker/Submit",
            _ => "other",
        };
        let mut record = CallRecord::new(method, label, span.clone(), self.metrics.clone());
        match self
            .try_forward(request, peer, &mut record)
            .instrument(span)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                record.finish_with_error(&err);
                respond::grpc_error::<ProxyBody>(&err)
            }
        }
    }

    async fn try_forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        record: &mut CallRecord,
    ) -> Result<Response<ProxyBody>, Error> {
        let deadline = deadline(request.headers())?;
        let guarded = (self.guard_partial_results || self.audit_sql_max_bytes.is_some())
            && request.uri().path() == SUBMIT_PATH;
        let (mut parts, mut body) = request.into_parts();
        let routed = self.route(&parts, &mut body, peer, deadline).await?;
        record.set_target(&routed.target);
        record.audit = routed.audit;
        if came_through(&parts.headers, &self.instance) {
            return Err(Error::NotAllowed {
                target: routed.target.to_string(),
                reason: "it is this proxy itself (the request came back through it)".into(),
            });
        }
        self.prepare(&mut parts, &routed.target, deadline)?;
        let request = Request::from_parts(
            parts,
            RequestBody::new(routed.prefix, body, record.bytes_in.clone()),
        );
        let (response, lease) = self
            .send(
                request,
                &routed.target,
                routed.origin,
                deadline,
                Instant::now() - record.elapsed(),
            )
            .await?;
        record.set_forwarded();
        let (parts, body) = response.into_parts();
        if let Some(status) = parts.headers.get("grpc-status") {
            record.set_status(status);
        }
        let guard = guarded.then(|| {
            Guard::new(
                routed.target.clone(),
                self.metrics.clone(),
                self.guard_partial_results,
            )
        });
        let body = ForwardBody::new(body, deadline, routed.target, record.take(), guard, lease);
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    /// Authenticates the caller and finds the target. Credentials in the headers (or a client
    /// certificate) are checked before anything is read; only credentials inside the first
    /// message make the check wait for it.
    async fn route(
        &self,
        parts: &Parts,
        body: &mut Incoming,
        peer: SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<Routed, Error> {
        let header_target = target::from_headers(&parts.headers)?;
        let identity = parts.extensions.get::<ClientIdentity>();
        if parts.uri.path() != SUBMIT_PATH {
            self.authenticate(&parts.headers, None, identity, peer)?;
            let brokers = self.brokers.as_ref();
            let (target, origin) = match header_target {
                None if parts.uri.path() == BROKER_SUBMIT_PATH => (
                    brokers.and_then(|brokers| brokers.next()),
                    Origin::Configured,
                ),
                target => (target, Origin::Caller),
            };
            let target = target.ok_or(Error::NoTarget)?;
            return Ok(Routed {
                target,
                origin,
                prefix: None,
                audit: None,
            });
        }
        let in_body = self.auth.grpc_credentials_in_body(&parts.headers, identity);
        if !in_body {
            self.authenticate(&parts.headers, None, identity, peer)?;
        }
        let share = parts.extensions.get::<ConnectionShare>().cloned();
        let first =
            with_deadline(deadline, first_message::read(body, &self.limits, share)).await??;
        let request =
            match first.decode() {
                Some(request) => Some(request.map_err(|err| {
                    Error::BadMessage(format!("cannot decode ServerRequest: {err}"))
                })?),
                None if header_target.is_some() => {
                    if !matches!(self.credentials, UpstreamCredentials::PassThrough) {
                        return Err(Error::BadMessage(
                            "the first message is compressed, so the proxy cannot replace the \
                         credentials in it; send it uncompressed"
                                .into(),
                        ));
                    }
                    None
                }
                None => {
                    return Err(Error::BadMessage(
                        "the first message is compressed, so its FORWARD_HOST cannot be read; \
                     send forward_host and forward_port headers"
                            .into(),
                    ))
                }
            };
        let metadata = request.as_ref().map(|request| &request.metadata);
        if in_body {
            self.authenticate(&parts.headers, metadata, identity, peer)?;
        }
        let body_target = match metadata {
            Some(metadata) => target::from_metadata(metadata)?,
            None => None,
        };
        // Any spelling: a server that reads keys case-insensitively must not see the caller's
        // credentials either.
        let has_authorization = metadata.is_some_and(|m| {
            m.keys()
                .any(|key| key.eq_ignore_ascii_case("authorization"))
        });
        let audit = self.audit_sql_max_bytes.map(|sql_max| {
            let request = first.decode_audit().unwrap_or_default();
            Box::new(Audit {
                caller: caller(&parts.headers, metadata, identity, peer),
                table: echo(table_of(&request.sql)),
                segments: request.segments.len(),
                sql: echo_bounded(&request.sql, sql_max),
                ..Audit::default()
            })
        });
        let prefix = first.with_credentials(&self.credentials, has_authorization)?;
        Ok(Routed {
            target: body_target.or(header_target).ok_or(Error::NoTarget)?,
            origin: Origin::Caller,
            prefix: Some(prefix),
            audit,
        })
    }

    /// Turns the caller's request head into the upstream's: its URI, the time left, the via
    /// mark, and the proxy's credentials in place of the caller's.
    fn prepare(
        &self,
        parts: &mut Parts,
        target: &Target,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        parts.headers.append(VIA_HEADER, self.instance.clone());
        if let Some(at) = deadline {
            // The server gets what is left, not what the caller started with.
            let left = at.saturating_duration_since(Instant::now());
            parts.headers.insert("grpc-timeout", timeout::encode(left));
        }
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        parts.uri = Uri::try_from(format!("http://{target}{path}"))
            .map_err(|err| Error::BadTarget(format!("{target}{path}: {err}")))?;
        strip_hop_by_hop_keep_te_trailers(&mut parts.headers);
        for name in DROPPED_HEADERS {
            parts.headers.remove(name);
        }
        self.credentials.apply(&mut parts.headers);
        Ok(())
    }

    /// Sends the request on a pooled connection. A pooled connection can close between
    /// checkout and send; a request it never took is sent once more on a fresh connection.
    async fn send(
        &self,
        mut request: Request<RequestBody>,
        target: &Target,
        origin: Origin,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<(Response<Incoming>, crate::upstream::Lease<RequestBody>), Error> {
        let mut retried = false;
        loop {
            let lease = with_deadline(deadline, self.pool.checkout(target, origin)).await??;
            let mut sender = lease.sender();
            match with_deadline(deadline, sender.try_send_request(request)).await? {
                Ok(response) => return Ok((response, lease)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if !retried => {
                        tracing::debug!(error = %err.error(), "pooled connection closed; retrying");
                        retried = true;
                        request = unsent;
                    }
                    _ => {
                        let elapsed = started.elapsed();
                        return Err(body::upstream_failure(
                            &err.into_error(),
                            target,
                            deadline,
                            elapsed,
                        ));
                    }
                },
            }
        }
    }

    fn authenticate(
        &self,
        headers: &HeaderMap,
        metadata: Option<&std::collections::HashMap<String, String>>,
        identity: Option<&ClientIdentity>,
        peer: SocketAddr,
    ) -> Result<(), Error> {
        self.auth
            .check_grpc(headers, metadata, identity, peer)
            .map_err(|err| Error::Unauthenticated(err.to_string()))
    }
}

/// Who made a call, for the audit log: the user of its credentials (header, else the message's
/// metadata), else its client certificate's name, else its address. Never the password.
fn caller(
    headers: &HeaderMap,
    metadata: Option<&std::collections::HashMap<String, String>>,
    identity: Option<&ClientIdentity>,
    peer: SocketAddr,
) -> String {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .or_else(|| {
            metadata?
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
                .map(|(_, value)| value.as_bytes())
        });
    match (
        presented.and_then(|value| token::decode_authorization(value).ok()),
        identity,
    ) {
        (Some(credentials), _) => echo(&credentials.username),
        (None, Some(identity)) => format!("cert:{}", echo(&identity.0)),
        (None, None) => format!("peer:{peer}"),
    }
}

/// The table a Pinot query reads: the name after its first `FROM`.
fn table_of(sql: &str) -> &str {
    let mut words = sql.split_whitespace();
    words
        .by_ref()
        .find(|word| word.eq_ignore_ascii_case("from"))
        .and_then(|_| words.next())
        .map(|name| {
            name.trim_end_matches([';', ')', ','])
                .trim_matches(['"', '`', '\''])
        })
        .unwrap_or("-")
}

/// When the call must end, from `grpc-timeout`. A deadline already spent (`0n`) ends the call
/// before any upstream work.
fn deadline(headers: &HeaderMap) -> Result<Option<Instant>, Error> {
    match headers.get("grpc-timeout") {
        Some(value) => match timeout::parse(value)? {
            Duration::ZERO => Err(Error::DeadlineExceeded(0)),
            timeout => Ok(Some(Instant::now() + timeout)),
        },
        None => Ok(None),
    }
}
