//! REST forwarding of Trino's controller and broker calls: each request is routed by its path
//! (`route.rs`) to one URL of that component (`upstreams.rs`), round robin with back-off and one
//! retry (`body.rs` keeps the body for it), through keep-alive HTTP/1.1 pools (`client.rs`);
//! bodies stream both ways.

mod body;
mod client;
mod route;
mod upstreams;

use crate::access_log::RestRecord;
use crate::config::{Component, ComponentConfig, RestConfig, RouteConfig};
use crate::error::Error;
use crate::http::{came_through, strip_hop_by_hop, Peer, ProxyBody, VIA_HEADER};
use crate::metrics::Metrics;
use crate::policy::Secrets;
use crate::respond;
use crate::tls::Reload;
use body::{AttemptBody, BodySlot, ResponseBody};
use client::error_chain;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use route::route;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use upstreams::Upstreams;

/// Forwards REST requests to the controller or broker.
pub(crate) struct Rest {
    /// This proxy's id in `pinot-proxy-via`, to refuse requests that loop back to it.
    instance: HeaderValue,
    controller: Option<Upstreams>,
    broker: Option<Upstreams>,
    routes: Vec<RouteConfig>,
    request_timeout: Duration,
    backoff: Duration,
    max_requests_per_component: usize,
    max_requests_per_connection: usize,
    /// Back-off deadlines are kept as milliseconds since this instant, in atomics.
    epoch: Instant,
    metrics: Arc<Metrics>,
}

impl Rest {
    /// `None` when neither a controller nor a broker is configured.
    pub(crate) fn new(
        rest: &RestConfig,
        controller: Option<&ComponentConfig>,
        broker: Option<&ComponentConfig>,
        instance: HeaderValue,
        secrets: &Secrets,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Rest>> {
        if controller.is_none() && broker.is_none() {
            return Ok(None);
        }
        let controller = controller
            .map(|c| Upstreams::new("controller", c, rest, secrets, metrics))
            .transpose()?;
        let broker = broker
            .map(|c| Upstreams::new("broker", c, rest, secrets, metrics))
            .transpose()?;
        Ok(Some(Rest {
            instance,
            controller,
            broker,
            routes: rest.routes.clone(),
            request_timeout: Duration::from_millis(rest.request_timeout_ms),
            backoff: Duration::from_millis(rest.backoff_ms),
            max_requests_per_component: rest.max_requests_per_component,
            max_requests_per_connection: rest.max_requests_per_connection,
            epoch: Instant::now(),
            metrics: metrics.clone(),
        }))
    }

    /// `rest.max_requests_per_connection`, for each client connection's [`Peer`].
    pub(crate) fn max_requests_per_connection(&self) -> usize {
        self.max_requests_per_connection
    }

    /// Forwards one request; failures are HTTP errors with a JSON body.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Response<ProxyBody> {
        let deadline = Instant::now() + self.request_timeout;
        let span = tracing::info_span!(
            "rest",
            method = %request.method(),
            path = %request.uri().path(),
        );
        let mut record =
            RestRecord::new(request.method(), request.uri().path(), self.metrics.clone());
        let result = self
            .forward(request, peer, deadline, &mut record)
            .instrument(span)
            .await;
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                record.status = Some(parts.status.as_u16());
                let body = ResponseBody {
                    inner: Some(body),
                    deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
                    timeout_ms: self.request_timeout.as_millis(),
                    record,
                };
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(err) => {
                record.fail(&err);
                respond::rest_error(&err, &record.path)
            }
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
        deadline: Instant,
        record: &mut RestRecord,
    ) -> Result<Response<Incoming>, Error> {
        if request.method() == Method::CONNECT {
            return Err(Error::BadRequest(
                "CONNECT is not supported: this port forwards REST calls to Pinot".into(),
            ));
        }
        let path = request.uri().path();
        if !path.starts_with('/') {
            return Err(Error::BadRequest(format!(
                "request target \"{}\" is not a path",
                crate::error::echo(path)
            )));
        }
        let component = route(&self.routes, path);
        record.component = Some(component);
        let name = component.name();
        if came_through(request.headers(), &self.instance) {
            return Err(Error::Loop { component: name });
        }
        let upstreams = match component {
            Component::Controller => self.controller.as_ref(),
            Component::Broker => self.broker.as_ref(),
        }
        .ok_or(Error::NotConfigured {
            component: name,
            method: request.method().clone(),
            path: path.to_owned(),
        })?;
        // Both held until the response has been sent (they live in the record).
        let per_connection = peer.rest_requests.clone().try_acquire_owned().map_err(|_| {
            Error::Busy {
                component: name,
                limit: format!(
                    "this client connection has rest.max_requests_per_connection = {} requests in flight",
                    self.max_requests_per_connection
                ),
            }
        })?;
        let per_component = upstreams
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy {
                component: name,
                limit: format!(
                    "rest.max_requests_per_component = {} requests are in flight to the {}",
                    self.max_requests_per_component,
                    component.name()
                ),
            })?;
        record.held = vec![per_connection, per_component];

