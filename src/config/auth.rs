//! `[auth]` (what callers must present) and the `auth` subsections of `[servers]`,
//! `[controller]` and `[broker]` (what the proxy sends to Pinot). Secrets named here are read
//! when the proxy is built, not when the file is parsed.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::fmt;

/// `[auth]`: what callers must present. Absent: nothing is required (a warning is logged).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// gRPC calls: "required" (valid credentials), "client-cert" (a verified client
    /// certificate, or valid credentials), or "none".
    #[serde(default)]
    pub grpc: GrpcPolicy,
    /// REST calls: "required" (Basic or Bearer credentials on every request) or "none".
    #[serde(default)]
    pub rest: RestPolicy,
    /// The callers' accounts.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcPolicy {
    Required,
    ClientCert,
    #[default]
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestPolicy {
    Required,
    #[default]
    None,
}

/// One `[[auth.users]]` account; exactly one of the password keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// Lower- or upper-case hex SHA-256 of the password (`pinot-proxy token hash`).
    #[serde(default)]
    pub password_sha256: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The password itself; accepted, with a warning: prefer the other two.
    #[serde(default)]
    pub password: Option<Secret>,
}

/// `[servers.auth]`, `[controller.auth]`, `[broker.auth]`: what the proxy sends to Pinot.
/// The caller's own credentials are never forwarded unless `pass_through` is set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthConfig {
    /// Username to send (with `password_env`).
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password to send.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Forward the caller's own `authorization` instead.
    #[serde(default)]
    pub pass_through: bool,
}

impl UpstreamAuthConfig {
    /// Checks which keys go together; `key` names the section for errors.
    pub fn validate(&self, key: &str) -> anyhow::Result<()> {
        match (&self.username, &self.password_env, self.pass_through) {
            (None, None, _) | (Some(_), Some(_), false) => Ok(()),
            (_, _, true) => bail!("{key}: pass_through cannot be combined with username"),
            _ => bail!("{key}: username and password_env go together"),
        }
    }
}

impl AuthConfig {
    /// Checks the accounts and policies without reading any secret.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = user.key(i);
            if user.username.is_empty() || user.username.contains(':') {
                bail!("{key}: username must be non-empty and contain no ':'");
            }
            match (&user.password_sha256, &user.password_env, &user.password) {
                (Some(hex), None, None) => {
                    parse_sha256(hex)
                        .with_context(|| format!("{key}: password_sha256 is not 64 hex digits"))?;
                }
                (None, Some(_), None) | (None, None, Some(_)) => {}
                _ => bail!("{key}: set exactly one of password_sha256, password_env, password"),
            }
            if !seen.insert(user.username.as_str()) {
                bail!("{key}: username is listed twice");
            }
        }
        let needs_users = self.grpc != GrpcPolicy::None || self.rest == RestPolicy::Required;
        if needs_users && self.users.is_empty() && self.grpc != GrpcPolicy::ClientCert {
            bail!("auth: a policy requires credentials but auth.users is empty");
        }
        Ok(())
    }
}

impl UserConfig {
    /// How errors name this account: `auth.users[0] (trino)`.
    pub fn key(&self, index: usize) -> String {
        format!("auth.users[{index}] ({})", self.username)
    }
}

/// A `password_sha256` value as bytes.
pub fn parse_sha256(hex: &str) -> anyhow::Result<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("expected 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// A password. `Debug` and `Display` print `***` so it cannot reach a log by accident; call
/// [`Secret::expose`] where the plain text is really needed.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plain text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_sha256_table() {
        // SHA-256 of "password".
        let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        assert_eq!(parse_sha256(hash).unwrap()[..2], [0x5e, 0x88]);
        assert_eq!(
            parse_sha256(&hash.to_uppercase()).unwrap(),
            parse_sha256(hash).unwrap()
        );
        for bad in [
            hash[..63].to_owned(),
            format!("{hash}0"),
            format!("{}g", &hash[..63]),
            format!("+{}", &hash[1..]),
            String::new(),
            "é".repeat(32),
        ] {
            assert!(parse_sha256(&bad).is_err(), "{bad:?}");
        }
    }
}
