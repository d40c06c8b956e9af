//! Every error the proxy makes itself: what went wrong, which side caused it (client, proxy or
//! upstream), and the status it is answered with, gRPC code or HTTP status. `respond.rs` renders
//! it; this module also owns `echo`, how client text may appear in logs and messages.

use http::{Method, StatusCode};
use std::fmt;

/// gRPC status codes the proxy produces or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Cancelled = 1,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Cancelled => "1",
            Code::InvalidArgument => "3",
            Code::DeadlineExceeded => "4",
            Code::NotFound => "5",
            Code::PermissionDenied => "7",
            Code::ResourceExhausted => "8",
            Code::Internal => "13",
            Code::Unavailable => "14",
            Code::Unauthenticated => "16",
        }
    }
}

/// Which side of the proxy an error comes from; it decides the status and the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something the proxy cannot route or may not forward.
    Client,
    /// The proxy itself ran out of a resource or time, or is configured so.
    Proxy,
    /// The Pinot server, controller or broker could not be reached or broke the stream.
    Upstream,
}

/// An error the proxy answers itself, instead of forwarding the upstream's answer. The gRPC
/// variants come first, then those of REST (where `component` is `controller` or `broker`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("no target server named: set FORWARD_HOST and FORWARD_PORT in the request metadata or the forward_host and forward_port headers (PinotQueryBroker/Submit: or [broker] grpc_port)")]
    NoTarget,
    #[error("invalid target: {0}")]
    BadTarget(String),
    #[error("malformed request message: {0}")]
    BadMessage(String),
    #[error("first request message is {size} bytes, more than the {limit} bytes read for routing")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("invalid grpc-timeout header \"{0}\"")]
    BadTimeout(String),
    #[error("target {target} is not allowed: {reason}")]
    NotAllowed { target: String, reason: String },
    #[error("server {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("server {target}: stream failed: {reason}")]
    StreamFailed { target: String, reason: String },
    #[error("server {target} cancelled the call (RST_STREAM CANCEL)")]
    UpstreamCancelled { target: String },
    #[error("too many first messages being read for routing (server.routing_buffer_bytes = {0})")]
    RoutingBudget(u32),
    #[error("this connection holds too many first messages being read for routing (at most server.max_routing_message_bytes = {0} at once)")]
    ConnectionRoutingShare(u32),
    #[error("too many upstream servers in use (max_targets = {0})")]
    TooManyTargets(usize),
    #[error("server {target} reported errors, so its answer is partial or empty: {exceptions}")]
    PartialResult {
        target: String,
        code: Code,
        exceptions: String,
    },
    #[error("deadline exceeded after {0} ms (grpc-timeout)")]
    DeadlineExceeded(u128),
    #[error("request stream from the client failed: {0}")]
    ClientStream(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// REST credentials missing or wrong: the message is the authenticator's own.
    #[error("{0}")]
    RestUnauthenticated(String),
    #[error("gRPC needs HTTP/2")]
    GrpcNeedsHttp2,
    #[error("no route for {method} {path}: no [controller] or [broker] is configured, and this port forwards gRPC calls (content-type application/grpc)")]
    NoRestUpstream { method: Method, path: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{method} {path} goes to the {component} but no [{component}] section is configured")]
    NotConfigured {
        component: &'static str,
        method: Method,
        path: String,
    },
    #[error("no {component} reachable: {causes}")]
    RestUnreachable {
        component: &'static str,
        causes: String,
    },
    #[error("{component} failed before responding: {causes}")]
    RestUpstream {
        component: &'static str,
        causes: String,
    },
    #[error("{component} {url}: no response within {timeout_ms} ms (rest.request_timeout_ms)")]
    RestTimeout {
        component: &'static str,
        url: String,
        timeout_ms: u128,
    },
    #[error("reading the request body from the client failed: {0}")]
    ClientBody(String),
    #[error("too many requests: {limit}; try again later")]
    Busy {
        component: &'static str,
        limit: String,
    },
    #[error(
        "the request came back through this proxy: a [{component}] URL points at the proxy itself"
    )]
    Loop { component: &'static str },
    #[error("server list not loaded yet: the Pinot controller has not answered since the start (servers.discover)")]
    DiscoveryNotLoaded,
}

impl Error {
    /// Which side caused it.
    pub fn side(&self) -> Side {
        match self {
            Error::NoTarget
            | Error::BadTarget(_)
            | Error::BadMessage(_)
            | Error::MessageTooLarge { .. }
            | Error::BadTimeout(_)
            | Error::NotAllowed { .. }
            | Error::ClientStream(_)
            | Error::Unauthenticated(_)
            | Error::RestUnauthenticated(_)
            | Error::GrpcNeedsHttp2
            | Error::NoRestUpstream { .. }
            | Error::BadRequest(_)
            | Error::ClientBody(_) => Side::Client,
            Error::TooManyTargets(_)
            | Error::RoutingBudget(_)
            | Error::ConnectionRoutingShare(_)
            | Error::DeadlineExceeded(_)
            | Error::NotConfigured { .. }
            | Error::Loop { .. }
            | Error::Busy { .. }
            | Error::DiscoveryNotLoaded => Side::Proxy,
            Error::Unreachable { .. }
            | Error::StreamFailed { .. }
            | Error::UpstreamCancelled { .. }
            | Error::PartialResult { .. }
            | Error::RestUnreachable { .. }
            | Error::RestUpstream { .. }
            | Error::RestTimeout { .. } => Side::Upstream,
        }
    }

