//! TLS with rustls: the listener's server config (optionally requiring client certificates),
//! the client config for TLS to Pinot servers, and live reloading of both when their files
//! change on disk or on SIGHUP.

use crate::config::{Host, ServerTlsConfig, UpstreamTlsConfig};
use crate::metrics::{CertificateLabels, Metrics, ReloadLabels};
use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Builds the listener's rustls config from the files' contents (in the order of `files()`).
fn build_server(
    tls: &ServerTlsConfig,
    contents: &[Vec<u8>],
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = provider();
    let certs = parse_certs(&tls.cert_file, &contents[0])?;
    let key = parse_key(&tls.key_file, &contents[1])?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .context("TLS versions")?;
    let builder = match &tls.client_ca_file {
        Some(path) => {
            let roots = parse_roots(path, &contents[2])?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("client_ca_file {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "key_file {} does not fit cert_file {}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds a rustls client config from the files' contents (in the order of `files()`).
fn build_client(
    tls: &UpstreamTlsConfig,
    contents: &[Vec<u8>],
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let mut contents = contents.iter();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .context("TLS versions")?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        let roots = match &tls.ca_file {
            Some(path) => parse_roots(path, contents.next().map_or(&[][..], |c| c))?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    if tls.insecure_skip_verify && tls.ca_file.is_some() {
        contents.next();
    }
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = parse_certs(cert_file, contents.next().map_or(&[][..], |c| c))?;
            let key = parse_key(key_file, contents.next().map_or(&[][..], |c| c))?;
            builder.with_client_auth_cert(certs, key).with_context(|| {
                format!(
                    "servers.tls.key_file {} does not fit cert_file {}",
                    key_file.display(),
                    cert_file.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in the file", path.display());
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).with_context(|| {
        format!(
            "{}: no PKCS#8, PKCS#1 or SEC1 private key in the file",
            path.display()
        )
    })
}

fn parse_roots(path: &Path, pem: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(path, pem)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        bail!("no system root certificates found; set servers.tls.ca_file");
    }
    Ok(roots)
}

/// `insecure_skip_verify`: any certificate is accepted, but handshake signatures are still
/// checked so the session keys belong to whoever sent the certificate.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds a config from the contents of its files.
type Builder<T> = Box<dyn Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + Sync>;

/// A config built from files, rebuilt when their contents change; a broken new version is
/// logged and the last good one kept.
pub struct Reloadable<T> {
    name: &'static str,
    files: Vec<(&'static str, PathBuf)>,
    build: Builder<T>,
    current: RwLock<Arc<T>>,
    seen: Mutex<Vec<Vec<u8>>>,
    status: watch::Sender<ReloadStatus>,
    metrics: Arc<Metrics>,
}

/// What reloading has done so far.
#[derive(Clone, Debug, Default)]
pub struct ReloadStatus {
    /// Times the files were seen changed.
    pub changes: u64,
    /// Times a changed set of files was loaded and swapped in.
    pub reloads: u64,
    /// Why the last change was rejected, if it was.
    pub last_error: Option<String>,
}

impl<T> Reloadable<T> {
    fn new(
        name: &'static str,
        files: Vec<(&'static str, PathBuf)>,
        build: impl Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + Sync + 'static,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Reloadable<T>> {
        let contents = read_all(name, &files)?;
        let first = build(&contents).with_context(|| name)?;
        let reloadable = Reloadable {
            name,
            files,
            build: Box::new(build),
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(contents),
            status: watch::channel(ReloadStatus::default()).0,
            metrics: metrics.clone(),
        };
        reloadable.record_expiry(&reloadable.seen.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(reloadable)
    }

    /// Sets the expiry gauge of every certificate file (certificates and CA bundles: the first
    /// certificate in each) from their contents.
    fn record_expiry(&self, contents: &[Vec<u8>]) {
        for ((key, _), pem) in self.files.iter().zip(contents) {
            if *key == "key_file" {
                continue;
            }
            let Some(not_after) = CertificateDer::pem_slice_iter(pem)
                .next()
                .and_then(Result::ok)
                .and_then(|der| {
                    x509_parser::parse_x509_certificate(&der)
                        .ok()
                        .map(|(_, cert)| cert.validity().not_after.timestamp())
                })
            else {
                continue;
            };
            self.metrics
                .certificate_expiry
                .get_or_create(&CertificateLabels {
                    config: self.name,
                    file: (*key).to_string(),
                })
                .set(not_after as f64);
        }
    }

    fn count_reload(&self, result: &'static str) {
        self.metrics
            .tls_reloads
            .get_or_create(&ReloadLabels {
                config: self.name,
                result,
            })
            .inc();
    }

    /// The config to use for a new connection.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reload progress; lets a caller wait for the next reload.
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Rereads the files and, when they changed, builds and swaps in the new config.
    pub fn reload_if_changed(&self) {
        let contents = match read_all(self.name, &self.files) {
            Ok(contents) => contents,
            Err(err) => {
                tracing::error!(tls = self.name, error = %format!("{err:#}"), "cannot read TLS files; keeping the current ones");
                return;
            }
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == contents {
                return;
            }
            // Remember even a broken version, so it is reported once, not on every poll.
            *seen = contents.clone();
        }
        match (self.build)(&contents) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                tracing::info!(tls = self.name, "TLS files reloaded");
                self.count_reload("ok");
                self.record_expiry(&contents);
                self.status.send_modify(|status| {
                    status.changes += 1;
                    status.reloads += 1;
                    status.last_error = None;
                });
            }
            Err(err) => {
                let error = format!("{err:#}");
                self.count_reload("failed");
                tracing::error!(
                    tls = self.name,
                    error = %error,
                    "new TLS files are invalid; keeping the current ones"
                );
                self.status.send_modify(|status| {
                    status.changes += 1;
                    status.last_error = Some(error);
                });
            }
        }
    }
}

/// Reads each file; an error names its key (`server.tls.cert_file`) and path.
fn read_all(section: &str, files: &[(&'static str, PathBuf)]) -> anyhow::Result<Vec<Vec<u8>>> {
    files
        .iter()
        .map(|(key, path)| {
            std::fs::read(path)
                .with_context(|| format!("{section}.{key}: cannot read {}", path.display()))
        })
        .collect()
}

pub type ServerTls = Reloadable<rustls::ServerConfig>;
pub type UpstreamTls = Reloadable<rustls::ClientConfig>;

/// ALPN for gRPC to Pinot servers and brokers.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN for REST to controllers and brokers.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// Loads the listener's TLS config; errors name the file.
pub fn server_tls(
    config: &ServerTlsConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<ServerTls>> {
    let owned = config.clone();
    Reloadable::new(
        "server.tls",
        config.files(),
        move |contents| build_server(&owned, contents),
        metrics,
    )
    .map(Arc::new)
}

/// Loads a TLS config for connections to Pinot; `key` names its section (`servers.tls`,
/// `controller.tls`, ...) and `alpn` the protocols offered.
pub fn upstream_tls(
    config: &UpstreamTlsConfig,
    key: &'static str,
    alpn: &'static [&'static [u8]],
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<UpstreamTls>> {
    if config.insecure_skip_verify {
        tracing::warn!(
            section = key,
            "insecure_skip_verify is on: Pinot certificates are NOT verified and connections \
             can be intercepted"
        );
    }
    let owned = config.clone();
    Reloadable::new(
        key,
        config.files(),
        move |contents| build_client(&owned, contents, alpn),
        metrics,
    )
    .map(Arc::new)
}

/// Something [`spawn_reloader`] rereads.
pub trait Reload: Send + Sync {
    fn reload_if_changed(&self);
}

impl<T: Send + Sync> Reload for Reloadable<T> {
    fn reload_if_changed(&self) {
        Reloadable::reload_if_changed(self)
    }
}

/// Rereads TLS files every `interval` and on SIGHUP, until the configs or `alive` are dropped.
///
/// Runs (and handles SIGHUP, which would otherwise end the process) even with nothing to
/// reload.
pub fn spawn_reloader(configs: Vec<Arc<dyn Reload>>, interval: Duration, alive: Weak<()>) {
    let configs: Vec<Weak<dyn Reload>> = configs.iter().map(Arc::downgrade).collect();
    // Registered before returning, so a SIGHUP right after startup cannot kill the process.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    tracing::info!("SIGHUP: reloading TLS files");
                }
            }
            let live: Vec<Arc<dyn Reload>> = configs.iter().filter_map(Weak::upgrade).collect();
            if live.len() < configs.len() || alive.strong_count() == 0 {
                return;
            }
            for config in live {
                config.reload_if_changed();
            }
        }
    });
}

/// The verified client certificate's identity: its subject CN, else its first SAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity(pub String);

impl ClientIdentity {
    pub fn from_certificate(der: &[u8]) -> Option<ClientIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            return Some(ClientIdentity(cn.to_owned()));
        }
        let san = cert.subject_alternative_name().ok()??;
        let name = match san.value.general_names.first()? {
            GeneralName::DNSName(name) | GeneralName::RFC822Name(name) | GeneralName::URI(name) => {
                (*name).to_owned()
            }
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string(),
                16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string(),
                _ => return None,
            },
            other => other.to_string(),
        };
        Some(ClientIdentity(name))
    }
}

/// The name to verify in a target server's certificate.
pub fn server_name(config: &UpstreamTlsConfig, host: &Host) -> Result<ServerName<'static>, String> {
    match (&config.server_name, host) {
        (Some(name), _) => ServerName::try_from(name.clone()).map_err(|err| err.to_string()),
        (None, Host::Name(name)) => {
            ServerName::try_from(name.clone()).map_err(|err| err.to_string())
        }
        (None, Host::Ip(ip)) => Ok(ServerName::IpAddress((*ip).into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(common_name: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn client_identity_is_the_subject_cn_or_first_san() {
        let with_cn = certificate(Some("trino"), &["trino.example"]);
        assert_eq!(
            ClientIdentity::from_certificate(&with_cn),
            Some(ClientIdentity("trino".into()))
        );
        let san_only = certificate(None, &["spark.example", "other.example"]);
        assert_eq!(
            ClientIdentity::from_certificate(&san_only),
            Some(ClientIdentity("spark.example".into()))
        );
        assert_eq!(ClientIdentity::from_certificate(b"not a certificate"), None);
    }
}
