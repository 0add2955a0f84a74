//! `proxy-core`: the service model and the machinery every backend shares.
//!
//! A service source (a file, an embedder's own controller) produces [`ServiceTable`] snapshots;
//! [`sync::SyncLoop`] diffs each against the last one applied, checks it against the backend's
//! [`dataplane::Capabilities`], and hands it to a [`Dataplane`] at a bounded rate, resyncing
//! periodically and retrying failures while the last good state stays in place.
//!
//! ```text
//!  source ──ServiceTable──▶ SyncLoop ──SyncRequest{desired, ChangeSet, mode}──▶ Dataplane
//!  (file, watch)            │ diff, capabilities check,                          (userspace,
//!                           │ min interval, resync, backoff                       iptables, ipvs)
//!                           └──▶ metrics (Prometheus), health
//! ```
//!
//! This crate owns no kernel objects.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dataplane;
pub mod diff;
pub mod error;
pub mod file;
pub mod metrics;
pub mod select;
pub mod service_health;
pub mod sync;
pub mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validate;

pub use dataplane::{Capabilities, Dataplane, SyncMode, SyncReport, SyncRequest};
pub use diff::{diff, ChangeSet};
pub use error::DataplaneError;
pub use table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};
