//! Every error the proxy makes itself, which side caused it, and how it is answered: one place
//! maps an error to a gRPC status (trailers-only response or error trailers mid-stream).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use std::fmt;

/// gRPC status codes the proxy produces or reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "0",
            Code::Cancelled => "1",
            Code::Unknown => "2",
            Code::InvalidArgument => "3",
            Code::DeadlineExceeded => "4",
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
pub enum Source {
    /// The caller sent something the proxy cannot route or may not forward.
    Client,
    /// The proxy itself ran out of a resource or time.
    Proxy,
    /// The Pinot server could not be reached or broke the stream.
    Upstream,
}

/// An error the proxy answers itself, instead of forwarding the upstream's answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProxyError {
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
    #[error("too many first messages being read for routing (server.routing_buffer_bytes = {0})")]
    RoutingBudget(u32),
    #[error("this connection holds too many first messages being read for routing (at most server.max_routing_message_bytes = {0} at once)")]
    ConnectionRoutingShare(u32),
    #[error("too many upstream servers in use (max_targets = {0})")]
    TooManyTargets(usize),
    #[error("deadline exceeded after {0} ms (grpc-timeout)")]
    DeadlineExceeded(u128),
    #[error("request stream from the client failed: {0}")]
    ClientStream(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
}

impl ProxyError {
    pub fn source_side(&self) -> Source {
        match self {
            ProxyError::NoTarget
            | ProxyError::BadTarget(_)
            | ProxyError::BadMessage(_)
            | ProxyError::MessageTooLarge { .. }
            | ProxyError::BadTimeout(_)
            | ProxyError::NotAllowed { .. }
            | ProxyError::ClientStream(_)
            | ProxyError::Unauthenticated(_) => Source::Client,
            ProxyError::TooManyTargets(_)
            | ProxyError::RoutingBudget(_)
            | ProxyError::ConnectionRoutingShare(_)
            | ProxyError::DeadlineExceeded(_) => Source::Proxy,
            ProxyError::Unreachable { .. } | ProxyError::StreamFailed { .. } => Source::Upstream,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ProxyError::NoTarget
            | ProxyError::BadTarget(_)
            | ProxyError::BadMessage(_)
            | ProxyError::BadTimeout(_) => Code::InvalidArgument,
            ProxyError::MessageTooLarge { .. }
            | ProxyError::TooManyTargets(_)
            | ProxyError::RoutingBudget(_)
            | ProxyError::ConnectionRoutingShare(_) => Code::ResourceExhausted,
            ProxyError::NotAllowed { .. } => Code::PermissionDenied,
            ProxyError::Unreachable { .. } | ProxyError::StreamFailed { .. } => Code::Unavailable,
            ProxyError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ProxyError::ClientStream(_) => Code::Cancelled,
            ProxyError::Unauthenticated(_) => Code::Unauthenticated,
        }
    }

    /// The status headers (`grpc-status`, `grpc-message`) for this error.
    pub fn status_headers(&self) -> HeaderMap {
        status_headers(self.code(), &format!("pinot-proxy: {self}"))
    }

    /// A trailers-only gRPC response carrying this error.
    pub fn to_response<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.extend(self.status_headers());
        response
    }
}

/// `grpc-status` and a percent-encoded `grpc-message`.
pub fn status_headers(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert("grpc-status", HeaderValue::from_static(code.as_str()));
    let encoded = percent_encode(message);
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(encoded)) {
        headers.insert("grpc-message", value);
    }
    headers
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks: bytes outside printable ASCII, and `%`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How much of a client's text is echoed in a log line or an error message.
pub const ECHO_LIMIT: usize = 256;

/// Client-sent text as it may be logged or echoed back: control characters, quotes and
/// backslashes escaped (a caller cannot forge log lines or terminal escapes), and cut after
/// [`ECHO_LIMIT`] bytes with a mark saying how long it was.
pub fn echo(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(ECHO_LIMIT) + 32);
    let mut used = 0;
    for c in text.chars() {
        used += c.len_utf8();
        if used > ECHO_LIMIT {
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

/// Whether `path` is one of the broker's query paths, whose callers (Trino, pinotdb) read a
/// Pinot broker response: errors there carry Pinot's `exceptions` list too.
pub fn is_broker_query_path(path: &str) -> bool {
    matches!(path, "/query/sql" | "/query" | "/sql")
}

/// The JSON answer for a REST request the proxy answers itself: `{"error": "pinot-proxy: ..."}`,
/// with the component when one is concerned, and on broker query paths also shaped like a Pinot
/// broker's error (`exceptions: [{errorCode, message}]`, the code being the HTTP status) so
/// that clients show the proxy's message.
pub fn json_error<B: From<Bytes>>(
    status: StatusCode,
    message: &str,
    component: Option<&str>,
    path: &str,
) -> Response<B> {
    let message = json_string(&format!("pinot-proxy: {message}"));
    let mut json = format!("{{\"error\":{message}");
    if let Some(component) = component {
        json.push_str(&format!(",\"component\":{}", json_string(component)));
    }
    if is_broker_query_path(path) {
        json.push_str(&format!(
            ",\"exceptions\":[{{\"errorCode\":{},\"message\":{message}}}]",
            status.as_u16()
        ));
    }
    json.push_str("}\n");
    let mut response = Response::new(B::from(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Client => "client",
            Source::Proxy => "proxy",
            Source::Upstream => "upstream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    #[test]
    fn broker_query_errors_carry_pinot_exceptions() {
        let response = json_error::<Bytes>(StatusCode::UNAUTHORIZED, "no", None, "/query/sql");
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(
            response.body().as_ref(),
            b"{\"error\":\"pinot-proxy: no\",\"exceptions\":[{\"errorCode\":401,\"message\":\"pinot-proxy: no\"}]}\n"
        );
        let other =
            json_error::<Bytes>(StatusCode::BAD_GATEWAY, "x", Some("controller"), "/tables");
        assert_eq!(
            other.body().as_ref(),
            b"{\"error\":\"pinot-proxy: x\",\"component\":\"controller\"}\n"
        );
    }

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
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c"), "a b%25c");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn trailers_only_response_has_status_and_message() {
        let err = ProxyError::NotAllowed {
            target: "evil:1".into(),
            reason: "no allow entry matches".into(),
        };
        let response: Response<String> = err.to_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(
            response.headers()["grpc-message"],
            "pinot-proxy: target evil:1 is not allowed: no allow entry matches"
        );
    }
}
