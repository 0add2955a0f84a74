//! backend-ipvs: the kernel's IPVS load balancer as a [`proxy_core::Dataplane`].
//!
//! [`IpvsDataplane`] programs, for each service port of a table, a virtual server per (VIP,
//! port, protocol): cluster, external and load-balancer IPs on the service port, each node
//! address on the node port (by default the node's own, followed as they come and go; see
//! [`IpvsConfig::node_addresses`]). Each gets the port's scheduler (`rr`,
//! `wrr`, `lc`, `wlc`, `sh`, `dh`, `sed`, `nq`, `mh`; not `random`), persistence for client-IP
//! affinity, and a masquerading real server per selected endpoint with its weight. A sync diffs
//! against the kernel (dumped on full syncs) and sends only the needed netlink requests, many
//! per datagram ([`IpvsOps::run_batch`]); removed TCP real servers drain at weight 0 (see
//! [`plan`]). With `RUST_LOG=backend_ipvs=debug`, each sync logs where its time went
//! (`IPVS sync phases`).
//!
//! **What it owns** (and [`IpvsDataplane::cleanup_now`] / `Dataplane::cleanup` removes):
//! - the dummy interface [`IpvsConfig::interface`] (`svcp-ipvs0`) and its /32 and /128 VIPs;
//! - the virtual servers on those VIPs, and those this process created (node ports);
//! - with [`IpvsConfig::manage_companions`], the ipsets and iptables chains under
//!   [`IpvsConfig::prefix`] (`SVCP-IPVS-`) and five jumps into them (see [`companions`]).
//!
//! Anything else (another tool's virtual servers, kube-proxy's `KUBE-` objects) is never
//! touched. The module list is the inner shape, **model → plan (pure) → apply → observe**:
//!
//! - [`netlink`]: the IPVS generic-netlink messages, hand-written, and the socket;
//! - [`model`]: [`VirtualServer`]/[`RealServer`], what plans and observations are made of;
//! - [`ops`]: [`IpvsOps`], the narrow interface over the kernel table; [`client`]: [`NetlinkIpvs`];
//! - [`config`]: [`IpvsConfig`]; [`plan`]: desired state, the diff and every effect of a sync
//!   ([`plan::plan_sync`]: VIP binds and unbinds, IPVS operations, companions, flows to clean),
//!   pure;
//! - [`apply`]: ops through `IpvsOps`, and the other effects' handles ([`apply::LinkOps`],
//!   [`apply::CompanionOps`]); [`observe`]: the kernel back into the plan's model, and the
//!   ownership rule; [`link`]: the dummy interface over rtnetlink;
//! - [`companions`]: ipsets and iptables rules; [`ipset`]: the ipset nfnetlink client the
//!   companions write their sets with ([`ipset::NetlinkIpset`], batched, no process);
//!   [`flows`]: the conntrack entries of deleted UDP real servers, deleted over ctnetlink
//!   (`nf_conntrack`, no process); [`cleanup`]; [`metrics`]; [`error`];
//! - `testing` (feature `testing`): `FakeIpvs`, an in-memory `IpvsOps`; `ipset::FakeIpset`,
//!   an in-memory `ipset::IpsetOps`.
//!
//! **One construction shape**, as every backend: [`IpvsDataplane::new`] with an [`IpvsConfig`],
//! then `Dataplane::register_metrics` with the embedder's root registry (see [`metrics`]).
//! `new` only checks the config: it opens no socket and needs neither root nor IPVS, so a dry
//! run works anywhere. The first sync (or cleanup) opens the kernel connections; a kernel
//! without IPVS fails it with [`IpvsError::Unavailable`].
//!
//! ```
//! use backend_ipvs::{IpvsConfig, IpvsDataplane};
//! use proxy_core::prometheus_client::registry::Registry;
//! use proxy_core::table::*;
//! use proxy_core::Dataplane;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::default();
//! let mut dp = IpvsDataplane::new(IpvsConfig::default())?;
//! dp.register_metrics(&mut registry);
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse()?)
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse()?, 8080));
//! let table = ServiceTable::builder().insert(web).build()?;
//! // What a full sync would program; no privileges, no I/O.
//! let plan = dp.dry_run(&table)?;
//! assert!(plan.rendered.contains("TCP 198.19.0.10:80 rr\n  -> 198.18.1.10:8080  Masq  1\n"));
//! assert!(plan.problems.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! **Network namespace.** There is no namespace setting: the backend programs the network
//! namespace of the thread its first sync (or cleanup) runs on. That sync opens every socket
//! there (IPVS, rtnetlink, ipset; ctnetlink sockets are opened by a thread it starts), and
//! `iptables-restore` and the sysctls run from the syncing thread. [`IpvsDataplane::sync_at`]
//! and [`IpvsDataplane::cleanup_now`] run on the calling thread; `Dataplane::sync` and
//! `Dataplane::cleanup` on the tokio runtime's blocking threads, which start in the namespace
//! of the thread that spawned them. To program another namespace, enter it (`setns`) on the
//! thread that builds the runtime, or call `sync_at` from a thread in it. A later sync from a
//! thread of another namespace fails with [`BackendError::Namespace`] rather than program two.
//!
//! Syncing needs root and the `ip_vs` modules (plus the `ip_set` modules and `iptables` for the
//! companions). The tests that need IPVS run in a VM: `scripts/vm-test`; the ipset client's
//! root tests (`tests/netns_ipset.rs`) also run on a host without IPVS.
//!
//! ```no_run
//! use backend_ipvs::{IpvsConfig, IpvsDataplane};
//! use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
//! use proxy_core::table::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse()?)
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse()?, 8080));
//! let table = ServiceTable::builder().insert(web).build()?;
//! let mut dataplane = IpvsDataplane::new(IpvsConfig::default())?;
//! let changes = proxy_core::diff(&ServiceTable::empty(), &table);
//! // Opens the kernel connections in this thread's network namespace, then programs it.
//! let report = dataplane
//!     .sync(SyncRequest { desired: &table, changes: &changes, mode: SyncMode::Full })
//!     .await?;
//! println!("{report}");
//! dataplane.cleanup().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The kernel interface alone:
//!
//! ```no_run
//! use std::net::IpAddr;
//!
//! use backend_ipvs::{IpvsOps, NetlinkIpvs, RealServer, Scheduler, VirtualServer};
//! use proxy_core::Protocol;
//!
//! # fn main() -> Result<(), backend_ipvs::IpvsError> {
//! let ipvs = NetlinkIpvs::connect()?;
//! let vip = IpAddr::from([198, 18, 0, 10]);
//! let vs = VirtualServer::new(vip, Protocol::Tcp, 80, Scheduler::RoundRobin);
//! ipvs.add_virtual_server(&vs)?;
//! let rs = RealServer::new(IpAddr::from([198, 18, 1, 10]), 8080, 1);
//! ipvs.add_real_server(&vs.key(), &rs)?;
//! for rs in ipvs.real_servers(&vs.key())? {
//!     println!("{} -> {} weight {}", vs.key(), rs.socket_addr(), rs.weight);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod apply;
pub mod cleanup;
pub mod client;
pub mod companions;
pub mod config;
mod dataplane;
pub mod error;
pub mod flows;
pub mod ipset;
pub mod link;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod observe;
pub mod ops;
pub mod plan;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::NetlinkIpvs;
pub use config::{ConnectionTimeouts, IptablesVariant, IpvsConfig, VipBinding};
pub use dataplane::{IpvsDataplane, NAME};
pub use error::{BackendError, IpvsError, IpvsOp, IpvsTarget};
pub use metrics::Metrics;
pub use model::{
    ConnCounts, ForwardMethod, ModelError, RealServer, SchedFlags, Scheduler, ServiceKey,
    VirtualServer,
};
pub use ops::{IpvsInfo, IpvsOps, Timeouts};
pub use plan::{Desired, Draining, IpvsState, Op, Plan, ServiceState, Verdict, VipKind};
