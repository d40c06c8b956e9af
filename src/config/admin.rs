//! `[admin]` (the operator's port: health, readiness, metrics, pooled targets) and `[log]`
//! (format and level of the process's log lines).

use serde::Deserialize;
use std::net::SocketAddr;

/// `[admin]`: a second listener for Kubernetes probes and Prometheus. Absent: off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (plain HTTP/1.1): `GET /livez`, `/readyz`, `/metrics`,
    /// `/debug/targets`. Keep it off the ingress: it answers anyone who reaches it.
    pub listen: SocketAddr,
}

/// `[log]`: how log lines look. `RUST_LOG`, when set, wins over `level`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "text" (one human-readable line per event) or "json" (one JSON object per line, with
    /// the fields README "Logs" lists). Default: "text".
    pub format: LogFormat,
    /// A `tracing` filter: "info", "warn", "pinot_proxy=debug,info", ... Default: "info".
    pub level: Option<String>,
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
