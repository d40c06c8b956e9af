//! Forwarding of gRPC calls through the proxy to fake Pinot servers.

mod support;

use prost::Message;
use std::time::Duration;
use support::pinot::ServerRequest;
use support::*;
use tonic::Code;

#[tokio::test]
async fn submit_is_routed_by_body_keys_to_the_named_server() {
    let a = start_fake("a").await;
    let b = start_fake("b").await;
    let proxy = start_proxy("", "").await;
    let through = channel(proxy.addr).await;

    for (server, name) in [(&b, "b"), (&a, "a"), (&b, "b")] {
        let request = trino_request("blocks:3:1000:42", server.port());
        let responses = submit_all(through.clone(), request.clone()).await.unwrap();
        assert_eq!(responses.len(), 4);
        assert!(responses.iter().all(|r| r.metadata["server"] == name));
        // The server receives the request, routing keys included.
        assert_eq!(
            ServerRequest::decode(server.seen.last_message().as_slice()).unwrap(),
            request
        );
    }
    assert_eq!(a.seen.request_count(), 1);
    assert_eq!(b.seen.request_count(), 2);

    // Same results through the proxy as direct.
    let direct = submit_all(
        channel(a.addr).await,
        trino_request("blocks:5:4096:9", a.port()),
    )
    .await
    .unwrap();
    let proxied = submit_all(through, trino_request("blocks:5:4096:9", a.port()))
        .await
        .unwrap();
    assert_eq!(direct, proxied);
    assert_eq!(proxied.len(), 6);
    assert_eq!(proxied[5].metadata["responseType"], "metadata");
    assert_eq!(proxied[2].payload, block(9, 2, 4096));
}

#[tokio::test]
async fn submit_bytes_are_forwarded_unchanged() {
    let server = start_raw_server(Raw::Echo).await;
    let proxy = start_proxy("", "").await;
    // Hand-built, in an order prost would not produce, with an unknown field 15 that a
    // re-encoding proxy would drop, and a second message after the first.
    let mut message = Vec::new();
    let mut entry = |key: &str, value: &str| {
        let mut kv = vec![0x0a, key.len() as u8];
        kv.extend_from_slice(key.as_bytes());
        kv.extend_from_slice(&[0x12, value.len() as u8]);
        kv.extend_from_slice(value.as_bytes());
        message.push(0x0a);
        message.push(kv.len() as u8);
        message.extend_from_slice(&kv);
    };
    entry("FORWARD_PORT", &server.port().to_string());
    entry("zzz", "1");
    entry("FORWARD_HOST", "127.0.0.1");
    message.extend_from_slice(&[0x7a, 3, b'a', b'b', b'c']);
    let mut body = frame(&message);
    body.extend_from_slice(&frame(b"second message"));
    let raw = raw_call(proxy.addr, SUBMIT, &[], body.clone()).await;
    assert_eq!(
        raw.grpc_status().as_deref(),
        Some("0"),
        "{}",
        raw.grpc_message()
    );
    assert_eq!(server.seen.last_message(), body);
    assert_eq!(raw.body.as_ref(), body.as_slice());
}

