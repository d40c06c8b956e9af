//! Decisions with no I/O: which server a call names (target parsing), whether it may be reached
//! (allowlist), whether the caller may call at all (authenticator, token decoding), and what
//! credentials go on to Pinot.

pub(crate) mod allowlist;
pub(crate) mod auth;
pub(crate) mod credentials;
pub(crate) mod target;
pub mod token;

pub(crate) use allowlist::Allowlist;
pub(crate) use auth::{Authenticator, LogBudget};
pub use credentials::Secrets;
pub(crate) use credentials::UpstreamCredentials;
pub(crate) use target::Target;
