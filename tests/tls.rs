//! TLS: termination with ALPN for gRPC and HTTP/1.1 on one port, client certificates, TLS to
//! Pinot servers, and live certificate rotation. Certificates are made at run time.

mod support;

use rcgen::{CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::*;

/// A CA and the certificates it issues, as PEM.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, common_name: Option<&str>, sans: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pinot-proxy-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca: &Ca, alpn: &[&[u8]], client_cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match client_cert {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

use rustls::pki_types::pem::PemObject;

async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The leaf certificate the server presented.
fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Starts a proxy from a full config text.
async fn proxy_from(text: &str) -> (std::net::SocketAddr, pinot_proxy::Server) {
    let config = pinot_proxy::Config::parse(text).expect("config");
    let server = bind(&config).await.expect("bind");
    (server.local_addr(), server)
}

fn run(server: pinot_proxy::Server) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    stop
}

fn tls_section(dir: &TempDir, leaf: &Leaf, client_ca: Option<&Ca>) -> String {
    let cert = dir.write("tls.crt", &leaf.cert_pem);
    let key = dir.write("tls.key", &leaf.key_pem);
    let mut text = format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some(ca) = client_ca {
        let ca = dir.write("ca.crt", &ca.pem());
        text.push_str(&format!(
            "client_ca_file = {:?}\n",
            ca.display().to_string()
        ));
    }
    text
}

fn config_text(server_extra: &str, tls: &str, servers_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n{tls}\n\
         [servers]\nallow = [\"127.0.0.1\", \"localhost\", \"::1\"]\n{servers_extra}\n"
    )
}

/// One `Submit` over a new TLS connection; an error when the handshake or exchange fails.
async fn submit_over_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
    port: u16,
    sql: &str,
) -> Result<RawResponse, String> {
    let stream = tls_connect(addr, config).await.map_err(|e| e.to_string())?;
    raw_call_on(stream, SUBMIT, headers, submit_body(port, sql))
        .await
        .map_err(|e| e.to_string())
}

fn submit_body(port: u16, sql: &str) -> Vec<u8> {
    use prost::Message;
    frame(&trino_request(sql, port).encode_to_vec())
}

