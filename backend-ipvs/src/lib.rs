//! backend-ipvs: the kernel's IPVS load balancer as a [`proxy_core::Dataplane`].
//!
//! [`IpvsDataplane`] programs, for each service port of a table, a virtual server per (VIP,
//! port, protocol): cluster, external and load-balancer IPs on the service port, each
//! [`Config::node_addresses`] entry on the node port. Each gets the port's scheduler (`rr`,
//! `wrr`, `lc`, `wlc`, `sh`, `dh`, `sed`, `nq`, `mh`; not `random`), persistence for client-IP
//! affinity, and a masquerading real server per selected endpoint with its weight. A sync diffs
//! against the kernel (dumped on full syncs) and sends only the needed netlink requests, many
//! per datagram ([`IpvsOps::run_batch`]); removed TCP real servers drain at weight 0 (see
//! [`plan`]). With `RUST_LOG=backend_ipvs=debug`, each sync logs where its time went
//! (`IPVS sync phases`).
//!
//! **What it owns** (and [`IpvsDataplane::cleanup_now`] / `Dataplane::cleanup` removes):
//! - the dummy interface [`Config::interface`] (`svcp-ipvs0`) and its /32 and /128 VIPs;
//! - the virtual servers on those VIPs, and those this process created (node ports);
//! - with [`Config::manage_companions`], the ipsets and iptables chains under
//!   [`Config::prefix`] (`SVCP-IPVS-`) and five jumps into them (see [`companions`]).
//!
//! Anything else (another tool's virtual servers, kube-proxy's `KUBE-` objects) is never
//! touched. The module list is the inner shape, **model → plan (pure) → apply → observe**:
//!
//! - [`netlink`]: the IPVS generic-netlink messages, hand-written, and the socket;
//! - [`model`]: [`VirtualServer`]/[`RealServer`], what plans and observations are made of;
//! - [`ops`]: [`IpvsOps`], the narrow interface over the kernel table; [`client`]: [`NetlinkIpvs`];
//! - [`config`]: [`Config`]; [`plan`]: desired state and the diff, pure;
//! - [`apply`]: ops through `IpvsOps`; [`observe`]: the kernel back into the plan's model, and
//!   the ownership rule; [`link`]: the dummy interface over rtnetlink;
//! - [`companions`]: ipsets and iptables rules; [`ipset`]: the ipset nfnetlink client the
//!   companions write their sets with ([`ipset::NetlinkIpset`], batched, no process);
//!   [`flows`]: the conntrack entries of deleted UDP real servers, deleted over ctnetlink
//!   (`nf_conntrack`, no process); [`cleanup`]; [`metrics`]; [`error`];
//! - `testing` (feature `testing`): `FakeIpvs`, an in-memory `IpvsOps`; `ipset::FakeIpset`,
//!   an in-memory `ipset::IpsetOps`.
//!
//! Needs root and the `ip_vs` modules (plus the `ip_set` modules and `iptables` for the
//! companions). The tests that need IPVS run in a VM: `scripts/vm-test`; the ipset client's
//! root tests (`tests/netns_ipset.rs`) also run on a host without IPVS.
//!
//! ```no_run
//! use backend_ipvs::{Config, IpvsDataplane};
//! use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
//! use proxy_core::table::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse()?)
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse()?, 8080));
//! let table = ServiceTable::builder().insert(web).build()?;
//! let mut dataplane = IpvsDataplane::new(Config::default())?;
//! let changes = proxy_core::diff(&ServiceTable::empty(), &table);
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
pub use config::{Config, ConnectionTimeouts, IptablesVariant, VipBinding};
pub use dataplane::{IpvsDataplane, NAME};
pub use error::{BackendError, IpvsError, IpvsOp, IpvsTarget};
pub use metrics::Metrics;
pub use model::{
    ConnCounts, ForwardMethod, ModelError, RealServer, SchedFlags, Scheduler, ServiceKey,
    VirtualServer,
};
pub use ops::{IpvsInfo, IpvsOps, Timeouts};
pub use plan::{Desired, Draining, IpvsState, Op, Plan, ServiceState, Verdict, VipKind};