#[tokio::test]
async fn headers_name_the_target_for_any_method() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let mut client = echo_client(channel(proxy.addr).await);
    for (host_key, port_key) in [
        ("forward_host", "forward_port"),
        ("forward-host", "forward-port"),
    ] {
        let mut request = tonic::Request::new(support::echo::EchoMessage {
            data: b"hello".to_vec(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert(host_key, "127.0.0.1".parse().unwrap());
        request
            .metadata_mut()
            .insert(port_key, server.port().to_string().parse().unwrap());
        request
            .metadata_mut()
            .insert("x-user-meta", "kept".parse().unwrap());
        let response = client.unary(request).await.unwrap();
        assert_eq!(
            response.metadata().get("x-echo-header").unwrap(),
            "header-value"
        );
        assert_eq!(response.get_ref().data, b"hello");
        let seen = server.seen.last_headers();
        assert_eq!(seen.get("x-user-meta").map(String::as_str), Some("kept"));
        assert!(!seen.contains_key(host_key) && !seen.contains_key(port_key));
    }

    // Submit without body keys falls back to headers too.
    let mut request = trino_request("blocks:1:10:1", server.port());
    request.metadata.clear();
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("forward_host", "127.0.0.1".parse().unwrap());
    request
        .metadata_mut()
        .insert("forward_port", server.port().to_string().parse().unwrap());
    let mut stream = pinot_client(channel(proxy.addr).await)
        .submit(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.message().await.unwrap().unwrap().metadata["server"],
        "s"
    );
}

fn routed<T>(message: T, port: u16) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("forward_host", "127.0.0.1".parse().unwrap());
    request
        .metadata_mut()
        .insert("forward_port", port.to_string().parse().unwrap());
    request
}

fn echo_message(data: &[u8]) -> support::echo::EchoMessage {
    support::echo::EchoMessage {
        data: data.to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn all_four_rpc_kinds_pass_through() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let mut client = echo_client(channel(proxy.addr).await);
    let port = server.port();

    let unary = client
        .unary(routed(echo_message(b"one"), port))
        .await
        .unwrap();
    assert_eq!(unary.get_ref().data, b"one");

    let mut message = echo_message(b"many");
    message.count = 10;
    let mut stream = client
        .server_stream(routed(message, port))
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.data, b"many");
        count += 1;
    }
    assert_eq!(count, 10);

    let parts: Vec<_> = (0..5u8).map(|i| echo_message(&[i; 3])).collect();
    let joined = client
        .client_stream(routed(tokio_stream::iter(parts), port))
        .await
        .unwrap();
    assert_eq!(
        joined.get_ref().data,
        [[0u8; 3], [1; 3], [2; 3], [3; 3], [4; 3]].concat()
    );

    // Bidi, one message at a time: each reply must arrive before the next message is sent,
    // which fails if either direction were buffered.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .bidi(routed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            port,
        ))
        .await
        .unwrap()
        .into_inner();
    for i in 0..5u8 {
        tx.send(echo_message(&[i])).await.unwrap();
        let reply = tokio::time::timeout(WAIT, replies.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.data, [i]);
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
}

#[tokio::test]
async fn statuses_and_trailers_pass_through_before_and_after_data() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let mut client = echo_client(channel(proxy.addr).await);

    // Trailers-only: the status arrives with the response headers.
    let mut message = echo_message(b"x");
    message.fail_code = Code::NotFound as u32;
    let status = client
        .unary(routed(message, server.port()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "echo failure");
    assert_eq!(
        status.metadata().get("x-echo-trailer").unwrap(),
        "trailer-value"
    );

    // After data: the messages, then the status in trailers.
    let mut message = echo_message(b"d");
    message.count = 3;
    message.fail_code = Code::ResourceExhausted as u32;
    let mut stream = client
        .server_stream(routed(message, server.port()))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        assert_eq!(stream.message().await.unwrap().unwrap().data, b"d");
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("x-echo-trailer").unwrap(),
        "trailer-value"
    );

    // The same for Pinot's Submit.
    let result = submit_all(
        channel(proxy.addr).await,
        trino_request("fail:13:2", server.port()),
    )
    .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "fake failure");
    assert_eq!(
        status.metadata().get("x-fake-trailer").unwrap(),
        "after-data"
    );
}

