//! REST bodies: the caller's request body kept for one retry (`BodySlot`, `AttemptBody`), and
//! the response body sent back, cut when the request timeout passes (`ResponseBody`).

use crate::access_log::{Outcome, RestRecord};
use crate::error::Side;
use crate::http::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use tokio::time::Sleep;

/// The caller's request body, held so that a retry can still send it when the first attempt
/// never read any of it. Only the attempt that owns the slot may take the body.
pub(super) struct BodySlot {
    state: Mutex<SlotState>,
    client_failed: Mutex<Option<String>>,
    /// Whether the caller's body was empty from the start, for attempts that have not taken it.
    end_stream: bool,
    size_hint: SizeHint,
}

struct SlotState {
    body: Option<Incoming>,
    owner: u8,
}

impl BodySlot {
    pub(super) fn new(body: Incoming) -> BodySlot {
        BodySlot {
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
            state: Mutex::new(SlotState {
                body: Some(body),
                owner: 0,
            }),
            client_failed: Mutex::new(None),
        }
    }

    /// Gives the untouched body to attempt `attempt`; false when an attempt already read it.
    pub(super) fn hand_to(&self, attempt: u8) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.body.is_some() {
            state.owner = attempt;
            true
        } else {
            false
        }
    }

    fn take(&self, attempt: u8) -> Option<Incoming> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.owner == attempt {
            state.body.take()
        } else {
            None
        }
    }

    pub(super) fn client_error(&self) -> Option<String> {
        self.client_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The request body of one upstream attempt: takes the caller's body from the slot when the
/// upstream first asks for data, and passes its frames through as they come.
pub(super) struct AttemptBody {
    slot: Arc<BodySlot>,
    attempt: u8,
    body: Option<Incoming>,
    done: bool,
}

impl AttemptBody {
    pub(super) fn new(slot: Arc<BodySlot>, attempt: u8) -> AttemptBody {
        AttemptBody {
            slot,
            attempt,
            body: None,
            done: false,
        }
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.body.is_none() {
            this.body = this.slot.take(this.attempt);
            if this.body.is_none() {
                // Only reachable by an attempt that was given up on: it must not send anything.
                this.done = true;
                return Poll::Ready(Some(Err("request body was handed to a retry".into())));
            }
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(err)) => {
                this.done = true;
                let reason = err.to_string();
                *this
                    .slot
                    .client_failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(reason);
                Poll::Ready(Some(Err(err.into())))
            }
            None => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => self.done || body.is_end_stream(),
            None => self.done || self.slot.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.slot.size_hint,
        }
    }
}

/// The response body sent to the caller: the upstream's frames as they come, cut with an error
/// when the request timeout passes. Dropping it (the caller went away) drops the upstream
/// response, which closes that upstream connection.
pub(super) struct ResponseBody {
    pub(super) inner: Option<Incoming>,
    pub(super) deadline: Pin<Box<Sleep>>,
    pub(super) timeout_ms: u128,
    pub(super) record: RestRecord,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.inner = None;
            let reason = format!(
                "response body not finished within {} ms (rest.request_timeout_ms)",
                this.timeout_ms
            );
            this.record.outcome = Outcome::Failed(Side::Upstream, reason.clone());
            return Poll::Ready(Some(Err(reason.into())));
        }
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes_out += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                this.inner = None;
                let reason = format!("response body from upstream failed: {err}");
                this.record.outcome = Outcome::Failed(Side::Upstream, reason);
                Poll::Ready(Some(Err(err.into())))
            }
            None => {
                this.inner = None;
                this.record.outcome = Outcome::Done;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that is empty from the start may be dropped without ever being polled.
        if matches!(self.record.outcome, Outcome::InFlight)
            && self.inner.as_ref().is_some_and(Body::is_end_stream)
        {
            self.record.outcome = Outcome::Done;
        }
    }
}
