//! The start of a connection on the TLS port: the TLS handshake, or, for a client that sent
//! plain HTTP there, a 400 saying that the port speaks TLS (as nginx answers). Both end within
//! `server.tls.handshake_timeout_ms`.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest method read before the bytes are taken for not HTTP (`BASELINE-CONTROL` has 16).
const MAX_METHOD_LEN: usize = 20;

/// Most bytes of a plain HTTP request read and dropped after the answer: closing a socket with
/// unread bytes resets the connection, and the client may then never read the answer.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// The answer to plain HTTP (HTTP/1.x, or HTTP/2 with prior knowledge, which has no way to be
/// told about TLS) on the TLS port.
const PLAIN_HTTP_BODY: &str =
    r#"{"error":"pinot-proxy: this port speaks TLS; use https:// (or gRPC with TLS)"}"#;

/// Why a connection on the TLS port is not served.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("{0}")]
    Handshake(std::io::Error),
    #[error("timed out")]
    TimedOut,
    #[error("plain HTTP sent to the TLS port, answered 400")]
    PlainHttp,
    #[error("the client sent neither TLS nor HTTP")]
    NotTls,
}

/// Runs the server side of the TLS handshake on `stream`, or answers plain HTTP with a 400,
/// all within `timeout`.
pub(super) async fn accept(
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, Refused> {
    let deadline = Instant::now() + timeout;
    let first = timeout_at(deadline, first_bytes(&mut stream))
        .await
        .map_err(|_| Refused::TimedOut)?
        .map_err(Refused::Handshake)?;
    match first {
        First::Tls => timeout_at(deadline, acceptor.accept(stream))
            .await
            .map_err(|_| Refused::TimedOut)?
            .map_err(Refused::Handshake),
        First::Http => {
            // The client is told even when it never closes; the deadline still ends the wait.
            let _ = timeout_at(deadline, answer_plain_http(stream)).await;
            Err(Refused::PlainHttp)
        }
        First::Neither => Err(Refused::NotTls),
    }
}

/// What the first bytes of a connection on the TLS port say it is.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// Not a token character: a ClientHello (0x16), or bytes left for rustls to refuse.
    Tls,
    /// An HTTP method and a space.
    Http,
    /// Token characters, but no method: nothing rustls would accept either.
    Neither,
}

/// Waits for the client's first byte without taking it; only when the connection cannot be TLS
/// (no TLS record starts with a token character) are more bytes read, to look for a method.
async fn first_bytes(stream: &mut TcpStream) -> std::io::Result<First> {
    let mut head = [0u8; MAX_METHOD_LEN + 1];
    if stream.peek(&mut head[..1]).await? == 0 || !is_tchar(head[0]) {
        return Ok(First::Tls);
    }
    let mut len = 0;
    loop {
        if let Some(first) = classify(&head[..len]) {
            return Ok(first);
        }
        match stream.read(&mut head[len..]).await? {
            0 => return Ok(First::Neither),
            n => len += n,
        }
    }
}

/// `Some` once `head` shows whether it starts with an HTTP method and a space; `None` while
/// more bytes are needed.
fn classify(head: &[u8]) -> Option<First> {
    for (i, &byte) in head.iter().enumerate() {
        if byte == b' ' {
            return Some(if i > 0 { First::Http } else { First::Neither });
        }
        if !is_tchar(byte) || i >= MAX_METHOD_LEN {
            return Some(First::Neither);
        }
    }
    None
}

/// A `tchar` of RFC 9110 section 5.6.2, what an HTTP method is made of.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

async fn answer_plain_http(mut stream: TcpStream) -> std::io::Result<()> {
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await?;
    let mut rest = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN_BYTES {
        match stream.read(&mut rest).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], Option<First>)] = &[
            (b"", None),
            (b"G", None),
            (b"GET", None),
            (b"GET ", Some(First::Http)),
            (b"GET / HTTP/1.1\r\n", Some(First::Http)),
            (b"POST /query/sql", Some(First::Http)),
            (b"PRI * HTTP/2.0\r\n", Some(First::Http)),
            (b"BASELINE-CONTROL ", Some(First::Http)),
            (b" GET", Some(First::Neither)),
            (b"GE\r\n", Some(First::Neither)),
            (b"\x16\x03\x01", Some(First::Neither)),
            (&[b'A'; MAX_METHOD_LEN], None),
            (&[b'A'; MAX_METHOD_LEN + 1], Some(First::Neither)),
        ];
        for (head, expected) in cases {
            assert_eq!(
                &classify(head),
                expected,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_client_hello_is_not_a_token() {
        assert!(!is_tchar(0x16));
        assert!(!is_tchar(0x80));
    }
}