// Regression: a status with no message (Pinot's `NOT_FOUND: Table not found`) left the proxy
// as HEADERS plus an empty DATA frame ending the stream, which grpc-java rejects as INTERNAL.
#[tokio::test]
async fn a_status_without_messages_stays_trailers_only() {
    let server = start_raw_server(Raw::TrailersOnly).await;
    let proxy = start_proxy("", "").await;
    let body = frame(&trino_request("select 1", server.port()).encode_to_vec());

    let direct = raw_call(server.addr, SUBMIT, &[], body.clone()).await;
    assert!(direct.ended_with_headers, "the fake answers trailers-only");
    let proxied = raw_call(proxy.addr, SUBMIT, &[], body).await;
    assert!(
        proxied.ended_with_headers,
        "the status must end the stream in the HEADERS frame"
    );
    assert!(proxied.body.is_empty() && proxied.trailers.is_none());
    assert_eq!(proxied.grpc_status().as_deref(), Some("5"));
    assert_eq!(proxied.grpc_message(), "Table not found");

    // The proxy's own errors are trailers-only as well.
    let mut refused = trino_request("select 1", 1);
    refused
        .metadata
        .insert("FORWARD_HOST".into(), "10.0.0.1".into());
    let refused = raw_call(proxy.addr, SUBMIT, &[], frame(&refused.encode_to_vec())).await;
    assert!(refused.ended_with_headers);
    assert_eq!(refused.grpc_status().as_deref(), Some("7"));
}

// Regression: a 1 MB FORWARD_HOST came back whole in grpc-message (and in the log line).
#[tokio::test]
async fn echoed_client_text_is_bounded() {
    let proxy = start_proxy("", "").await;
    let mut request = trino_request("select 1", 8090);
    request
        .metadata
        .insert("FORWARD_HOST".into(), "h".repeat(1 << 20));
    let answer = raw_call(proxy.addr, SUBMIT, &[], frame(&request.encode_to_vec())).await;
    assert_eq!(answer.grpc_status().as_deref(), Some("3"));
    let message = answer.grpc_message();
    assert!(message.len() < 512, "{} bytes", message.len());
    assert!(message.contains("cut: 1048576 bytes in all"), "{message}");
}

// A spent deadline (`grpc-timeout: 0n`) ends the call before any upstream work.
#[tokio::test]
async fn a_spent_deadline_ends_the_call_before_the_server() {
    let server = start_raw_server(Raw::Echo).await;
    let proxy = start_proxy("", "").await;
    let body = frame(&trino_request("select 1", server.port()).encode_to_vec());
    // A first call opens the pooled connection, so the next one could go out at once.
    let warm = raw_call(proxy.addr, SUBMIT, &[], body.clone()).await;
    assert_eq!(warm.grpc_status().as_deref(), Some("0"));
    let answer = raw_call(proxy.addr, SUBMIT, &[("grpc-timeout", "0n")], body).await;
    assert_eq!(
        answer.grpc_status().as_deref(),
        Some("4"),
        "{}",
        answer.grpc_message()
    );
    assert_eq!(
        server.seen.request_count(),
        1,
        "the spent call reached the server"
    );
}