    /// The gRPC status code it is answered with.
    pub fn grpc_code(&self) -> Code {
        match self {
            Error::NoTarget
            | Error::BadTarget(_)
            | Error::BadMessage(_)
            | Error::BadTimeout(_)
            | Error::BadRequest(_)
            | Error::GrpcNeedsHttp2 => Code::InvalidArgument,
            Error::MessageTooLarge { .. }
            | Error::TooManyTargets(_)
            | Error::RoutingBudget(_)
            | Error::ConnectionRoutingShare(_)
            | Error::Busy { .. } => Code::ResourceExhausted,
            Error::NotAllowed { .. } | Error::Loop { .. } => Code::PermissionDenied,
            Error::Unreachable { .. }
            | Error::StreamFailed { .. }
            | Error::RestUnreachable { .. }
            | Error::RestUpstream { .. }
            | Error::NotConfigured { .. }
            | Error::NoRestUpstream { .. }
            | Error::DiscoveryNotLoaded => Code::Unavailable,
            Error::DeadlineExceeded(_) | Error::RestTimeout { .. } => Code::DeadlineExceeded,
            Error::ClientStream(_) | Error::ClientBody(_) | Error::UpstreamCancelled { .. } => {
                Code::Cancelled
            }
            Error::Unauthenticated(_) | Error::RestUnauthenticated(_) => Code::Unauthenticated,
            Error::PartialResult { code, .. } => *code,
        }
    }

    /// The HTTP status it is answered with on REST.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::ClientBody(_) | Error::ClientStream(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::Unauthenticated(_) | Error::RestUnauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::GrpcNeedsHttp2 => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Error::NoRestUpstream { .. } => StatusCode::NOT_FOUND,
            // A missing section is a configuration mistake that retrying will not fix, so it
            // is not 503; 502 says "the gateway has nowhere valid to send this".
            Error::NotConfigured { .. } | Error::RestUpstream { .. } => StatusCode::BAD_GATEWAY,
            Error::RestUnreachable { .. } | Error::Busy { .. } | Error::DiscoveryNotLoaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::RestTimeout { .. } | Error::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Loop { .. } => StatusCode::LOOP_DETECTED,
            Error::NotAllowed { .. } => StatusCode::FORBIDDEN,
            Error::NoTarget | Error::BadTarget(_) | Error::BadMessage(_) | Error::BadTimeout(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::MessageTooLarge { .. }
            | Error::TooManyTargets(_)
            | Error::RoutingBudget(_)
            | Error::ConnectionRoutingShare(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unreachable { .. }
            | Error::StreamFailed { .. }
            | Error::UpstreamCancelled { .. }
            | Error::PartialResult { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The Pinot component a REST error concerns, named in its JSON body.
    pub fn component(&self) -> Option<&'static str> {
        match self {
            Error::NotConfigured { component, .. }
            | Error::RestUnreachable { component, .. }
            | Error::RestUpstream { component, .. }
            | Error::RestTimeout { component, .. }
            | Error::Busy { component, .. }
            | Error::Loop { component } => Some(component),
            _ => None,
        }
    }
}

/// How much of a client's text is echoed in a log line or an error message.
pub const ECHO_LIMIT: usize = 256;

/// Client-sent text as it may be logged or echoed back: control characters, quotes and
/// backslashes escaped (a caller cannot forge log lines or terminal escapes), and cut after
/// [`ECHO_LIMIT`] bytes with a mark saying how long it was.
pub fn echo(text: &str) -> String {
    echo_bounded(text, ECHO_LIMIT)
}

/// [`echo`] with another bound, in bytes.
pub fn echo_bounded(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit) + 32);
    let mut used = 0;
    for c in text.chars() {
        used += c.len_utf8();
        if used > limit {
            out.push_str(&format!("...(cut: {} bytes in all)", text.len()));
            break;
        }
        if c.is_control() || c == '"' || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Proxy => "proxy",
            Side::Upstream => "upstream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_control_characters_and_cuts_long_text() {
        assert_eq!(echo("pinot-server-0"), "pinot-server-0");
        assert_eq!(echo("a\nb\u{1b}[31m\"c\\"), "a\\nb\\u{1b}[31m\\\"c\\\\");
        assert_eq!(echo("ünïcode"), "ünïcode");
        let long = "x".repeat(1 << 20);
        let echoed = echo(&long);
        assert!(echoed.len() < ECHO_LIMIT + 40, "{}", echoed.len());
        assert!(
            echoed.ends_with("...(cut: 1048576 bytes in all)"),
            "{echoed}"
        );
        // Never splits a character.
        let wide = "é".repeat(200);
        assert!(echo(&wide).starts_with(&"é".repeat(128)));
    }

    #[test]
    fn each_error_has_one_status_per_protocol() {
        let err = Error::Busy {
            component: "broker",
            limit: "x".into(),
        };
        assert_eq!(err.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.grpc_code(), Code::ResourceExhausted);
        assert_eq!(err.side(), Side::Proxy);
        assert_eq!(err.component(), Some("broker"));
        let err = Error::NotAllowed {
            target: "evil:1".into(),
            reason: "no".into(),
        };
        assert_eq!(err.grpc_code(), Code::PermissionDenied);
        assert_eq!(err.side(), Side::Client);
    }
}
