//! Who may call what: checks callers' credentials (Basic, Bearer, StarTree tokens, client
//! certificates) against the `[auth]` policy of each surface, gRPC and REST.

use super::credentials::Secrets;
use super::token::{self, Credentials};
use crate::config::{parse_sha256, AuthConfig, GrpcPolicy, RestPolicy};
use crate::metrics::{AuthLabels, Metrics};
use crate::tls::ClientIdentity;
use anyhow::{bail, Context};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Why a caller was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credentials required: send Authorization: Basic or Bearer")]
    Missing,
    #[error(
        "credentials required: a verified client certificate, or Authorization: Basic or Bearer"
    )]
    MissingCertOrCredentials,
    #[error("malformed credentials: {0}")]
    Malformed(token::TokenError),
    #[error("unknown user or wrong password")]
    Rejected,
}

/// Checks callers' credentials against the configured accounts.
pub struct Authenticator {
    grpc: GrpcPolicy,
    rest: RestPolicy,
    users: HashMap<String, [u8; 32]>,
    /// Compared against when the user is unknown, so that costs the same as a wrong password.
    decoy: [u8; 32],
    log_budget: Mutex<LogBudget>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Builds the checker from a validated `[auth]`, reading `password_env` secrets.
    pub fn new(
        config: &AuthConfig,
        secrets: &Secrets,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Authenticator> {
        let mut users = HashMap::new();
        for (i, user) in config.users.iter().enumerate() {
            let key = user.key(i);
            let hash = match (&user.password_sha256, &user.password_env, &user.password) {
                (Some(hex), _, _) => parse_sha256(hex)
                    .with_context(|| format!("{key}: password_sha256 is not 64 hex digits"))?,
                (_, Some(env), _) => {
                    let password = secrets.get(env, &format!("{key}: password_env"))?;
                    Sha256::digest(password.as_bytes()).into()
                }
                (_, _, Some(password)) => {
                    tracing::warn!(
                        user = %crate::error::echo(&user.username),
                        "auth.users: a plain `password` is in the config file; use password_sha256 or password_env"
                    );
                    Sha256::digest(password.expose().as_bytes()).into()
                }
                _ => bail!("{key}: set exactly one of password_sha256, password_env, password"),
            };
            users.insert(user.username.clone(), hash);
        }
        Ok(Authenticator {
            grpc: config.grpc,
            rest: config.rest,
            users,
            decoy: Sha256::digest(b"pinot-proxy decoy").into(),
            log_budget: Mutex::new(LogBudget::new()),
            metrics,
        })
    }

    /// Says so in the log when some surface needs no credentials.
    pub fn warn_if_open(&self) {
        if self.grpc == GrpcPolicy::None || self.rest == RestPolicy::None {
            tracing::warn!(
                grpc = ?self.grpc,
                rest = ?self.rest,
                "authentication is off for some callers ([auth] grpc/rest = \"none\")"
            );
        }
    }

    /// Whether checking a gRPC call needs the credentials inside its first message: the policy
    /// wants credentials and neither the headers nor a client certificate provide them.
    pub fn grpc_credentials_in_body(
        &self,
        headers: &HeaderMap,
        identity: Option<&ClientIdentity>,
    ) -> bool {
        match self.grpc {
            GrpcPolicy::None => false,
            _ if headers.contains_key(http::header::AUTHORIZATION) => false,
            GrpcPolicy::ClientCert => identity.is_none(),
            GrpcPolicy::Required => true,
        }
    }

    /// Checks a gRPC call: the `authorization` header, else the `authorization` key of the
    /// request message's metadata, else (with `client-cert`) a verified client certificate.
    pub fn check_grpc(
        &self,
        headers: &HeaderMap,
        metadata: Option<&HashMap<String, String>>,
        identity: Option<&ClientIdentity>,
        peer: SocketAddr,
    ) -> Result<(), AuthError> {
        if self.grpc == GrpcPolicy::None {
            return Ok(());
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .or_else(|| {
                metadata
                    .and_then(|m| m.get("authorization"))
                    .map(|v| v.as_bytes())
            });
        let result = match (presented, self.grpc, identity) {
            (None, GrpcPolicy::ClientCert, Some(_)) => Ok(()),
            (None, GrpcPolicy::ClientCert, None) => Err(AuthError::MissingCertOrCredentials),
            (None, _, _) => Err(AuthError::Missing),
            (Some(value), _, _) => self.check_value(value),
        };
        self.record(&result, presented, peer, "grpc");
        result
    }

    /// Checks a REST request's `Authorization` header.
    pub fn check_rest(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), AuthError> {
        if self.rest == RestPolicy::None {
            return Ok(());
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let result = match presented {
            None => Err(AuthError::Missing),
            Some(value) => self.check_value(value),
        };
        self.record(&result, presented, peer, "rest");
        result
    }

    fn check_value(&self, value: &[u8]) -> Result<(), AuthError> {
        let credentials = token::decode_authorization(value).map_err(AuthError::Malformed)?;
        if self.verify(&credentials) {
            Ok(())
        } else {
            Err(AuthError::Rejected)
        }
    }

    fn verify(&self, credentials: &Credentials) -> bool {
        let presented: [u8; 32] = Sha256::digest(credentials.password.expose().as_bytes()).into();
        let (expected, known) = match self.users.get(&credentials.username) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        };
        bool::from(presented.ct_eq(expected)) && known
    }

    fn record(
        &self,
        result: &Result<(), AuthError>,
        presented: Option<&[u8]>,
        peer: SocketAddr,
        surface: &'static str,
    ) {
        let Err(err) = result else {
            return;
        };
        let reason = match err {
            AuthError::Missing => "missing",
            AuthError::MissingCertOrCredentials => "missing_certificate",
            AuthError::Malformed(_) => "malformed",
            AuthError::Rejected => "rejected",
        };
        self.metrics
            .auth_failures
            .get_or_create(&AuthLabels { surface, reason })
            .inc();
        let suppressed = match self.log_budget.lock() {
            Ok(mut budget) => budget.take(),
            Err(_) => None,
        };
        if let Some(suppressed) = suppressed {
            let username = presented
                .and_then(|value| token::decode_authorization(value).ok())
                .map(|credentials| credentials.username)
                .unwrap_or_default();
            tracing::warn!(
                client = %peer,
                surface,
                username = %crate::error::echo(&username),
                suppressed,
                error = %err,
                "authentication failed"
            );
        }
    }
}

/// At most `PER_SECOND` failure log lines a second; the rest are counted and reported on
/// the next line that is written.
pub(crate) struct LogBudget {
    window: Instant,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    const PER_SECOND: u32 = 10;

    pub(crate) fn new() -> LogBudget {
        LogBudget {
            window: Instant::now(),
            written: 0,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    pub(crate) fn take(&mut self) -> Option<u64> {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.written = 0;
        }
        if self.written < Self::PER_SECOND {
            self.written += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;
    use base64::Engine;

    fn authenticator(grpc: GrpcPolicy, rest: RestPolicy) -> Authenticator {
        let config = AuthConfig {
            grpc,
            rest,
            users: vec![UserConfig {
                username: "XkQBXKr652MV1VF9".into(),
                password_sha256: Some(token::hash_password("5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg")),
                password_env: None,
                password: None,
            }],
        };
        Authenticator::new(
            &config,
            &Secrets::from_pairs::<&str, &str>([]),
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[test]
    fn startree_bearer_and_basic_forms_are_accepted() {
        let auth = authenticator(GrpcPolicy::Required, RestPolicy::Required);
        let basic = base64::engine::general_purpose::STANDARD
            .encode("XkQBXKr652MV1VF9:5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg");
        for value in [
            "Bearer st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg".to_string(),
            format!("Basic {basic}"),
            format!("Bearer {basic}"),
        ] {
            assert!(
                auth.check_rest(&headers(Some(&value)), PEER).is_ok(),
                "{value}"
            );
            assert!(auth
                .check_grpc(&headers(Some(&value)), None, None, PEER)
                .is_ok());
        }
    }

    #[test]
    fn missing_wrong_and_malformed_credentials_are_refused() {
        let auth = authenticator(GrpcPolicy::Required, RestPolicy::Required);
        let wrong = base64::engine::general_purpose::STANDARD.encode("XkQBXKr652MV1VF9:nope");
        let unknown = base64::engine::general_purpose::STANDARD.encode("someone:nope");
        assert!(matches!(
            auth.check_rest(&headers(None), PEER),
            Err(AuthError::Missing)
        ));
        for value in [format!("Basic {wrong}"), format!("Basic {unknown}")] {
            assert!(matches!(
                auth.check_rest(&headers(Some(&value)), PEER),
                Err(AuthError::Rejected)
            ));
        }
        assert!(matches!(
            auth.check_rest(&headers(Some("Basic !!!")), PEER),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn grpc_credentials_may_come_from_the_message_metadata() {
        let auth = authenticator(GrpcPolicy::Required, RestPolicy::None);
        let metadata = HashMap::from([(
            "authorization".to_string(),
            "Bearer st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg".to_string(),
        )]);
        assert!(auth
            .check_grpc(&headers(None), Some(&metadata), None, PEER)
            .is_ok());
        assert!(auth
            .check_grpc(&headers(None), Some(&HashMap::new()), None, PEER)
            .is_err());
        // REST "none" lets anything through.
        assert!(auth.check_rest(&headers(None), PEER).is_ok());
    }

    #[test]
    fn client_cert_mode_takes_a_certificate_or_credentials() {
        let auth = authenticator(GrpcPolicy::ClientCert, RestPolicy::None);
        let identity = ClientIdentity("trino".into());
        assert!(auth
            .check_grpc(&headers(None), None, Some(&identity), PEER)
            .is_ok());
        assert!(matches!(
            auth.check_grpc(&headers(None), None, None, PEER),
            Err(AuthError::MissingCertOrCredentials)
        ));
        let good = "Bearer st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg";
        assert!(auth
            .check_grpc(&headers(Some(good)), None, None, PEER)
            .is_ok());
        // Credentials that are presented must be right, certificate or not.
        assert!(auth
            .check_grpc(&headers(Some("Basic eDp5")), None, Some(&identity), PEER)
            .is_err());
    }

    #[test]
    fn config_errors_name_the_user() {
        let config = |user: UserConfig| AuthConfig {
            grpc: GrpcPolicy::Required,
            rest: RestPolicy::None,
            users: vec![user],
        };
        let user = |sha: Option<&str>, env: Option<&str>| UserConfig {
            username: "trino".into(),
            password_sha256: sha.map(str::to_string),
            password_env: env.map(str::to_string),
            password: None,
        };
        for (bad, expected) in [
            (user(Some("abc"), None), "64 hex digits"),
            (user(None, None), "exactly one"),
            (user(Some(&"a".repeat(64)), Some("X")), "exactly one"),
        ] {
            let err = config(bad).validate().expect_err("refused");
            let text = format!("{err:#}");
            assert!(text.contains("trino") && text.contains(expected), "{text}");
        }
        let unset = config(user(None, Some("PINOT_PROXY_TEST_UNSET_VARIABLE")));
        unset.validate().expect("only the secret is missing");
        let none = Secrets::from_pairs::<&str, &str>([]);
        let err = Authenticator::new(&unset, &none, Arc::new(Metrics::new()))
            .err()
            .expect("refused");
        let text = format!("{err:#}");
        assert!(
            text.contains("trino") && text.contains("is not set"),
            "{text}"
        );
    }

    #[test]
    fn log_budget_suppresses_a_storm() {
        let mut budget = LogBudget::new();
        let written = (0..1000).filter(|_| budget.take().is_some()).count();
        assert_eq!(written, LogBudget::PER_SECOND as usize);
    }
}