#[tokio::test]
async fn proxy_errors_are_grpc_statuses_naming_the_cause() {
    let server = start_fake("s").await;
    let proxy = start_proxy("max_routing_message_bytes = 1024", "").await;
    let through = channel(proxy.addr).await;

    // No target anywhere.
    let mut request = trino_request("blocks:1:1:1", server.port());
    request.metadata.clear();
    let status = submit_all(through.clone(), request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("FORWARD_HOST"), "{status:?}");
    let status = echo_client(through.clone())
        .unary(echo_message(b"x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Target outside the allowlist: refused before any connection.
    let mut request = trino_request("blocks:1:1:1", 8090);
    request
        .metadata
        .insert("FORWARD_HOST".into(), "pinot-server-0.evil.example".into());
    let status = submit_all(through.clone(), request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("pinot-server-0.evil.example:8090"),
        "{status:?}"
    );
    let mut request = trino_request("blocks:1:1:1", 8090);
    request
        .metadata
        .insert("FORWARD_HOST".into(), "0x7f.1".into());
    let status = submit_all(through.clone(), request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(proxy.connections_opened(), 0);

    // A bad port value.
    let mut request = trino_request("blocks:1:1:1", 1);
    request
        .metadata
        .insert("FORWARD_PORT".into(), "eighty".into());
    let status = submit_all(through.clone(), request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("eighty"), "{status:?}");

    // Nothing listens on the port: UNAVAILABLE naming host:port.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let status = submit_all(through.clone(), trino_request("blocks:1:1:1", closed_port))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("127.0.0.1:{closed_port}")),
        "{status:?}"
    );

    // A first message over the routing cap.
    let big = "x".repeat(2000);
    let status = submit_all(through.clone(), trino_request(&big, server.port()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("1024"), "{status:?}");

    // Bytes that are not a ServerRequest.
    let raw = raw_call(proxy.addr, SUBMIT, &[], frame(&[0xff, 0xff, 0xff])).await;
    assert_eq!(raw.grpc_status().as_deref(), Some("3"));
    assert!(
        raw.grpc_message().contains("ServerRequest"),
        "{}",
        raw.grpc_message()
    );
    // A body that ends inside the first message.
    let raw = raw_call(proxy.addr, SUBMIT, &[], vec![0, 0, 0, 0, 9, 1]).await;
    assert_eq!(raw.grpc_status().as_deref(), Some("3"));
    // A bad grpc-timeout.
    let raw = raw_call(
        proxy.addr,
        "/any.Service/Method",
        &[("grpc-timeout", "soon")],
        frame(b""),
    )
    .await;
    assert_eq!(raw.grpc_status().as_deref(), Some("3"));
    assert!(raw.grpc_message().contains("grpc-timeout"));

    // The proxy keeps serving after all of that.
    let ok = submit_all(through, trino_request("blocks:2:10:3", server.port())).await;
    assert_eq!(ok.unwrap().len(), 3);
    assert_eq!(server.seen.request_count(), 1);
}

#[tokio::test]
async fn non_grpc_requests_get_a_clear_http_error() {
    let proxy = start_proxy("", "").await;
    let response = http1_get(proxy.addr, "/tables", &[]).await;
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
    let body = response.into_body();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("GET /tables") && body.contains("gRPC"),
        "{body}"
    );
}

#[tokio::test]
async fn a_64_mib_message_passes_byte_for_byte() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let size = 64 * 1024 * 1024;
    let responses = submit_all(
        channel(proxy.addr).await,
        trino_request(&format!("blocks:1:{size}:64"), server.port()),
    )
    .await
    .unwrap();
    assert_eq!(responses.len(), 2);
    assert!(
        responses[0].payload == block(64, 0, size),
        "payload differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_get_every_byte() {
    let a = start_fake("a").await;
    let b = start_fake("b").await;
    let proxy = start_proxy("", "").await;
    let through = channel(proxy.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for seed in 0..200u64 {
        let port = if seed % 2 == 0 { a.port() } else { b.port() };
        let through = through.clone();
        calls.spawn(async move {
            let responses = submit_all(
                through,
                trino_request(&format!("blocks:4:16384:{seed}"), port),
            )
            .await
            .unwrap();
            (seed, responses)
        });
    }
    let all = tokio::time::timeout(WAIT * 3, calls.join_all())
        .await
        .expect("calls finish");
    assert_eq!(all.len(), 200);
    for (seed, responses) in all {
        let name = if seed % 2 == 0 { "a" } else { "b" };
        assert_eq!(responses.len(), 5);
        for (i, response) in responses[..4].iter().enumerate() {
            assert_eq!(response.metadata["server"], name);
            assert!(
                response.payload == block(seed, i as u64, 16384),
                "call {seed} block {i}"
            );
        }
    }
    assert_eq!(a.seen.request_count() + b.seen.request_count(), 200);
}

#[tokio::test]
async fn client_cancel_reaches_the_server() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let mut stream = pinot_client(channel(proxy.addr).await)
        .submit(trino_request("hang", server.port()))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert_eq!(server.seen.cancelled.get(), 0);
    drop(stream);
    server.seen.cancelled.wait_for(1).await;

    // A bidi call whose client goes away with its request stream still open.
    let (port, addr) = (server.port(), proxy.addr);
    let (replied, got_reply) = tokio::sync::oneshot::channel();
    let client = tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = echo_client(channel(addr).await)
            .bidi(routed(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                port,
            ))
            .await
            .unwrap()
            .into_inner();
        tx.send(echo_message(b"1")).await.unwrap();
        assert!(replies.message().await.unwrap().is_some());
        replied.send(()).unwrap();
        std::future::pending::<()>().await;
        drop((tx, replies));
    });
    got_reply.await.unwrap();
    client.abort();
    server.seen.cancelled.wait_for(2).await;
}

