//! How an error leaves the proxy: as a gRPC status (a trailers-only response, or error trailers
//! mid-stream) or, on REST, as JSON with an HTTP status. Every answer the proxy makes itself
//! goes through here.

use crate::error::{Code, Error};
use crate::http::ProxyBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

/// The status trailers (`grpc-status`, `grpc-message`) for `err`.
pub fn grpc_status(err: &Error) -> HeaderMap {
    status_headers(err.grpc_code(), &format!("pinot-proxy: {err}"))
}

/// A trailers-only gRPC response carrying `err`.
pub fn grpc_error<B: Default>(err: &Error) -> Response<B> {
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.extend(grpc_status(err));
    response
}

/// The JSON answer to a REST request for `path` that the proxy refuses or cannot forward; a
/// 401 carries the `WWW-Authenticate` challenge.
pub fn rest_error(err: &Error, path: &str) -> Response<ProxyBody> {
    let mut response = json_error::<http_body_util::Full<Bytes>>(
        err.http_status(),
        &err.to_string(),
        err.component(),
        path,
    )
    .map(|body| body.map_err(|never| match never {}).boxed_unsync());
    if matches!(err, Error::RestUnauthenticated(_)) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pinot-proxy\""),
        );
    }
    response
}

/// `grpc-status` and a percent-encoded `grpc-message`.
fn status_headers(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert("grpc-status", HeaderValue::from_static(code.as_str()));
    let encoded = percent_encode(message);
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(encoded)) {
        headers.insert("grpc-message", value);
    }
    headers
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks: bytes outside printable ASCII, and `%`.
fn percent_encode(message: &str) -> String {
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

/// Whether `path` is one of the broker's query paths, whose callers (Trino, pinotdb) read a
/// Pinot broker response: errors there carry Pinot's `exceptions` list too.
fn is_broker_query_path(path: &str) -> bool {
    matches!(path, "/query/sql" | "/query" | "/sql")
}

/// The JSON answer for a REST request the proxy answers itself: `{"error": "pinot-proxy: ..."}`,
/// with the component when one is concerned, and on broker query paths also shaped like a Pinot
/// broker's error (`exceptions: [{errorCode, message}]`, the code being the HTTP status) so
/// that clients show the proxy's message.
fn json_error<B: From<Bytes>>(
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
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `text` as a JSON string literal.
pub(crate) fn json_string(text: &str) -> String {
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
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
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
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c"), "a b%25c");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn trailers_only_response_has_status_and_message() {
        let err = Error::NotAllowed {
            target: "evil:1".into(),
            reason: "no allow entry matches".into(),
        };
        let response: Response<String> = grpc_error(&err);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(
            response.headers()["grpc-message"],
            "pinot-proxy: target evil:1 is not allowed: no allow entry matches"
        );
    }

    #[test]
    fn rest_errors_are_json_with_the_component() {
        let err = Error::RestUnreachable {
            component: "controller",
            causes: "http://c:9000: tcp connect error: \"refused\"".into(),
        };
        let response = rest_error(&err, "/tables");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            err.to_string(),
            "no controller reachable: http://c:9000: tcp connect error: \"refused\""
        );
        let missing = Error::NotConfigured {
            component: "broker",
            method: http::Method::POST,
            path: "/query/sql".into(),
        };
        assert_eq!(missing.http_status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            missing.to_string(),
            "POST /query/sql goes to the broker but no [broker] section is configured"
        );
        let refused = rest_error(&Error::RestUnauthenticated("no".into()), "/query/sql");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
