//! HTTP pieces both protocols share: the response body type, what the listening side knows of a
//! connection (`Peer`), the one hop-by-hop header list, and loop detection (`pinot-proxy-via`).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

/// A boxed error, as bodies carry them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response body type served to callers.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Each proxy adds its instance id to this header; a request that already carries ours has
/// been routed back to us (a target naming the proxy itself) and is refused.
pub const VIA_HEADER: &str = "pinot-proxy-via";

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

/// Headers that belong to one connection, not to the request or response, and are never
/// forwarded (RFC 9110 section 7.6.1), plus `expect`, which the listening side already answers,
/// and `http2-settings` of an h2c upgrade.
const HOP_BY_HOP: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
    HeaderName::from_static("http2-settings"),
];

/// Removes hop-by-hop headers and the headers the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// [`strip_hop_by_hop`] for a gRPC request: `te: trailers` stays (gRPC needs it), any other
/// `te` value goes.
pub fn strip_hop_by_hop_keep_te_trailers(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// What the listening side knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// Whether the client connected with TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// This connection's REST requests in flight, bounded by `rest.max_requests_per_connection`.
    pub rest_requests: Arc<tokio::sync::Semaphore>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other"),
            ("x-private", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "websocket"),
            ("authorization", "Basic dTpw"),
            ("accept", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization"]);
    }

    #[test]
    fn grpc_keeps_te_trailers_only() {
        let mut headers = HeaderMap::new();
        headers.append(header::TE, HeaderValue::from_static("trailers"));
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
        strip_hop_by_hop_keep_te_trailers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[header::TE], "trailers");
        let mut headers = HeaderMap::new();
        headers.append(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop_keep_te_trailers(&mut headers);
        assert!(headers.is_empty());
    }
}