#[tokio::test]
async fn connections_are_reused_across_callers_and_calls() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    for _ in 0..10 {
        // A new client connection each time: the upstream connection is still shared.
        submit_all(
            channel(proxy.addr).await,
            trino_request("blocks:1:10:1", server.port()),
        )
        .await
        .unwrap();
    }
    let through = channel(proxy.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let through = through.clone();
        let port = server.port();
        calls
            .spawn(async move { submit_all(through, trino_request("blocks:2:100:1", port)).await });
    }
    for result in calls.join_all().await {
        result.unwrap();
    }
    assert_eq!(server.seen.accepted.get(), 1);
    assert_eq!(proxy.connections_opened(), 1);
}

#[tokio::test]
async fn concurrent_first_calls_share_one_connection_attempt() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let through = channel(proxy.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let through = through.clone();
        let port = server.port();
        calls.spawn(async move { submit_all(through, trino_request("blocks:1:10:1", port)).await });
    }
    for result in calls.join_all().await {
        result.unwrap();
    }
    assert_eq!(server.seen.accepted.get(), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_and_reopened_on_demand() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "idle_timeout_ms = 100").await;
    let through = channel(proxy.addr).await;
    submit_all(
        through.clone(),
        trino_request("blocks:1:10:1", server.port()),
    )
    .await
    .unwrap();
    // The idle connection is closed by the proxy; the server sees it go.
    server.seen.closed.wait_for(1).await;
    // The next call opens a new one.
    submit_all(through, trino_request("blocks:1:10:1", server.port()))
        .await
        .unwrap();
    assert_eq!(server.seen.accepted.get(), 2);
}

#[tokio::test]
async fn idle_timeout_never_cuts_a_slow_healthy_stream() {
    // Regression guard: the idle reaper must skip connections with calls in flight.
    let server = start_fake("s").await;
    let proxy = start_proxy("", "idle_timeout_ms = 50").await;
    let responses = submit_all(
        channel(proxy.addr).await,
        trino_request("slow:4:150", server.port()),
    )
    .await
    .unwrap();
    assert_eq!(responses.len(), 5);
    assert_eq!(server.seen.accepted.get(), 1);
}

#[tokio::test]
async fn a_restarted_server_gets_a_new_connection() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let through = channel(proxy.addr).await;
    submit_all(
        through.clone(),
        trino_request("blocks:1:10:1", server.port()),
    )
    .await
    .unwrap();
    let port = server.port();
    let seen = server.seen.clone();
    drop(server);
    seen.closed.wait_for(1).await;
    // Nothing listens now: the call fails cleanly.
    let status = submit_all(through.clone(), trino_request("blocks:1:10:1", port))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The server comes back on the same port: the broken connection is replaced.
    let restarted = start_fake_on("t", port).await;
    let ok = submit_all(through, trino_request("blocks:1:10:1", port)).await;
    assert_eq!(ok.unwrap()[0].metadata["server"], "t");
    assert_eq!(restarted.seen.accepted.get(), 1);
    assert_eq!(proxy.connections_opened(), 2);
}

