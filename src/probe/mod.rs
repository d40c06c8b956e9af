//! `pinot-proxy probe`: checks a running proxy from the outside, as Trino would use it. One
//! `Submit` (`submit.rs`) or one REST GET (`get.rs`) through the proxy; every fact is printed as
//! one `key: value` line, so scripts can read the result.

mod get;
mod submit;

use anyhow::{bail, Context};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The arguments of `pinot-proxy probe`.
#[derive(clap::Args)]
pub struct Args {
    /// The proxy to test, as HOST:PORT (an IPv6 address in brackets).
    #[arg(long, value_name = "HOST:PORT", value_parser = HostPort::parse)]
    proxy: HostPort,
    /// The Pinot server the proxy is asked to forward to (FORWARD_HOST and FORWARD_PORT).
    #[arg(long, value_name = "HOST:PORT", value_parser = HostPort::parse,
          required_unless_present = "rest")]
    server: Option<HostPort>,
    /// Query this table: `SELECT * FROM TABLE LIMIT 10` (a server's table names carry their
    /// type, e.g. `airlineStats_OFFLINE`).
    #[arg(long, value_name = "TABLE", conflicts_with = "sql",
          required_unless_present_any = ["sql", "rest"])]
    table: Option<String>,
    /// Send this query instead of the `--table` one.
    #[arg(long, value_name = "SQL")]
    sql: Option<String>,
    /// Connect to the proxy over TLS.
    #[arg(long)]
    tls: bool,
    /// PEM CA certificates that verify the proxy (default: the system roots).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// PEM client certificate chain to present, with --key.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Send `authorization: Basic` with this user name and --password.
    #[arg(
        long,
        value_name = "USER",
        requires = "password",
        conflicts_with = "token"
    )]
    user: Option<String>,
    /// The password of --user.
    #[arg(long, value_name = "PASSWORD", requires = "user")]
    password: Option<String>,
    /// Send `authorization: Bearer TOKEN` (a token given with its scheme is sent as it is).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Instead of a `Submit`, GET this path (and query string) through the proxy.
    #[arg(long, value_name = "PATH", value_parser = parse_rest_path,
          conflicts_with_all = ["server", "table", "sql"])]
    rest: Option<String>,
    /// Everything (connecting, TLS, the whole answer) must be done within this time.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

impl Args {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The `authorization` value to send, if any; checked to be a valid header value.
    fn authorization(&self) -> anyhow::Result<Option<String>> {
        let value = match (&self.user, &self.password, &self.token) {
            (Some(user), Some(password), _) => {
                let pair = format!("{user}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                format!("Basic {encoded}")
            }
            (_, _, Some(token)) => {
                let token = token.trim();
                let scheme = token.split_once(' ').map(|(scheme, _)| scheme);
                if scheme.is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
                    || scheme.is_some_and(|s| s.eq_ignore_ascii_case("basic"))
                {
                    token.to_owned()
                } else {
                    format!("Bearer {token}")
                }
            }
            _ => return Ok(None),
        };
        if http::HeaderValue::from_str(&value).is_err() {
            bail!("--token: not a valid header value (visible ASCII only)");
        }
        Ok(Some(value))
    }

    /// What the credentials line says; never the secret itself.
    fn credentials(&self) -> String {
        match (&self.user, &self.token) {
            (Some(user), _) => format!("basic (user {user})"),
            (None, Some(_)) => "bearer token".to_owned(),
            (None, None) => "none".to_owned(),
        }
    }
}

/// A host as the user wrote it (brackets of an IPv6 address removed) and a port. The host is
/// never resolved here: it is handed as it is to the connect call or to the proxy.
#[derive(Clone, Debug)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    fn parse(text: &str) -> Result<HostPort, String> {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} is not HOST:PORT"));
        };
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => {
                inner
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("[{inner}] is not an IPv6 address"))?;
                inner
            }
            None if host.contains(':') => {
                return Err(format!(
                    "{text:?}: an IPv6 address goes in brackets, [::1]:8096"
                ))
            }
            None => host,
        };
        let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':');
        if host.is_empty() || !host.bytes().all(valid) {
            return Err(format!("{host:?} is not a host name or IP address"));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

/// `host:port`, with an IPv6 address in brackets: the URL authority.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_rest_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} does not start with /"));
    }
    match text.parse::<http::uri::PathAndQuery>() {
        Ok(path) if path.as_str() == text => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not a URL path")),
    }
}

