//! The partial-result guard: a Pinot server's exceptions in the last message of a `Submit`
//! answer (status OK) end the call with an error, unless `servers.partial_results = "pass"`.

mod support;

use prost::Message;
use support::pinot::ServerResponse;
use support::*;
use tonic::Code;

/// The messages a call received before it ended, and how it ended.
async fn submit_collecting(
    proxy: std::net::SocketAddr,
    sql: &str,
    port: u16,
) -> (Vec<ServerResponse>, Result<(), tonic::Status>) {
    let request = trino_request(sql, port);
    let mut stream = match pinot_client(channel(proxy).await).submit(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (vec![], Err(status)),
    };
    let mut received = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => received.push(message),
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

#[tokio::test]
async fn a_clean_metadata_message_passes_byte_for_byte() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let body = frame(&trino_request("pinot:3:0", fake.port()).encode_to_vec());
    let direct = raw_call(fake.addr, SUBMIT, &[], body.clone()).await;
    let proxied = raw_call(proxy.addr, SUBMIT, &[], body).await;
    assert_eq!(direct.grpc_status().as_deref(), Some("0"));
    assert_eq!(proxied.grpc_status().as_deref(), Some("0"));
    assert!(direct.body.len() > 3000, "{}", direct.body.len());
    assert_eq!(proxied.body, direct.body);
    assert_eq!(proxy.stats.unchecked_answers(), 0);
}

#[tokio::test]
async fn an_execution_timeout_fails_the_call_after_the_data_it_sent() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let (received, ended) = submit_collecting(
        proxy.addr,
        "pinot:2:250:ExecutionTimeoutError:\nTimed out while polling results block",
        fake.port(),
    )
    .await;
    let status = ended.expect_err("the call fails");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let message = status.message();
    assert!(
        message.contains(&format!("127.0.0.1:{}", fake.port())),
        "{message}"
    );
    assert!(
        message.contains("error 250: ExecutionTimeoutError"),
        "{message}"
    );
    assert!(
        message.contains("Timed out while polling results block"),
        "{message}"
    );
    // The rows sent before the error reached the client; the metadata message did not.
    assert_eq!(received.len(), 2);
    assert!(received
        .iter()
        .all(|r| r.metadata["responseType"] == "data"));

    // Direct, the same answer is a success: the partial result Trino would return.
    let (direct, ended) =
        submit_collecting(fake.addr, "pinot:2:250:ExecutionTimeoutError", fake.port()).await;
    assert!(ended.is_ok());
    assert_eq!(direct.len(), 3);
}

#[tokio::test]
async fn pinot_codes_choose_the_status() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    for (code, expected) in [
        (235, Code::Unavailable),
        (211, Code::ResourceExhausted),
        (180, Code::PermissionDenied),
        (200, Code::Internal),
    ] {
        let sql = format!("pinot:1:{code}:2 segments [s_1, s_2] missing on server");
        let (_, ended) = submit_collecting(proxy.addr, &sql, fake.port()).await;
        let status = ended.expect_err("the call fails");
        assert_eq!(status.code(), expected, "{code}: {status:?}");
        assert!(
            status
                .message()
                .contains(&format!("error {code}: 2 segments")),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn pass_mode_forwards_everything() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "partial_results = \"pass\"\n").await;
    let (received, ended) =
        submit_collecting(proxy.addr, "pinot:2:250:ExecutionTimeoutError", fake.port()).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(received.len(), 3);
    assert_eq!(
        received[2].payload,
        datatable(&[(250, "ExecutionTimeoutError")])
    );
}

#[tokio::test]
async fn a_metadata_message_split_over_many_frames_is_still_read() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    // 200 KB of message: the metadata message crosses a dozen 16 KiB DATA frames.
    let long = "x".repeat(200_000);
    let (_, ended) =
        submit_collecting(proxy.addr, &format!("pinot:1:250:{long}"), fake.port()).await;
    let status = ended.expect_err("the call fails");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // Pinot's message is quoted, cut to a bounded length.
    assert!(
        status.message().contains("...(cut: 200000 bytes in all)"),
        "{}",
        status.message().len()
    );
}

#[tokio::test]
async fn a_metadata_message_over_the_hold_limit_passes_through() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let long = "x".repeat(1_100_000);
    let (received, ended) =
        submit_collecting(proxy.addr, &format!("pinot:1:250:{long}"), fake.port()).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(received.len(), 2);
    assert_eq!(proxy.stats.unchecked_answers(), 1);
}

#[tokio::test]
async fn the_audit_log_says_who_read_which_table_through_which_server() {
    let captured = capture_logs();
    let fake = start_fake("s").await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_delay_ms = 0\n\
         [servers]\nallow = [\"127.0.0.1\"]\n\
         [auth]\ngrpc = \"required\"\n[[auth.users]]\nusername = \"trino\"\n\
         password_sha256 = \"{}\"\n[log]\naudit = true\naudit_sql_max_bytes = 40\n",
        pinot_proxy::token::hash_password("s3cret-pw")
    );
    let proxy = start_proxy_config(&config).await;
    let mut request = tonic::Request::new(trino_request(
        "pinot:3:0:SELECT a FROM e2e_OFFLINE WHERE b = 1 LIMIT 10000000",
        fake.port(),
    ));
    request.metadata_mut().insert(
        "authorization",
        "Basic dHJpbm86czNjcmV0LXB3".parse().unwrap(),
    );
    let mut stream = pinot_client(channel(proxy.addr).await)
        .submit(request)
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    drop(stream);
    // The line is written when the response body is dropped, just after the client's end.
    let deadline = std::time::Instant::now() + WAIT;
    let line = loop {
        if let Some(line) = captured.lines().into_iter().find(|l| l.contains("audit")) {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no audit line");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    for expected in [
        "user=trino",
        &format!("server=\"127.0.0.1:{}\"", fake.port()),
        "table=e2e_OFFLINE",
        "segments=1",
        "rows=30",
        "docs_scanned=1000",
        "grpc.status=\"0\"",
        "...(cut: ",
    ] {
        assert!(line.contains(expected), "{expected:?} not in {line}");
    }
    assert!(!line.contains("s3cret"), "{line}");
    assert!(!line.contains("dHJpbm86"), "{line}");
}