#[tokio::test]
async fn grpc_timeout_is_forwarded_and_enforced() {
    // Before response headers: the upstream never answers.
    let stalling = start_raw_server(Raw::Stall).await;
    let proxy = start_proxy("", "").await;
    let port = stalling.port().to_string();
    let headers = [
        ("forward_host", "127.0.0.1"),
        ("forward_port", port.as_str()),
        ("grpc-timeout", "200m"),
    ];
    let raw = raw_call(proxy.addr, "/any.Service/Method", &headers, frame(b"x")).await;
    assert_eq!(
        raw.grpc_status().as_deref(),
        Some("4"),
        "{}",
        raw.grpc_message()
    );
    assert!(
        raw.grpc_message().contains("pinot-proxy"),
        "{}",
        raw.grpc_message()
    );
    // The server is told the time left, at most the caller's 200 ms.
    let forwarded = stalling.seen.last_headers()["grpc-timeout"].clone();
    let micros: u64 = forwarded.trim_end_matches('u').parse().unwrap();
    assert!(
        forwarded.ends_with('u') && micros > 0 && micros <= 200_000,
        "{forwarded}"
    );
    stalling.seen.cancelled.wait_for(1).await;

    // Mid-stream: headers and one message arrive, then the upstream stalls.
    let stalling = start_raw_server(Raw::StallAfterFirst).await;
    let port = stalling.port().to_string();
    let headers = [
        ("forward_host", "127.0.0.1"),
        ("forward_port", port.as_str()),
        ("grpc-timeout", "300m"),
    ];
    let raw = raw_call(proxy.addr, "/any.Service/Method", &headers, frame(b"x")).await;
    assert_eq!(raw.body.as_ref(), frame(b"first").as_slice());
    assert_eq!(
        raw.grpc_status().as_deref(),
        Some("4"),
        "{}",
        raw.grpc_message()
    );
    stalling.seen.cancelled.wait_for(1).await;
}

