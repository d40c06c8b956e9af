//! The HTTP/1.1 client's connector for REST upstreams: TCP, then TLS for `https://` URLs with
//! the component's reloadable TLS config.

use crate::config::RestConfig;
use crate::http::BoxError;
use crate::tls::UpstreamTls;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Opens upstream connections: TCP, then TLS for `https://` URLs with the component's
/// (reloadable) TLS config.
#[derive(Clone)]
pub(super) struct Connector {
    http: HttpConnector,
    tls: Option<(
        Arc<UpstreamTls>,
        Option<rustls::pki_types::ServerName<'static>>,
    )>,
}

pub(super) fn connector(
    config: &RestConfig,
    tls: Option<(
        Arc<UpstreamTls>,
        Option<rustls::pki_types::ServerName<'static>>,
    )>,
) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    // https URIs reach this connector too; it does the TLS itself.
    http.enforce_http(false);
    Connector { http, tls }
}

/// A connection to a REST upstream, plain or TLS.
pub(super) enum MaybeTls {
    Plain(TokioIo<tokio::net::TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeTls;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MaybeTls, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            if uri.scheme_str() != Some("https") {
                return Ok(MaybeTls::Plain(tcp));
            }
            let (config, name) = tls.ok_or("https URL without a TLS config")?;
            let name = match name {
                Some(name) => name,
                None => {
                    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                    rustls::pki_types::ServerName::try_from(host.to_owned())?
                }
            };
            let stream = tokio_rustls::TlsConnector::from(config.get())
                .connect(name, tcp.into_inner())
                .await
                .map_err(|err| format!("TLS handshake failed: {err}"))?;
            Ok(MaybeTls::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl hyper_util::client::legacy::connect::Connection for MaybeTls {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An error and all its causes, without the legacy client's own "client error (Kind)" line.
pub(super) fn error_chain(err: &hyper_util::client::legacy::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}
