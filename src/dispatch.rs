//! The pipeline every request takes once its connection is served: classify (gRPC by
//! `content-type: application/grpc*`, anything else REST), authenticate REST callers (gRPC calls
//! are authenticated by the forwarder, which may need the first message), then hand it to the
//! forwarder or REST. Refusals here get their access-log line and a JSON answer too.

use crate::access_log::RestRecord;
use crate::error::{echo, Error};
use crate::grpc::{ConnectionShare, Forwarder};
use crate::http::{Peer, ProxyBody};
use crate::metrics::Metrics;
use crate::policy::Authenticator;
use crate::respond;
use crate::rest::Rest;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use std::sync::Arc;

/// What serves a request, by protocol.
#[derive(Clone)]
pub(crate) struct Handlers {
    pub(crate) forwarder: Forwarder,
    pub(crate) rest: Option<Arc<Rest>>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Handlers {
    /// What a new client connection needs: its REST request limit and its share of the
    /// routing budget.
    pub(crate) fn connection_state(&self) -> (usize, ConnectionShare) {
        let rest_requests = self
            .rest
            .as_ref()
            .map_or(1, |rest| rest.max_requests_per_connection());
        (rest_requests, self.forwarder.connection_share())
    }

    /// Serves one request; every failure is answered, as a gRPC status or JSON.
    pub(crate) async fn dispatch(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Response<ProxyBody> {
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        if is_grpc && request.version() == Version::HTTP_2 {
            return self.forwarder.forward(request, peer.addr).await;
        }
        let refused = if is_grpc {
            Err(Error::GrpcNeedsHttp2)
        } else {
            self.auth
                .check_rest(request.headers(), peer.addr)
                .map_err(|err| Error::RestUnauthenticated(err.to_string()))
        };
        let rest = refused.and_then(|()| {
            self.rest.as_ref().ok_or_else(|| Error::NoRestUpstream {
                method: request.method().clone(),
                path: echo(request.uri().path()),
            })
        });
        match rest {
            Ok(rest) => rest.handle(request, peer).await,
            Err(err) => {
                let mut record =
                    RestRecord::new(request.method(), request.uri().path(), self.metrics.clone());
                record.fail(&err);
                respond::rest_error(&err, request.uri().path())
            }
        }
    }
}