#[tokio::test]
async fn shutdown_lets_calls_in_flight_finish() {
    let server = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let through = channel(proxy.addr).await;
    let mut stream = pinot_client(through)
        .submit(trino_request("slow:3:100", server.port()))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let addr = proxy.addr;
    let stopping = tokio::spawn(proxy.shutdown());
    let mut rest = 0;
    while let Some(_message) = stream.message().await.unwrap() {
        rest += 1;
    }
    assert_eq!(rest, 3);
    stopping.await.unwrap().unwrap();
    // Stopped: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_the_upstream() {
    // Backpressure: the proxy holds no more than its HTTP/2 windows for a stalled reader.
    let flood = start_raw_server(Raw::Flood).await;
    let proxy = start_proxy("", "").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(64 * 1024)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let port = flood.port().to_string();
    let request = http::Request::post("http://proxy/any.Service/Flood")
        .header("content-type", "application/grpc")
        .header("forward_host", "127.0.0.1")
        .header("forward_port", port.as_str())
        .body(http_body_util::Full::new(bytes::Bytes::from(frame(b"go"))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    // Let the server fill every buffer on the way; a proxy that buffered without bound
    // would keep reading at loopback speed (gigabytes per second).
    let mut last = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = flood
            .seen
            .produced
            .load(std::sync::atomic::Ordering::Relaxed);
    }
    assert!(last > 0, "the server never started");
    eprintln!("upstream produced {last} bytes for a stalled reader");
    assert!(
        last <= 16 * 1024 * 1024,
        "upstream produced {last} bytes for a stalled reader"
    );
    drop(response);
    flood.seen.cancelled.wait_for(1).await;
}

#[tokio::test]
async fn a_connect_that_stalls_fails_within_the_connect_timeout() {
    // A listener whose accept queue is full drops new SYNs, so connecting stalls.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let proxy = start_proxy("", "connect_timeout_ms = 300").await;
    let started = std::time::Instant::now();
    let status = submit_all(
        channel(proxy.addr).await,
        trino_request("blocks:1:1:1", addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < WAIT);
    assert!(status.message().contains(&addr.to_string()), "{status:?}");
    assert!(status.message().contains("within 300 ms"), "{status:?}");
    drop(listener);
}

#[tokio::test]
async fn names_resolving_to_loopback_need_an_explicit_entry() {
    let server = start_fake("s").await;
    let config =
        |allow: &str| format!("[server]\nlisten = \"127.0.0.1:0\"\n[servers]\nallow = [{allow}]\n");
    for (allow, expected) in [
        ("\"localhost\"", Err(Code::PermissionDenied)),
        ("\"localhost\", \"127.0.0.0/8\", \"::1\"", Ok(())),
    ] {
        let config = pinot_proxy::Config::parse(&config(allow)).unwrap();
        let proxy = bind(&config).await.unwrap();
        let addr = proxy.local_addr();
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(proxy.run(async {
            let _ = stopped.await;
        }));
        let mut request = trino_request("blocks:1:1:1", server.port());
        request
            .metadata
            .insert("FORWARD_HOST".into(), "localhost".into());
        let result = submit_all(channel(addr).await, request).await;
        match expected {
            Ok(()) => assert_eq!(result.unwrap().len(), 2, "allow = [{allow}]"),
            Err(code) => {
                let status = result.unwrap_err();
                assert_eq!(status.code(), code, "allow = [{allow}]: {status:?}");
                assert!(status.message().contains("resolves to"), "{status:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_target_naming_the_proxy_itself_is_refused() {
    // Regression: a target equal to the proxy's own address looped until resources ran out.
    let proxy = start_proxy("", "").await;
    let status = submit_all(
        channel(proxy.addr).await,
        trino_request("blocks:1:1:1", proxy.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("this proxy itself"), "{status:?}");
}

#[tokio::test]
async fn broker_submit_goes_to_the_configured_broker_grpc_port() {
    // The broker is named by the operator, so it needs no allow entry.
    let broker = start_raw_server(Raw::Echo).await;
    let proxy = start_proxy_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\nallow = []\n\
         [broker]\nurls = [\"http://127.0.0.1:1\"]\ngrpc_port = {}\n",
        broker.port()
    ))
    .await;
    let path = "/org.apache.pinot.common.proto.PinotQueryBroker/Submit";
    let raw = raw_call(proxy.addr, path, &[], frame(b"select 1")).await;
    assert_eq!(
        raw.grpc_status().as_deref(),
        Some("0"),
        "{}",
        raw.grpc_message()
    );
    assert_eq!(raw.body.as_ref(), frame(b"select 1").as_slice());
    assert_eq!(broker.seen.request_count(), 1);
    // Other methods still need a target the allowlist lets through.
    let raw = raw_call(proxy.addr, SUBMIT, &[], frame(b"")).await;
    assert_eq!(raw.grpc_status().as_deref(), Some("3"));
}

#[tokio::test]
async fn an_abandoned_connection_attempt_still_frees_its_slot() {
    // Regression: a connect attempt whose callers all went away kept its pool slot forever,
    // so with max_targets reached every new server was refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stalled = socket.listen(1).unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(stalled.local_addr().unwrap());
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            fillers.push(stream);
        }
    }
    let healthy = start_fake("s").await;
    let proxy = start_proxy("", "connect_timeout_ms = 300\nmax_targets = 1").await;
    let port = stalled_port.to_string();
    // The caller gives up long before the connect timeout.
    let headers = [
        ("forward_host", "127.0.0.1"),
        ("forward_port", port.as_str()),
        ("grpc-timeout", "50m"),
    ];
    let raw = raw_call(proxy.addr, "/any.Service/Method", &headers, frame(b"x")).await;
    assert_eq!(raw.grpc_status().as_deref(), Some("4"));
    // Nobody calls that server again: the attempt must still run out its own timeout and free
    // the only slot, so another server becomes reachable (before the fix: never).
    let mut last = None;
    for _ in 0..100 {
        let result = submit_all(
            channel(proxy.addr).await,
            trino_request("blocks:1:1:1", healthy.port()),
        )
        .await;
        match result {
            Ok(responses) => {
                assert_eq!(responses.len(), 2);
                last = None;
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                last = Some(status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(last.is_none(), "slot never freed: {last:?}");
    drop(stalled);
}

// Regression: plain TCP that never sends a byte, and an HTTP/2 client that answers PINGs but
// never opens a stream, were never closed; enough of them stopped the proxy serving.
#[tokio::test]
async fn connections_that_send_no_request_are_closed() {
    let proxy = start_proxy("header_timeout_ms = 200\nidle_timeout_ms = 60000", "").await;
    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut silent, &mut buf))
        .await
        .expect("the proxy closes a connection that sends nothing");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (_sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the proxy closes an HTTP/2 connection that opens no stream")
        .ok();
}

#[tokio::test]
async fn a_connection_idle_after_its_calls_is_closed_but_a_slow_call_is_not_cut() {
    let server = start_fake("s").await;
    let proxy = start_proxy("header_timeout_ms = 200\nidle_timeout_ms = 200", "").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let closed = tokio::spawn(connection);
    // A call streaming for longer than the idle timeout runs to its end.
    let request = http::Request::post(format!("http://proxy{SUBMIT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame(
            &trino_request("slow:3:200", server.port()).encode_to_vec(),
        ))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = tokio::time::timeout(WAIT, http_body_util::BodyExt::collect(response.into_body()))
        .await
        .expect("the slow call ends")
        .unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
    // Then, with nothing in flight, the connection is closed.
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .ok();
}

/// A server that answers every call with headers and then, after `after`, resets the stream
/// with CANCEL: what Pinot (grpc-java) and grpc-go servers do when their deadline runs out.
async fn start_resetting_server(after: Duration) -> std::net::SocketAddr {
    start_resetting_server_with(after, true).await
}

/// [`start_resetting_server`]; with `headers` false the reset comes before any answer.
async fn start_resetting_server_with(after: Duration, headers: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    if !headers {
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            respond.send_reset(h2::Reason::CANCEL);
                        });
                        continue;
                    }
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let Ok(mut stream) = respond.send_response(response, false) else {
                        continue;
                    };
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        stream.send_reset(h2::Reason::CANCEL);
                    });
                }
            });
        }
    });
    addr
}

