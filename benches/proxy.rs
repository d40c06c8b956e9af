//! Throughput and latency of pinot-proxy against direct calls and nginx (being written).
fn main() {}
