//! Authentication of callers and the credentials sent on to Pinot servers.

mod support;

use base64::Engine;
use prost::Message;
use support::pinot::ServerRequest;
use support::*;
use tonic::Code;

const BEARER: &str = "Bearer st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg";
/// sha256 of the bearer token's password part.
fn users() -> String {
    format!(
        "[[auth.users]]\nusername = \"XkQBXKr652MV1VF9\"\npassword_sha256 = \"{}\"\n",
        pinot_proxy::token::hash_password("5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg")
    )
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn with_authorization(
    request: ServerRequest,
    value: Option<&str>,
) -> tonic::Request<ServerRequest> {
    let mut request = tonic::Request::new(request);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

async fn submit(
    proxy: &Proxy,
    request: tonic::Request<ServerRequest>,
) -> Result<usize, tonic::Status> {
    let mut stream = pinot_client(channel(proxy.addr).await)
        .submit(request)
        .await?
        .into_inner();
    let mut count = 0;
    while stream.message().await?.is_some() {
        count += 1;
    }
    Ok(count)
}

#[tokio::test]
async fn grpc_required_refuses_before_any_upstream_work() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", &format!("\n[auth]\ngrpc = \"required\"\n{}", users())).await;
    let request = || trino_request("blocks:1:10:1", server.port());

    for bad in [
        None,
        Some(basic("XkQBXKr652MV1VF9", "wrong").as_str()),
        Some("Bearer st-short"),
    ] {
        let status = submit(&proxy, with_authorization(request(), bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}: {status:?}");
    }
    // Also for a target outside the allowlist: auth comes first, nothing is resolved.
    let mut outside = request();
    outside
        .metadata
        .insert("FORWARD_HOST".into(), "elsewhere.example".into());
    let status = submit(&proxy, with_authorization(outside, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(server.seen.request_count(), 0);
    assert_eq!(proxy.connections_opened(), 0);

    // Good credentials in the header, as Basic or Bearer, or in the message metadata.
    let as_basic = basic("XkQBXKr652MV1VF9", "5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg");
    for good in [BEARER, as_basic.as_str()] {
        assert_eq!(
            submit(&proxy, with_authorization(request(), Some(good)))
                .await
                .unwrap(),
            2
        );
    }
    let mut in_body = request();
    in_body
        .metadata
        .insert("authorization".into(), BEARER.into());
    assert_eq!(
        submit(&proxy, with_authorization(in_body, None))
            .await
            .unwrap(),
        2
    );
    assert_eq!(server.seen.request_count(), 3);

    // Other methods need the header.
    let mut echo = tonic::Request::new(support::echo::EchoMessage::default());
    echo.metadata_mut()
        .insert("forward_host", "127.0.0.1".parse().unwrap());
    echo.metadata_mut()
        .insert("forward_port", server.port().to_string().parse().unwrap());
    let status = echo_client(channel(proxy.addr).await)
        .unary(echo)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn callers_credentials_are_not_forwarded_by_default() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", &format!("\n[auth]\ngrpc = \"required\"\n{}", users())).await;
    let mut request = trino_request("blocks:1:10:1", server.port());
    request
        .metadata
        .insert("authorization".into(), BEARER.into());
    submit(&proxy, with_authorization(request.clone(), Some(BEARER)))
        .await
        .unwrap();
    assert!(!server.seen.last_headers().contains_key("authorization"));
    let seen = ServerRequest::decode(server.seen.last_message().as_slice()).unwrap();
    assert!(!seen.metadata.contains_key("authorization"));
    // Everything else in the message is unchanged.
    request.metadata.remove("authorization");
    assert_eq!(seen, request);
}

// Regression: only the exact lower-case `authorization` key was removed, so `Authorization`
// and other spellings reached the server.
#[tokio::test]
async fn callers_credentials_are_removed_in_any_spelling() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", &format!("\n[auth]\ngrpc = \"required\"\n{}", users())).await;
    let mut request = trino_request("blocks:1:10:1", server.port());
    for key in ["Authorization", "AUTHORIZATION", "authorization"] {
        request.metadata.insert(key.into(), BEARER.into());
    }
    submit(&proxy, with_authorization(request.clone(), Some(BEARER)))
        .await
        .unwrap();
    let seen = ServerRequest::decode(server.seen.last_message().as_slice()).unwrap();
    assert!(
        seen.metadata
            .keys()
            .all(|key| !key.eq_ignore_ascii_case("authorization")),
        "{:?}",
        seen.metadata
    );
    assert_eq!(seen.sql, request.sql);
}