#[tokio::test]
async fn grpc_and_http1_share_one_tls_port() {
    let fake = start_fake("s").await;
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-proxy"), &["localhost"]);
    let (addr, server) = proxy_from(&config_text("", &tls_section(&dir, &leaf, None), "")).await;
    let _stop = run(server);

    // gRPC over h2, negotiated with ALPN.
    let stream = tls_connect(addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let response = raw_call_on(
        stream,
        SUBMIT,
        &[],
        submit_body(fake.port(), "blocks:2:100:5"),
    )
    .await
    .unwrap();
    assert_eq!(
        response.grpc_status().as_deref(),
        Some("0"),
        "{}",
        response.grpc_message()
    );
    assert_eq!(fake.seen.request_count(), 1);
    assert!(response.body.len() > 200);

    // HTTP/1.1 on the same port.
    let stream = tls_connect(addr, client_config(&ca, &[b"http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let response = http1_get_on(stream, "/tables", &[]).await;
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);

    // A plaintext client on the TLS port gets no service.
    let plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        raw_call_on(plain, SUBMIT, &[], submit_body(fake.port(), "blocks:1:1:1"))
            .await
            .is_err()
    );
    assert_eq!(fake.seen.request_count(), 1);
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let fake = start_fake("s").await;
    let ca = Ca::new("test ca");
    let other_ca = Ca::new("other ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-proxy"), &["localhost"]);
    let text = config_text("", &tls_section(&dir, &leaf, Some(&ca)), "");
    let (addr, server) = proxy_from(&text).await;
    let _stop = run(server);

    let trino = ca.issue(Some("trino"), &["trino.example"]);
    let config = client_config(&ca, &[b"h2"], Some(&trino));
    let response = submit_over_tls(addr, config, &[], fake.port(), "blocks:1:10:1")
        .await
        .unwrap();
    assert_eq!(response.grpc_status().as_deref(), Some("0"));

    // No certificate, or one from another CA: refused at the handshake, nothing forwarded.
    let stranger = other_ca.issue(Some("stranger"), &["stranger.example"]);
    for client in [None, Some(&stranger)] {
        let config = client_config(&ca, &[b"h2"], client);
        let failed = submit_over_tls(addr, config, &[], fake.port(), "blocks:1:1:1")
            .await
            .is_err();
        assert!(failed, "a client without a valid certificate was served");
    }
    assert_eq!(fake.seen.request_count(), 1);
}

/// A bare HTTP/2 echo server behind TLS, optionally requiring client certificates.
async fn start_tls_echo(leaf: &Leaf, client_ca: Option<&Ca>) -> (std::net::SocketAddr, Counter) {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Counter::new();
    let counted = served.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let seen = Seen::default();
                let counted = counted.clone();
                let service = hyper::service::service_fn(move |request| {
                    counted.add();
                    raw_answer(Raw::Echo, seen.clone(), request)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn tls_to_pinot_servers_with_client_certificates() {
    let ca = Ca::new("pinot ca");
    let dir = TempDir::new();
    let server_leaf = ca.issue(Some("pinot-server"), &["localhost"]);
    let (upstream, served) = start_tls_echo(&server_leaf, Some(&ca)).await;
    let client_leaf = ca.issue(Some("pinot-proxy"), &[]);
    let ca_file = dir.write("pinot-ca.crt", &ca.pem());
    let cert_file = dir.write("client.crt", &client_leaf.cert_pem);
    let key_file = dir.write("client.key", &client_leaf.key_pem);
    let port = upstream.port().to_string();
    let call = |proxy: std::net::SocketAddr, host: &'static str| {
        let port = port.clone();
        async move {
            raw_call(
                proxy,
                "/any.Service/Method",
                &[("forward_host", host), ("forward_port", &port)],
                frame(b"hello"),
            )
            .await
        }
    };
    let servers_tls = |extra: &str| {
        format!(
            "[servers.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
            ca_file.display().to_string(),
            cert_file.display().to_string(),
            key_file.display().to_string()
        )
    };

    // Verified against the CA, with the client certificate, by the name the caller sent.
    let (proxy, server) = proxy_from(&config_text("", "", &servers_tls(""))).await;
    let _stop = run(server);
    let response = call(proxy, "localhost").await;
    assert_eq!(
        response.grpc_status().as_deref(),
        Some("0"),
        "{}",
        response.grpc_message()
    );
    assert_eq!(response.body.as_ref(), frame(b"hello").as_slice());
    assert_eq!(served.get(), 1);
    // The certificate names localhost, not 127.0.0.1: verification fails.
    let response = call(proxy, "127.0.0.1").await;
    assert_eq!(response.grpc_status().as_deref(), Some("14"));
    assert!(
        response.grpc_message().contains("TLS"),
        "{}",
        response.grpc_message()
    );

    // server_name overrides the name verified.
    let (proxy, server) = proxy_from(&config_text(
        "",
        "",
        &servers_tls("server_name = \"localhost\"\n"),
    ))
    .await;
    let _stop2 = run(server);
    let response = call(proxy, "127.0.0.1").await;
    assert_eq!(
        response.grpc_status().as_deref(),
        Some("0"),
        "{}",
        response.grpc_message()
    );

    // Without a client certificate the server refuses the connection.
    let no_client_cert = format!(
        "[servers.tls]\nca_file = {:?}\n",
        ca_file.display().to_string()
    );
    let (proxy, server) = proxy_from(&config_text("", "", &no_client_cert)).await;
    let _stop3 = run(server);
    let response = call(proxy, "localhost").await;
    assert_eq!(
        response.grpc_status().as_deref(),
        Some("14"),
        "{}",
        response.grpc_message()
    );
    assert_eq!(served.get(), 2);
}

/// Replaces a file the way a Kubernetes Secret volume does: write aside, then rename over.
fn swap(path: &Path, contents: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test]
async fn certificates_rotate_without_restart() {
    let fake = start_fake("s").await;
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let first = ca.issue(Some("first"), &["localhost"]);
    let text = config_text(
        "tls_reload_interval_ms = 20",
        &tls_section(&dir, &first, None),
        "",
    );
    let (addr, server) = proxy_from(&text).await;
    let mut reloads = server.tls_reloads().unwrap();
    let _stop = run(server);
    let config = client_config(&ca, &[b"h2"], None);

    let stream = tls_connect(addr, config.clone()).await.unwrap();
    assert_eq!(presented(&stream), pem_der(&first.cert_pem));
    // A stream in flight across the rotation.
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://localhost{SUBMIT}"))
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::from(submit_body(
            fake.port(),
            "slow:3:100",
        ))))
        .unwrap();
    let mut in_flight = sender.send_request(request).await.unwrap().into_body();
    use http_body_util::BodyExt;
    assert!(in_flight.frame().await.unwrap().unwrap().is_data());

    let second = ca.issue(Some("second"), &["localhost"]);
    swap(&dir.0.join("tls.key"), &second.key_pem);
    swap(&dir.0.join("tls.crt"), &second.cert_pem);
    let before = reloads.borrow_and_update().reloads;
    tokio::time::timeout(WAIT, reloads.wait_for(|status| status.reloads > before))
        .await
        .expect("reloaded")
        .unwrap();
    let stream = tls_connect(addr, config.clone()).await.unwrap();
    assert_eq!(presented(&stream), pem_der(&second.cert_pem));

    // The old stream finishes on its connection.
    let rest = in_flight.collect().await.unwrap();
    assert_eq!(rest.trailers().unwrap()["grpc-status"], "0");

    // A corrupt replacement is reported and the last good certificate kept.
    let changes = reloads.borrow().changes;
    swap(
        &dir.0.join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let status = tokio::time::timeout(WAIT, reloads.wait_for(|status| status.changes > changes))
        .await
        .expect("change seen")
        .unwrap()
        .clone();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("tls.crt"),
        "{status:?}"
    );
    let stream = tls_connect(addr, config).await.unwrap();
    assert_eq!(presented(&stream), pem_der(&second.cert_pem));
}

#[tokio::test]
async fn bad_tls_files_are_clear_startup_errors() {
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("proxy"), &["localhost"]);
    let other = ca.issue(Some("other"), &["localhost"]);
    let cert = dir.write("tls.crt", &leaf.cert_pem);
    let key = dir.write("tls.key", &leaf.key_pem);
    let wrong_key = dir.write("other.key", &other.key_pem);
    let empty_ca = dir.write("empty-ca.crt", "");
    let missing = dir.0.join("missing.crt");
    let section = |cert: &Path, key: &Path, ca: Option<&Path>| {
        let mut text = format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        if let Some(ca) = ca {
            text.push_str(&format!(
                "client_ca_file = {:?}\n",
                ca.display().to_string()
            ));
        }
        text
    };
    let cases = [
        (section(&missing, &key, None), "missing.crt"),
        (section(&cert, &wrong_key, None), "does not fit"),
        (section(&cert, &cert, None), "private key"),
        (section(&cert, &key, Some(&empty_ca)), "empty-ca.crt"),
    ];
    for (tls, expected) in cases {
        let config = pinot_proxy::Config::parse(&config_text("", &tls, "")).unwrap();
        let err = match bind(&config).await {
            Ok(_) => panic!("{tls} was accepted"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains(expected), "{tls}: {err}");
    }
}

#[tokio::test]
async fn client_cert_auth_lets_trino_in_without_credentials() {
    let fake = start_fake("s").await;
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-proxy"), &["localhost"]);
    let users = format!(
        "[auth]\ngrpc = \"client-cert\"\nrest = \"required\"\n[[auth.users]]\nusername = \"u\"\npassword_sha256 = \"{}\"\n",
        pinot_proxy::token::hash_password("p")
    );
    let text = config_text("", &tls_section(&dir, &leaf, Some(&ca)), "") + &users;
    let (addr, server) = proxy_from(&text).await;
    let _stop = run(server);

    let trino = ca.issue(Some("trino"), &[]);
    let config = client_config(&ca, &[b"h2"], Some(&trino));
    let response = submit_over_tls(addr, config.clone(), &[], fake.port(), "blocks:1:10:1")
        .await
        .unwrap();
    let message = response.grpc_message();
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{message}");
    // Wrong credentials are refused even with a certificate.
    let wrong = [("authorization", "Basic dTp3cm9uZw==")];
    let response = submit_over_tls(addr, config, &wrong, fake.port(), "blocks:1:10:1")
        .await
        .unwrap();
    assert_eq!(response.grpc_status().as_deref(), Some("16"));
    assert_eq!(fake.seen.request_count(), 1);
}

#[tokio::test]
async fn https_controller_urls_use_the_component_tls_config() {
    let ca = Ca::new("pinot ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-controller"), &["localhost"]);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|request: http::Request<_>| async move {
                    let body = format!("controller saw {}", request.uri().path());
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let ca_file = dir.write("ca.crt", &ca.pem());
    let text = config_text("", "", "")
        + &format!(
            "[controller]\nurls = [\"https://localhost:{port}\"]\n[controller.tls]\nca_file = {:?}\n",
            ca_file.display().to_string()
        );
    let (addr, server) = proxy_from(&text).await;
    let _stop = run(server);
    let response = http1_get(addr, "/tables", &[]).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body();
    assert_eq!(&body[..], b"controller saw /tables");
}

// Regression: every failed TLS handshake wrote one log line, so a client could flood the log.
#[tokio::test]
async fn failed_handshakes_are_logged_at_a_bounded_rate() {
    let captured = capture_logs();
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-proxy"), &["localhost"]);
    let (addr, server) = proxy_from(&config_text("", &tls_section(&dir, &leaf, None), "")).await;
    let _stop = run(server);
    for _ in 0..100 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        // The proxy ends the connection after the failed handshake.
        let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await;
    }
    let failed = captured
        .lines()
        .iter()
        .filter(|line| line.contains("TLS handshake failed"))
        .count();
    assert!(
        (1..=20).contains(&failed),
        "{failed} lines for 100 failed handshakes"
    );
}

