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
