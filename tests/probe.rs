//! `pinot-proxy probe`, the real binary, against an in-process proxy in front of a fake Pinot
//! server: what it prints and how it exits.

mod support;

use prost::Message;
use rcgen::{CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use support::pinot::ServerRequest;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_pinot-proxy");

/// How a probe run ended.
struct Probe {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Probe {
    /// The value of the `key: value` line, when there is one.
    fn fact(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}: ");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `pinot-proxy probe ARGS` without blocking the runtime, so the in-process proxy and
/// fake keep serving it; killed if it outlives [`WAIT`].
async fn probe(args: &[&str]) -> Probe {
    let run = tokio::process::Command::new(BIN)
        .arg("probe")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("probe {args:?} did not exit within {WAIT:?}"))
        .expect("run pinot-proxy probe");
    Probe {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submit_through_the_proxy_prints_each_message_and_exits_0() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let (addr, server) = (proxy.addr.to_string(), format!("127.0.0.1:{}", fake.port()));

    let run = probe(&[
        "--proxy",
        &addr,
        "--server",
        &server,
        "--sql",
        "blocks:3:1000:42",
    ])
    .await;
    run.assert_code(0);
    assert_eq!(run.fact("message 1"), Some("data, 1000 bytes"));
    assert_eq!(run.fact("message 4"), Some("metadata, 0 bytes"));
    assert_eq!(run.fact("messages"), Some("4 (data, data, data, metadata)"));
    assert_eq!(run.fact("payload bytes"), Some("3000"));
    assert_eq!(run.fact("trailer keys"), Some("(none)"));
    assert_eq!(run.fact("status"), Some("OK"));
    assert_eq!(run.fact("status code"), Some("0"));
    assert_eq!(run.fact("result"), Some("ok"));
    assert!(run.fact("elapsed").is_some_and(|e| e.ends_with(" ms")));

    // The request is the one Trino sends, with no credentials.
    let request = ServerRequest::decode(&fake.seen.last_message()[..]).unwrap();
    let mut expected = trino_request("blocks:3:1000:42", fake.port());
    expected.segments.clear();
    assert_eq!(request, expected);
    assert!(!fake.seen.last_headers().contains_key("authorization"));
    assert!(fake.seen.last_headers().contains_key("grpc-timeout"));

    // `--table` queries the table; the fake refuses such SQL before any message, as Pinot
    // refuses a bad request.
    let run = probe(&["--proxy", &addr, "--server", &server, "--table", "t"]).await;
    run.assert_code(1);
    assert_eq!(run.fact("sql"), Some("SELECT * FROM t LIMIT 10"));
    assert_eq!(run.fact("messages"), Some("0"));
    assert_eq!(run.fact("status"), Some("INVALID_ARGUMENT"));
    assert_eq!(run.fact("result"), Some("failed: status INVALID_ARGUMENT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_the_proxy_refuses_prints_permission_denied_and_fails() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", &format!("ports = [{}]", fake.port())).await;
    let other = if fake.port() == 65535 {
        1
    } else {
        fake.port() + 1
    };

    let run = probe(&[
        "--proxy",
        &proxy.addr.to_string(),
        "--server",
        &format!("127.0.0.1:{other}"),
        "--sql",
        "blocks:1:10:1",
    ])
    .await;
    run.assert_code(1);
    assert_eq!(run.fact("status"), Some("PERMISSION_DENIED"));
    assert_eq!(run.fact("status code"), Some("7"));
    assert!(run.fact("status message").unwrap().contains("pinot-proxy"));
    assert_eq!(run.fact("result"), Some("failed: status PERMISSION_DENIED"));
    assert_eq!(fake.seen.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_before_and_during_the_answer_are_reported_with_a_status() {
    let fake = start_fake("s").await;
    let proxy = start_proxy("", "").await;
    let (addr, server) = (proxy.addr.to_string(), format!("127.0.0.1:{}", fake.port()));

    // A stream that stops short: the message before the failure and the server's trailer.
    let run = probe(&["--proxy", &addr, "--server", &server, "--sql", "fail:13:1"]).await;
    run.assert_code(1);
    assert_eq!(run.fact("messages"), Some("1 (data)"));
    assert_eq!(run.fact("trailer keys"), Some("x-fake-trailer"));
    assert_eq!(run.fact("status"), Some("INTERNAL"));
    assert_eq!(run.fact("status message"), Some("fake failure"));

    // A server that never ends: bounded by --timeout-ms.
    let args = ["--proxy", &addr, "--server", &server, "--sql", "hang"];
    let run = probe(&[&args[..], &["--timeout-ms", "300"]].concat()).await;
    run.assert_code(1);
    assert_eq!(run.fact("message 1"), Some("data, 32 bytes"));
    assert_eq!(run.fact("status"), Some("DEADLINE_EXCEEDED"));

    // No proxy there.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let run = probe(&["--proxy", &closed, "--server", &server, "--sql", "x"]).await;
    run.assert_code(1);
    assert_eq!(run.fact("status"), Some("UNAVAILABLE"));
    assert!(run
        .fact("status message")
        .unwrap()
        .contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_without_upstreams_prints_404_and_fails() {
    let proxy = start_proxy("", "").await;
    let run = probe(&["--proxy", &proxy.addr.to_string(), "--rest", "/nope"]).await;
    run.assert_code(1);
    assert_eq!(
        run.fact("url"),
        Some(&*format!("http://{}/nope", proxy.addr))
    );
    assert_eq!(run.fact("status"), Some("404 Not Found"));
    assert_eq!(run.fact("content-type"), Some("application/json"));
    assert_eq!(run.fact("result"), Some("failed: HTTP 404"));
    // The body comes last, indented, so it never reads as a fact.
    let body = run.stdout.lines().skip_while(|l| !l.starts_with("result:"));
    let body: Vec<&str> = body.skip(1).collect();
    assert!(!body.is_empty() && body.iter().all(|l| l.starts_with("    ")));
    assert!(body.concat().contains("pinot-proxy"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_in_the_authorization_header() {
    let fake = start_fake("s").await;
    let users = format!(
        "[[auth.users]]\nusername = \"XkQBXKr652MV1VF9\"\npassword_sha256 = \"{}\"\n",
        pinot_proxy::token::hash_password("5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg")
    );
    let auth = format!("\n[auth]\ngrpc = \"required\"\nrest = \"required\"\n{users}");
    let proxy = start_proxy("", &auth).await;
    let (addr, server) = (proxy.addr.to_string(), format!("127.0.0.1:{}", fake.port()));
    let submit = [
        "--proxy",
        &addr,
        "--server",
        &server,
        "--sql",
        "blocks:1:10:1",
    ];
    let basic = [
        "--user",
        "XkQBXKr652MV1VF9",
        "--password",
        "5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg",
    ];
    let token = [
        "--token",
        "st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg",
    ];

    for credentials in [&basic[..], &token[..]] {
        let run = probe(&[&submit[..], credentials].concat()).await;
        run.assert_code(0);
        assert_eq!(run.fact("messages"), Some("2 (data, metadata)"));
        assert!(!run.stdout.contains("5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg"));
        // REST: past the 401; no controller configured, so the proxy's own 404.
        let rest = ["--proxy", &addr, "--rest", "/tables"];
        let run = probe(&[&rest[..], credentials].concat()).await;
        assert_eq!(run.fact("status"), Some("404 Not Found"));
    }
    assert_eq!(run_status(&submit, &[]).await, "UNAUTHENTICATED");
    let wrong = ["--user", "XkQBXKr652MV1VF9", "--password", "wrong"];
    assert_eq!(run_status(&submit, &wrong).await, "UNAUTHENTICATED");
    let run = probe(&["--proxy", &addr, "--rest", "/tables"]).await;
    assert_eq!(run.fact("status"), Some("401 Unauthorized"));
}

/// The status line of a probe that must fail.
async fn run_status(args: &[&str], more: &[&str]) -> String {
    let run = probe(&[args, more].concat()).await;
    run.assert_code(1);
    run.fact("status").expect("a status line").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_before_connecting() {
    for args in [
        &["--proxy", "127.0.0.1:1", "--server", "127.0.0.1:2"][..],
        &[
            "--proxy",
            "127.0.0.1:1",
            "--server",
            "127.0.0.1:2",
            "--table",
            "t",
            "--sql",
            "x",
        ],
        &[
            "--proxy",
            "127.0.0.1",
            "--server",
            "127.0.0.1:2",
            "--table",
            "t",
        ],
        &["--proxy", "::1:8096", "--rest", "/tables"],
        &["--proxy", "127.0.0.1:1", "--rest", "tables"],
        &[
            "--proxy",
            "127.0.0.1:1",
            "--rest",
            "/t",
            "--server",
            "127.0.0.1:2",
        ],
        &["--proxy", "127.0.0.1:1", "--rest", "/t", "--ca", "ca.pem"],
        &[
            "--proxy",
            "127.0.0.1:1",
            "--rest",
            "/t",
            "--tls",
            "--cert",
            "c.pem",
        ],
        &["--proxy", "127.0.0.1:1", "--rest", "/t", "--user", "u"],
        &[
            "--proxy",
            "127.0.0.1:1",
            "--rest",
            "/t",
            "--timeout-ms",
            "0",
        ],
    ] {
        let run = probe(args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let missing = "/nonexistent/pinot-proxy-probe-ca.pem";
    let run = probe(&[
        "--proxy",
        "127.0.0.1:1",
        "--rest",
        "/t",
        "--tls",
        "--ca",
        missing,
    ])
    .await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--ca") && run.stderr.contains(missing),
        "{}",
        run.stderr
    );
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pinot-proxy-probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().expect("temp path is UTF-8").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate `ca` issued for `sans`, as PEM (certificate, key).
fn issue(ca: &CertifiedIssuer<'static, KeyPair>, name: &str, sans: &[&str]) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verifies_the_proxy_with_the_ca_and_presents_the_client_certificate() {
    let fake = start_fake("s").await;
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "probe test ca");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let dir = TempDir::new();
    let ca_file = dir.write("ca.crt", &ca.pem());
    let (cert, key) = issue(&ca, "pinot-proxy", &["127.0.0.1", "localhost"]);
    let (proxy_cert, proxy_key) = (dir.write("tls.crt", &cert), dir.write("tls.key", &key));
    let (cert, key) = issue(&ca, "trino", &["trino.example"]);
    let (client_cert, client_key) = (
        dir.write("client.crt", &cert),
        dir.write("client.key", &key),
    );
    let proxy = start_proxy(
        &format!(
            "[server.tls]\ncert_file = {proxy_cert:?}\nkey_file = {proxy_key:?}\n\
             client_ca_file = {ca_file:?}\n"
        ),
        "",
    )
    .await;
    let (addr, server) = (proxy.addr.to_string(), format!("127.0.0.1:{}", fake.port()));
    let tls = [
        "--tls",
        "--ca",
        &ca_file,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
    ];

    let submit = [
        "--proxy",
        &addr,
        "--server",
        &server,
        "--sql",
        "blocks:2:100:1",
    ];
    let run = probe(&[&submit[..], &tls].concat()).await;
    run.assert_code(0);
    assert_eq!(
        run.fact("tls"),
        Some(&*format!("on (CA {ca_file}, client certificate)"))
    );
    assert_eq!(run.fact("messages"), Some("3 (data, data, metadata)"));

    let run = probe(&[&["--proxy", &addr, "--rest", "/nope"][..], &tls].concat()).await;
    run.assert_code(1);
    assert_eq!(run.fact("url"), Some(&*format!("https://{addr}/nope")));
    assert_eq!(run.fact("status"), Some("404 Not Found"));

    // Without the client certificate the proxy refuses the connection.
    let run = probe(&[&submit[..], &["--tls", "--ca", &ca_file]].concat()).await;
    run.assert_code(1);
    assert_eq!(run.fact("messages"), Some("0"));
    assert_eq!(fake.seen.request_count(), 1);
}