// Regression (h2spec 3.5/2): a client that negotiated h2 by ALPN and then sent an invalid
// connection preface got an HTTP/1.1 400; HTTP/2 asks for a connection error (GOAWAY with
// PROTOCOL_ERROR, or the connection closed).
#[tokio::test]
async fn an_invalid_preface_after_alpn_h2_is_a_connection_error() {
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-proxy"), &["localhost"]);
    let (addr, server) = proxy_from(&config_text("", &tls_section(&dir, &leaf, None), "")).await;
    let _stop = run(server);
    let mut stream = tls_connect(addr, client_config(&ca, &[b"h2"], None))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await
    .expect("the proxy ends the connection");
    assert!(
        !answer.starts_with(b"HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // HTTP/2 frames: 3 bytes length, type, flags, 4 bytes stream id, payload.
    let mut rest = &answer[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        assert!(rest.len() >= 9 + length, "a cut frame in {answer:?}");
        assert!(rest[3] <= 0x9, "not an HTTP/2 frame in {answer:?}");
        if rest[3] == 0x7 {
            let code = u32::from_be_bytes(rest[13..17].try_into().unwrap());
            assert_eq!(code, 0x1, "GOAWAY is not PROTOCOL_ERROR in {answer:?}");
        }
        rest = &rest[9 + length..];
    }
    assert!(rest.is_empty(), "trailing bytes in {answer:?}");
}

// Regression: plain HTTP sent to the TLS port got its connection reset, with no word of why.
#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_saying_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test ca");
    let dir = TempDir::new();
    let leaf = ca.issue(Some("pinot-proxy"), &["localhost"]);
    let (addr, server) = proxy_from(&config_text("", &tls_section(&dir, &leaf, None), "")).await;
    let _stop = run(server);
    let body = r#"{"error":"pinot-proxy: this port speaks TLS; use https:// (or gRPC with TLS)"}"#;
    // HTTP/1.1, and HTTP/2 with prior knowledge (answered in HTTP/1.1: h2c knows no TLS).
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
            .await
            .expect("the proxy ends the connection")
            .expect("the connection ends without a reset");
        let answer = String::from_utf8_lossy(&answer);
        let (head, answer_body) = answer.split_once("\r\n\r\n").expect("a response head");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        assert!(
            head.contains("\r\nContent-Type: application/json"),
            "{answer}"
        );
        assert!(head.contains("\r\nConnection: close"), "{answer}");
        assert!(
            head.contains(&format!("\r\nContent-Length: {}", body.len())),
            "{answer}"
        );
        assert_eq!(answer_body, body);
    }
    // TLS clients are served on the same port as before.
    let stream = tls_connect(addr, client_config(&ca, &[b"http/1.1"], None))
        .await
        .unwrap();
    let response = http1_get_on(stream, "/tables", &[]).await;
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
}