/// Regression: a server's reset at its deadline, arriving just before the proxy's own timer,
/// was reported as UNAVAILABLE "stream failed"; it is DEADLINE_EXCEEDED, whether the server
/// had sent its answer's headers or not.
#[tokio::test]
async fn an_upstream_reset_at_the_deadline_is_deadline_exceeded() {
    let proxy = start_proxy("", "").await;
    for headers in [true, false] {
        let server = start_resetting_server_with(Duration::from_millis(195), headers).await;
        let port = server.port().to_string();
        let response = raw_call(
            proxy.addr,
            "/pinotproxy.test.Echo/Unary",
            &[
                ("forward-host", "127.0.0.1"),
                ("forward-port", &port),
                ("grpc-timeout", "200m"),
            ],
            frame(b"x"),
        )
        .await;
        assert_eq!(
            response.grpc_status().as_deref(),
            Some("4"),
            "headers sent: {headers}: {}",
            response.grpc_message()
        );
    }
}

/// A server that cancels a call without any deadline: CANCELLED, as gRPC maps the reset.
#[tokio::test]
async fn an_upstream_cancel_is_cancelled() {
    let server = start_resetting_server(Duration::from_millis(10)).await;
    let proxy = start_proxy("", "").await;
    let port = server.port().to_string();
    let response = raw_call(
        proxy.addr,
        "/pinotproxy.test.Echo/Unary",
        &[("forward-host", "127.0.0.1"), ("forward-port", &port)],
        frame(b"x"),
    )
    .await;
    assert_eq!(response.grpc_status().as_deref(), Some("1"));
    assert!(
        response.grpc_message().contains("cancelled the call"),
        "{}",
        response.grpc_message()
    );
}

/// Regression: the proxy added a `date` header to gRPC answers (in a trailers-only answer,
/// a trailer) that the server never sent.
#[tokio::test]
async fn the_proxy_adds_no_date_header() {
    let server = start_raw_server(Raw::TrailersOnly).await;
    let proxy = start_proxy("", "").await;
    let port = server.port().to_string();
    let headers = [
        ("forward-host", "127.0.0.1"),
        ("forward-port", port.as_str()),
    ];
    let direct = raw_call(server.addr, "/any.Service/Method", &headers, frame(b"x")).await;
    let proxied = raw_call(proxy.addr, "/any.Service/Method", &headers, frame(b"x")).await;
    assert!(!direct.headers.contains_key("date"));
    assert!(
        !proxied.headers.contains_key("date"),
        "{:?}",
        proxied.headers
    );
    assert_eq!(proxied.grpc_status(), direct.grpc_status());
}