        let (parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let mut headers = forwarded_headers(&parts, peer);
        upstreams.credentials.apply(&mut headers);
        headers.append(VIA_HEADER, self.instance.clone());
        let idempotent = is_idempotent(&parts.method);
        let slot = Arc::new(BodySlot::new(body));

        let now_ms = self.now_ms();
        let candidates = upstreams.candidates(now_ms);
        let mut causes: Vec<String> = Vec::new();
        let mut all_connect_failures = true;
        let mut attempt: u8 = 0;
        let mut index = candidates[0];
        loop {
            let upstream = &upstreams.urls[index];
            record.upstream = Some(upstream.url.display.clone());
            let uri = format!(
                "{}{}{}",
                upstream.url.origin, upstream.url.base_path, path_and_query
            );
            let uri = Uri::try_from(uri).map_err(|err| {
                Error::BadRequest(format!("cannot forward {path_and_query:?}: {err}"))
            })?;
            let mut upstream_request = Request::new(AttemptBody::new(slot.clone(), attempt));
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = uri;
            // Pinot's REST servers speak HTTP/1.1 whatever the caller used.
            *upstream_request.version_mut() = Version::HTTP_11;
            *upstream_request.headers_mut() = headers.clone();

            let sent = tokio::time::timeout_at(
                deadline.into(),
                upstreams.client.request(upstream_request),
            )
            .await;
            let err = match sent {
                Ok(Ok(response)) => {
                    upstream.down_until_ms.store(0, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(err)) => err,
                Err(_elapsed) => {
                    return Err(Error::RestTimeout {
                        component: name,
                        url: upstream.url.display.clone(),
                        timeout_ms: self.request_timeout.as_millis(),
                    })
                }
            };
            if let Some(reason) = slot.client_error() {
                return Err(Error::ClientBody(reason));
            }
            let cause = error_chain(&err);
            let connect_failed = err.is_connect();
            if connect_failed {
                let backoff_ms = self.backoff.as_millis() as u64;
                upstream.down_until_ms.store(
                    self.now_ms().saturating_add(backoff_ms).max(1),
                    Ordering::Relaxed,
                );
                tracing::warn!(
                    component = %component.name(),
                    upstream = %upstream.url.display,
                    backoff_ms,
                    error = %cause,
                    "cannot connect; skipping this URL for the back-off period"
                );
            } else {
                all_connect_failures = false;
            }
            causes.push(format!("{}: {cause}", upstream.url.display));

            // Retry once, and only when the upstream cannot have acted on the request: nothing
            // connected, or a method that is safe to repeat. Either way the body must still be
            // unread, or there is nothing left to send.
            let next = match candidates.get(1) {
                Some(&other) => Some(other),
                // With one URL, a broken keep-alive connection is worth one more try there;
                // a URL that just refused to connect is not.
                None if !connect_failed => Some(index),
                None => None,
            };
            let may_retry = attempt == 0 && (connect_failed || idempotent);
            match next {
                Some(next) if may_retry && slot.hand_to(attempt + 1) => {
                    tracing::debug!(error = %cause, "retrying on another URL");
                    attempt += 1;
                    index = next;
                }
                _ if all_connect_failures => {
                    return Err(Error::RestUnreachable {
                        component: name,
                        causes: causes.join("; "),
                    })
                }
                _ => {
                    return Err(Error::RestUpstream {
                        component: name,
                        causes: causes.join("; "),
                    })
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The TLS configs of `https://` upstreams, for the reloader.
    pub(crate) fn tls_configs(&self) -> Vec<Arc<dyn Reload>> {
        [&self.controller, &self.broker]
            .into_iter()
            .flatten()
            .filter_map(|upstreams| upstreams.tls.clone())
            .map(|tls| tls as Arc<dyn Reload>)
            .collect()
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The headers sent upstream: the caller's minus hop-by-hop ones and `Host` (the upstream's
/// own is set from its URL), plus `X-Forwarded-For`, `-Proto` and `-Host`.
fn forwarded_headers(parts: &http::request::Parts, peer: &Peer) -> HeaderMap {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    let original_host = headers.remove(header::HOST).or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });

    // HTTP/2 callers may split cookies over several fields; HTTP/1.1 wants one (RFC 9113 8.2.3).
    let cookies: Vec<&[u8]> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if cookies.len() > 1 {
        if let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..])) {
            headers.insert(header::COOKIE, joined);
        }
    }

    let client_ip = peer.addr.ip().to_canonical().to_string();
    let earlier: Vec<&[u8]> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let mut chain = earlier.join(&b", "[..]);
    if !chain.is_empty() {
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(client_ip.as_bytes());
    let forwarded_for = HeaderValue::from_bytes(&chain)
        .or_else(|_| HeaderValue::from_str(&client_ip))
        .ok();
    if let Some(value) = forwarded_for {
        headers.insert("x-forwarded-for", value);
    }
    // This hop's view: the proxy cannot tell whether a caller's own X-Forwarded-Proto/-Host
    // come from a trusted load balancer, so it states what it saw itself.
    let proto = if peer.tls { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    match original_host {
        Some(host) => {
            headers.insert("x-forwarded-host", host);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
    headers
}
