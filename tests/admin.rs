//! The admin listener: health and readiness, metrics that move with the traffic, the pool's
//! targets; and the real binary draining on SIGTERM.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The admin port's answer to `GET path`: status and body.
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let response = http1_get(admin, path, &[]).await;
    let status = response.status().as_u16();
    (
        status,
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

/// The value of the sample `name{labels}` (labels as rendered), if the scrape has it.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` has `value`: a call is counted when its response body is dropped,
/// just after the client has seen its end.
async fn wait_for_sample(admin: SocketAddr, series: &str, value: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, scrape) = admin_get(admin, "/metrics").await;
        if sample(&scrape, series) == Some(value) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}; last scrape:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn admin_config(server_keys: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_delay_ms = 0\n{server_keys}\n\
         [servers]\nallow = [\"127.0.0.1\"]\nports = [1, 65535]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let proxy = start_proxy_config(&admin_config("")).await;
    let admin = proxy.admin.expect("admin listener");
    assert_eq!(admin_get(admin, "/livez").await, (200, "ok\n".into()));
    assert_eq!(admin_get(admin, "/readyz").await, (200, "ready\n".into()));
    let (status, body) = admin_get(admin, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"), "{body}");
    let (status, body) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("pinot_proxy_build_info{version=\"0.1.0\"} 1"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

#[tokio::test]
async fn metrics_move_with_calls() {
    let fake = start_fake("s").await;
    let config =
        admin_config("").replace("ports = [1, 65535]", &format!("ports = [{}]", fake.port()));
    let proxy = start_proxy_config(&config).await;
    let admin = proxy.admin.expect("admin listener");
    let served = format!(
        "pinot_proxy_grpc_calls_total{{method=\"PinotQueryServer/Submit\",target=\"127.0.0.1:{}\",code=\"0\"}}",
        fake.port()
    );
    let (_, before) = admin_get(admin, "/metrics").await;
    assert_eq!(sample(&before, &served), None);
    assert_eq!(
        sample(&before, "pinot_proxy_upstream_connections_opened_total"),
        Some(0.0)
    );

    for _ in 0..2 {
        let responses = submit_all(
            channel(proxy.addr).await,
            trino_request("blocks:3:1000:1", fake.port()),
        )
        .await
        .unwrap();
        assert_eq!(responses.len(), 4);
    }
    let scrape = wait_for_sample(admin, &served, 2.0).await;
    assert_eq!(
        sample(&scrape, "pinot_proxy_upstream_connections_opened_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "pinot_proxy_upstream_connections_open"),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "pinot_proxy_grpc_calls_in_flight"),
        Some(0.0)
    );
    let out = sample(&scrape, "pinot_proxy_grpc_bytes_total{direction=\"out\"}").unwrap();
    assert!(out > 6000.0, "{out}");
    assert_eq!(
        sample(
            &scrape,
            "pinot_proxy_grpc_call_duration_seconds_count{method=\"PinotQueryServer/Submit\"}"
        ),
        Some(2.0)
    );

    // A refused call counts under no target, whatever it named.
    let refused = submit_all(
        channel(proxy.addr).await,
        trino_request("blocks:1:10:1", fake.port() ^ 1),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    wait_for_sample(
        admin,
        "pinot_proxy_grpc_calls_total{method=\"PinotQueryServer/Submit\",target=\"-\",code=\"7\"}",
        1.0,
    )
    .await;

    // REST: no [controller] here, so a 404 the proxy answers itself.
    let response = http1_get(proxy.addr, "/tables", &[]).await;
    assert_eq!(response.status(), 404);
    wait_for_sample(
        admin,
        "pinot_proxy_rest_requests_total{component=\"none\",status=\"404\"}",
        1.0,
    )
    .await;

    let (status, targets) = admin_get(admin, "/debug/targets").await;
    assert_eq!(status, 200);
    assert!(
        targets.contains(&format!(
            "{{\"target\":\"127.0.0.1:{}\",\"connections\":1,\"in_flight\":0,\"opened\":1,\"last_error\":null}}",
            fake.port()
        )),
        "{targets}"
    );
}

#[tokio::test]
async fn auth_failures_are_counted_by_surface_and_reason() {
    let config = admin_config("").replace(
        "[admin]",
        &format!(
            "[auth]\ngrpc = \"required\"\nrest = \"required\"\n[[auth.users]]\n\
             username = \"trino\"\npassword_sha256 = \"{}\"\n[admin]",
            pinot_proxy::token::hash_password("secret")
        ),
    );
    let proxy = start_proxy_config(&config).await;
    let admin = proxy.admin.expect("admin listener");
    let response = http1_get(proxy.addr, "/tables", &[("authorization", "Basic !!!")]).await;
    assert_eq!(response.status(), 401);
    let response = http1_get(proxy.addr, "/tables", &[]).await;
    assert_eq!(response.status(), 401);
    let scrape = wait_for_sample(
        admin,
        "pinot_proxy_auth_failures_total{surface=\"rest\",reason=\"missing\"}",
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &scrape,
            "pinot_proxy_auth_failures_total{surface=\"rest\",reason=\"malformed\"}"
        ),
        Some(1.0)
    );
}

/// A port free now, for the binary to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary with `[admin]` and JSON logs; its log lines arrive on a channel.
struct Binary {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    admin: SocketAddr,
    _config: tempfile_path::TempFile,
}

mod tempfile_path {
    /// A file under the temp dir, removed on drop.
    pub struct TempFile(pub std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Binary {
    fn start(drain_delay_ms: u64, upstream_port: u16) -> Binary {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let path = std::env::temp_dir().join(format!(
            "pinot-proxy-admin-{}-{}.toml",
            std::process::id(),
            free_port()
        ));
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\ndrain_delay_ms = {drain_delay_ms}\n\
                 [servers]\nallow = [\"127.0.0.1\"]\nports = [{upstream_port}]\n\
                 [admin]\nlisten = \"{admin}\"\n[log]\nformat = \"json\"\n",
                free_port()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinot-proxy"))
            .args(["--config", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pinot-proxy");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Binary {
            child,
            lines,
            admin,
            _config: tempfile_path::TempFile(path),
        }
    }

    /// The next log line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with {needle:?}"),
            }
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the proxy did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_call_in_flight_and_readyz_turns_503_at_once() {
    let fake = start_fake("s").await;
    let mut proxy = Binary::start(1000, fake.port());
    // JSON logs: the first line names the config file, the next every listening address.
    let first = proxy.wait_for("starting");
    assert!(
        first.starts_with('{') && first.contains("\"config\":"),
        "{first}"
    );
    let serving = proxy.wait_for("serving");
    assert!(
        serving.contains(&format!("\"admin\":\"{}\"", proxy.admin)),
        "{serving}"
    );
    let listen: SocketAddr = serving
        .split("\"listen\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {serving}"));
    assert_eq!(admin_get(proxy.admin, "/readyz").await.0, 200);

    // Five messages 200 ms apart: the call is in flight when the signal comes.
    let request = trino_request("slow:5:200", fake.port());
    let mut stream = pinot_client(channel(listen).await)
        .submit(request)
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first message");
    let signalled = Instant::now();
    proxy.sigterm();
    // The signal reaches the process asynchronously: a few polls, well within the delay.
    loop {
        let (status, body) = admin_get(proxy.admin, "/readyz").await;
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(500),
            "still {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut received = 1;
    while let Some(_message) = stream.message().await.expect("the call finishes") {
        received += 1;
    }
    assert_eq!(received, 6);
    proxy.wait_for("all connections closed");
    assert_eq!(proxy.exit_code(), Some(0));
    // It kept accepting for the drain delay before closing.
    assert!(signalled.elapsed() >= Duration::from_millis(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let fake = start_fake("s").await;
    let mut proxy = Binary::start(60_000, fake.port());
    proxy.wait_for("serving");
    proxy.sigterm();
    proxy.wait_for("shutdown signal");
    let second = Instant::now();
    proxy.sigterm();
    assert_eq!(proxy.exit_code(), Some(1));
    assert!(second.elapsed() < Duration::from_secs(5));
}
