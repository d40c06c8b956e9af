//! The gRPC probe: one `Submit` shaped as Trino's Pinot connector sends it, through the proxy
//! with tonic, and each response message, the trailers and the status it ended with.

use super::{error_chain, one_line, Args, HostPort, Out, TlsFiles};
use crate::proto::pinot_query_server_client::PinotQueryServerClient;
use crate::proto::{ServerRequest, ServerResponse};
use anyhow::Context;
use std::collections::HashMap;
use std::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// Largest response message accepted: Trino's `pinot.grpc.max-inbound-message-size` default.
const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// Trailer keys the status lines already show.
const STATUS_KEYS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// What came back, filled in as it arrives, so a timeout still reports the part that did.
#[derive(Default)]
struct Answer {
    /// Each message's `responseType` (`(no responseType)` when absent: Trino would crash).
    sequence: Vec<String>,
    payload_bytes: u64,
    trailer_keys: Vec<String>,
}

impl Answer {
    fn record(&mut self, message: &ServerResponse, out: &mut Out<'_>) {
        let kind = message
            .metadata
            .get("responseType")
            .map_or_else(|| "(no responseType)".to_owned(), |kind| one_line(kind));
        let size = message.payload.len();
        out.fact(
            format_args!("message {}", self.sequence.len() + 1),
            format_args!("{kind}, {size} bytes"),
        );
        self.sequence.push(kind);
        self.payload_bytes += size as u64;
    }

    fn keep_trailer_keys(&mut self, trailers: &tonic::metadata::MetadataMap) {
        let mut keys: Vec<String> = trailers
            .clone()
            .into_headers()
            .keys()
            .map(|name| name.as_str().to_owned())
            .filter(|name| !STATUS_KEYS.contains(&name.as_str()))
            .collect();
        keys.sort();
        keys.dedup();
        self.trailer_keys = keys;
    }
}

/// The request Trino sends: the target in the metadata, then its fixed keys.
fn trino_request(server: &HostPort, sql: String) -> ServerRequest {
    let metadata = [
        ("FORWARD_HOST", server.host.clone()),
        ("FORWARD_PORT", server.port.to_string()),
        ("requestId", "0".to_owned()),
        ("brokerId", "unknown".to_owned()),
        ("enableTrace", "false".to_owned()),
        ("enableStreaming", "true".to_owned()),
        ("payloadType", "sql".to_owned()),
    ];
    ServerRequest {
        metadata: metadata
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect::<HashMap<_, _>>(),
        sql,
        ..Default::default()
    }
}

/// tonic's TLS settings: rustls with the ring provider (tonic's `tls-ring` feature), verifying
/// the name given in `--proxy`.
fn tls_config(files: &TlsFiles, host: &str) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().domain_name(host);
    let config = match &files.ca {
        Some((_, _, pem)) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_native_roots(),
    };
    match &files.client {
        Some(client) => config.identity(Identity::from_pem(&client.cert_pem, &client.key_pem)),
        None => config,
    }
}

/// The endpoint of the proxy; connecting waits for the first call.
fn endpoint(args: &Args, tls: Option<&TlsFiles>) -> anyhow::Result<Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{}", args.proxy))
        .with_context(|| format!("--proxy {}", args.proxy))?
        .connect_timeout(args.timeout())
        .user_agent(concat!("pinot-proxy-probe/", env!("CARGO_PKG_VERSION")))
        .context("user agent")?;
    match tls {
        Some(files) => endpoint
            .tls_config(tls_config(files, &args.proxy.host))
            .context("--tls"),
        None => Ok(endpoint),
    }
}

/// Sends `request` and reads the answer into `answer`; the status the call ended with.
async fn call(
    channel: Channel,
    request: tonic::Request<ServerRequest>,
    answer: &mut Answer,
    out: &mut Out<'_>,
) -> Status {
    let mut client = PinotQueryServerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = match client.submit(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            answer.keep_trailer_keys(status.metadata());
            return status;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => answer.record(&message, out),
            Ok(None) => break,
            Err(status) => {
                answer.keep_trailer_keys(status.metadata());
                return status;
            }
        }
    }
    match stream.trailers().await {
        Ok(Some(trailers)) => answer.keep_trailer_keys(&trailers),
        Ok(None) => {}
        Err(status) => return status,
    }
    Status::ok("")
}

/// The gRPC code's name as the gRPC spec writes it (`PERMISSION_DENIED`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Runs the `Submit` probe and prints what came back; `Ok(true)` when the status is OK and a
/// `metadata` message arrived, as Trino needs.
pub(super) async fn probe(
    args: &Args,
    server: &HostPort,
    sql: String,
    tls: Option<&TlsFiles>,
    authorization: Option<String>,
    out: &mut Out<'_>,
) -> anyhow::Result<bool> {
    let endpoint = endpoint(args, tls)?;
    let mut request = tonic::Request::new(trino_request(server, sql.clone()));
    // Sent as `grpc-timeout`, which the proxy enforces and passes on to the server.
    request.set_timeout(args.timeout());
    if let Some(value) = authorization {
        let value = value.parse().context("the authorization value")?;
        request.metadata_mut().insert("authorization", value);
    }
    out.fact(
        "call",
        "org.apache.pinot.common.proto.PinotQueryServer/Submit",
    );
    out.fact("server", server);
    out.fact("sql", one_line(&sql));

    let started = Instant::now();
    let mut answer = Answer::default();
    let work = async {
        match endpoint.connect().await {
            Ok(channel) => call(channel, request, &mut answer, out).await,
            Err(err) => Status::unavailable(format!(
                "cannot connect to the proxy {}: {}",
                args.proxy,
                error_chain(&err)
            )),
        }
    };
    let status = match tokio::time::timeout(args.timeout(), work).await {
        Ok(status) => status,
        Err(_) => Status::deadline_exceeded(format!(
            "no end within {} ms (--timeout-ms)",
            args.timeout_ms
        )),
    };

    let count = answer.sequence.len();
    match count {
        0 => out.fact("messages", 0),
        _ => out.fact(
            "messages",
            format_args!("{count} ({})", answer.sequence.join(", ")),
        ),
    }
    out.fact("payload bytes", answer.payload_bytes);
    out.fact("trailer keys", list_or_none(&answer.trailer_keys));
    out.fact("status", code_name(status.code()));
    out.fact("status code", status.code() as i32);
    let message = one_line(status.message());
    out.fact(
        "status message",
        if message.is_empty() {
            "(none)"
        } else {
            &message
        },
    );
    let failure = if status.code() != Code::Ok {
        Some(format!("status {}", code_name(status.code())))
    } else if !answer.sequence.iter().any(|kind| kind == "metadata") {
        Some("no message with responseType metadata".to_owned())
    } else {
        None
    };
    Ok(out.verdict(started, failure))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_trinos_keys_and_the_server() {
        let server = HostPort::parse("[::1]:8090").unwrap();
        let request = trino_request(&server, "SELECT 1".to_owned());
        let get = |key: &str| request.metadata.get(key).map(String::as_str);
        assert_eq!(get("FORWARD_HOST"), Some("::1"));
        assert_eq!(get("FORWARD_PORT"), Some("8090"));
        assert_eq!(get("payloadType"), Some("sql"));
        assert_eq!(get("enableStreaming"), Some("true"));
        assert_eq!(request.metadata.len(), 7);
        assert_eq!(request.sql, "SELECT 1");
    }

    #[test]
    fn every_code_has_its_spec_name() {
        for n in 0..=16 {
            let name = code_name(Code::from(n));
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        }
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
    }
}
