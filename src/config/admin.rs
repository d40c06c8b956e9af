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
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "text" (one human-readable line per event) or "json" (one JSON object per line, with
    /// the fields README "Logs" lists). Default: "text".
    pub format: LogFormat,
    /// A `tracing` filter: "info", "warn", "pinot_proxy=debug,info", ... Default: "info".
    pub level: Option<String>,
    /// One audit line per `PinotQueryServer/Submit` call (target `pinot_proxy::audit`): who
    /// (user, client-certificate name or peer address), which server, table, segment count,
    /// SQL, rows and bytes streamed, Pinot's scan figures, status and duration. Never
    /// credentials. Default: false.
    pub audit: bool,
    /// How much of the SQL an audit line quotes, in bytes. Default: 4096.
    #[serde(default = "default_audit_sql_max_bytes")]
    pub audit_sql_max_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: None,
            audit: false,
            audit_sql_max_bytes: default_audit_sql_max_bytes(),
        }
    }
}

fn default_audit_sql_max_bytes() -> usize {
    4096
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
