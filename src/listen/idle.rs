//! Closing client connections that carry no request: one that has not started a request within
//! `server.header_timeout_ms` of being served, and one with no request in flight for
//! `server.idle_timeout_ms` (Trino opens a new one when it needs it). HTTP/2 PINGs do not count
//! as use, so a client that answers them but never opens a stream is closed too.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// One client connection's requests in flight and when the last one ended.
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the connection became idle: served without a request yet, or its last request ended.
    idle_since: Mutex<Option<Instant>>,
    used: std::sync::atomic::AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Some(Instant::now())),
            used: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks a request as started; it counts until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.used.store(true, Ordering::Relaxed);
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        InFlight(self.clone())
    }

    /// Completes when the connection has been idle for its limit: `header` before its first
    /// request, `idle` after.
    pub async fn idle_for(self: Arc<Self>, header: Duration, idle: Duration) {
        loop {
            let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            let limit = if self.used.load(Ordering::Relaxed) {
                idle
            } else {
                header
            };
            match since {
                Some(since) if self.in_flight.load(Ordering::SeqCst) == 0 => {
                    let deadline = since + limit;
                    if Instant::now() >= deadline {
                        return;
                    }
                    tokio::time::sleep_until(deadline).await;
                }
                // Busy: look again after a full period; a request ending sets a new start.
                _ => tokio::time::sleep(limit).await,
            }
        }
    }
}

/// A request in flight; dropped when its response has been sent (or abandoned).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *activity
                .idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
pub struct Tracked<B> {
    pub inner: B,
    pub _in_flight: InFlight,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
