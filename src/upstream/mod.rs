//! Everything that reaches upstream servers over HTTP/2: the pool of connections per target
//! (`pool.rs`), the one connect path (`connect.rs`: resolve, allowlist, TCP, TLS, handshake),
//! and the brokers' gRPC targets.

mod connect;
mod pool;

pub(crate) use pool::{Lease, Pool, PoolSettings, TargetState};

use crate::policy::Target;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Who named a target: a caller (checked against the allowlist) or the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Caller,
    Configured,
}

/// The brokers' gRPC endpoints (`[broker] urls` hosts on `grpc_port`), for
/// `PinotQueryBroker/Submit` calls that name no target; taken round robin.
#[derive(Debug)]
pub(crate) struct BrokerTargets {
    targets: Vec<Target>,
    next: AtomicUsize,
}

impl BrokerTargets {
    /// `None` when there is no broker host.
    pub(crate) fn new(targets: Vec<Target>) -> Option<BrokerTargets> {
        (!targets.is_empty()).then(|| BrokerTargets {
            targets,
            next: AtomicUsize::new(0),
        })
    }

    /// The next broker, round robin.
    pub(crate) fn next(&self) -> Option<Target> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        self.targets.get(index).cloned()
    }
}