// Regression: a Basic username with a newline and an escape sequence was logged raw before
// authentication, forging log lines.
#[tokio::test]
async fn a_refused_username_is_logged_escaped() {
    let captured = capture_logs();
    let proxy = start_proxy("", &format!("\n[auth]\nrest = \"required\"\n{}", users())).await;
    let forged = basic("evil\n2026-01-01T00.00.00Z  INFO forged line\u{1b}[2J", "x");
    let refused = http1_get(proxy.addr, "/tables", &[("authorization", &forged)]).await;
    assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
    let lines = captured.lines();
    assert!(
        !lines
            .iter()
            .any(|line| line.contains("forged line") && !line.contains("evil")),
        "a forged line was written: {lines:#?}"
    );
    let failed = lines
        .iter()
        .find(|line| line.contains("authentication failed"))
        .expect("the failure is logged");
    assert!(failed.contains(r"evil\n2026"), "{failed}");
    assert!(failed.contains(r"\u{1b}[2J"), "{failed}");
    assert!(!failed.contains('\u{1b}'), "{failed}");
    // Regression: a refused REST request had no access-log line.
    assert!(
        lines.iter().any(|line| line.contains("rest request failed")
            && line.contains("status=401")
            && line.contains("path=/tables")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn configured_server_credentials_are_injected_into_the_message() {
    let server = start_fake("s").await;
    let proxy = start_proxy(
        "",
        &format!(
            "\n[servers.auth]\nusername = \"proxy\"\npassword_env = \"PINOT_PROXY_TEST_SERVER_PASSWORD\"\n\
             [auth]\ngrpc = \"required\"\n{}",
            users()
        ),
    )
    .await;
    let request = trino_request("blocks:1:10:1", server.port());
    submit(&proxy, with_authorization(request.clone(), Some(BEARER)))
        .await
        .unwrap();
    let seen = ServerRequest::decode(server.seen.last_message().as_slice()).unwrap();
    assert_eq!(seen.metadata["authorization"], basic("proxy", "pinot-pass"));
    assert_eq!(
        server
            .seen
            .last_headers()
            .get("authorization")
            .map(String::as_str),
        Some(basic("proxy", "pinot-pass").as_str())
    );
    assert_eq!(seen.sql, request.sql);
    assert_eq!(seen.segments, request.segments);
}

#[tokio::test]
async fn pass_through_forwards_the_callers_own() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "\n[servers.auth]\npass_through = true\n").await;
    let mut request = trino_request("blocks:1:10:1", server.port());
    request
        .metadata
        .insert("authorization".into(), BEARER.into());
    submit(&proxy, with_authorization(request.clone(), Some(BEARER)))
        .await
        .unwrap();
    assert_eq!(server.seen.last_headers()["authorization"], BEARER);
    assert_eq!(
        ServerRequest::decode(server.seen.last_message().as_slice()).unwrap(),
        request
    );
}

#[tokio::test]
async fn rest_required_answers_401_with_a_challenge() {
    let proxy = start_proxy("", &format!("\n[auth]\nrest = \"required\"\n{}", users())).await;
    let get = |authorization: Option<String>| async move {
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        http1_get(proxy.addr, "/tables", &headers).await
    };
    let refused = get(None).await;
    assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Basic realm=\"pinot-proxy\""
    );
    // Regression: the 401 was text/plain while the same surface's 503 is JSON.
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert!(refused.body().starts_with(b"{\"error\":\"pinot-proxy: "));
    // On the broker's query path it reads as a Pinot error, for pinotdb and Trino.
    let query = http1_get(proxy.addr, "/query/sql", &[]).await;
    assert_eq!(query.status(), http::StatusCode::UNAUTHORIZED);
    let body = String::from_utf8_lossy(query.body()).into_owned();
    assert!(
        body.contains("\"exceptions\":[{\"errorCode\":401,\"message\":\"pinot-proxy: "),
        "{body}"
    );
    let wrong = get(Some(basic("XkQBXKr652MV1VF9", "nope"))).await;
    assert_eq!(wrong.status(), http::StatusCode::UNAUTHORIZED);
    // Accepted credentials get past auth (no REST upstream here, so 404).
    let accepted = get(Some(BEARER.to_string())).await;
    assert_eq!(accepted.status(), http::StatusCode::NOT_FOUND);
}

#[test]
fn a_policy_needing_users_without_any_is_a_config_error() {
    let err = pinot_proxy::Config::parse(
        "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n[auth]\ngrpc = \"required\"\n",
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("auth.users is empty"),
        "{err:#}"
    );
    let err = pinot_proxy::Config::parse(
        "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n[auth]\ngrpc = \"client-cert\"\n",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("client_ca_file"), "{err:#}");
}

