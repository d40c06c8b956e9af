//! The two bodies of a forwarded call: the request body sent upstream (the bytes read for
//! routing, then the rest of the client's) and the response body sent back, which ends with
//! error trailers when the upstream breaks or the deadline passes.

use super::guard::Guard;
use crate::access_log::CallRecord;
use crate::error::Error;
use crate::http::BoxError;
use crate::policy::Target;
use crate::respond;
use crate::upstream::Lease;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::time::Sleep;

/// The request body sent upstream: the bytes read for routing, then the rest of the client's.
pub(crate) struct RequestBody {
    prefix: Option<Bytes>,
    inner: Incoming,
    bytes: Arc<AtomicU64>,
}

impl RequestBody {
    pub(super) fn new(prefix: Option<Bytes>, inner: Incoming, bytes: Arc<AtomicU64>) -> Self {
        RequestBody {
            prefix,
            inner,
            bytes,
        }
    }
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
/// trailers when the upstream stream breaks or the deadline passes. With a [`Guard`], the last
/// message of a `Submit` answer may be held back and the call failed instead. Dropping it (the
/// caller cancelled) drops the upstream response, which resets the upstream stream.
pub(super) struct ForwardBody {
    inner: Option<Incoming>,
    deadline: Option<Pin<Box<Sleep>>>,
    target: Target,
    record: CallRecord,
    guard: Option<Guard>,
    /// Bytes the guard released, sent before anything else.
    queue: VecDeque<Bytes>,
    /// How the stream ends once the queue is sent: the upstream's trailers, or an error.
    ending: Option<Ending>,
    _lease: Lease<RequestBody>,
}

enum Ending {
    Trailers(HeaderMap),
    Error(Error),
}

impl ForwardBody {
    pub(super) fn new(
        inner: Incoming,
        deadline: Option<Instant>,
        target: Target,
        record: CallRecord,
        guard: Option<Guard>,
        lease: Lease<RequestBody>,
    ) -> ForwardBody {
        ForwardBody {
            inner: Some(inner),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into()))),
            target,
            record,
            guard,
            queue: VecDeque::new(),
            ending: None,
            _lease: lease,
        }
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner = None;
        self.deadline = None;
        self.queue.clear();
        self.record.finish_with_error(&err);
        Poll::Ready(Some(Ok(Frame::trailers(respond::grpc_status(&err)))))
    }

    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.record.add_bytes_out(data.len());
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn upstream_failure(&self, err: &hyper::Error) -> Error {
        let deadline = self
            .deadline
            .as_ref()
            .map(|sleep| sleep.deadline().into_std());
        upstream_failure(err, &self.target, deadline, self.record.elapsed())
    }

    /// The upstream stream ended (with `trailers`, or without): what the guard still holds
    /// goes first.
    fn end_upstream(&mut self, trailers: Option<HeaderMap>) {
        self.inner = None;
        if let Some(held) = self.guard.as_mut().and_then(Guard::finish) {
            self.queue.push_back(held);
        }
        match trailers {
            Some(trailers) => {
                if let Some(status) = trailers.get("grpc-status") {
                    self.record.set_status(status);
                }
                self.ending = Some(Ending::Trailers(trailers));
            }
            None => self.record.end(),
        }
    }
}

/// What a broken upstream stream means for the caller, before or after the response head. A
/// server whose deadline ran out resets the stream (RST_STREAM CANCEL), which can arrive just
/// before the proxy's own timer fires: past the deadline, or within a few milliseconds of it,
/// that is DEADLINE_EXCEEDED. Any other CANCEL is the server cancelling the call (CANCELLED,
/// as gRPC maps that reset); the rest is a broken stream (UNAVAILABLE).
pub(super) fn upstream_failure(
    err: &hyper::Error,
    target: &Target,
    deadline: Option<Instant>,
    elapsed: std::time::Duration,
) -> Error {
    const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(10);
    if deadline.is_some_and(|at| Instant::now() + TIMER_SLACK >= at) {
        return Error::DeadlineExceeded(elapsed.as_millis());
    }
    let reset = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    if reset == Some(h2::Reason::CANCEL) {
        return Error::UpstreamCancelled {
            target: target.to_string(),
        };
    }
    Error::StreamFailed {
        target: target.to_string(),
        reason: err.to_string(),
    }
}

impl Drop for ForwardBody {
    // The audit line (written when the record drops, after this) reports what the guard saw.
    fn drop(&mut self) {
        if let (Some(guard), Some(audit)) = (self.guard.as_mut(), self.record.audit.as_mut()) {
            audit.rows = guard.rows;
            audit.figures = std::mem::take(&mut guard.figures);
        }
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.queue.pop_front() {
                return this.data(bytes);
            }
            let Some(inner) = this.inner.as_mut() else {
                return match this.ending.take() {
                    Some(Ending::Trailers(trailers)) => {
                        this.record.end();
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Some(Ending::Error(err)) => this.fail(err),
                    None => Poll::Ready(None),
                };
            };
            if let Some(deadline) = this.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    let elapsed = this.record.elapsed().as_millis();
                    return this.fail(Error::DeadlineExceeded(elapsed));
                }
            }
            match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let Some(guard) = this.guard.as_mut() else {
                            return this.data(data);
                        };
                        let verdict = guard.feed(data);
                        this.queue.extend(verdict.forward);
                        if let Some(err) = verdict.fail {
                            // Pinot's answer is over; what came before the error still goes.
                            this.inner = None;
                            this.ending = Some(Ending::Error(err));
                        }
                    }
                    // A frame that is neither data nor trailers means nothing to a gRPC client.
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.end_upstream(Some(trailers));
                        }
                    }
                },
                Some(Err(err)) => {
                    let err = this.upstream_failure(&err);
                    return this.fail(err);
                }
                None => this.end_upstream(None),
            }
        }
    }

    // An upstream answer that ended with its HEADERS frame (a status and no message, as
    // Pinot sends `NOT_FOUND: Table not found`) must leave as one HEADERS frame too: hyper
    // would otherwise send the headers open and end the stream with an empty DATA frame,
    // which grpc-java rejects as INTERNAL.
    fn is_end_stream(&self) -> bool {
        self.queue.is_empty()
            && self.ending.is_none()
            && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }
}
