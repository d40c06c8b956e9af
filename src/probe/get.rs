//! The REST probe: one HTTP/1.1 GET through the proxy (over rustls with `--tls`), and its
//! status, content type and the start of its body.

use super::{error_chain, one_line, Args, Out, TlsFiles};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How much of the body is printed.
const BODY_SHOWN: usize = 2048;

/// What came back, filled in as it arrives, so a timeout still reports the part that did.
#[derive(Default)]
struct Answer {
    status: Option<http::StatusCode>,
    body: Vec<u8>,
    /// More body followed the part kept.
    more: bool,
    /// Why the exchange stopped short, if it did.
    error: Option<String>,
}

/// The rustls client config for `--tls`: the ring provider, as everywhere in this crate.
fn rustls_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some((path, certs, _)) => {
            for cert in certs {
                roots
                    .add(cert.clone())
                    .with_context(|| format!("--ca {}: unusable CA certificate", path.display()))?;
            }
        }
        None => {
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                anyhow::bail!("--tls: no system root certificates found; give --ca");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots);
    let mut config = match &files.client {
        Some(client) => builder
            .with_client_auth_cert(client.chain.clone(), client.key.clone_key())
            .context("--key does not fit --cert")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to the proxy (its host as given, resolved by the system) and runs the GET.
async fn connect_and_get(
    args: &Args,
    request: http::Request<Empty<Bytes>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    answer: &mut Answer,
    out: &mut Out<'_>,
) -> Result<(), String> {
    let proxy = &args.proxy;
    let tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|err| format!("cannot connect to the proxy {proxy}: {err}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(config) => {
            let name = ServerName::try_from(proxy.host.clone())
                .map_err(|_| format!("{} is not a name TLS can verify", proxy.host))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|err| format!("TLS handshake with {proxy}: {err}"))?;
            get(stream, request, answer, out).await
        }
        None => get(tcp, request, answer, out).await,
    }
}

/// One GET on a connected stream; prints the head as soon as it arrives.
async fn get<I>(
    io: I,
    request: http::Request<Empty<Bytes>>,
    answer: &mut Answer,
    out: &mut Out<'_>,
) -> Result<(), String>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| format!("HTTP/1.1: {}", error_chain(&err)))?;
    // Ends when the response is read and `sender` dropped, or with the runtime.
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("no response: {}", error_chain(&err)))?;
    let status = response.status();
    answer.status = Some(status);
    let reason = status
        .canonical_reason()
        .map(|reason| format!(" {reason}"))
        .unwrap_or_default();
    out.fact("status", format_args!("{}{reason}", status.as_u16()));
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|value| one_line(&String::from_utf8_lossy(value.as_bytes())));
    out.fact("content-type", content_type.as_deref().unwrap_or("(none)"));
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| format!("body: {}", error_chain(&err)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = BODY_SHOWN - answer.body.len();
        answer.body.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() > room {
            answer.more = true;
            break;
        }
    }
    Ok(())
}

/// Runs the GET probe and prints what came back; `Ok(true)` on a 2xx status.
pub(super) async fn probe(
    args: &Args,
    path: &str,
    tls: Option<&TlsFiles>,
    authorization: Option<String>,
    out: &mut Out<'_>,
) -> anyhow::Result<bool> {
    let tls = tls.map(rustls_config).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut request = http::Request::get(path)
        .header(http::header::HOST, args.proxy.to_string())
        .header(
            http::header::USER_AGENT,
            concat!("pinot-proxy-probe/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(value) = authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .context("the GET request")?;
    out.fact("url", format_args!("{scheme}://{}{path}", args.proxy));

    let started = Instant::now();
    let mut answer = Answer::default();
    let work = connect_and_get(args, request, tls, &mut answer, out);
    match tokio::time::timeout(args.timeout(), work).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => answer.error = Some(error),
        Err(_) => {
            let part = if answer.status.is_some() {
                "whole body"
            } else {
                "answer"
            };
            answer.error = Some(format!(
                "no {part} within {} ms (--timeout-ms)",
                args.timeout_ms
            ));
        }
    }

    if answer.status.is_some() {
        let shown = answer.body.len();
        if answer.more {
            out.fact("body", format_args!("first {shown} bytes (more followed)"));
        } else {
            out.fact("body", format_args!("{shown} bytes"));
        }
    }
    if let Some(error) = &answer.error {
        out.fact("error", error);
    }
    let failure = match (&answer.error, answer.status) {
        (Some(error), _) => Some(error.clone()),
        (None, Some(status)) if !status.is_success() => Some(format!("HTTP {}", status.as_u16())),
        (None, Some(_)) => None,
        (None, None) => Some("no response".to_owned()),
    };
    let passed = out.verdict(started, failure);
    out.block(&String::from_utf8_lossy(&answer.body));
    Ok(passed)
}
