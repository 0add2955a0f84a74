//! `backend-userspace`: an L4 proxy on tokio that implements [`proxy_core::Dataplane`] with
//! ordinary sockets, so it needs no root and no kernel state.
//!
//! Every service port gets a listener on each of its addresses (cluster, external and
//! load-balancer IPs on the service port; each configured node address on the node port). A new
//! TCP connection or UDP flow is sent to an endpoint chosen by the port's scheduler (IPVS's
//! `rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `sh`, `dh`, `mh`, and `random`; see [`pick`]), with
//! client-IP affinity if asked, failing over on connect errors and ejecting endpoints that keep
//! failing. TCP bytes are read and written straight through a per-thread buffer, and a
//! direction that carries bulk switches to `splice(2)` on Linux. The addresses must be local
//! (loopback `127.0.0.0/8` is, on Linux) unless [`Config::freebind`] is set.
//!
//! It owns only its sockets: [`Dataplane::cleanup`] closes every listener (connections already
//! open finish on their own). In the optional transparent capture mode ([`ListenMode::Capture`],
//! root) it also owns one iptables nat chain, [`Config::capture_chain`], and its two jumps;
//! cleanup removes them (see [`capture`]).
//!
//! Inner shape, as every backend: **plan** ([`plan::plan`], pure: desired listeners and their
//! routes against the applied ones) → **apply** (bind, close, swap routes) → **observe**
//! ([`UserspaceDataplane::observe`], the same model, for tests and `--dry-run`).
//!
//! ```
//! use backend_userspace::{Config, UserspaceDataplane};
//! use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
//! use proxy_core::table::*;
//! use proxy_core::diff;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let port = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 18080)
//!     .with_cluster_ip("127.77.0.10".parse().unwrap())
//!     .with_endpoint(Endpoint::new("127.0.0.50".parse().unwrap(), 8080));
//! let table = ServiceTable::builder().insert(port).build().unwrap();
//! let mut dataplane = UserspaceDataplane::new(Config::default()).unwrap();
//! let changes = diff(&ServiceTable::empty(), &table);
//! let report = dataplane
//!     .sync(SyncRequest { desired: &table, changes: &changes, mode: SyncMode::Full })
//!     .await
//!     .unwrap();
//! assert!(report.is_complete(), "{report}");
//! assert_eq!(dataplane.observe().len(), 1);
//! # }
//! ```
//!
//! See `README.md` beside this crate for the design notes and how it differs from the kernel
//! backends.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apply;
mod balance;
pub mod capture;
pub mod config;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod pick;
pub mod plan;
mod tcp;
mod udp;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use proxy_core::dataplane::{Capabilities, CleanupReport, SyncReport, SyncRequest};
use proxy_core::table::{Protocol, Scheduler, ServiceTable};
use proxy_core::{Dataplane, DataplaneError};
use tracing::debug;

pub use config::{Config, ListenMode};
pub use error::UserspaceError;
pub use metrics::Metrics;
pub use plan::{ListenerKey, Listeners, Plan};

use apply::Live;
use balance::{ActiveCounts, Context, Health};

/// The backend's name in logs, metrics and reports.
pub const NAME: &str = "userspace";

/// The userspace proxy dataplane. Needs a tokio runtime for [`Dataplane::sync`]; dropping it
/// closes every listener.
#[derive(Debug)]
pub struct UserspaceDataplane {
    ctx: Arc<Context>,
    metrics: Metrics,
    live: Live,
}

impl UserspaceDataplane {
    /// A dataplane with unregistered metrics.
    ///
    /// # Errors
    /// [`UserspaceError::Config`] when a config field is out of range.
    pub fn new(config: Config) -> Result<Self, UserspaceError> {
        Self::with_metrics(config, Metrics::default())
    }

    /// A dataplane recording into `metrics` (from [`Metrics::register`]).
    ///
    /// # Errors
    /// [`UserspaceError::Config`] when a config field is out of range.
    pub fn with_metrics(config: Config, metrics: Metrics) -> Result<Self, UserspaceError> {
        config.validate()?;
        let health = Health::new(config.eject_after_failures, config.ejection_time);
        Ok(Self {
            ctx: Arc::new(Context {
                config,
                health,
                active: Arc::new(ActiveCounts::default()),
            }),
            metrics,
            live: Live::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// The metric families this dataplane records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What a sync to `table` would do now, without doing it (for `--dry-run`).
    pub fn plan(&self, table: &ServiceTable) -> Plan {
        plan::plan(table, &self.ctx.config, &self.live.applied())
    }

    /// The listeners open now, with the route each applies to new flows.
    pub fn observe(&self) -> Listeners {
        self.live.applied()
    }

    /// Where each open listener's socket is bound: its service address, or in capture mode the
    /// capture address and the port the OS picked.
    pub fn bound_addrs(&self) -> std::collections::BTreeMap<ListenerKey, std::net::SocketAddr> {
        self.live.bound()
    }

    /// The capabilities of this backend (also [`Dataplane::capabilities`]).
    pub fn supported() -> Capabilities {
        Capabilities {
            protocols: [Protocol::Tcp, Protocol::Udp].into_iter().collect(),
            schedulers: Scheduler::ALL.into_iter().collect(),
            session_affinity: true,
            local_traffic_policy: true,
            load_balancer_source_ranges: true,
            node_ports: true,
            ipv6: true,
        }
    }
}

#[async_trait]
impl Dataplane for UserspaceDataplane {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::supported()
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        // The caller (proxy-core's sync loop) runs this inside the `sync{backend, full}` span.
        let started = Instant::now();
        let plan = self.plan(request.desired);
        let outcome = self.live.apply(&plan, &self.ctx, &self.metrics).await;
        let mut report = SyncReport::for_request(&request);
        report.objects_written = outcome.written;
        report.problems = plan.problems;
        report.problems.extend(outcome.problems);
        report.duration = started.elapsed();
        debug!(
            listeners = plan.desired.len(),
            opened = plan.open.len(),
            updated = plan.update.len(),
            closed = plan.close.len(),
            problems = report.problems.len(),
            "sync complete"
        );
        Ok(report)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let objects_removed = self
            .live
            .close_all(&self.ctx, &self.metrics)
            .await
            .map_err(|error| DataplaneError::backend(NAME, error))?;
        Ok(CleanupReport { objects_removed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::table::{ServicePort, ServicePortName};

    #[test]
    fn capabilities_reject_sctp_and_accept_every_scheduler() {
        let sctp = ServicePort::new(ServicePortName::new("ns", "s", "p"), Protocol::Sctp, 9);
        let table = ServiceTable::builder().insert(sctp).build().expect("valid");
        let err = UserspaceDataplane::supported()
            .check(NAME, &table)
            .expect_err("SCTP is not served");
        assert!(err.to_string().contains("sctp"), "{err}");
        for scheduler in Scheduler::ALL {
            let mut port = ServicePort::new(ServicePortName::new("ns", "s", "p"), Protocol::Udp, 9);
            port.scheduler = Some(scheduler);
            let table = ServiceTable::builder().insert(port).build().expect("valid");
            assert!(
                UserspaceDataplane::supported().check(NAME, &table).is_ok(),
                "{scheduler}"
            );
        }
    }
}
