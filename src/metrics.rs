//! The proxy's Prometheus metrics: one registry per proxy, the families each part records
//! into, and the text the admin listener serves on `/metrics`. Labels are bounded: a gRPC
//! call's `target` is the server it reached (at most `servers.max_targets` at once), `-` for a
//! call refused before any server was reached.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A gRPC call that ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub(crate) method: &'static str,
    pub(crate) target: String,
    pub(crate) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) method: &'static str,
}

/// `in`: from the caller to the server; `out`: back.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub(crate) direction: &'static str,
}

/// Why something failed: a short fixed word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AuthLabels {
    pub(crate) surface: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RestLabels {
    pub(crate) component: &'static str,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ComponentLabels {
    pub(crate) component: &'static str,
}

/// A TLS config (`server.tls`, `servers.tls`, ...) and how its reload went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    pub(crate) config: &'static str,
    pub(crate) result: &'static str,
}

/// A certificate file of a TLS config.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CertificateLabels {
    pub(crate) config: &'static str,
    pub(crate) file: String,
}

/// How something ended: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the proxy keeps.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) grpc_calls: Family<CallLabels, Counter>,
    pub(crate) grpc_call_duration: HistogramFamily<MethodLabels>,
    pub(crate) grpc_bytes: Family<DirectionLabels, Counter>,
    pub(crate) grpc_calls_in_flight: Gauge,
    pub(crate) partial_results_unchecked: Counter,
    pub(crate) upstream_connections_open: Gauge,
    pub(crate) upstream_connections_opened: Counter,
    pub(crate) upstream_connect_failures: Family<ReasonLabels, Counter>,
    pub(crate) auth_failures: Family<AuthLabels, Counter>,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) rest_requests: Family<RestLabels, Counter>,
    pub(crate) rest_upstream_failures: Family<ComponentLabels, Counter>,
    pub(crate) tls_reloads: Family<ReloadLabels, Counter>,
    pub(crate) certificate_expiry: Family<CertificateLabels, Gauge<f64, AtomicU64>>,
    pub(crate) discovery_refreshes: Family<ResultLabels, Counter>,
    pub(crate) discovered_servers: Gauge,
    pub(crate) discovery_last_success: Gauge<f64, AtomicU64>,
}

fn call_duration_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pinot_proxy");
        let metrics = Metrics {
            grpc_calls: Family::default(),
            grpc_call_duration: Family::new_with_constructor(call_duration_histogram),
            grpc_bytes: Family::default(),
            grpc_calls_in_flight: Gauge::default(),
            partial_results_unchecked: Counter::default(),
            upstream_connections_open: Gauge::default(),
            upstream_connections_opened: Counter::default(),
            upstream_connect_failures: Family::default(),
            auth_failures: Family::default(),
            tls_handshake_failures: Counter::default(),
            rest_requests: Family::default(),
            rest_upstream_failures: Family::default(),
            tls_reloads: Family::default(),
            certificate_expiry: Family::default(),
            discovery_refreshes: Family::default(),
            discovered_servers: Gauge::default(),
            discovery_last_success: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "grpc_calls",
            "gRPC calls ended, by method, target server and gRPC status code",
            metrics.grpc_calls.clone(),
        );
        registry.register_with_unit(
            "grpc_call_duration",
            "Time from a gRPC call's arrival to its end",
            Unit::Seconds,
            metrics.grpc_call_duration.clone(),
        );
        registry.register_with_unit(
            "grpc",
            "Bytes of gRPC request (in) and response (out) bodies forwarded",
            Unit::Bytes,
            metrics.grpc_bytes.clone(),
        );
        registry.register(
            "grpc_calls_in_flight",
            "gRPC calls being served",
            metrics.grpc_calls_in_flight.clone(),
        );
        registry.register(
            "partial_results_unchecked",
            "Submit answers passed on without the partial-result check (compressed, too large, undecodable)",
            metrics.partial_results_unchecked.clone(),
        );
        registry.register(
            "upstream_connections_open",
            "HTTP/2 connections to Pinot servers open now",
            metrics.upstream_connections_open.clone(),
        );
        registry.register(
            "upstream_connections_opened",
            "HTTP/2 connections to Pinot servers opened",
            metrics.upstream_connections_opened.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Failed attempts to connect to a Pinot server, by reason",
            metrics.upstream_connect_failures.clone(),
        );
        registry.register(
            "auth_failures",
            "Callers refused by authentication, by surface (grpc, rest) and reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed or timed out",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "rest_requests",
            "REST requests ended, by component and HTTP status",
            metrics.rest_requests.clone(),
        );
        registry.register(
            "rest_upstream_failures",
            "REST requests the controller or broker could not answer (unreachable, failed, timed out)",
            metrics.rest_upstream_failures.clone(),
        );
        registry.register(
            "tls_reloads",
            "Changed TLS files loaded (ok) or rejected (failed), by config",
            metrics.tls_reloads.clone(),
        );
        registry.register_with_unit(
            "certificate_expiry",
            "When each configured certificate stops being valid, as a Unix time",
            Unit::Seconds,
            metrics.certificate_expiry.clone(),
        );
        registry.register(
            "discovery_refreshes",
            "Reads of the server list from the controller (servers.discover), by result",
            metrics.discovery_refreshes.clone(),
        );
        registry.register(
            "discovered_servers",
            "Servers in the list last read from the controller that calls may reach",
            metrics.discovered_servers.clone(),
        );
        registry.register_with_unit(
            "discovery_last_success_timestamp",
            "When the server list was last read from the controller, as a Unix time (0: never)",
            Unit::Seconds,
            metrics.discovery_last_success.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build_info);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The metrics in Prometheus' text format (OpenMetrics).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
