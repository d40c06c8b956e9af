//! One Pinot component's REST upstreams (`[controller]` or `[broker]` URLs): round robin with
//! back-off for URLs that failed to connect, the request limit, credentials, and the HTTP/1.1
//! client (TLS for `https://` URLs) that reaches them.

use super::body::AttemptBody;
use super::client::{connector, Connector};
use crate::config::{ComponentConfig, RestConfig, UpstreamTlsConfig, UpstreamUrl};
use crate::metrics::Metrics;
use crate::policy::{Secrets, UpstreamCredentials};
use crate::tls::UpstreamTls;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The URLs of one component, the round-robin state, and how to reach them.
pub(super) struct Upstreams {
    pub(super) urls: Vec<Url>,
    next: AtomicUsize,
    pub(super) client: Client<Connector, AttemptBody>,
    pub(super) tls: Option<Arc<UpstreamTls>>,
    pub(super) credentials: UpstreamCredentials,
    /// Requests in flight to this component, bounded by `rest.max_requests_per_component`.
    pub(super) in_flight: Arc<tokio::sync::Semaphore>,
}

/// One configured URL and its back-off.
pub(super) struct Url {
    pub(super) url: UpstreamUrl,
    /// Milliseconds since `Rest::epoch` until which this URL is skipped; 0 when up.
    pub(super) down_until_ms: AtomicU64,
}

impl Upstreams {
    /// Builds the upstreams of `[section]`, loading its TLS files and credentials.
    pub(super) fn new(
        section: &'static str,
        component: &ComponentConfig,
        rest: &RestConfig,
        secrets: &Secrets,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Upstreams> {
        let urls = crate::config::parse_urls(section, &component.urls)?;
        let https = urls.iter().any(|url| url.origin.starts_with("https:"));
        let tls_config = match (&component.tls, https) {
            (Some(tls_config), _) => Some(tls_config.clone()),
            (None, true) => Some(UpstreamTlsConfig::default()),
            (None, false) => None,
        };
        let tls = match tls_config {
            Some(tls_config) => {
                let key = if section == "broker" {
                    "broker.tls"
                } else {
                    "controller.tls"
                };
                let name = match &tls_config.server_name {
                    Some(name) => Some(rustls::pki_types::ServerName::try_from(name.clone())?),
                    None => None,
                };
                Some((
                    crate::tls::upstream_tls(&tls_config, key, crate::tls::ALPN_HTTP1, metrics)?,
                    name,
                ))
            }
            None => None,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(rest.idle_timeout_ms))
            .pool_max_idle_per_host(rest.max_idle_per_url)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector(rest, tls.clone()));
        Ok(Upstreams {
            urls: urls
                .into_iter()
                .map(|url| Url {
                    url,
                    down_until_ms: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            in_flight: Arc::new(tokio::sync::Semaphore::new(rest.max_requests_per_component)),
            client,
            tls: tls.map(|(tls, _)| tls),
            credentials: UpstreamCredentials::resolve(
                &component.auth,
                &format!("{section}.auth"),
                secrets,
            )?,
        })
    }

    /// The order to try URLs in: those up, round robin, then those backed off, soonest back
    /// first, as a last resort rather than failing without trying.
    pub(super) fn candidates(&self, now_ms: u64) -> Vec<usize> {
        let count = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..count)
            .map(|offset| (start + offset) % count)
            .partition(|&index| self.urls[index].down_until_ms.load(Ordering::Relaxed) <= now_ms);
        down.sort_by_key(|&index| self.urls[index].down_until_ms.load(Ordering::Relaxed));
        up.append(&mut down);
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn candidates_skip_backed_off_urls_and_keep_them_as_a_last_resort() {
        let component = ComponentConfig {
            urls: vec![
                "http://c0:9000".into(),
                "http://c1:9000".into(),
                "http://c2:9000".into(),
            ],
            ..ComponentConfig::default()
        };
        let secrets = Secrets::from_pairs::<&str, &str>([]);
        let metrics = Arc::new(Metrics::new());
        let upstreams = Upstreams::new(
            "controller",
            &component,
            &RestConfig::default(),
            &secrets,
            &metrics,
        )
        .unwrap();
        assert_eq!(upstreams.candidates(10), [0, 1, 2]);
        assert_eq!(upstreams.candidates(10), [1, 2, 0]);
        upstreams.urls[0]
            .down_until_ms
            .store(500, Ordering::Relaxed);
        upstreams.urls[1]
            .down_until_ms
            .store(300, Ordering::Relaxed);
        assert_eq!(upstreams.candidates(10), [2, 1, 0]);
        // After the back-off the URL is up again.
        assert_eq!(upstreams.candidates(400), [1, 2, 0]);
    }
}
