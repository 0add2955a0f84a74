//! `proxy-core`: the service model and the machinery every backend shares, and the API an
//! embedder (a CNI agent, a service mesh, a plain host) drives a load-balancing dataplane with.
//!
//! ```text
//!  your controller ──per-object changes──▶ ChangeTracker ──TableUpdate{table, generation,
//!  (watch, file, etcd)  set_service,          │ join, locality,      skipped}
//!                       set_endpoint_slice,   │ per-port checks           │
//!                       delete_service, ...   │ (newcomer blamed,         ▼
//!                                             │  last good kept)      SyncLoop ──SyncRequest{desired,
//!                                             ▼                        │ diff,      ChangeSet, mode}──▶ Dataplane
//!                                       skipped ports, by name         │ min interval,                 (userspace,
//!                                                                      │ resync, backoff               iptables, ipvs)
//!  your code ◀──SyncOutcome{generation, problems, skipped}── SyncHandle ┘ metrics, health
//! ```
//!
//! This crate owns no kernel objects.
//!
//! # Embedding, step by step
//!
//! 1. **Your controller** watches wherever your services live and turns each event into our
//!    model: a [`tracker::Service`] (ports, addresses, policies) and the
//!    [`tracker::EndpointSlice`]s of a service (several per service, keyed by name, merged).
//! 2. **The [`ChangeTracker`]** takes them object by object and keeps the current
//!    [`ServiceTable`]. It joins services with their slices by port name, marks endpoints on this
//!    node local ([`ChangeTracker::set_node`]), and checks each changed service port on its own:
//!    an invalid one, one that clashes with another service's address or node port (the
//!    newcomer is blamed), or one the backend cannot do is *skipped* by name, keeping its last
//!    good version if it had one, and everything else applies. A change costs O(the change):
//!    about 10 µs from the call to the dataplane's `SyncRequest` at 10,000 or 50,000 service
//!    ports (`cargo bench -p proxy-core --bench tracker`).
//! 3. **The [`SyncLoop`]** feeds a backend from the tracker's [`tracker::TrackerSource`] at a
//!    bounded rate, resyncs periodically to repair drift, and retries failures while the last
//!    good state stays. [`SyncLoop::new`] registers its metrics and the backend's in your
//!    [`prometheus_client`] registry, under kube-proxy's names.
//! 4. **A real backend**, built the same way whichever it is: `UserspaceDataplane::new(
//!    UserspaceConfig)`, `IptablesDataplane::new(IptablesConfig)`, `IpvsDataplane::new(
//!    IpvsConfig)`. Construction opens nothing; [`Dataplane::dry_run`] renders what a sync would
//!    program without privileges.
//! 5. **Feedback**: every tracker call returns a generation; [`SyncHandle::wait_for`] returns
//!    the [`SyncOutcome`] that put it in place (the backend's problems, the skipped ports,
//!    timings), [`SyncHandle::outcomes`] streams them, [`SyncHandle::resync`] and
//!    [`SyncHandle::dry_run`] act on the running loop, and [`SyncHealth`] answers `/healthz`.
//!
//! Here with the in-memory `testing::fake::FakeDataplane` (feature `testing`) standing in for
//! a backend; `examples/src/bin/embed.rs` is the same with the userspace backend and real
//! connections.
//!
//! ```
//! use proxy_core::prometheus_client::registry::Registry;
//! use proxy_core::testing::fake::FakeDataplane;
//! use proxy_core::tracker::*;
//! use proxy_core::{ChangeTracker, SyncConfig, SyncLoop, SyncStatus};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dataplane = FakeDataplane::new(); // or UserspaceDataplane::new(UserspaceConfig::default())?
//! let (mut tracker, source) = ChangeTracker::for_dataplane(&dataplane);
//! let mut registry = Registry::default();
//! let sync_loop = SyncLoop::new(dataplane, SyncConfig::default(), &mut registry);
//! let handle = sync_loop.handle();
//! tokio::spawn(sync_loop.run(source, std::future::pending()));
//!
//! // What your controller saw: a service, its endpoints, and a service clashing with it.
//! tracker.set_node(Some("node-a".into())).expect("no control characters");
//! let web = ServiceName::new("default", "web");
//! tracker.set_service(
//!     Service::new(web.clone())
//!         .with_cluster_ip("198.19.0.10".parse().unwrap())
//!         .with_port(ServicePortSpec::tcp("http", 80).with_target_port(8080)),
//! );
//! tracker.set_endpoint_slice(
//!     EndpointSlice::new(web.clone(), "web-abc12")
//!         .with_endpoint(SliceEndpoint::new("198.18.1.10".parse().unwrap()).on_node("node-a")),
//! );
//! let late = ServiceName::new("default", "late");
//! let generation = tracker.set_service(
//!     Service::new(late.clone())
//!         .with_cluster_ip("198.19.0.10".parse().unwrap())
//!         .with_port(ServicePortSpec::tcp("http", 80)),
//! );
//!
//! let outcome = handle.wait_for(generation).await.unwrap();
//! assert_eq!(outcome.status, SyncStatus::Applied);
//! assert_eq!(outcome.service_ports, 1); // web runs...
//! assert_eq!(outcome.skipped[&late.port("http")].reason, SkipReason::Clash); // ...late is blamed
//! assert!(handle.health().is_degraded());
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dataplane;
pub mod diff;
pub mod error;
pub mod file;
pub mod lock;
pub mod metrics;
mod model;
pub mod node_addresses;
pub mod select;
pub mod service_health;
mod source;
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
pub use sync::{
    ServiceSource, SkipReason, SyncConfig, SyncHandle, SyncHealth, SyncLoop, SyncOutcome,
    SyncStatus, TableUpdate,
};
pub use table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TableBuilder, TrafficPolicy,
};
pub use tracker::ChangeTracker;
pub use validate::{FieldError, ValidationErrors};

/// The `#[async_trait]` macro [`Dataplane`] and [`ServiceSource`] are written with, re-exported
/// so that an embedder's implementation uses the same version: `#[proxy_core::async_trait]`.
pub use async_trait::async_trait;
/// The metrics crate whose [`Registry`](prometheus_client::registry::Registry) the sync loop and
/// every backend register in, re-exported so that an embedder's registry is the same type.
pub use prometheus_client;
