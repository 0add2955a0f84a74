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
pub mod tracker;
pub mod validate;

pub use dataplane::{
    Capabilities, CleanupReport, Dataplane, DryRun, SyncMode, SyncProblem, SyncReport, SyncRequest,
};
pub use diff::{diff, ChangeSet};
pub use error::DataplaneError;
pub use sync::{ServiceSource, SyncConfig, SyncHealth, SyncLoop};
pub use table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TableBuilder, TrafficPolicy,
};
pub use validate::{FieldError, ValidationErrors};

/// The `#[async_trait]` macro [`Dataplane`] and [`ServiceSource`] are written with, re-exported
/// so that an embedder's implementation uses the same version: `#[proxy_core::async_trait]`.
pub use async_trait::async_trait;
/// The metrics crate whose [`Registry`](prometheus_client::registry::Registry) the sync loop and
/// every backend register in, re-exported so that an embedder's registry is the same type.
pub use prometheus_client;
