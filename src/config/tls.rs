//! `[server.tls]` and `[servers.tls]` (also `[controller.tls]`, `[broker.tls]`): the files and
//! names TLS is built from. Loading and reloading them is the runtime `tls` module's work.

use anyhow::{bail, Context};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[server.tls]`: TLS on the listening port. Without it the port speaks plaintext.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the certificate.
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it verifies.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// A handshake not done within this many milliseconds drops the connection.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

/// `[servers.tls]`: TLS to the Pinot servers (`pinot.server.grpctls.enabled=true`); also
/// `[controller.tls]` and `[broker.tls]` for `https://` URLs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM CA bundle that verifies the servers; the system roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify in every server's certificate instead of the target host name.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for testing: it allows interception.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

impl ServerTlsConfig {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The files, each with its key.
    pub(crate) fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut files = vec![
            ("cert_file", self.cert_file.clone()),
            ("key_file", self.key_file.clone()),
        ];
        files.extend(
            self.client_ca_file
                .clone()
                .map(|path| ("client_ca_file", path)),
        );
        files
    }
}

impl UpstreamTlsConfig {
    /// Checks the keys; `key` names the section (`servers.tls`, `broker.tls`, ...).
    pub fn validate(&self, key: &str) -> anyhow::Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            bail!("{key}: cert_file and key_file go together");
        }
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.as_str())
                .with_context(|| format!("{key}.server_name {name:?} is not a DNS name or IP"))?;
        }
        Ok(())
    }

    /// The files, each with its key.
    pub(crate) fn files(&self) -> Vec<(&'static str, PathBuf)> {
        [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(key, path)| path.clone().map(|path| (key, path)))
        .collect()
    }
}