/// Opens a `Submit` stream on a raw HTTP/2 connection, sends `first` and keeps the request
/// body open; returns the response (or the error) as soon as the proxy answers.
async fn open_submit(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    first: Vec<u8>,
) -> (
    Result<http::Response<hyper::body::Incoming>, hyper::Error>,
    tokio::sync::mpsc::Sender<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(http_body::Frame::data(bytes::Bytes::from(first))))
        .await
        .unwrap();
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut request = http::Request::post(format!("http://proxy{SUBMIT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(WAIT, sender.send_request(request.body(body).unwrap()))
        .await
        .expect("the proxy answers without the rest of the message");
    (response, tx)
}

fn grpc_status(response: &http::Response<hyper::body::Incoming>) -> Option<&str> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn header_credentials_are_checked_before_the_message_is_read() {
    let proxy = start_proxy("", &format!("\n[auth]\ngrpc = \"required\"\n{}", users())).await;
    // A header announcing a 16 MiB message, of which nothing more is sent.
    let header = vec![0, 0xff, 0xff, 0xff, 0];
    let wrong = basic("XkQBXKr652MV1VF9", "wrong");
    let (response, _keep_open) =
        open_submit(proxy.addr, &[("authorization", wrong.as_str())], header).await;
    assert_eq!(grpc_status(&response.unwrap()), Some("16"));
}

#[tokio::test]
async fn a_first_message_that_never_completes_times_out() {
    let proxy = start_proxy("first_message_timeout_ms = 200", "").await;
    let (response, _keep_open) = open_submit(proxy.addr, &[], vec![0, 0, 0, 1, 0, 1, 2]).await;
    let response = response.unwrap();
    assert_eq!(grpc_status(&response), Some("3"));
    let message = response.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("first_message_timeout_ms"), "{message}");
}

#[tokio::test]
async fn first_messages_being_read_share_a_memory_budget() {
    let proxy = start_proxy(
        "max_routing_message_bytes = 1000000\nrouting_buffer_bytes = 1500000\n\
         first_message_timeout_ms = 2000",
        "",
    )
    .await;
    // Two connections each announce 900 kB and send 800 kB of it: both do not fit the budget.
    // One is refused; the one that fits times out waiting for the rest of its message.
    let first = [&[0u8][..], &900_000u32.to_be_bytes(), &vec![0u8; 800_000]].concat();
    let ((a, _a_open), (b, _b_open)) = tokio::join!(
        open_submit(proxy.addr, &[], first.clone()),
        open_submit(proxy.addr, &[], first.clone())
    );
    let messages = [grpc_message(&a.unwrap()), grpc_message(&b.unwrap())];
    let count = |needle: &str| messages.iter().filter(|m| m.contains(needle)).count();
    assert_eq!(count("routing_buffer_bytes"), 1, "{messages:?}");
    assert_eq!(count("first_message_timeout_ms"), 1, "{messages:?}");
}

// Regression: the whole declared length was reserved when a first message's 5-byte prefix
// arrived, so four streams announcing 16 MiB and sending nothing more refused every other
// Submit, authenticated ones included, with RESOURCE_EXHAUSTED.
#[tokio::test]
async fn announced_lengths_do_not_exhaust_the_routing_budget() {
    let server = start_fake("s").await;
    let proxy = start_proxy("first_message_timeout_ms = 5000", "").await;
    let announce = [&[0u8][..], &(16u32 << 20).to_be_bytes()].concat();
    // On one connection, in order: four announcements, then a whole Submit.
    let mut firsts = vec![announce; 4];
    let request = trino_request("blocks:2:100:1", server.port());
    firsts.push(frame(&prost::Message::encode_to_vec(&request)));
    let (mut answers, mut held) = submits_on_one_connection(&proxy, firsts).await;
    drop(held.pop()); // the whole Submit's request ends
    let served = answers.pop().unwrap().await;
    assert_eq!(grpc_status(&served), None, "{}", grpc_message(&served));
    assert_eq!(served.status(), http::StatusCode::OK);
    for stalled in answers {
        assert!(grpc_message(&stalled.await).contains("first_message_timeout_ms"));
    }
}

