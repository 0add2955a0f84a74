//! backend-ipvs: the kernel's IPVS load balancer as a dataplane.
//!
//! So far this crate holds the kernel-facing foundation; the plan/apply/observe backend over
//! a `ServiceTable` is built on it (issue #5).
//!
//! - [`netlink`]: the IPVS generic-netlink messages, hand-written, and the socket;
//! - [`model`]: [`VirtualServer`]/[`RealServer`], what plans and observations are made of;
//! - [`ops`]: [`IpvsOps`], the narrow interface over the kernel table;
//! - [`client`]: [`NetlinkIpvs`], `IpvsOps` over netlink;
//! - [`error`]: [`IpvsError`], naming the operation, the service or real server, and the errno;
//! - `testing` (feature `testing`): `FakeIpvs`, an in-memory `IpvsOps`.
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
pub mod client;
pub mod companions;
pub mod config;
mod dataplane;
pub mod error;
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
pub use config::{Config, IptablesVariant};
pub use dataplane::{IpvsDataplane, NAME};
pub use error::{BackendError, IpvsError, IpvsOp, IpvsTarget};
pub use metrics::Metrics;
pub use model::{
    ConnCounts, ForwardMethod, ModelError, RealServer, SchedFlags, Scheduler, ServiceKey,
    VirtualServer,
};
pub use ops::{IpvsInfo, IpvsOps, Timeouts};
pub use plan::{Desired, Draining, IpvsState, Op, Plan, ServiceState, Verdict, VipKind};