/// The TLS files, read and checked before anything is sent.
struct TlsFiles {
    /// `--ca`: the file and its certificates; the system roots when absent.
    ca: Option<(PathBuf, Vec<CertificateDer<'static>>, Vec<u8>)>,
    /// `--cert` and `--key`: the chain and key, parsed and as PEM.
    client: Option<ClientCert>,
}

struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl TlsFiles {
    fn load(args: &Args) -> anyhow::Result<TlsFiles> {
        let ca = match &args.ca {
            Some(path) => {
                let pem = read("--ca", path)?;
                Some((path.clone(), certificates("--ca", path, &pem)?, pem))
            }
            None => None,
        };
        let client = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("--cert", cert)?;
                let key_pem = read("--key", key)?;
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
                    format!("--key {}: no PKCS#8, PKCS#1 or SEC1 key", key.display())
                })?;
                Some(ClientCert {
                    chain: certificates("--cert", cert, &cert_pem)?,
                    key: key_der,
                    cert_pem,
                    key_pem,
                })
            }
            _ => None,
        };
        Ok(TlsFiles { ca, client })
    }

    /// What the tls line says.
    fn describe(&self) -> String {
        let roots = match &self.ca {
            Some((path, ..)) => format!("CA {}", path.display()),
            None => "system roots".to_owned(),
        };
        match &self.client {
            Some(_) => format!("on ({roots}, client certificate)"),
            None => format!("on ({roots})"),
        }
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
}

fn certificates(
    flag: &str,
    path: &Path,
    pem: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} {}: not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no certificate in the file", path.display());
    }
    Ok(certs)
}

/// Where the facts go: one `key: value` line each. A write error (a closed pipe) is ignored:
/// the exit code still tells the outcome.
struct Out<'a> {
    out: &'a mut dyn Write,
}

impl Out<'_> {
    fn fact(&mut self, key: impl fmt::Display, value: impl fmt::Display) {
        let _ = writeln!(self.out, "{key}: {value}");
    }

    /// The last facts of every probe: time taken and the verdict.
    fn verdict(&mut self, started: Instant, failure: Option<String>) -> bool {
        self.fact(
            "elapsed",
            format_args!("{} ms", started.elapsed().as_millis()),
        );
        match &failure {
            None => self.fact("result", "ok"),
            Some(why) => self.fact("result", format_args!("failed: {why}")),
        }
        failure.is_none()
    }

    /// Text from the other side, made safe for a terminal: control characters become `?`.
    fn block(&mut self, text: &str) {
        for line in text.lines() {
            let line: String = line
                .chars()
                .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                .collect();
            let _ = writeln!(self.out, "    {line}");
        }
    }
}

/// One line of text from the other side: line breaks and other control characters as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `error` and the errors under it, as one line (each cause once, as hyper and tonic often
/// repeat their source in their own message).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    one_line(&text)
}

/// Runs the probe `args` describe, writing its facts to `out`. `Ok(true)` when it passed,
/// `Ok(false)` when it failed; `Err` for arguments or files that prevent probing at all.
pub async fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<bool> {
    let authorization = args.authorization()?;
    let tls = if args.tls {
        Some(TlsFiles::load(args)?)
    } else {
        None
    };
    let mut out = Out { out };
    out.fact("proxy", &args.proxy);
    out.fact(
        "tls",
        tls.as_ref()
            .map_or_else(|| "off".to_owned(), TlsFiles::describe),
    );
    out.fact("credentials", args.credentials());
    match (&args.rest, &args.server) {
        (Some(path), _) => get::probe(args, path, tls.as_ref(), authorization, &mut out).await,
        (None, Some(server)) => {
            let sql = match (&args.sql, &args.table) {
                (Some(sql), _) => sql.clone(),
                (None, Some(table)) => format!("SELECT * FROM {table} LIMIT 10"),
                (None, None) => bail!("give --table or --sql"),
            };
            submit::probe(args, server, sql, tls.as_ref(), authorization, &mut out).await
        }
        (None, None) => bail!("give --server, or --rest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_takes_names_ipv4_and_bracketed_ipv6() {
        let cases = [
            ("127.0.0.1:8096", Some("127.0.0.1:8096")),
            (
                "pinot-server-0.pinot:8090",
                Some("pinot-server-0.pinot:8090"),
            ),
            ("[::1]:8096", Some("[::1]:8096")),
            ("::1:8096", None),
            ("[nope]:1", None),
            ("host", None),
            ("host:0", None),
            ("host:65536", None),
            (":8096", None),
            ("a/b:1", None),
            ("user@host:1", None),
        ];
        for (text, expected) in cases {
            let parsed = HostPort::parse(text).ok().map(|hp| hp.to_string());
            assert_eq!(parsed.as_deref(), expected, "{text}");
        }
        assert_eq!(HostPort::parse("[::1]:1").unwrap().host, "::1");
    }

    #[test]
    fn rest_paths_are_origin_form() {
        assert!(parse_rest_path("/tables").is_ok());
        assert!(parse_rest_path("/tables/t/schema?x=1").is_ok());
        assert!(parse_rest_path("tables").is_err());
        assert!(parse_rest_path("/a b").is_err());
        assert!(parse_rest_path("http://x/tables").is_err());
    }
}
