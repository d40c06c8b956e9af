//! Reading the first request message of a `Submit` call, to route it: within a time limit and a
//! memory budget shared by all calls (and capped per connection), reserved as bytes arrive.
//! Then only its metadata map is decoded, and its credentials rewritten when they must change.

use super::rewrite;
use crate::error::Error;
use crate::policy::UpstreamCredentials;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Bounds on reading first messages for routing, which happens before the call is
/// forwarded (and, when credentials are inside the message, before it is authenticated).
#[derive(Clone)]
pub(crate) struct RoutingLimits {
    /// Largest first message read.
    pub(crate) max_message_bytes: u32,
    /// Time the client has to send it.
    pub(crate) timeout: Duration,
    /// Bytes all first messages being read may hold at once.
    pub(crate) budget: Arc<tokio::sync::Semaphore>,
    pub(crate) budget_bytes: u32,
}

/// One client connection's share of the routing budget: its first messages being read may hold
/// at most one largest message at once, so a single connection cannot take the whole budget.
/// Put into each request's extensions by the connection that carries it.
#[derive(Clone)]
pub(crate) struct ConnectionShare(Arc<tokio::sync::Semaphore>);

impl ConnectionShare {
    pub(crate) fn new(limits: &RoutingLimits) -> ConnectionShare {
        ConnectionShare(Arc::new(tokio::sync::Semaphore::new(
            limits.max_message_bytes as usize,
        )))
    }
}

/// The part of `ServerRequest` (proto/server.proto) routing and auth read: its metadata map.
/// Decoding only this skips allocating the SQL text and segment lists of every call, while
/// the other fields are still checked to be well-formed.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RequestMetadata {
    #[prost(map = "string, string", tag = "1")]
    pub(super) metadata: HashMap<String, String>,
}

/// What the audit log reads of `ServerRequest`: its SQL and segments. Decoded only when the
/// audit log is on.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AuditRequest {
    #[prost(string, tag = "2")]
    pub(super) sql: String,
    #[prost(string, repeated, tag = "3")]
    pub(super) segments: Vec<String>,
}

/// The first gRPC message of a request, as the bytes read from the client.
pub(super) struct FirstMessage {
    /// Its share of the routing budget, returned when the message is sent on.
    _reserved: Reservation,
    /// Everything read from the body so far, forwarded as is ahead of the rest.
    bytes: Bytes,
    compressed: bool,
    length: usize,
}

/// Reads the first message within `server.first_message_timeout_ms` and the routing budget.
pub(super) async fn read(
    body: &mut Incoming,
    limits: &RoutingLimits,
    share: Option<ConnectionShare>,
) -> Result<FirstMessage, Error> {
    let timeout = limits.timeout;
    tokio::time::timeout(timeout, read_frames(body, limits, share))
        .await
        .unwrap_or_else(|_| {
            Err(Error::BadMessage(format!(
                "the first request message did not arrive within {} ms \
                 (server.first_message_timeout_ms)",
                timeout.as_millis()
            )))
        })
}

impl FirstMessage {
    /// The bytes to send for the first message: the original ones, unless the caller's
    /// `authorization` must be removed from its metadata or the proxy's put in. Then only the
    /// metadata entries change, at the byte level, so fields this proxy does not know survive;
    /// the bytes read after the message follow unchanged.
    pub(super) fn with_credentials(
        self,
        credentials: &UpstreamCredentials,
        has_authorization: bool,
    ) -> Result<Bytes, Error> {
        let inject = match credentials {
            UpstreamCredentials::PassThrough => return Ok(self.bytes),
            UpstreamCredentials::Strip if !has_authorization => return Ok(self.bytes),
            UpstreamCredentials::Strip => None,
            UpstreamCredentials::Inject(value) => Some(value.as_bytes()),
        };
        let message = &self.bytes[5..5 + self.length];
        let rewritten = rewrite::replace_map_entry(message, 1, b"authorization", inject)
            .map_err(|err| Error::BadMessage(format!("cannot rewrite ServerRequest: {err}")))?;
        let rest = &self.bytes[5 + self.length..];
        let mut bytes = BytesMut::with_capacity(5 + rewritten.len() + rest.len());
        bytes.extend_from_slice(&[0]);
        bytes.extend_from_slice(&(rewritten.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&rewritten);
        bytes.extend_from_slice(rest);
        Ok(bytes.freeze())
    }

    /// The SQL and segments, for the audit log; `None` when compressed or undecodable.
    pub(super) fn decode_audit(&self) -> Option<AuditRequest> {
        if self.compressed {
            return None;
        }
        AuditRequest::decode(&self.bytes[5..5 + self.length]).ok()
    }

    /// Decodes the message; `None` when it is compressed.
    pub(super) fn decode(&self) -> Option<Result<RequestMetadata, prost::DecodeError>> {
        if self.compressed {
            return None;
        }
        Some(RequestMetadata::decode(&self.bytes[5..5 + self.length]))
    }
}

/// Reads request frames until the first length-prefixed message is complete. Memory is
/// reserved as data arrives (not as the length prefix declares), from the budget all calls
/// share and from the connection's own share.
async fn read_frames(
    body: &mut Incoming,
    limits: &RoutingLimits,
    share: Option<ConnectionShare>,
) -> Result<FirstMessage, Error> {
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
                    return Err(Error::BadMessage(format!(
                        "compressed-flag byte is {flag}, not 0 or 1"
                    )))
                }
            };
            let length = (&buf[1..5]).get_u32();
            if length > limit {
                return Err(Error::MessageTooLarge {
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
                    return Err(Error::BadMessage(
                        "trailers arrived before the first message was complete".into(),
                    ));
                }
            }
            Some(Err(err)) => return Err(Error::ClientStream(err.to_string())),
            None => {
                return Err(Error::BadMessage(format!(
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
    ) -> Result<(), Error> {
        let Ok(bytes) = u32::try_from(bytes) else {
            return Err(Error::RoutingBudget(limits.budget_bytes));
        };
        if bytes == 0 {
            return Ok(());
        }
        if let Some(share) = share {
            let permit = share
                .0
                .clone()
                .try_acquire_many_owned(bytes)
                .map_err(|_| Error::ConnectionRoutingShare(limits.max_message_bytes))?;
            merge(&mut self.share, permit);
        }
        let permit = limits
            .budget
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| Error::RoutingBudget(limits.budget_bytes))?;
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
