//! What the proxy sends to Pinot in place of a caller's credentials, and where the secrets it
//! reads come from: the environment, or a map a test or an embedding program gives.

use crate::config::UpstreamAuthConfig;
use anyhow::Context;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::fmt;

/// Where `password_env` names are looked up.
#[derive(Clone)]
pub struct Secrets {
    /// `None`: the process environment.
    map: Option<HashMap<String, String>>,
}

impl Secrets {
    /// Secrets from the process environment.
    pub fn from_env() -> Secrets {
        Secrets { map: None }
    }

    /// Secrets from `pairs` only; the environment is not read.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Secrets {
        let map = pairs
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        Secrets { map: Some(map) }
    }

    /// The value of `name`; `key` names the config key for the error.
    pub(crate) fn get(&self, name: &str, key: &str) -> anyhow::Result<String> {
        let value = match &self.map {
            None => std::env::var(name).ok(),
            Some(map) => map.get(name).cloned(),
        };
        value.with_context(|| format!("{key}: environment variable {name} is not set"))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.map {
            None => f.write_str("Secrets(environment)"),
            Some(map) => f.debug_set().entries(map.keys()).finish(),
        }
    }
}

/// What to do with credentials on the way to Pinot.
#[derive(Clone, Debug, Default)]
pub enum UpstreamCredentials {
    /// Send none: the caller's are removed.
    #[default]
    Strip,
    /// Send the caller's unchanged.
    PassThrough,
    /// Replace with this `Authorization` value.
    Inject(HeaderValue),
}

impl UpstreamCredentials {
    /// Applies this choice to request headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            UpstreamCredentials::Strip => {
                headers.remove(http::header::AUTHORIZATION);
            }
            UpstreamCredentials::PassThrough => {}
            UpstreamCredentials::Inject(value) => {
                headers.insert(http::header::AUTHORIZATION, value.clone());
            }
        }
    }
}

impl UpstreamCredentials {
    /// Resolves `config` (already validated), reading its password; `key` names the section.
    pub fn resolve(
        config: &UpstreamAuthConfig,
        key: &str,
        secrets: &Secrets,
    ) -> anyhow::Result<UpstreamCredentials> {
        match (&config.username, &config.password_env, config.pass_through) {
            (Some(user), Some(env), false) => {
                let password = secrets.get(env, &format!("{key}.password_env"))?;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value =
                    HeaderValue::try_from(format!("Basic {encoded}")).with_context(|| {
                        format!("{key}: username or password is not a valid header")
                    })?;
                value.set_sensitive(true);
                Ok(UpstreamCredentials::Inject(value))
            }
            (_, _, true) => Ok(UpstreamCredentials::PassThrough),
            _ => Ok(UpstreamCredentials::Strip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_credentials_resolve_from_the_secrets() {
        let secrets = Secrets::from_pairs([("UPSTREAM_PASSWORD", "s3cret")]);
        let config = UpstreamAuthConfig {
            username: Some("proxy".into()),
            password_env: Some("UPSTREAM_PASSWORD".into()),
            pass_through: false,
        };
        let resolved = UpstreamCredentials::resolve(&config, "servers.auth", &secrets).unwrap();
        let UpstreamCredentials::Inject(value) = resolved else {
            panic!("expected injection");
        };
        assert_eq!(value, "Basic cHJveHk6czNjcmV0");
        let err = UpstreamCredentials::resolve(
            &config,
            "servers.auth",
            &Secrets::from_pairs::<&str, &str>([]),
        );
        let text = format!("{:#}", err.expect_err("no such secret"));
        assert!(text.contains("servers.auth.password_env"), "{text}");
        let both = UpstreamAuthConfig {
            pass_through: true,
            ..config
        };
        assert!(both.validate("servers.auth").is_err());
        assert!(UpstreamAuthConfig::default().validate("x").is_ok());
    }
}