// One connection cannot take the whole budget: its first messages being read hold at most one
// largest message at once.
#[tokio::test]
async fn one_connection_holds_at_most_one_message_of_the_budget() {
    let proxy = start_proxy(
        "max_routing_message_bytes = 1000000\nrouting_buffer_bytes = 4000000\n\
         first_message_timeout_ms = 2000",
        "",
    )
    .await;
    let first = [&[0u8][..], &900_000u32.to_be_bytes(), &vec![0u8; 600_000]].concat();
    let (answers, _held) = submits_on_one_connection(&proxy, vec![first.clone(), first]).await;
    let mut messages = Vec::new();
    for answer in answers {
        messages.push(grpc_message(&answer.await));
    }
}

fn grpc_message(response: &http::Response<hyper::body::Incoming>) -> String {
    response
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn injection_keeps_unknown_fields_and_survives_a_content_length() {
    // Regression: the caller's content-length was forwarded with a rewritten message.
    let server = start_raw_server(Raw::Echo).await;
    let proxy = start_proxy(
        "",
        &format!(
            "\n[servers.auth]\nusername = \"proxy\"\npassword_env = \"PINOT_PROXY_TEST_INJECT_PASSWORD\"\n\
             [auth]\ngrpc = \"required\"\n{}",
            users()
        ),
    )
    .await;
    let mut message = trino_request("blocks:1:1:1", server.port()).encode_to_vec();
    message.extend_from_slice(&[0x7a, 3, b'n', b'e', b'w']);
    let body = frame(&message);
    let length = body.len().to_string();
    let headers = [
        ("content-length", length.as_str()),
        ("authorization", BEARER),
    ];
    let raw = raw_call(proxy.addr, SUBMIT, &headers, body).await;
    assert_eq!(
        raw.grpc_status().as_deref(),
        Some("0"),
        "{}",
        raw.grpc_message()
    );
    let seen = server.seen.last_message();
    let forwarded = &seen[5..];
    let decoded = ServerRequest::decode(forwarded).unwrap();
    assert_eq!(decoded.metadata["authorization"], basic("proxy", "pw"));
    assert!(
        forwarded.ends_with(&[0x7a, 3, b'n', b'e', b'w'])
            || forwarded
                .windows(5)
                .any(|w| w == [0x7a, 3, b'n', b'e', b'w'])
    );
}

#[tokio::test]
async fn a_compressed_first_message_is_refused_when_credentials_must_change() {
    let server = start_raw_server(Raw::Echo).await;
    let proxy = start_proxy("", "").await;
    let port = server.port().to_string();
    let mut body = frame(b"compressed bytes");
    body[0] = 1;
    let headers = [
        ("forward_host", "127.0.0.1"),
        ("forward_port", port.as_str()),
        ("grpc-encoding", "gzip"),
    ];
    let raw = raw_call(proxy.addr, SUBMIT, &headers, body).await;
    assert_eq!(raw.grpc_status().as_deref(), Some("3"));
    assert!(
        raw.grpc_message().contains("compressed"),
        "{}",
        raw.grpc_message()
    );
    assert_eq!(server.seen.request_count(), 0);
}

#[test]
fn lending_pinot_credentials_to_unchecked_callers_is_a_config_error() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n";
    for (extra, expected) in [
        ("[servers.auth]\nusername = \"p\"\npassword_env = \"PATH\"\n", "auth.grpc"),
        (
            "[controller]\nurls = [\"http://c:9000\"]\n[controller.auth]\nusername = \"admin\"\npassword_env = \"PATH\"\n",
            "auth.rest",
        ),
    ] {
        let err = pinot_proxy::Config::parse(&format!("{base}{extra}")).unwrap_err();
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
}

type HeldBody =
    tokio::sync::mpsc::Sender<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>;
type Answer = std::pin::Pin<
    Box<dyn std::future::Future<Output = http::Response<hyper::body::Incoming>> + Send>,
>;

/// Opens one `Submit` stream per body on one HTTP/2 connection, in order; each sends its
/// bytes and keeps its body open. Returns the answers (to await in any order) and the open
/// bodies.
async fn submits_on_one_connection(
    proxy: &Proxy,
    firsts: Vec<Vec<u8>>,
) -> (Vec<Answer>, Vec<HeldBody>) {
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut held = Vec::new();
    let mut answers: Vec<Answer> = Vec::new();
    for first in firsts {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(http_body::Frame::data(bytes::Bytes::from(first))))
            .await
            .unwrap();
        held.push(tx);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let request = http::Request::post(format!("http://proxy{SUBMIT}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let sent = sender.clone().send_request(request);
        answers.push(Box::pin(async move {
            tokio::time::timeout(WAIT, sent)
                .await
                .expect("the proxy answers")
                .unwrap()
        }));
    }
    (answers, held)
}
