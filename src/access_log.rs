//! The access log: one line per request, written when it ends, fails, is refused or is dropped
//! by the caller, and the request metrics counted at the same moment. `CallRecord` is a gRPC
//! call's, `RestRecord` a REST request's.

use crate::config::Component;
use crate::error::{Error, Side};
use crate::metrics::{
    CallLabels, ComponentLabels, DirectionLabels, MethodLabels, Metrics, RestLabels,
};
use crate::policy::Target;
use http::{HeaderValue, Method};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One call's log line, written when the call ends, fails or is dropped by the caller.
pub(crate) struct CallRecord {
    method: String,
    target: Option<String>,
    /// The method as a metric label: one of a short fixed list, whatever the caller sent.
    method_label: &'static str,
    /// Whether a server answered: only then does the call count under its target.
    forwarded: bool,
    /// The audit line's facts, when the audit log is on and this is a `Submit` call.
    pub(crate) audit: Option<Box<Audit>>,
    metrics: Option<Arc<Metrics>>,
    started: Instant,
    pub(crate) bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    status: Option<String>,
    ended: bool,
    error: Option<(Side, String)>,
    span: Option<tracing::Span>,
    logged: bool,
}

impl CallRecord {
    pub(crate) fn new(
        method: String,
        method_label: &'static str,
        span: tracing::Span,
        metrics: Arc<Metrics>,
    ) -> CallRecord {
        metrics.grpc_calls_in_flight.inc();
        CallRecord {
            method,
            method_label,
            target: None,
            forwarded: false,
            audit: None,
            metrics: Some(metrics),
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
            method_label: "other",
            target: None,
            forwarded: false,
            audit: None,
            metrics: None,
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

    /// Moves the record out (into the response body, which logs it when the call ends).
    pub(crate) fn take(&mut self) -> CallRecord {
        std::mem::replace(self, CallRecord::empty())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn add_bytes_out(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }

    /// A server answered the call.
    pub(crate) fn set_forwarded(&mut self) {
        self.forwarded = true;
    }

    /// The upstream's `grpc-status`.
    pub(crate) fn set_status(&mut self, status: &HeaderValue) {
        self.status = Some(String::from_utf8_lossy(status.as_bytes()).into_owned());
    }

    /// The upstream's stream ended.
    pub(crate) fn end(&mut self) {
        self.ended = true;
    }

    pub(crate) fn set_target(&mut self, target: &Target) {
        let name = target.to_string();
        if let Some(span) = &self.span {
            span.record("target", name.as_str());
        }
        self.target = Some(name);
    }

    pub(crate) fn finish_with_error(&mut self, err: &Error) {
        self.status = Some(err.grpc_code().as_str().to_owned());
        self.error = Some((err.side(), err.to_string()));
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
        let elapsed = self.started.elapsed();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let target = self.target.as_deref().unwrap_or("-");
        if let Some(metrics) = &self.metrics {
            self.count(metrics, status, elapsed, bytes_in);
        }
        if let Some(audit) = &self.audit {
            let figure = |name: &str| {
                audit
                    .figures
                    .iter()
                    .find(|(key, _)| key == name)
                    .map_or("-", |(_, value)| value.as_str())
                    .to_string()
            };
            tracing::info!(
                target: "pinot_proxy::audit",
                user = %audit.caller,
                server = target,
                table = %audit.table,
                segments = audit.segments,
                sql = %audit.sql,
                rows = audit.rows,
                bytes_out = self.bytes_out,
                docs_scanned = %figure("numDocsScanned"),
                entries_scanned_in_filter = %figure("numEntriesScannedInFilter"),
                entries_scanned_post_filter = %figure("numEntriesScannedPostFilter"),
                segments_queried = %figure("numSegmentsQueried"),
                segments_processed = %figure("numSegmentsProcessed"),
                segments_matched = %figure("numSegmentsMatched"),
                total_docs = %figure("totalDocs"),
                grpc.status = status,
                duration_ms,
                "audit"
            );
        }
        match &self.error {
            Some((Side::Upstream | Side::Proxy, error)) => tracing::warn!(
                grpc.method = %self.method, target, grpc.status = status, duration_ms,
                bytes_in, bytes_out = self.bytes_out, error = %error, "call failed"
            ),
            Some((Side::Client, error)) => tracing::info!(
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

impl CallRecord {
    fn count(&self, metrics: &Metrics, status: &str, elapsed: Duration, bytes_in: u64) {
        let method = self.method_label;
        let target = match (&self.target, self.forwarded) {
            (Some(target), true) => target.clone(),
            _ => "-".to_string(),
        };
        let code = match status.parse::<u8>() {
            Ok(code) if code <= 16 => status.to_string(),
            _ if status == "none" => "none".to_string(),
            _ if status == "cancelled by client" => "cancelled_by_client".to_string(),
            _ => "unknown".to_string(),
        };
        metrics
            .grpc_call_duration
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
        metrics
            .grpc_calls
            .get_or_create(&CallLabels {
                method,
                target,
                code,
            })
            .inc();
        for (direction, bytes) in [("in", bytes_in), ("out", self.bytes_out)] {
            metrics
                .grpc_bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(bytes);
        }
        metrics.grpc_calls_in_flight.dec();
    }
}

/// What an audit line says of a `Submit` call besides the access-log facts. Every text in it
/// came from the caller and is escaped and bounded.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    /// The user of the call's credentials, `cert:<name>` of its client certificate, or
    /// `peer:<address>`; never a password.
    pub(crate) caller: String,
    pub(crate) table: String,
    pub(crate) segments: usize,
    pub(crate) sql: String,
    /// Rows streamed (the data messages' DataTable row counts).
    pub(crate) rows: u64,
    /// Pinot's scan figures from the last message.
    pub(crate) figures: Vec<(String, String)>,
}

/// One request's log line, written once when it ends, fails or is dropped by the caller.
pub(crate) struct RestRecord {
    method: Method,
    pub(crate) path: String,
    pub(crate) component: Option<Component>,
    pub(crate) upstream: Option<String>,
    pub(crate) status: Option<u16>,
    started: Instant,
    pub(crate) bytes_out: u64,
    pub(crate) outcome: Outcome,
    /// Request limits' permits, returned when the response has been sent.
    pub(crate) held: Vec<tokio::sync::OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
}

/// How a REST request ended.
pub(crate) enum Outcome {
    InFlight,
    Done,
    Failed(Side, String),
}

impl RestRecord {
    pub(crate) fn new(method: &Method, path: &str, metrics: Arc<Metrics>) -> RestRecord {
        RestRecord {
            metrics,
            method: method.clone(),
            path: crate::error::echo(path),
            component: None,
            upstream: None,
            status: None,
            started: Instant::now(),
            bytes_out: 0,
            outcome: Outcome::InFlight,
            held: Vec::new(),
        }
    }

    /// The proxy answered `err` itself.
    pub(crate) fn fail(&mut self, err: &Error) {
        self.status = Some(err.http_status().as_u16());
        self.outcome = Outcome::Failed(err.side(), err.to_string());
    }
}

impl Drop for RestRecord {
    fn drop(&mut self) {
        let component = self.component.map_or("none", Component::name);
        self.metrics
            .rest_requests
            .get_or_create(&RestLabels {
                component,
                status: self.status.unwrap_or(0),
            })
            .inc();
        if let Outcome::Failed(Side::Upstream, _) = &self.outcome {
            self.metrics
                .rest_upstream_failures
                .get_or_create(&ComponentLabels { component })
                .inc();
        }
        let upstream = self.upstream.as_deref().unwrap_or("none");
        let status = self
            .status
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (method, path, bytes_out) = (&self.method, &self.path, self.bytes_out);
        match &self.outcome {
            Outcome::Done => tracing::info!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                "rest request"
            ),
            Outcome::InFlight => tracing::info!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                outcome = "cancelled by client",
                "rest request"
            ),
            Outcome::Failed(Side::Client, error) => tracing::info!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                side = %Side::Client, %error,
                "rest request failed"
            ),
            Outcome::Failed(side, error) => tracing::warn!(
                %method, %path, %component, %upstream, %status, duration_ms, bytes_out,
                %side, %error,
                "rest request failed"
            ),
        }
    }
}
